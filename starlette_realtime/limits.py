"""Per-connection limits: a token bucket for events, and the counts a router enforces."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from .connection import Connection
    from .dispatch import Handler


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    Pure: the caller passes the time in.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token; ``False`` when the bucket is empty."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self.tokens:.1f})"


class Limits(msgspec.Struct, kw_only=True):
    """Limits a router enforces.

    Attributes:
        rate: events per second per connection (``None``: unlimited).
        burst: the bucket size for ``rate``.
        abuse_threshold: rate-limited events in a row after which the WebSocket is closed with 4006.
        max_rooms: application rooms per connection.
        max_namespaces: namespaces per WebSocket.
        max_connections: WebSockets per process (over it: refused with 1013).
        max_connections_per_user: namespace connections per user per process (over it: ``REJECTED`` /
            ``TOO_MANY_CONNECTIONS``).
    """

    rate: float | None = None
    burst: int = 20
    abuse_threshold: int = 50
    max_rooms: int = 128
    max_namespaces: int = 16
    max_connections: int | None = None
    max_connections_per_user: int | None = None
    clock: Callable[[], float] = time.monotonic

    def rate_check(self, conn: Connection, handler: Handler) -> str | None:
        """Charge one event to the connection's buckets; a message when it is over the limit."""
        rate = handler.rate if handler.rate is not None else self.rate
        if rate is None:
            return None
        buckets = conn.link.buckets
        key = handler.name if handler.rate is not None else ""
        now = self.clock()
        bucket = buckets.get(key)
        if bucket is None:
            burst = handler.burst if handler.rate is not None and handler.burst is not None else self.burst
            bucket = buckets[key] = TokenBucket(rate, burst, now)
        if bucket.take(now):
            conn.link.limited = 0
            return None
        conn.link.limited += 1
        if conn.link.limited >= self.abuse_threshold:
            conn.link.abort_rate_limited()
        return f"over {rate:g} events/s"
