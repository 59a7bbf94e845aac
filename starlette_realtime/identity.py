"""Who a connection belongs to: one stable string per user object."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    # A mapping (a token's claims) is named by its keys, any other object by its attributes.
    lookup: Callable[[str], Any] = user.get if isinstance(user, Mapping) else (lambda name: getattr(user, name, None))
    for name in _ID_NAMES:
        try:
            value = lookup(name)
        except NotImplementedError:
            continue
        if value is not None:
            return str(value)
    return str(user)


__all__ = ["user_key"]
