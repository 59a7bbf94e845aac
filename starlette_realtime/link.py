"""One accepted WebSocket: the reader, the namespaces on it, and their clean-up.

Data flows one way: ASGI ``receive`` -> :class:`ServerProtocol` (frames) ->
endpoint dispatch (handlers) -> rooms/backend -> hub -> outboxes.  The link
runs the reader in its own task and the outbox writer beside it in one task
group, so they live and die together; whatever ends the WebSocket, every
namespace on it is closed and every trace of it removed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from . import status
from .codec import Codec
from .connection import Connection, ConnectionState
from .exceptions import AckError, ProtocolError, Rejected
from .frames import Ack, Connect, Disconnect, Event, Pong
from .limits import TokenBucket
from .protocol import ServerProtocol
from .transport import Outbox, Overflow

if TYPE_CHECKING:
    from .routing import RealtimeRouter

logger = logging.getLogger(__name__)

#: Frames a link handles in a row before it lets other tasks run.
_FAIR_SHARE = 16


class Link:
    """The server side of one WebSocket, carrying connections to one or more namespaces."""

    def __init__(
        self,
        router: RealtimeRouter,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
        codec: Codec,
    ) -> None:
        self.router = router
        self.scope = scope
        self._receive = receive
        self._send = send
        self.codec = codec
        cfg = router.config
        self.protocol = ServerProtocol(codec, max_message_size=cfg.max_message_size)
        self.outbox = Outbox(
            send,
            max_messages=cfg.max_queue_messages,
            max_bytes=cfg.max_queue_bytes,
            overflow=Overflow(cfg.overflow),
            on_overflow=self._overflowed,
            on_drop=router.metrics.dropped,
        )
        self.connections: dict[str, Connection] = {}
        self.calls: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.limited = 0
        #: Handlers running now (graceful shutdown waits for them).
        self.busy = 0
        now = router.clock()
        self.last_received = now
        self.last_ping = now
        self.ping_sent: float | None = None
        #: Why the server is closing this WebSocket: (close code, reason), or None.
        self.close_with: tuple[int, str] | None = None
        self.remote_code: int | None = None
        #: The earliest credential expiry of its connections (seconds since the epoch), or
        #: None; the router's heartbeat loop checks it, so no timer runs per connection.
        self.expires_at: float | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        #: Set by a loop callback: whether the event loop ran since the reader last checked (see _read).
        self._loop_ran = False
        self.id = secrets.token_urlsafe(6)

    # Running ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve the WebSocket until either side closes it."""
        cfg = self.router.config
        hello = self.protocol.hello(
            node=self.router.node_id, ping_interval=cfg.ping_interval, ping_timeout=cfg.ping_timeout
        )
        self.outbox.push(self.codec.message(hello), len(hello))
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.outbox.attach(tg.start_soon)
                try:
                    await self._read()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self.outbox.closed = True
            with anyio.CancelScope(shield=True):
                await self._close_all()

    async def _read(self) -> None:
        receive = self._receive
        protocol = self.protocol
        clock = self.router.clock
        metrics = self.router.metrics
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
                self.last_received = clock()
                text = message.get("text")
                data = message.get("bytes")
                metrics.message_in(len(text) if text is not None else len(data or b""))
                try:
                    frame = protocol.receive(text, data)
                except ProtocolError as exc:
                    self._protocol_error(exc)
                    return
                except UnicodeDecodeError:  # msgspec's answer to a MessagePack str that is not UTF-8
                    self._protocol_error(ProtocolError("undecodable frame: a string is not valid UTF-8"))
                    return
                if type(frame) is Event:
                    # The common case inline (one coroutine less per event): an open namespace.
                    conn = self.connections.get(frame.ns)
                    if conn is not None and conn.state is ConnectionState.OPEN:
                        await conn.endpoint._dispatch(conn, frame)
                    else:
                        await self._on_event(frame)
                elif type(frame) is Ack:
                    self._on_ack(frame)
                elif type(frame) is Connect:
                    await self._open(frame)
                elif type(frame) is Disconnect:
                    if frame.ns in self.connections:
                        await self.close_namespace(frame.ns, "client disconnect", notify=False)
                elif type(frame) is Pong:
                    pass
            elif kind == "websocket.disconnect":
                self.remote_code = message.get("code")
                return

    def _note_loop_ran(self) -> None:
        self._loop_ran = True

    def _protocol_error(self, exc: ProtocolError) -> None:
        if exc.close_code == status.WS_1009_MESSAGE_TOO_BIG:
            code, reason = status.WS_1009_MESSAGE_TOO_BIG, "message too big"
        else:
            err = self.protocol.error(exc.code, str(exc))
            self.outbox.push(self.codec.message(err), len(err))
            code, reason = exc.close_code or status.WS_4501_PROTOCOL_ERROR, "protocol error"
        self.close_with = (code, reason)
        logger.info(
            "protocol error, closing with %s (link=%s): %s", code, self.id, exc,
            extra=log_fields(self, reason=reason, close_code=code),
        )

    async def _on_event(self, frame: Event) -> None:
        conn = self.connections.get(frame.ns)
        if conn is None or conn.state is not ConnectionState.OPEN:
            if self.router.limits.charge(self, "", None, None) is not None:
                return
            if frame.id is not None:
                raw = self.protocol.ack_error(frame.ns, frame.id, status.NOT_CONNECTED, "namespace not connected")
            else:
                raw = self.protocol.error(status.NOT_CONNECTED, "namespace not connected", frame.ns)
            self.outbox.push(self.codec.message(raw), len(raw))
            return
        await conn.endpoint._dispatch(conn, frame)

    def _on_ack(self, frame: Ack) -> None:
        entry = self.calls.pop(frame.id, None)
        if entry is None or entry[0] != frame.ns:
            raw = self.protocol.error(status.BAD_FRAME, f"unexpected ack id {frame.id}", frame.ns)
            self.outbox.push(self.codec.message(raw), len(raw))
            return
        fut = entry[1]
        if fut.done():
            return
        if frame.error is not None:
            fut.set_result(AckError(frame.error.code, frame.error.message))
            return
        try:
            decode = msgspec.msgpack.decode if self.codec.binary else msgspec.json.decode
            fut.set_result(decode(frame.data))
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            fut.set_result(AckError(status.INVALID_PAYLOAD, "undecodable ack payload"))

    # Namespaces ------------------------------------------------------------

    async def _open(self, frame: Connect) -> None:
        router = self.router
        ns = frame.ns
        limited = router.limits.charge(self, "", None, None)
        if limited is not None:
            self._connect_error(ns, status.RATE_LIMITED, limited, retryable=True)
            return
        endpoint = router.endpoints.get(ns)
        if endpoint is None:
            self._connect_error(ns, status.UNKNOWN_NAMESPACE, f"no namespace {ns!r}")
            return
        if ns in self.connections:
            self._connect_error(ns, status.ALREADY_CONNECTED, f"{ns!r} is already connected")
            return
        if len(self.connections) >= router.limits.max_namespaces:
            self._connect_error(ns, status.TOO_MANY_NAMESPACES, "too many namespaces on one connection")
            return
        conn = Connection(secrets.token_urlsafe(12), ns, self, endpoint)
        self.connections[ns] = conn
        try:
            try:
                conn.auth = (
                    None
                    if bytes(frame.auth) in (b"null", b"\xc0")
                    else self.codec.payload_decoder(Any)(frame.auth)
                )
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                raise Rejected(status.REJECTED, "undecodable auth payload") from None
            conn.user = await endpoint.authenticate(conn)
            self.track_expiry(conn)
            router.check_user_limit(conn)
            await endpoint.on_connect(conn)
            await router._establish(conn, frame)
        except Rejected as exc:
            self.connections.pop(ns, None)
            await router._forget(conn)
            conn.state = ConnectionState.CLOSED
            logger.info(
                "connection refused with %s (link=%s sid=%s namespace=%s)", exc.code, self.id, conn.sid, ns,
                extra=log_fields(self, conn, reason=exc.code),
            )
            self._connect_error(ns, exc.code, exc.message, retryable=exc.retryable)
            return
        except BaseException:
            self.connections.pop(ns, None)
            with anyio.CancelScope(shield=True):
                await router._forget(conn)
            conn.state = ConnectionState.CLOSED
            raise
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "connection opened (link=%s sid=%s namespace=%s recovered=%s)", self.id, conn.sid, ns, conn.recovered,
                extra=log_fields(self, conn),
            )

    def _connect_error(self, ns: str, code: str, message: str, *, retryable: bool = False) -> None:
        # A namespace nobody serves was named by the client: keep it out of metric labels.
        self.router.metrics.connection_refused(ns if ns in self.router.endpoints else "", code)
        raw = self.protocol.connect_error(ns, code, message, retryable=retryable)
        self.outbox.push(self.codec.message(raw), len(raw))

    async def close_namespace(self, ns: str, reason: str, *, notify: bool, keep_session: bool = False) -> None:
        """Close one namespace connection: hooks, rooms, pending calls, session."""
        conn = self.connections.get(ns)
        if conn is None or conn.state is ConnectionState.CLOSING or conn.state is ConnectionState.CLOSED:
            return
        was_open = conn.state is ConnectionState.OPEN
        conn.state = ConnectionState.CLOSING
        if notify:
            raw = self.protocol.disconnect(ns, reason)
            self.outbox.push(self.codec.message(raw), len(raw))
        try:
            for ack_id, (call_ns, fut) in list(self.calls.items()):
                if call_ns == ns:
                    self.calls.pop(ack_id, None)
                    if not fut.done():
                        fut.set_result(AckError(status.NOT_CONNECTED, "connection closed"))
            if was_open:
                try:
                    await conn.endpoint.on_disconnect(conn, reason)
                except Exception:
                    logger.exception(
                        "on_disconnect failed (link=%s sid=%s namespace=%s)", self.id, conn.sid, ns,
                        extra=log_fields(self, conn, reason=reason),
                    )
        finally:
            self.connections.pop(ns, None)
            await self.router._forget(conn, keep_session=keep_session and was_open)
            conn.state = ConnectionState.CLOSED
            code = self.close_with[0] if self.close_with else self.remote_code
            self.router.metrics.connection_closed(ns, reason, code)
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
        for _, fut in self.calls.values():
            if not fut.done():
                fut.set_result(AckError(status.NOT_CONNECTED, "connection closed"))
        self.calls.clear()

    # Control from outside the reader ----------------------------------------

    def abort(self, code: int, reason: str) -> None:
        """Close the WebSocket from anywhere, without awaiting: the link's task cleans up."""
        if self.close_with is None:
            self.close_with = (code, reason)
        self.outbox.closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _overflowed(self) -> None:
        self.router.metrics.closed_by_server("slow_consumer")
        self.router.metrics.dropped("overflow")
        logger.warning(
            "slow consumer, closing with 4004 (link=%s): outbox full", self.id,
            extra=log_fields(self, reason="slow consumer", close_code=status.WS_4004_SLOW_CONSUMER),
        )
        self.abort(status.WS_4004_SLOW_CONSUMER, "slow consumer")

    def track_expiry(self, conn: Connection) -> None:
        """Take a connection's credential expiry from ``conn.user.expires_at`` and note it."""
        try:
            expires_at = getattr(conn.user, "expires_at", None)
        except Exception:  # a user object whose attributes raise (e.g. NotImplementedError)
            expires_at = None
        conn.expires_at = float(expires_at) if isinstance(expires_at, (int, float)) else None
        if conn.expires_at is not None and (self.expires_at is None or conn.expires_at < self.expires_at):
            self.expires_at = conn.expires_at

    def check_expiry(self, now: float) -> None:
        """Close with 4003 when a connection's credential has expired, else note the next expiry."""
        earliest: float | None = None
        for conn in self.connections.values():
            expires_at = conn.expires_at
            if expires_at is None:
                continue
            if expires_at <= now:
                self.router.metrics.closed_by_server("token_expired")
                logger.info(
                    "credential expired, closing with 4003 (link=%s sid=%s namespace=%s)",
                    self.id, conn.sid, conn.namespace,
                    extra=log_fields(self, conn, reason="token expired", close_code=status.WS_4003_TOKEN_EXPIRED),
                )
                self.abort(status.WS_4003_TOKEN_EXPIRED, "token expired")
                return
            if earliest is None or expires_at < earliest:
                earliest = expires_at
        self.expires_at = earliest

    def abort_rate_limited(self) -> None:
        if self.close_with is not None:  # already closing: frames read before still come through
            return
        self.router.metrics.closed_by_server("rate_limited")
        logger.warning(
            "rate limited, closing with 4006 (link=%s): sustained flooding", self.id,
            extra=log_fields(self, reason="rate limited", close_code=status.WS_4006_RATE_LIMITED),
        )
        self.abort(status.WS_4006_RATE_LIMITED, "rate limited")

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run a concurrent handler in the link's task group (it dies with the link)."""
        if self._tg is not None:
            self._tg.start_soon(fn, *args)

    def reply_error(self, conn: Connection, ack_id: int, code: str, message: str) -> None:
        raw = self.protocol.ack_error(conn.namespace, ack_id, code, message)
        conn.outbox.push(conn.codec.message(raw), len(raw))

    def __repr__(self) -> str:
        return f"Link(id={self.id!r}, namespaces={sorted(self.connections)!r}, codec={self.codec!r})"


def log_fields(
    link: Link | None, conn: Connection | None = None, *, reason: str | None = None, close_code: int | None = None
) -> dict[str, Any]:
    """The ``extra=`` fields of the library's log records about a connection.

    Every record carries the same keys (``None`` when not applicable), so that a
    formatter or a JSON handler can rely on them: ``link_id`` (the WebSocket),
    ``sid`` (the namespace connection), ``namespace``, ``user`` (the identity key,
    never a token), ``reason`` and ``close_code``.

    Args:
        link: the WebSocket, when there is one.
        conn: the namespace connection, when there is one.
        reason: why it closed or was refused.
        close_code: the WebSocket close code.

    Returns:
        The fields, for ``logger.info(..., extra=log_fields(...))``.
    """
    from .routing import user_key  # routing imports this module

    return {
        "link_id": link.id if link is not None else None,
        "sid": conn.sid if conn is not None else None,
        "namespace": conn.namespace if conn is not None else None,
        "user": user_key(conn.user) if conn is not None else None,
        "reason": reason,
        "close_code": close_code,
    }
