"""``RealtimeClient``: namespaces, emits and calls, handlers, over the reconnecting connection loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..codec import Codec, JsonCodec, MsgpackCodec
from ..frames import Disconnect, Event, Frame
from .backoff import backoff as default_backoff
from .core import ClientCore
from .errors import AckTimeout, ClientClosed, NamespaceNotOpen
from .handlers import Handler
from .loop import ClientState, ConnectionLoop
from .namespace import AuthProvider, NamespaceState, resolve_auth
from .outgoing import Outgoing
from .stats import WireStats

logger = logging.getLogger(__name__)

#: The DISCONNECT reason of a client's own clean close; the server's ``on_disconnect`` gets it.
CLIENT_DISCONNECT = "client disconnect"


class RealtimeClient:
    """A reconnecting client for a starlette-realtime server.

    Args:
        url: the server's WebSocket URL (``ws://host/realtime``; a trailing slash is added), or a
            list of the URLs of equivalent nodes (a cluster sharing a backend and a ``secret_key``):
            the first connection goes to the first, and each reconnect attempt to the next one, in
            turn, so that a client whose node went away reaches another; sessions recover on any node.
        namespaces: the namespaces to open; only these (the default namespace ``"/"`` only when
            listed, or when this is not given).
        auth: the CONNECT auth payload, for every namespace: a value, or a sync or async callable
            asked on every (re)connect; a string is sent as ``{"token": value}``.
        namespace_auth: auth payloads by namespace (``{"/admin": provider}``), used instead of
            ``auth`` for the namespaces it names.
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

    Raises:
        ValueError: no URL or no namespace, or an unknown encoding.
        TypeError: ``auth`` looks like auth by namespace (use ``namespace_auth``).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        namespaces: Sequence[str] = ("/",),
        auth: AuthProvider = None,
        namespace_auth: Mapping[str, AuthProvider] | None = None,
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
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("no URL to connect to")
        if not namespaces:
            raise ValueError("no namespace to open")
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"unknown encoding {encoding!r}: 'json' or 'msgpack'")
        if isinstance(auth, Mapping) and auth and all(isinstance(k, str) and k.startswith("/") for k in auth):
            raise TypeError("auth= is the CONNECT payload itself; pass payloads by namespace as namespace_auth=")
        by_ns = dict(namespace_auth or {})
        unknown = set(by_ns) - set(namespaces)
        if unknown:
            raise ValueError(f"namespace_auth names namespaces that are not opened: {sorted(unknown)}")
        self.codec: Codec = MsgpackCodec() if encoding == "msgpack" else JsonCodec()
        self._ns: dict[str, NamespaceState] = {
            name: NamespaceState(name, by_ns.get(name, auth), Outgoing(queue_ttl, queue_max)) for name in namespaces
        }
        self.connect_timeout = connect_timeout
        self._core = core = ClientCore(self.codec, self._ns)
        #: What arrived on the wire, before the client drops duplicate room messages.
        self.wire_stats: WireStats = core.wire_stats
        self._loop = ConnectionLoop(
            # The router answers at its mount point with a trailing slash.
            [u if u.endswith("/") else u + "/" for u in urls],
            subprotocol=self.codec.subprotocol,
            on_open=core.on_open,
            on_message=core.on_message,
            on_closed=core.on_closed,
            on_failed=core.fail,
            on_state=core.set_state,
            backoff=backoff
            or (
                lambda: default_backoff(
                    first=reconnection_delay, maximum=reconnection_delay_max, randomization=randomization_factor
                )
            ),
            reconnection=reconnection,
            reconnection_attempts=reconnection_attempts,
            open_timeout=connect_timeout,
            origin=origin,
            compression=compression,
        )
        core.attach(self._loop)

    # Looking at it -------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """The URLs of the nodes, with trailing slashes."""
        return self._loop.urls

    @property
    def url(self) -> str:
        """The URL of the current connection (or of the next attempt): one of :attr:`urls`."""
        return self._loop.url

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this client opens (not those closed for good)."""
        return [name for name, ns in self._ns.items() if ns.active]

    @property
    def reconnects(self) -> int:
        """Reconnect attempts made so far."""
        return self._loop.reconnects

    @property
    def last_close_code(self) -> int | None:
        """The close code of the last WebSocket (``None``: it had none)."""
        return self._loop.last_close_code

    @property
    def state(self) -> ClientState:
        """The connection's state."""
        return self._core.state

    @property
    def max_message_size(self) -> int:
        """The server's largest message, from its HELLO (1 MiB until then)."""
        return self._core.max_message_size

    @property
    def _ws(self) -> Any:  # the current websockets connection, for tests that look at the handshake
        return self._loop.ws

    def sid(self, namespace: str = "/") -> str | None:
        """The connection id in ``namespace`` (``None`` until CONNECTED)."""
        return self._core.namespace(namespace, opened_only=False).sid

    def recovered(self, namespace: str = "/") -> bool:
        """Whether the last (re)connect of ``namespace`` resumed its session with nothing lost."""
        return self._core.namespace(namespace, opened_only=False).recovered

    @property
    def queued(self) -> int:
        """Events not yet acknowledged (sent or waiting in the offline queue)."""
        return sum(len(ns.outgoing) for ns in self._ns.values())

    @property
    def dropped(self) -> int:
        """Events dropped from the offline queue (expired or over ``queue_max``)."""
        return sum(ns.outgoing.dropped for ns in self._ns.values())

    # Handlers ------------------------------------------------------------------------------

    def on(self, event: str, handler: Handler | None = None, *, namespace: str = "/") -> Any:
        """Call ``handler`` for each ``event`` in ``namespace``; usable as ``@client.on("event")`` too.

        Every handler of an event runs, in the order added. A handler is sync or async and gets the
        payload, plus an :class:`EventMeta` (namespace, event, room, epoch, offset) when it takes a
        second positional parameter without a default (or named ``meta``). For a call from the
        server the first handler's return value is the ack. The event ``"*"`` adds a catch-all
        handler, called ``handler(event, data)`` (or ``handler(event, data, meta)``) for the
        server's events that have no handler of their own.

        Client events, the same as the browser client's: ``connect`` (data:
        ``{"sid", "recovered", "recovery_failed"}``), ``disconnect`` (``{"reason", "code"}``),
        ``recovery_failed``, ``connect_error`` (``{"code", "message", "retryable"}``), ``error``
        (``{"code", "message"}``, plus ``"event"`` for a refused emit); and from the server
        ``$resync`` and ``$presence``.

        Args:
            event: the event's name, or ``"*"``.
            handler: the handler; omitted, ``on`` returns a decorator.
            namespace: one of the client's namespaces.

        Returns:
            ``handler`` (or the decorator, which returns the function it decorates).

        Raises:
            NamespaceNotOpen: the client does not open ``namespace``.
        """
        ns = self._core.namespace(namespace, opened_only=False).name

        def register(func: Handler) -> Handler:
            self._core.handlers.add(ns, event, func)
            return func

        return register if handler is None else register(handler)

    def off(self, event: str, handler: Handler | None = None, *, namespace: str = "/") -> None:
        """Remove ``handler`` from ``event`` (every handler of the event when omitted)."""
        self._core.handlers.remove(namespace, event, handler)

    def on_state(self, listener: Callable[[ClientState], Any]) -> None:
        """Call ``listener(state)`` on each connection state change."""
        self._core.state_listeners.append(listener)

    def on_frame(self, listener: Callable[[Frame], Any]) -> None:
        """Call ``listener(frame)`` with every frame received, before anything is dropped (for tests)."""
        self._core.frame_listeners.append(listener)

    # Connecting ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and open every namespace.

        Raises:
            ConnectRefused: a namespace refused for good.
            ClientClosed: the server closed with a terminal code.
            TimeoutError: not connected within ``connect_timeout``.
        """
        if self._loop.task is None:
            self._core.failure = None
            self._loop.start()
        await self.wait_connected(self.connect_timeout)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until every namespace is open (again).

        Raises:
            ClientClosed: the client stopped for good meanwhile (or a :class:`ConnectRefused`).
            TimeoutError: not connected within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while True:
                if self._core.failure is not None:
                    raise self._core.failure
                if self._core.ready.is_set():
                    return
                waiter = asyncio.ensure_future(self._core.ready.wait())
                task = self._loop.task
                aws: set[asyncio.Future[Any]] = {waiter}
                if task is not None:
                    aws.add(task)
                try:
                    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if task is not None and task.done() and not self._core.ready.is_set():
                    raise self._core.failure or ClientClosed("client stopped")

    async def disconnect_namespace(self, namespace: str) -> None:
        """Close one namespace for good (DISCONNECT, reason ``client disconnect``); it is not reopened."""
        ns = self._core.namespace(namespace)
        if ns.connected:
            await self._core.send(Disconnect(ns.name, CLIENT_DISCONNECT))
        ns.closed_for_good(NamespaceNotOpen(ns.name, (), closed=True))
        self._core.check_ready()

    async def close(self) -> None:
        """Close for good: DISCONNECT (reason ``client disconnect``) for each open namespace, then close 1000.

        The server's ``on_disconnect`` gets ``"client disconnect"`` (a network drop gives
        ``"transport closed"``) and forgets the sessions. Calls still waiting fail with
        :class:`ClientClosed`.
        """
        for ns in self._ns.values():
            if ns.connected:
                await self._core.send(Disconnect(ns.name, CLIENT_DISCONNECT))
                ns.connected = False
                self._core.local(ns.name, "disconnect", {"reason": CLIENT_DISCONNECT, "code": None})
        await self._loop.stop()
        self._core.handlers.cancel()
        closed = ClientClosed("closed by the client")
        for ns in self._ns.values():
            ns.fail_pending(closed)
        self._core.set_state(ClientState.CLOSED)

    def kill_transport(self) -> None:
        """Drop the socket without a close frame, as a network failure would (for tests)."""
        if self._loop.ws is not None:
            self._core.lost(None)
            self._loop.kill()

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Sending -------------------------------------------------------------------------------

    async def emit(self, event: str, data: Any = None, *, namespace: str = "/", volatile: bool = False) -> None:
        """Send an event; while offline it waits in the queue (``volatile`` ones are dropped).

        It is kept until the server acknowledges it and resent with the same id after a reconnect
        (the server runs each id once). An error ack is reported to the ``error`` handlers.

        Raises:
            NamespaceNotOpen: the client does not open ``namespace``.
        """
        ns = self._core.namespace(namespace)
        if volatile:
            if ns.connected:
                await self._core.send(Event(ns.name, event, self.codec.encode_payload(data)))
            return
        item = ns.outgoing.add(event, data, time.monotonic())
        if ns.connected:
            await self._core.send_pending(ns, item.id)

    async def call(self, event: str, data: Any = None, *, namespace: str = "/", timeout: float = 10.0) -> Any:
        """Send an event and return the server's acknowledgement.

        A call whose answer was lost with the connection is resent with the same id after the
        reconnect, and the server answers it again (it runs the handler once).

        Raises:
            AckTimeout: no ack within ``timeout`` (the event is then not sent later).
            AckError: the server answered with an error (``.code``, ``.message``); the code
                ``duplicate`` means it handled this id already but no longer has the answer.
            NamespaceNotOpen: the client does not open ``namespace``.
            ClientClosed: the client stopped for good before the answer came.
        """
        ns = self._core.namespace(namespace)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        item = ns.outgoing.add(event, data, time.monotonic(), fut)
        try:
            if ns.connected:
                await self._core.send_pending(ns, item.id)
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
        ns = self._core.namespace(namespace)
        if not ns.connected:
            return False
        await self.call("$auth", await resolve_auth(ns.auth), namespace=namespace, timeout=timeout)
        return True

    def __repr__(self) -> str:
        return f"RealtimeClient(url={self.url!r}, state={self.state.value}, namespaces={sorted(self._ns)!r})"
