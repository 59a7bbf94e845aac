"""One socket's I/O shell: it reads messages, asks the session core what to do, and does it.

Data flows one way: ASGI ``receive`` -> the wire (message -> frame) -> the
session core (:class:`~starlette_realtime.core.SessionCore`: what to do) -> the
node (open a namespace, run a handler) -> rooms/backend -> hub -> outboxes.
The way back up is a callback: the node is handed in as a :class:`LinkNode`.

The reader runs in the socket's own ASGI task; the outbox writer, concurrent
handlers and spawned work are tasks the link cancels and waits for when the
socket ends, so they live and die with it; whatever ends the socket, every
namespace on it is closed and every trace of it removed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from . import status
from .calls import Calls
from .config import RealtimeConfig
from .connection import Connection, ConnectionState
from .core import Close, CloseNamespace, DedupWindow, Dispatch, Open, Refuse, Resolve, Send, SessionCore
from .exceptions import AckError, CallTimeout, ProtocolError, Rejected
from .fastpath import preframed
from .frames import Ack, Connect, ConnectError, Disconnect, Event, Frame, Pong
from .logs import log_fields
from .metrics import Metrics
from .outbox import Outbox, Overflow
from .supervision import Supervision, inline_handler
from .wire import Wire

logger = logging.getLogger(__name__)

#: Frames a link handles in a row before it lets other tasks run.
_FAIR_SHARE = 16

class LinkNode(Protocol):
    """What a link needs of its node (the router's :class:`~starlette_realtime.lifecycle.Lifecycle`)."""

    config: RealtimeConfig
    metrics: Metrics
    node_id: str
    clock: Callable[[], float]

    def hello(self, wire: Wire) -> tuple[dict[str, Any], int]:
        """The HELLO message of this node on ``wire`` (the same for every socket) and its size."""
        ...

    def ping(self, wire: Wire) -> tuple[dict[str, Any], int, bytes]:
        """The PING message on ``wire``, its size, and its WebSocket frame (built once per wire)."""
        ...

    async def open(self, link: Link, frame: Connect) -> tuple[Connection, DedupWindow | None]:
        """Open a namespace connection; raise ``Rejected`` to refuse it."""
        ...

    async def dispatch(self, link: Link, conn: Connection, action: Dispatch) -> None:
        """Run an event's handler; its answer goes to :meth:`Link.answer`."""
        ...

    async def close(
        self, link: Link, conn: Connection, reason: str, *, was_open: bool, keep_session: bool,
        window: DedupWindow | None,
    ) -> None:
        """Run ``on_disconnect``, leave every room, and save the session when asked."""
        ...


class Link(Supervision):
    """The server side of one socket, carrying connections to one or more namespaces.

    Args:
        node: the node's services (a callback interface).
        scope: the ASGI scope of the handshake.
        receive: ASGI-websocket-shaped ``receive`` (a non-WebSocket transport may adapt itself).
        send: ASGI-websocket-shaped ``send``.
        wire: the wire protocol and encoding of this socket.
        core: the session core of this socket.
    """

    node: LinkNode

    __slots__ = (
        "__weakref__",
        "_inline",
        "_loop_ran",
        "_receive",
        "calls",
        "codec",
        "connections",
        "core",
        "id",
        "node",
        "outbox",
        "remote_code",
        "scope",
    )

    def __init__(
        self,
        node: LinkNode,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
        wire: Wire,
        core: SessionCore,
    ) -> None:
        self.node = node
        self.scope = scope
        self._receive = receive
        self.codec = wire
        self.core = core
        cfg = node.config
        fast = preframed(scope)
        self.outbox = Outbox(
            send,
            max_messages=cfg.max_queue_messages,
            max_bytes=cfg.max_queue_bytes,
            overflow=Overflow(cfg.overflow),
            on_overflow=self._overflowed,
            on_drop=node.metrics.dropped,
            preframed=fast,
        )
        if fast is not None and fast.intercept is not None:  # PONGs seen in the server's reader: no task switch
            pong = wire.encode(Pong())
            fast.intercept(pong, wire.binary, functools.partial(self.pong_seen, len(pong)))
        self.connections: dict[str, Connection] = {}
        self.calls = Calls()
        self.busy = 0  # busy, close_with, expires_at: see Supervision
        self.close_with: tuple[int, str] | None = None
        self.remote_code: int | None = None
        self.expires_at: float | None = None
        self._reader: anyio.CancelScope | None = None
        self._grace: anyio.CancelScope | None = None
        self._tasks: set[asyncio.Task[Any]] | None = None
        self._live = True
        self._inline = False
        self._idle: anyio.Event | None = None
        #: Set by a loop callback: whether the event loop ran since the reader last checked (see _read).
        self._loop_ran = False
        self.id = secrets.token_urlsafe(6)

    # Running ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until either side closes it."""
        cfg = self.node.config
        message, size = self.node.hello(self.codec)
        self.outbox.attach(self.spawn)
        self.outbox.push(message, size)
        try:
            with anyio.CancelScope() as self._reader:
                await self._read()
            self._reader = None
            close = self.close_with
            if self.busy and self._live and (close is None or close[0] == status.WS_4008_SUPERSEDED):
                # The client went away while handlers ran: let them finish, so that
                # their answers are kept for the resend after its reconnect.
                with anyio.CancelScope() as self._grace, anyio.move_on_after(cfg.handler_grace):
                    await self.wait_idle()
        finally:
            self._reader = self._grace = None
            self.outbox.closed = True
            with anyio.CancelScope(shield=True):
                await self._stop_tasks()
                await self._close_all()

    async def _read(self) -> None:
        receive = self._receive
        core = self.core
        wire = self.codec
        clock = self.node.clock
        metrics = self.node.metrics
        max_size = self.node.config.max_message_size
        # uvicorn queues every frame of a TCP read at once, and receive() does not suspend
        # while its queue has some: yield now and then, so that a flooding client cannot
        # hold the event loop for a whole read's worth of frames (flood isolation).
        # Only when the loop ran nothing else during the last _FAIR_SHARE frames: a
        # callback scheduled at each check tells whether the reader suspended since (the
        # common case, one frame per wake-up), which costs one call_soon per _FAIR_SHARE
        # frames instead of a yield (a task switch through the whole ASGI await chain).
        loop = asyncio.get_running_loop()
        burst = 0
        self._loop_ran = False
        while True:
            message = await receive()
            burst += 1
            if burst == _FAIR_SHARE:
                burst = 0
                if not self._loop_ran:
                    await anyio.lowlevel.checkpoint()
                self._loop_ran = False
                loop.call_soon(self._note_loop_ran)
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    size = len(text)
                    if size * 4 > max_size:  # a character is at most 4 bytes: measure only near the limit
                        size = len(text.encode())
                    data = None
                else:
                    data = message.get("bytes") or b""
                    size = len(data)
                metrics.message_in(size)
                now = clock()
                core.last_received = now
                if size > max_size and core.message_in(size, now, max_size) is not None:
                    self.close_with = (status.WS_1009_MESSAGE_TOO_BIG, "message too big")
                    self._log_close("message too big")
                    return
                try:
                    frame = wire.receive(text, data)
                except ProtocolError as exc:
                    self._undecodable(exc)
                    return
                except UnicodeDecodeError:  # msgspec's answer to a MessagePack str that is not UTF-8
                    self._undecodable(ProtocolError("undecodable frame: a string is not valid UTF-8"))
                    return
                action = core.frame_in(frame, now)
                if action is None:
                    continue
                kind_ = type(action)
                if kind_ is Dispatch:
                    conn = self.connections[action.frame.ns]  # type: ignore[attr-defined]
                    self._inline = True
                    self.busy += 1
                    token = inline_handler.set(self)
                    try:
                        await self.node.dispatch(self, conn, action)  # type: ignore[arg-type]
                    finally:
                        inline_handler.reset(token)
                        self.busy -= 1
                        self._inline = False
                        if self._idle is not None and not self.busy:  # someone waits (wait_idle)
                            self._idle.set()
                elif kind_ is Refuse:
                    metrics.event_rejected(action.ns, action.event, action.code)  # type: ignore[attr-defined]
                    if action.reply is not None:  # type: ignore[attr-defined]
                        self.send_frame(action.reply)  # type: ignore[attr-defined]
                elif kind_ is Send:
                    out = action.frame  # type: ignore[attr-defined]
                    if type(out) is ConnectError:
                        self.connect_error(out.ns, out.code, out.message, retryable=out.retryable)
                    else:
                        self.send_frame(out)
                elif kind_ is Open:
                    await self._open(action.frame)  # type: ignore[attr-defined]
                elif kind_ is Resolve:
                    self.calls.resolve(action.frame, wire.payload_decoder(Any))  # type: ignore[attr-defined]
                elif kind_ is CloseNamespace:
                    await self.close_namespace(action.ns, action.reason, notify=False)  # type: ignore[attr-defined]
                elif kind_ is Close:
                    self._close(action)  # type: ignore[arg-type]
                    return
                if self.close_with is not None:  # superseded, or closed from elsewhere
                    return
            elif kind == "websocket.disconnect":
                self.remote_code = message.get("code")
                return

    def _note_loop_ran(self) -> None:
        self._loop_ran = True

    def _undecodable(self, exc: ProtocolError) -> None:
        close_code = exc.close_code or status.WS_4501_PROTOCOL_ERROR
        send, close = self.core.undecodable(exc.code, str(exc), close_code)
        self.send_frame(send.frame)
        self.close_with = (close.code, close.reason)
        self._log_close(str(exc))

    def _log_close(self, detail: str) -> None:
        code, reason = self.close_with or (0, "")
        logger.info(
            "protocol error, closing with %s (link=%s): %s", code, self.id, detail,
            extra=log_fields(self, reason=reason, close_code=code),
        )

    # Sending ----------------------------------------------------------------

    def send_frame(self, frame: Frame) -> None:
        """Encode a frame with this socket's wire and push it (never awaits)."""
        raw = self.codec.encode(frame)
        self.outbox.push(self.codec.message(raw), len(raw))

    def answer(self, ns: str, reply: Ack) -> None:
        """A handler answered: the core keeps the answer for resends, and it is sent."""
        if self.core.answered(ns, reply):
            self.send_frame(reply)

    async def call(self, ns: str, event: str, data: Any, *, timeout: float) -> Any:
        """Send an event to the client on ``ns`` and return its acknowledgement.

        Raises:
            CallTimeout: no ack in time.
            AckError: the client answered with an error, or the connection closed.
            RuntimeError: called from an in-order handler of this same socket.
        """
        if inline_handler.get() is self:
            raise RuntimeError(
                "conn.call() from an in-order handler of the same WebSocket would deadlock; "
                "use @on_event(..., concurrent=True)"
            )
        ack_id = self.core.call(ns)
        fut = self.calls.start(ack_id, ns)
        self.send_frame(Event(ns, event, self.codec.encode_payload(data), ack_id))
        try:
            with anyio.fail_after(timeout):
                result = await fut
        except TimeoutError:
            raise CallTimeout(f"no ack for {event!r} within {timeout} s") from None
        finally:
            self.calls.end(ack_id)
            self.core.call_done(ack_id)
        if isinstance(result, AckError):
            raise result
        return result

    # Namespaces ------------------------------------------------------------

    async def _open(self, frame: Connect) -> None:
        ns = frame.ns
        try:
            conn, window = await self.node.open(self, frame)
        except Rejected as exc:
            self.core.refused(ns, self.node.clock())
            self.connect_error(ns, exc.code, exc.message, retryable=exc.retryable)
            return
        except BaseException:
            self.core.refused(ns, self.node.clock())
            raise
        self.connections[ns] = conn
        self.core.opened(ns, window)

    def connect_error(self, ns: str, code: str, message: str, *, retryable: bool = False) -> None:
        """Refuse a namespace with a CONNECT_ERROR frame."""
        # A namespace nobody serves was named by the client: keep it out of metric labels.
        self.node.metrics.connection_refused(ns if ns in self.core.rules else "", code)
        self.send_frame(ConnectError(ns, code, message, retryable))

    async def close_namespace(self, ns: str, reason: str, *, notify: bool, keep_session: bool = False) -> None:
        """Close one namespace connection: hooks, rooms, pending calls, session."""
        conn = self.connections.get(ns)
        if conn is None or conn.state is ConnectionState.CLOSING or conn.state is ConnectionState.CLOSED:
            return
        was_open = conn.state is ConnectionState.OPEN
        conn.state = ConnectionState.CLOSING
        if notify:
            self.send_frame(Disconnect(ns, reason))
        try:
            self.calls.fail(ns)
            await self.node.close(
                self, conn, reason, was_open=was_open, keep_session=keep_session and was_open,
                window=self.core.windows.get(ns),
            )
        finally:
            self.connections.pop(ns, None)
            self.core.closed(ns, self.node.clock())
            conn.state = ConnectionState.CLOSED
            code = self.close_with[0] if self.close_with else self.remote_code
            self.node.metrics.connection_closed(ns, reason, code)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "connection closed: %s (link=%s sid=%s namespace=%s code=%s)", reason, self.id, conn.sid, ns, code,
                    extra=log_fields(self, conn, reason=reason, close_code=code),
                )

    async def _close_all(self) -> None:
        if self.close_with is not None:
            code, reason = self.close_with
        else:
            code, reason = (self.remote_code or status.WS_1006_ABNORMAL_CLOSURE), "transport closed"
        # A client that closes on purpose (1000) gives up its session; anything else
        # (a drop, a time-out, a server restart) keeps it for recovery.
        keep = code not in (status.WS_1000_NORMAL_CLOSURE, status.WS_4503_KICKED, status.WS_1008_POLICY_VIOLATION)
        for ns, conn in list(self.connections.items()):
            try:
                await self.close_namespace(ns, reason, notify=False, keep_session=keep)
            except Exception:
                logger.exception(
                    "clean-up failed (link=%s sid=%s namespace=%s)", self.id, conn.sid, ns,
                    extra=log_fields(self, conn, reason=reason, close_code=code),
                )
        self.calls.fail()

    def __repr__(self) -> str:
        return f"Link(id={self.id!r}, namespaces={sorted(self.connections)!r}, wire={self.codec.name!r})"
