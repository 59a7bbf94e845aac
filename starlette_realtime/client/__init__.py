"""The Python asyncio client (on the ``websockets`` package, which is asyncio-only).

It reconnects with exponential backoff and jitter, re-opens its namespaces,
resumes its sessions (the server replays what it missed, and the client drops
what it already had, by offset), queues emits while offline and resends every
unacknowledged event after a reconnect (the server drops duplicates by id).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .. import status
from ..codec import Codec, JsonCodec, MsgpackCodec
from ..exceptions import AckError, CallTimeout, RealtimeError
from ..frames import Ack, Connect, Connected, ConnectError, Disconnect, Error, Event, Hello, Ping, Pong
from .backoff import backoff as default_backoff
from .outgoing import Outgoing, Positions

logger = logging.getLogger(__name__)

TokenProvider = Any  # a value, or a sync or async callable returning one
Handler = Callable[..., Any]


class AckTimeout(CallTimeout):
    """No acknowledgement arrived within the call's timeout."""


class ConnectRefused(RealtimeError):
    """A namespace refused the connection for good (CONNECT_ERROR that is not retryable)."""

    def __init__(self, namespace: str, code: str, message: str) -> None:
        super().__init__(f"{namespace}: {code}: {message}")
        self.namespace = namespace
        self.code = code
        self.message = message


class ClientClosed(RealtimeError):
    """The client stopped for good (closed by the user or by a terminal close code)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ClientState(str, enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass
class _Namespace:
    name: str
    auth: TokenProvider
    outgoing: Outgoing
    positions: Positions = field(default_factory=Positions)
    sid: str | None = None
    session: str | None = None
    recovered: bool = False
    connected: bool = False
    token_retries: int = 0


class RealtimeClient:
    """A reconnecting client for a starlette-realtime server.

    Args:
        url: the server's WebSocket URL (``ws://host/realtime``; a trailing slash is added), or a
            list of the URLs of equivalent nodes (a cluster sharing a backend and a ``secret_key``):
            the first connection goes to the first, and each reconnect attempt to the next one, in
            turn, so that a client whose node went away reaches another; sessions recover on any node.
        namespaces: the namespaces to open.
        auth: an auth payload provider for every namespace, or a dict of them by namespace.
            A provider is a value, or a sync or async callable asked on every (re)connect;
            a string is sent as ``{"token": value}``.
        encoding: ``"json"`` or ``"msgpack"``.
        reconnection: whether to reconnect after a retryable close.
        reconnection_attempts: attempts before giving up (``None``: forever).
        reconnection_delay: the first delay, seconds.
        reconnection_delay_max: the largest delay, seconds.
        randomization_factor: the jitter fraction.
        queue_ttl: seconds an emit may wait in the offline queue.
        queue_max: the most unacknowledged events kept per namespace.
        connect_timeout: seconds ``connect()`` waits for every namespace.
        origin: the Origin header to send.
        compression: offer permessage-deflate (off by default: compressing secrets together with
            attacker-chosen text leaks them through frame sizes; see docs/security.md).
        backoff: a factory of delay iterators, replacing the default backoff.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        namespaces: Sequence[str] = ("/",),
        auth: TokenProvider | dict[str, TokenProvider] = None,
        encoding: str = "json",
        reconnection: bool = True,
        reconnection_attempts: int | None = None,
        reconnection_delay: float = 1.0,
        reconnection_delay_max: float = 30.0,
        randomization_factor: float = 0.5,
        queue_ttl: float = 60.0,
        queue_max: int = 1000,
        connect_timeout: float = 10.0,
        origin: str | None = None,
        compression: bool = False,
        backoff: Callable[[], Iterator[float]] | None = None,
    ) -> None:
        # The router answers at its mount point with a trailing slash.
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("no URL to connect to")
        self.urls = [u if u.endswith("/") else u + "/" for u in urls]
        self._url_index = 0
        self.codec: Codec = MsgpackCodec() if encoding == "msgpack" else JsonCodec()
        self._ns: dict[str, _Namespace] = {}
        for name in namespaces:
            provider = auth.get(name) if isinstance(auth, dict) else auth
            self._ns[name] = _Namespace(name, provider, Outgoing(queue_ttl, queue_max))
        self.reconnection = reconnection
        self.reconnection_attempts = reconnection_attempts
        self._backoff = backoff or (
            lambda: default_backoff(
                first=reconnection_delay, maximum=reconnection_delay_max, randomization=randomization_factor
            )
        )
        self.connect_timeout = connect_timeout
        self.origin = origin
        self.compression = compression
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._state_listeners: list[Callable[[ClientState], Any]] = []
        self.state = ClientState.CLOSED
        self._ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._failure: BaseException | None = None
        self._closing = False
        self._silence = 45.0
        self.max_message_size = 1 << 20
        self.reconnects = 0
        self.last_close_code: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Set when the client itself closes the WebSocket to retry a namespace later.
        self._retry_close = False
        #: Whether the current WebSocket got a namespace open (then the backoff starts over).
        self._opened = False

    # Public API -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL of the current connection (or of the next attempt): one of :attr:`urls`."""
        return self.urls[self._url_index]

    def on(self, event: str, handler: Handler, *, namespace: str = "/") -> None:
        """Call ``handler(data)`` for each ``event`` in ``namespace``.

        A sync or async handler; for a server ``call`` its return value is the ack.
        Client events, the same as the browser client's: ``connect`` (data:
        ``{"sid", "recovered", "recovery_failed"}``), ``disconnect``, ``recovery_failed``,
        ``connect_error`` (data: ``{"code", "message", "retryable"}``); and from the server
        ``$resync`` and ``$presence``.
        """
        self._handlers[(namespace, event)] = handler

    def on_state(self, listener: Callable[[ClientState], Any]) -> None:
        """Call ``listener(state)`` on each connection state change."""
        self._state_listeners.append(listener)

    def sid(self, namespace: str = "/") -> str | None:
        return self._ns[namespace].sid

    def recovered(self, namespace: str = "/") -> bool:
        """Whether the last (re)connect of ``namespace`` resumed its session with nothing lost."""
        return self._ns[namespace].recovered

    @property
    def queued(self) -> int:
        """Events not yet acknowledged (sent or waiting in the offline queue)."""
        return sum(len(ns.outgoing) for ns in self._ns.values())

    @property
    def dropped(self) -> int:
        """Events dropped from the offline queue (expired or over ``queue_max``)."""
        return sum(ns.outgoing.dropped for ns in self._ns.values())

    async def connect(self) -> None:
        """Connect and open every namespace.

        Raises:
            ConnectRefused: a namespace refused for good.
            ClientClosed: the server closed with a terminal code.
            TimeoutError: not connected within ``connect_timeout``.
        """
        if self._supervisor is None:
            self._closing = False
            self._failure = None
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        await self.wait_connected(self.connect_timeout)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until every namespace is open (again)."""
        async with asyncio.timeout(timeout):
            while True:
                if self._failure is not None:
                    raise self._failure
                if self._ready.is_set():
                    return
                waiter = asyncio.ensure_future(self._ready.wait())
                sup = self._supervisor
                aws: set[asyncio.Future[Any]] = {waiter}
                if sup is not None:
                    aws.add(sup)
                try:
                    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if sup is not None and sup.done() and not self._ready.is_set():
                    raise self._failure or ClientClosed("client stopped")

    async def emit(self, event: str, data: Any = None, *, namespace: str = "/", volatile: bool = False) -> None:
        """Send an event; while offline it waits in the queue (``volatile`` ones are dropped).

        It is kept until the server acknowledges it and resent after a reconnect.
        """
        ns = self._ns[namespace]
        if volatile:
            if ns.connected and self._ws is not None:
                await self._send(Event(namespace, event, self.codec.encode_payload(data)))
            return
        item = ns.outgoing.add(event, data, time.monotonic())
        if ns.connected:
            await self._send_pending(ns, item.id)

    async def call(self, event: str, data: Any = None, *, namespace: str = "/", timeout: float = 10.0) -> Any:
        """Send an event and return the server's acknowledgement.

        Raises:
            AckTimeout: no ack within ``timeout`` (the event is then not sent later).
            AckError: the server answered with an error (``.code``, ``.message``).
        """
        ns = self._ns[namespace]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        item = ns.outgoing.add(event, data, time.monotonic(), fut)
        try:
            if ns.connected:
                await self._send_pending(ns, item.id)
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise AckTimeout(f"no ack for {event!r} within {timeout} s") from None
        finally:
            ns.outgoing.forget(item.id)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every emitted event has been acknowledged."""
        async with asyncio.timeout(timeout):
            while self.queued:
                await asyncio.sleep(0.01)

    async def refresh_auth(self, namespace: str = "/", *, timeout: float = 10.0) -> bool:
        """Send a fresh credential from the auth provider on the open connection (``$auth``).

        The server checks it as it checked the one sent with CONNECT and moves the
        connection's expiry, so a long session is not closed with 4003.  Call it before
        the token expires, for example on a timer at 80 % of its lifetime.  (Without it,
        a 4003 close makes the client reconnect with a fresh token from the provider.)

        Args:
            namespace: the namespace whose credential to refresh.
            timeout: seconds to wait for the server's answer.

        Returns:
            ``True`` when the server accepted it, ``False`` when the namespace is not
            connected (its next CONNECT asks the provider anyway).

        Raises:
            AckError: the server refused it (``.code``: ``INVALID_TOKEN``, ``forbidden``
                for a token of another user, ``rate_limited``).
            AckTimeout: no answer within ``timeout``.
        """
        ns = self._ns[namespace]
        if not ns.connected:
            return False
        auth = await _resolve(ns.auth)
        if isinstance(auth, str):
            auth = {"token": auth}
        await self.call("$auth", auth, namespace=namespace, timeout=timeout)
        return True

    async def disconnect_namespace(self, namespace: str) -> None:
        ns = self._ns[namespace]
        if ns.connected:
            await self._send(Disconnect(namespace, "client disconnect"))
        ns.connected = False

    async def close(self) -> None:
        """Close for good (1000): the server forgets the sessions."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close(1000)
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            sup.cancel()
            try:
                await sup
            except (asyncio.CancelledError, Exception):
                pass
        for task in list(self._tasks):
            task.cancel()
        self._set_state(ClientState.CLOSED)

    def kill_transport(self) -> None:
        """Drop the socket without a close frame, as a network failure would (for tests)."""
        ws = self._ws
        if ws is not None:
            self._ready.clear()
            for ns in self._ns.values():
                ns.connected = False
            ws.transport.abort()

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Connection loop -------------------------------------------------------------------

    def _set_state(self, state: ClientState) -> None:
        if state is self.state:
            return
        self.state = state
        for listener in self._state_listeners:
            try:
                listener(state)
            except Exception:
                logger.exception("state listener failed")

    async def _supervise(self) -> None:
        delays = self._backoff()
        attempts = 0
        self._set_state(ClientState.CONNECTING)
        while not self._closing:
            code: int | None = None
            self._opened = False
            try:
                code = await self._session()
                # (Not ``self._ready``: kill_transport() clears it before the session ends.)
                if self._opened:
                    attempts = 0
                    delays = self._backoff()
            except InvalidStatus as exc:
                http = exc.response.status_code
                if http not in (429, 502, 503, 504):
                    self._fail(ClientClosed(f"handshake refused with HTTP {http}", None))
                    return
            except (OSError, ConnectionClosed, TimeoutError, asyncio.IncompleteReadError) as exc:
                logger.debug("connection attempt failed: %r", exc)
            except ConnectRefused as exc:
                self._fail(exc)
                return
            finally:
                self._ws = None
                self._ready.clear()
                for ns in self._ns.values():
                    if ns.connected:
                        ns.connected = False
                        self._dispatch_local(ns.name, "disconnect", {"code": code})
            self.last_close_code = code
            if self._closing:
                break
            if code is not None and not status.is_retryable(code):
                self._fail(ClientClosed(f"closed by the server with {code}", code))
                return
            if not self.reconnection:
                self._fail(ClientClosed(f"connection lost ({code})", code))
                return
            attempts += 1
            if self.reconnection_attempts is not None and attempts > self.reconnection_attempts:
                self._fail(ClientClosed("gave up reconnecting", code))
                return
            self._set_state(ClientState.RECONNECTING)
            await asyncio.sleep(next(delays))
            self.reconnects += 1
            self._url_index = (self._url_index + 1) % len(self.urls)

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._set_state(ClientState.CLOSED)
        for ns in self._ns.values():
            for item in list(ns.outgoing.pending.values()):
                if item.waiter is not None and not item.waiter.done():
                    item.waiter.set_exception(exc)

    async def _session(self) -> int | None:
        """One WebSocket, from open to close; returns the close code."""
        async with websockets.connect(
            self.url,
            subprotocols=[self.codec.subprotocol],  # type: ignore[list-item]
            origin=self.origin,  # type: ignore[arg-type]
            compression="deflate" if self.compression else None,
            ping_interval=None,
            max_size=None,
            open_timeout=self.connect_timeout,
            close_timeout=2,
        ) as ws:
            self._ws = ws
            self._retry_close = False
            for ns in self._ns.values():
                ns.token_retries = 0
                await self._send_connect(ns)
            try:
                while True:
                    async with asyncio.timeout(self._silence):
                        message = await ws.recv()
                    await self._handle(message if isinstance(message, bytes) else message.encode())
            except TimeoutError:
                logger.info("no frame from the server within %.1f s: reconnecting", self._silence)
                ws.transport.abort()
                return None
            except ConnectionClosed as exc:
                if self._retry_close:
                    return None
                return exc.rcvd.code if exc.rcvd is not None else None

    async def _send(self, frame: Any) -> None:
        ws = self._ws
        if ws is None:
            return
        raw = self.codec.encode(frame)
        if len(raw) > self.max_message_size:
            raise ValueError(f"message of {len(raw)} bytes exceeds the server's max_message_size")
        try:
            await ws.send(raw if self.codec.binary else raw.decode())
        except ConnectionClosed:
            pass

    async def _send_pending(self, ns: _Namespace, ack_id: int) -> None:
        item = ns.outgoing.pending.get(ack_id)
        if item is None:
            return
        item.sent = True
        await self._send(Event(ns.name, item.event, self.codec.encode_payload(item.data), item.id))

    async def _send_connect(self, ns: _Namespace) -> None:
        auth = await _resolve(ns.auth)
        if isinstance(auth, str):
            auth = {"token": auth}
        positions = dict(ns.positions.rooms) if ns.session else None
        await self._send(Connect(ns.name, self.codec.encode_payload(auth), ns.session, positions))

    # Incoming frames -------------------------------------------------------------------

    async def _handle(self, raw: bytes) -> None:
        frame = self.codec.decode_any(raw)
        if type(frame) is Event:
            await self._on_event(frame)
        elif type(frame) is Ack:
            self._on_ack(frame)
        elif type(frame) is Ping:
            await self._send(Pong())
        elif type(frame) is Connected:
            await self._on_connected(frame)
        elif type(frame) is ConnectError:
            await self._on_connect_error(frame)
        elif type(frame) is Hello:
            self._silence = frame.ping_interval + frame.ping_timeout
            self.max_message_size = frame.max_message_size
        elif type(frame) is Disconnect:
            ns = self._ns.get(frame.ns)
            if ns is not None:
                ns.connected = False
                ns.session = None
                ns.positions.reset()
                self._dispatch_local(frame.ns, "disconnect", {"reason": frame.reason})
        elif type(frame) is Error:
            logger.warning("server error frame: %s %s", frame.code, frame.message)

    async def _on_connected(self, frame: Connected) -> None:
        ns = self._ns.get(frame.ns)
        if ns is None:
            return
        if not frame.recovered:
            ns.positions.reset()
        ns.sid, ns.session, ns.recovered = frame.sid, frame.session, frame.recovered
        ns.connected = True
        self._opened = True
        ns.token_retries = 0
        info = {"sid": frame.sid, "recovered": frame.recovered, "recovery_failed": frame.recovery_failed}
        self._dispatch_local(ns.name, "connect", info)
        if frame.recovery_failed:
            self._dispatch_local(ns.name, "recovery_failed", {"sid": frame.sid})
        for item in ns.outgoing.to_send(time.monotonic()):
            await self._send_pending(ns, item.id)
        if all(n.connected for n in self._ns.values()):
            self._ready.set()
            self._set_state(ClientState.CONNECTED)

    async def _on_connect_error(self, frame: ConnectError) -> None:
        ns = self._ns.get(frame.ns)
        if ns is None:
            return
        self._dispatch_local(
            frame.ns, "connect_error", {"code": frame.code, "message": frame.message, "retryable": frame.retryable}
        )
        # Retries keep the session: nothing was restored yet, and it may still recover
        # (say the server's backend was down for a moment).
        if frame.code == status.INVALID_TOKEN and callable(ns.auth) and ns.token_retries < 2:
            ns.token_retries += 1
            await self._send_connect(ns)
            return
        if frame.retryable and (frame.code != status.INVALID_TOKEN or callable(ns.auth)):
            # The same input may work a bit later (a limit, a provider with a fresh token
            # by then): reconnect with backoff.  A fixed token that is invalid never will.
            self._retry_close = True
            ws = self._ws
            if ws is not None:
                await ws.close(1000)
            return
        ns.session = None
        raise ConnectRefused(frame.ns, frame.code, frame.message)

    def _on_ack(self, frame: Ack) -> None:
        ns = self._ns.get(frame.ns)
        if ns is None:
            return
        item = ns.outgoing.acked(frame.id)
        if item is None:
            return
        if item.waiter is None:
            # A plain emit has nobody waiting: an error must still not vanish silently.
            if frame.error is not None and frame.error.code != "duplicate":
                logger.warning(
                    "emit %r on %s was refused: %s %s", item.event, frame.ns, frame.error.code, frame.error.message
                )
                self._dispatch_local(
                    frame.ns, "error", {"event": item.event, "code": frame.error.code, "message": frame.error.message}
                )
            return
        if item.waiter.done():
            return
        if frame.error is not None:
            if frame.error.code == "duplicate":
                item.waiter.set_result(None)
            else:
                item.waiter.set_exception(AckError(frame.error.code, frame.error.message))
        else:
            item.waiter.set_result(self._decode(frame.data))

    async def _on_event(self, frame: Event) -> None:
        ns = self._ns.get(frame.ns)
        if ns is None:
            return
        if frame.offset is not None and frame.room is not None and frame.epoch is not None:
            if not ns.positions.accept(frame.room, frame.epoch, frame.offset):
                return
        data = self._decode(frame.data)
        if frame.event == "$resync" and isinstance(data, dict):
            ns.positions.reset(data.get("room"))
        handler = self._handlers.get((frame.ns, frame.event))
        if frame.id is None:
            if handler is not None:
                self._run_handler(handler, data)
            return
        if handler is None:
            await self._send(Ack(frame.ns, frame.id, self.codec.null, _error(status.UNKNOWN_EVENT)))
            return
        try:
            result = await _resolve_call(handler, data)
        except Exception:
            logger.exception("handler for server call %r failed", frame.event)
            await self._send(Ack(frame.ns, frame.id, self.codec.null, _error(status.INTERNAL_ERROR)))
            return
        await self._send(Ack(frame.ns, frame.id, self.codec.encode_payload(result)))

    def _dispatch_local(self, namespace: str, event: str, data: Any) -> None:
        handler = self._handlers.get((namespace, event))
        if handler is not None:
            self._run_handler(handler, data)

    def _run_handler(self, handler: Handler, data: Any) -> None:
        try:
            result = handler(data)
        except Exception:
            logger.exception("event handler failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _decode(self, raw: msgspec.Raw) -> Any:
        if self.codec.binary:
            return msgspec.msgpack.decode(raw)
        return msgspec.json.decode(raw)

    def __repr__(self) -> str:
        return f"RealtimeClient(url={self.url!r}, state={self.state.value}, namespaces={sorted(self._ns)!r})"


def _error(code: str) -> Any:
    from ..frames import ErrorInfo

    return ErrorInfo(code, code)


async def _resolve(provider: TokenProvider) -> Any:
    value = provider() if callable(provider) else provider
    if inspect.isawaitable(value):
        value = await value
    return value


async def _resolve_call(handler: Handler, data: Any) -> Any:
    result = handler(data)
    if inspect.isawaitable(result):
        result = await result
    return result


__all__ = ["AckError", "AckTimeout", "ClientClosed", "ClientState", "ConnectRefused", "RealtimeClient"]
