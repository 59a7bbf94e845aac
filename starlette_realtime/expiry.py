"""Credential expiry: when a connection's user stops being valid (``user.expires_at``, seconds since the epoch).

No timer runs per connection: the node's heartbeat scheduler asks each socket when it is due.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar


class Expiring(Protocol):
    """A connection with a credential expiry (``None``: never)."""

    expires_at: float | None


E = TypeVar("E", bound=Expiring)


def credential_expiry(user: Any) -> float | None:
    """The expiry of a user object's credential: its ``expires_at`` when that is a number."""
    try:
        expires_at = getattr(user, "expires_at", None)
    except Exception:  # a user object whose attributes raise (e.g. NotImplementedError)
        return None
    return float(expires_at) if isinstance(expires_at, (int, float)) else None


def first_expired(conns: Iterable[E], now: float) -> tuple[E | None, float | None]:
    """The first connection whose credential expired at ``now``, and else the next expiry.

    Returns:
        ``(expired, None)`` when one has expired, else ``(None, earliest expiry or None)``.
    """
    earliest: float | None = None
    for conn in conns:
        expires_at = conn.expires_at
        if expires_at is None:
            continue
        if expires_at <= now:
            return conn, None
        if earliest is None or expires_at < earliest:
            earliest = expires_at
    return None, earliest


__all__ = ["credential_expiry", "first_expired"]
