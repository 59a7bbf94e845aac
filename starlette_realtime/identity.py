"""Who a connection belongs to: one stable string per user object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_ID_NAMES = ("identity", "id", "user_id", "username")


def user_key(user: Any) -> str | None:
    """A stable string identity for a user object (``None`` for anonymous).

    Strings are their own key; other objects give the first of ``identity``, ``id``,
    ``user_id`` and ``username`` that they have (as attributes, or as keys of a mapping such
    as a decoded token's claims), else ``str(user)``.
    """
    if user is None:
        return None
    if isinstance(user, str):
        return user
    if isinstance(user, Mapping):
        for name in _ID_NAMES:
            value = user.get(name)
            if value is not None:
                return str(value)
        return str(user)
    for attr in _ID_NAMES:
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:
            continue
        if value is not None:
            return str(value)
    return str(user)


__all__ = ["user_key"]
