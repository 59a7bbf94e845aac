"""How the Prometheus metrics keep their labels bounded, and their histogram buckets."""

from __future__ import annotations

from . import status

#: Handler durations, seconds: fine below a millisecond, where most handlers are.
HANDLER_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Publish-to-receive lag, seconds (one node: well under a millisecond; through Redis: about one).
LAG_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

#: Disconnect reasons reported as themselves; any other (an application's own
#: ``conn.disconnect(reason)`` text) is reported as ``other``, to keep the label bounded.
KNOWN_REASONS: frozenset[str] = frozenset({
    "client disconnect",
    "transport closed",
    "server disconnect",
    "disconnected by server",
    "server shutdown",
    "slow consumer",
    "heartbeat timeout",
    "rate limited",
    "protocol error",
    "message too big",
    "token expired",
    "kicked",
    "connect timeout",
    "superseded",
})


def reason_label(reason: str) -> str:
    """The ``reason`` label of a disconnect: a known reason in snake case, else ``other``.

    Args:
        reason: the reason the core passed to ``connection_closed``.

    Returns:
        A label value from a fixed set.
    """
    return reason.replace(" ", "_") if reason in KNOWN_REASONS else "other"


def code_label(code: int | None) -> str:
    """The ``code`` label of a disconnect: a standard or library close code, ``none`` or ``other``.

    Args:
        code: the WebSocket close code, or ``None`` when only the namespace closed.

    Returns:
        A label value from a bounded set (a client chooses its own close code).
    """
    if code is None:
        return "none"
    if 1000 <= code <= 1015 or code in status.CLOSE_CODES:
        return str(code)
    return "other"


__all__ = ["HANDLER_BUCKETS", "KNOWN_REASONS", "LAG_BUCKETS", "code_label", "reason_label"]
