"""Who a connection belongs to: one stable string per user object."""

from __future__ import annotations

from typing import Any


def user_key(user: Any) -> str | None:
    """A stable string identity for a user object (``None`` for anonymous).

    Strings are their own key; other objects give the first of ``identity``, ``id``,
    ``user_id`` and ``username`` that they have, else ``str(user)``.
    """
    if user is None:
        return None
    if isinstance(user, str):
        return user
    for attr in ("identity", "id", "user_id", "username"):
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:
            continue
        if value is not None:
            return str(value)
    return str(user)


__all__ = ["user_key"]
