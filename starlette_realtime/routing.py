"""``RealtimeRouter``: the ASGI app users mount, and the lifetime of the node it runs.

It routes: a WebSocket handshake (origin, subprotocol, capacity) to a
:class:`~starlette_realtime.link.Link`, HTTP requests to the static files, and
lifespan events to start-up and shutdown.  Everything else is composed here
from small modules: the session core (per socket), the hub (fan-out),
membership, recovery and sessions, the heartbeat scheduler, the origin policy
and the cluster control responder.  docs/architecture.md draws the layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import types
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import anyio
from starlette.routing import Mount, WebSocketRoute

from . import status
from .backends import Backend, backend_from_url
from .cluster import Cluster
from .codec import Codec, codecs
from .config import RealtimeConfig
from .contract.check import UndeclaredEmits
from .contract.serve import ContractFiles
from .control import ControlResponder
from .core import EventRules, SessionCore
from .emitter import Publisher
from .endpoint import RealtimeEndpoint
from .heartbeat import HeartbeatScheduler
from .hub import Hub
from .identity import user_key
from .lifecycle import Lifecycle
from .limits import Limits
from .link import Link
from .logs import log_fields, quiet_refused_handshakes, refused_handshake
from .membership import Membership
from .metrics import Metrics, ReportsReconnects
from .operations import ClusterOperations
from .origin import OriginPolicy, same_origin
from .recovery import Recovery
from .session import Sessions, SessionSigner
from .socketio.server import SocketIOOptions, SocketIOServer
from .static import deny, serve_http
from .wire import Wire

logger = logging.getLogger(__name__)


class RealtimeRouter(ClusterOperations):
    """The mountable ASGI app serving one WebSocket endpoint for several namespaces.

    Args:
        endpoints: endpoint classes (or instances), one per namespace.
        backend: a backend URL (``memory://``, ``redis://...``) or a backend object.
        secret_key: key(s) signing session strings; newest first. Every node of a
            cluster needs the same one. A random key (the default) limits recovery
            to this process.
        allowed_origins: exact origins (``https://app.example``) allowed to open a
            WebSocket; others get HTTP 403 (close 1008 before accept); ``["*"]`` allows any.
            ``None`` (the default) allows only the page's own origin (the Origin's host
            and port equal the Host header) when the handshake carries credentials a
            browser sends by itself: an endpoint uses ``SessionAuth`` or ``StarletteAuth``,
            or a ``SessionMiddleware`` or ``AuthenticationMiddleware`` wraps the router.
            Otherwise ``None`` allows any origin.
        allow_missing_origin: whether a handshake without an Origin header is allowed.
            Browsers always send one, so a handshake without one is not cross-site
            WebSocket hijacking; refuse them to keep out non-browser clients that do not
            set it (which could just as well forge one).
        limits: per-connection and per-process limits.
        metrics: where counts go (a :class:`Metrics`; the default counts nothing).
        node_id: this node's name (random by default).
        contract: serve the app's contract, ``<mount>/asyncapi.json`` (AsyncAPI 3.0) and
            ``<mount>/types.d.ts`` (TypeScript), built from the endpoints (docs/contract.md).
        socketio: also serve the Socket.IO clients (protocol v5 on Engine.IO v4) at
            ``/socket.io/`` under the mount, with the same endpoints (docs/socketio.md);
            a :class:`~starlette_realtime.socketio.SocketIOOptions` sets its path and recovery.
        **options: any field of :class:`RealtimeConfig` (e.g. ``connect_timeout=10.0``).
    """

    def __init__(
        self,
        endpoints: Sequence[type[RealtimeEndpoint] | RealtimeEndpoint],
        *,
        backend: str | Backend = "memory://",
        secret_key: str | bytes | Sequence[str | bytes] | None = None,
        allowed_origins: Iterable[str] | None = None,
        allow_missing_origin: bool = True,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
        node_id: str | None = None,
        contract: bool = False,
        socketio: bool | SocketIOOptions = False,
        **options: Any,
    ) -> None:
        self.config = RealtimeConfig(**options)
        self.endpoints: dict[str, RealtimeEndpoint] = {}
        for ep in endpoints:
            instance = ep() if isinstance(ep, type) else ep
            if instance.namespace in self.endpoints:
                raise ValueError(f"two endpoints for namespace {instance.namespace!r}")
            self.endpoints[instance.namespace] = instance
        self.backend: Backend = backend_from_url(backend) if isinstance(backend, str) else backend
        if secret_key is None:
            keys: list[str | bytes] = [secrets.token_bytes(32)]
        elif isinstance(secret_key, (str, bytes)):
            keys = [secret_key]
        else:
            keys = list(secret_key)
        # No age limit on the string: the window counts from the drop (the saved state's TTL).
        self.signer = SessionSigner(keys)
        self.origins = OriginPolicy(
            allowed_origins,
            allow_missing=allow_missing_origin,
            ambient=any(getattr(ep.auth, "ambient_credentials", False) for ep in self.endpoints.values()),
        )
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        # One name per node: the backend's (e.g. the Redis registry's) when it has one.
        backend_node = getattr(self.backend, "node_id", None)
        self.node_id = node_id or (backend_node if isinstance(backend_node, str) else None) or secrets.token_hex(4)
        self.codecs: dict[str, Codec] = codecs()
        self.hub = Hub(self.metrics)
        for instance in self.endpoints.values():
            for event, fn in instance.filters.items():
                self.hub.set_filter(instance.namespace, event, types.MethodType(fn, instance))
        # Development mode: emits checked against the endpoints' declared events (docs/contract.md).
        check = UndeclaredEmits(self.endpoints.values()) if self.config.check_emits else None
        self.publisher = Publisher(self.backend, check)
        for instance in self.endpoints.values():
            instance.attach(self, self.publisher)
        self.links: set[Link] = set()
        self._drained: anyio.Event | None = None  # set once the last link is gone, while shutting down
        #: The app's contract served under the mount (docs/contract.md), when ``contract=True``.
        self.contract = ContractFiles(self) if contract else None
        #: The Socket.IO endpoint at ``/socket.io/`` (docs/socketio.md), when ``socketio=True``.
        self.socketio = SocketIOServer(
            self.serve, allows_origin=self.origins.allows, ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout, max_payload=self.config.max_message_size,
            max_sessions=self.limits.max_connections, options=socketio,
        ) if socketio else None
        # The monotonic clock of the node: heartbeats, token buckets, deadlines.  A Limits
        # with a clock of its own (a test's manual clock) sets it for all of them.
        self.clock = self.limits.clock
        #: Seconds since the epoch, the clock of credential expiry (``Identity.expires_at``).
        self.wall_clock = time.time
        #: The events of each namespace with their rate limits: one table for every session core.
        self.rules: EventRules = {
            ns: {name: (h.rate, h.burst) if h.rate is not None else None for name, h in ep.handlers.items()}
            for ns, ep in self.endpoints.items()
        }
        self.membership = Membership(self.hub, self.backend, self.limits)
        self.sessions = Sessions(
            self.backend, window=self.config.recovery_window, grace=self.config.handler_grace,
            write_through=self.config.write_through,
        )
        self.recovery = Recovery(self.backend, self.sessions, self.signer, self.membership, self.hub, self.metrics)
        self.lifecycle = Lifecycle(
            config=self.config, metrics=self.metrics, node_id=self.node_id, clock=self.clock,
            endpoints=self.endpoints, membership=self.membership, recovery=self.recovery,
            sessions=self.sessions, publisher=self.publisher,
        )
        self.control = ControlResponder(self.node_id, self.hub, self.links, metrics=self.metrics)
        cfg = self.config
        self.heartbeat = HeartbeatScheduler(
            clock=self._now, wall_clock=lambda: self.wall_clock(), interval=cfg.ping_interval,
            timeout=cfg.ping_timeout, connect_timeout=cfg.connect_timeout, on_tick=self.metrics.tick,
        )
        self._started = False
        self._accepting = True
        self._start_lock: asyncio.Lock | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lazy_task: asyncio.Task[None] | None = None
        if isinstance(self.backend, Cluster):
            self.backend.on_control(self.control)
        if isinstance(self.backend, ReportsReconnects):
            self.backend.on_reconnect(self.metrics.backend_reconnected)

    def _now(self) -> float:
        # Through the attribute, so that tests may swap ``router.clock``.
        return self.clock()

    @property
    def users(self) -> dict[str, int]:
        """Open namespace connections per user key on this node."""
        return self.membership.users

    def mount(self, app: Any, path: str = "/realtime") -> None:
        """Serve this router at ``path`` of a Starlette app, with and without a trailing slash.

        ``app.mount(path, router)`` alone serves ``path/`` and below; a WebSocket to ``path``
        itself (``ws://host/realtime``, as docs/protocol.md writes it) would get a 403 from
        Starlette's router.  This adds both routes.

        Args:
            app: a Starlette (or FastAPI) application or router.
            path: the mount path, without a trailing slash.
        """
        path = path.rstrip("/")
        routes = getattr(app, "router", app).routes
        routes.append(WebSocketRoute(path, self))
        routes.append(Mount(path, app=self))  # type: ignore[arg-type]  # an ASGI app typed with dicts

    # Lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> RealtimeRouter:
        """Start the backend and the heartbeat scheduler."""
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.backend.start(self.hub.deliver)
            stack.push_async_callback(self.backend.stop)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(self.heartbeat.run)
            tg.start_soon(self.sessions.keep_alive)
            if self.socketio is not None:
                await stack.enter_async_context(self.socketio)
            quiet_refused_handshakes()
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._started = True
        self._accepting = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close every connection (1001, in batches), then stop the backend."""
        await self.shutdown()
        stack, self._stack = self._stack, None
        self._started = False
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A Starlette ``lifespan``: ``Starlette(lifespan=realtime.lifespan)``."""
        async with self:
            yield

    async def _lazy_start(self) -> None:
        # Mounted apps get no lifespan events from Starlette, so the first WebSocket
        # starts the node; the heartbeat scheduler then runs in a task of its own.
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            await self.backend.start(self.hub.deliver)
            quiet_refused_handshakes()
            self._lazy_task = asyncio.get_running_loop().create_task(self._background())
            self._lazy_task.add_done_callback(_log_crash)
            self._started = True
            logger.info("realtime node %s started on first connection (no lifespan)", self.node_id)

    async def _background(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.heartbeat.run)
            tg.start_soon(self.sessions.keep_alive)

    async def shutdown(self) -> None:
        """Stop accepting, then close every WebSocket with 1001 in batches.

        Each WebSocket is closed once its running handler finished or after
        ``shutdown_timeout``; batches of ``shutdown_batch`` are ``shutdown_interval``
        apart so that clients do not all reconnect at once.
        """
        self._accepting = False
        cfg = self.config
        deadline = self.clock() + cfg.shutdown_timeout
        links = list(self.links)
        for start in range(0, len(links), cfg.shutdown_batch):
            for link in links[start : start + cfg.shutdown_batch]:
                with anyio.move_on_after(max(0.0, deadline - self.clock())):
                    await link.wait_idle()
                link.abort(status.WS_1001_GOING_AWAY, "server shutdown")
            if start + cfg.shutdown_batch < len(links):
                await anyio.sleep(cfg.shutdown_interval)
        if self.links:
            self._drained = anyio.Event()
            with anyio.move_on_after(max(0.0, deadline - self.clock()) + 1.0):
                await self._drained.wait()
        if self._lazy_task is not None:
            self._lazy_task.cancel()
            self._lazy_task = None

    # ASGI --------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if self.socketio is not None and kind != "lifespan" and self.socketio.handles(scope):
            if not self._started:
                await self._lazy_start()
            await self.socketio(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await serve_http(scope, send, extra=self.contract.get if self.contract is not None else None)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self._started:
            await self._lazy_start()
        if not self.origins.allows(scope):
            logger.info(
                "handshake refused, closing with 1008: foreign origin",
                extra=log_fields(None, reason="foreign origin", close_code=status.WS_1008_POLICY_VIOLATION),
            )
            refused_handshake.set(True)
            await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION})
            return
        codec = next((self.codecs[p] for p in scope.get("subprotocols", ()) if p in self.codecs), None)
        if codec is None:
            await deny(scope, send, 400, "unsupported subprotocol: offer rt.v1.json or rt.v1.msgpack")
            return
        if not self._accepting:
            await deny(scope, send, 503, "server shutting down")
            return
        await send({"type": "websocket.accept", "subprotocol": codec.subprotocol})
        max_conn = self.limits.max_connections
        if max_conn is not None and len(self.links) >= max_conn:
            await send({"type": "websocket.close", "code": status.WS_1013_TRY_AGAIN_LATER, "reason": "server full"})
            return
        await self.serve(scope, receive, send, codec)

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any, wire: Wire) -> None:
        """Serve an accepted socket until it closes: register a :class:`Link` for it and run it.

        A second wire (or a transport that is not a WebSocket) calls this with its own
        :class:`~starlette_realtime.wire.Wire` and ASGI-websocket-shaped ``receive``/``send``.
        """
        cfg = self.config
        core = SessionCore(
            self.rules, self.limits, now=self.clock(), ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout, connect_timeout=cfg.connect_timeout, binary=wire.binary, null=wire.null,
        )
        link = Link(self.lifecycle, scope, receive, send, wire, core)
        self.links.add(link)
        self.heartbeat.add(link)
        try:
            await link.run()
        except Exception:
            # A crash is not a close on purpose (1000, after which clients stop for good).
            if link.close_with is None:
                link.close_with = (status.WS_1011_INTERNAL_ERROR, "internal error")
            raise
        finally:
            self.links.discard(link)
            if not self.links and self._drained is not None:
                self._drained.set()
            if link.remote_code is None:
                code, reason = link.close_with or (status.WS_1000_NORMAL_CLOSURE, "")
                # uvicorn's send waits until the transport drains: a slow consumer's close
                # frame goes out once it reads its backlog, if it does within this time.
                with anyio.move_on_after(5.0, shield=True):
                    with contextlib.suppress(Exception):
                        await send({"type": "websocket.close", "code": code, "reason": reason})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message = await receive()
        try:
            await self.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await self.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    def stats(self) -> dict[str, int]:
        """Counts for tests and dashboards: links, connections, rooms, hub deliveries."""
        return {
            "links": len(self.links),
            "connections": sum(len(link.connections) for link in self.links),
            "rooms": len(self.hub.rooms),
            "users": len(self.membership.users),
            "deliveries": self.hub.deliveries,
        }

    def __repr__(self) -> str:
        return f"RealtimeRouter(namespaces={sorted(self.endpoints)!r}, backend={self.backend!r})"


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("realtime heartbeat scheduler crashed", exc_info=task.exception())


__all__ = ["RealtimeConfig", "RealtimeRouter", "same_origin", "user_key"]
