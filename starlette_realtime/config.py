"""The settings of a router, shared by every layer that needs one of them."""

from __future__ import annotations

import msgspec


class RealtimeConfig(msgspec.Struct, kw_only=True):
    """Settings of a router (all keyword arguments of :class:`~starlette_realtime.RealtimeRouter`).

    Attributes:
        ping_interval: seconds between the server's PINGs.
        ping_timeout: seconds a PING may stay unanswered before the socket is closed with 4005.
        connect_timeout: seconds a WebSocket may stay without any namespace open before it is
            closed with 4007 (at the start, and again after its last namespace closed); answered
            PINGs do not keep it open.
        max_message_size: the largest message accepted, in bytes (over it: close 1009).
        max_queue_messages: messages an outbox may queue before the overflow policy applies.
        max_queue_bytes: bytes an outbox may queue before the overflow policy applies.
        overflow: the overflow policy (``disconnect``, ``drop_oldest``, ``drop_newest``).
        recovery_window: seconds a dropped session stays resumable.
        write_through: keep live sessions in the backend as they change, where the backend can
            (Redis), so that a node's crash loses none: written when the connection opens, then
            within 50 ms of a join, a leave or an answer (one write per session per 50 ms, in a
            batch; the answer itself never waits).  ``False`` saves a session only when its
            socket closes (a crashed node's sessions are then lost).
        handler_grace: seconds the handlers of a dropped WebSocket may run on, so that their
            answers are kept for a resend after the reconnect; then they are cancelled.
        shutdown_batch: WebSockets closed per batch on shutdown.
        shutdown_interval: seconds between shutdown batches.
        shutdown_timeout: seconds shutdown waits for running handlers.
        control_timeout: seconds a cluster query waits for the other nodes.
        check_emits: development mode: log a warning (logger ``starlette_realtime.contract``)
            the first time an endpoint that declares its server events (``@emits``, docs/contract.md)
            emits one it does not declare. The emit goes out all the same.
    """

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    connect_timeout: float = 10.0
    max_message_size: int = 1 << 20
    max_queue_messages: int = 1000
    max_queue_bytes: int = 1 << 20
    overflow: str = "disconnect"
    recovery_window: float = 120.0
    write_through: bool = True
    handler_grace: float = 10.0
    shutdown_batch: int = 500
    shutdown_interval: float = 0.1
    shutdown_timeout: float = 10.0
    control_timeout: float = 2.0
    check_emits: bool = False


__all__ = ["RealtimeConfig"]
