"""Supervising a socket from outside its reader: heartbeat visits, credential expiry, closing, handler tasks.

:class:`Supervision` is the part of :class:`~starlette_realtime.link.Link` that the node's
heartbeat scheduler, the cluster control and the outbox call; the reader loop and the
namespaces live in ``link.py``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio
import anyio.abc

from . import status
from .actions import Close, Send
from .calls import Calls
from .connection import Connection
from .core import SessionCore
from .expiry import credential_expiry, first_expired
from .logs import log_fields
from .metrics import Metrics
from .outbox import Outbox
from .wire import Wire

logger = logging.getLogger("starlette_realtime.link")

#: The link whose reader is running a handler right now (to catch self-deadlocks).
inline_handler: contextvars.ContextVar[Supervision | None] = contextvars.ContextVar("inline_handler", default=None)

#: Close codes the server decides, with the reason reported to metrics.
_CLOSE_METRIC = {
    status.WS_4005_HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    status.WS_4006_RATE_LIMITED: "rate_limited",
    status.WS_4007_CONNECT_TIMEOUT: "connect_timeout",
}




class _Node(Protocol):
    metrics: Metrics
    clock: Callable[[], float]

    def ping(self, wire: Wire) -> tuple[dict[str, Any], int, bytes]: ...


class Supervision:
    """Closing and supervising one socket without awaiting (a base of ``Link``)."""

    __slots__ = ("_idle", "busy", "close_with", "expires_at")

    #: Handlers running now (shutdown and a dropped socket wait for them).
    busy: int
    #: Why the server is closing this socket: (close code, reason), or None.
    close_with: tuple[int, str] | None
    #: The earliest credential expiry of its connections (seconds since the epoch), or None.
    expires_at: float | None
    node: _Node
    core: SessionCore
    codec: Wire
    outbox: Outbox
    calls: Calls
    connections: dict[str, Connection]
    id: str
    _tg: anyio.abc.TaskGroup | None
    _reader: anyio.CancelScope | None
    _inline: bool
    _idle: anyio.Event | None

    def tick(self, now: float, wall: float) -> float | None:
        """The node's heartbeat: credential expiry, then the core's ping or close.

        Returns:
            When to visit again (monotonic), or ``None`` once the socket is closed.
        """
        if self.close_with is not None or self.outbox.closed:
            return None
        if self.expires_at is not None and wall >= self.expires_at:
            self.check_expiry(wall)
        action = self.core.tick(now)
        if action is not None:
            if type(action) is Send:
                message, size, frame = self.node.ping(self.codec)
                self.outbox.push_frame(frame, message, size)
            elif type(action) is Close:
                self._close(action)
                return None
        due = self.core.next_visit()
        if self.expires_at is not None:
            due = min(due, now + max(0.0, self.expires_at - wall))
        return due

    def pong_seen(self, size: int) -> None:
        """The client answered a PING (a message of ``size`` bytes), seen by the server's reader
        (the pre-framed extension's ``intercept``): the same as a PONG read by the link."""
        self.node.metrics.message_in(size)
        self.core.last_received = self.node.clock()

    def _close(self, action: Close) -> None:
        metric = _CLOSE_METRIC.get(action.code)
        if metric is not None:
            self.node.metrics.closed_by_server(metric)
        log = logger.warning if action.code == status.WS_4006_RATE_LIMITED else logger.info
        log(
            "%s, closing with %s (link=%s)", action.reason, action.code, self.id,
            extra=log_fields(self, reason=action.reason, close_code=action.code),
        )
        self.abort(action.code, action.reason)

    def abort(self, code: int, reason: str) -> None:
        """Close the socket from anywhere, without awaiting: the link's task cleans up."""
        if self.close_with is None:
            self.close_with = (code, reason)
        self.outbox.closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def supersede(self) -> None:
        """The client resumed this socket's session on another socket: close this one, keeping
        the answers of the handlers that are running (they finish first)."""
        if self.close_with is None:
            self.close_with = (status.WS_4008_SUPERSEDED, "superseded")
        self.outbox.closed = True
        if not self._inline and self._reader is not None:
            self._reader.cancel()

    def _overflowed(self) -> None:
        self.node.metrics.closed_by_server("slow_consumer")
        self.node.metrics.dropped("overflow")
        logger.warning(
            "slow consumer, closing with 4004 (link=%s): outbox full", self.id,
            extra=log_fields(self, reason="slow consumer", close_code=status.WS_4004_SLOW_CONSUMER),
        )
        self.abort(status.WS_4004_SLOW_CONSUMER, "slow consumer")

    def track_expiry(self, conn: Connection) -> None:
        """Take a connection's credential expiry from ``conn.user.expires_at`` and note it."""
        conn.expires_at = credential_expiry(conn.user)
        if conn.expires_at is not None and (self.expires_at is None or conn.expires_at < self.expires_at):
            self.expires_at = conn.expires_at

    def check_expiry(self, now: float) -> None:
        """Close with 4003 when a connection's credential has expired, else note the next expiry."""
        expired, self.expires_at = first_expired(self.connections.values(), now)
        if expired is None:
            return
        self.node.metrics.closed_by_server("token_expired")
        logger.info(
            "credential expired, closing with 4003 (link=%s sid=%s namespace=%s)",
            self.id, expired.sid, expired.namespace,
            extra=log_fields(self, expired, reason="token expired", close_code=status.WS_4003_TOKEN_EXPIRED),
        )
        self.abort(status.WS_4003_TOKEN_EXPIRED, "token expired")

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run a task in the link's task group (it dies with the link)."""
        if self._tg is not None:
            self._tg.start_soon(fn, *args)

    def spawn_handler(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run a concurrent handler in the link's task group, counted as running."""
        if self._tg is not None:
            self.busy += 1
            self._tg.start_soon(self._counted, fn, args)

    async def _counted(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
        inline_handler.set(None)  # the task copied the reader's context: it is not in order
        try:
            await fn(*args)
        finally:
            self.busy -= 1
            if not self.busy and self._idle is not None:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no handler of this socket runs (at once when none does)."""
        if self.busy:
            idle = self._idle
            if idle is None or idle.is_set():  # an event set earlier says nothing about now
                idle = self._idle = anyio.Event()
            await idle.wait()



__all__ = ["Supervision", "inline_handler"]
