"""Supervising a socket from outside its reader: heartbeat visits, credential expiry, closing, handler tasks.

:class:`Supervision` is the part of :class:`~starlette_realtime.link.Link` that the node's
heartbeat scheduler, the cluster control and the outbox call; the reader loop and the
namespaces live in ``link.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio

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

    __slots__ = ("_grace", "_idle", "_live", "_reader", "_tasks", "busy", "close_with", "expires_at")

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
    #: The cancel scope of the reader while it reads, and of the grace period that may follow.
    _reader: anyio.CancelScope | None
    _grace: anyio.CancelScope | None
    #: The socket's own tasks (outbox writer, concurrent handlers, spawned work); the set is made on first use.
    _tasks: set[asyncio.Task[Any]] | None
    #: Whether the link still starts tasks and grants the grace period: false once aborted or stopping.
    _live: bool
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
        self._live = False  # no grace period, no new tasks
        if self._reader is not None:
            self._reader.cancel()
        if self._grace is not None:
            self._grace.cancel()
        if self._tasks:
            for task in self._tasks:
                task.cancel()

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
        """Run a task that dies with the link (cancelled, and waited for, when the socket ends)."""
        if self._live:
            self._start(fn(*args))

    def spawn_handler(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run a concurrent handler as a task of the link, counted as running."""
        if self._live:
            self.busy += 1
            self._start(self._counted(fn, args))

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        # Plain tasks in a set made on first use rather than an anyio task group per socket:
        # most sockets never start one, and a task group with its cancel scope is ~1.5 KB
        # of every idle connection (docs/benchmarks.md, "Memory per connection").
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # What a task group does with a failing child: the socket ends (1011), and it is logged.
            logger.error(
                "a task of the socket failed, closing with 1011 (link=%s)", self.id, exc_info=exc,
                extra=log_fields(self, reason="internal error", close_code=status.WS_1011_INTERNAL_ERROR),
            )
            self.abort(status.WS_1011_INTERNAL_ERROR, "internal error")

    async def _stop_tasks(self) -> None:
        """Cancel the link's tasks and wait until they ended; no new ones start from now on."""
        self._live = False
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

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
