"""``RealtimeRouter``: the ASGI app users mount, and the node it runs.

It negotiates the encoding, owns the node's hub, backend, heartbeat scheduler
and links, opens namespace connections (with recovery), and closes everything
on shutdown in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import types
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec

from . import status
from .backends import Backend, History, SessionStore, backend_from_url
from .cluster import Cluster, ControlReply, ControlRequest
from .codec import Codec, codecs
from .connection import Connection, ConnectionState
from .emitter import BroadcastOperator, Publisher
from .endpoint import RealtimeEndpoint
from .exceptions import Rejected
from .frames import Connect
from .hub import Hub
from .limits import Limits
from .link import Link, log_fields
from .metrics import Metrics, ReportsReconnects
from .protocol import HeartbeatAction, heartbeat_action
from .recovery import establish
from .rooms import room_error
from .session import STATE_ENCODER, SessionSigner, SessionState, session_key

logger = logging.getLogger(__name__)


class RealtimeConfig(msgspec.Struct, kw_only=True):
    """Settings of a router (all keyword arguments of :class:`RealtimeRouter`)."""

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_message_size: int = 1 << 20
    max_queue_messages: int = 1000
    max_queue_bytes: int = 1 << 20
    overflow: str = "disconnect"
    recovery_window: float = 120.0
    shutdown_batch: int = 500
    shutdown_interval: float = 0.1
    shutdown_timeout: float = 10.0
    control_timeout: float = 2.0


class RealtimeRouter:
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
        **options: any field of :class:`RealtimeConfig`.
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
        **options: Any,
    ) -> None:
        self.config = RealtimeConfig(**options)
        self.endpoints: dict[str, RealtimeEndpoint] = {}
        for ep in endpoints:
            instance = ep() if isinstance(ep, type) else ep
            if instance.namespace in self.endpoints:
                raise ValueError(f"two endpoints for namespace {instance.namespace!r}")
            instance._router = self
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
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.allow_missing_origin = allow_missing_origin
        self._ambient_credentials = any(
            getattr(ep.auth, "ambient_credentials", False) for ep in self.endpoints.values()
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
        self.publisher = Publisher(self.backend)
        self.links: set[Link] = set()
        self.users: dict[str, int] = {}
        self.clock = time.monotonic
        #: Seconds since the epoch, the clock of credential expiry (``Identity.expires_at``).
        self.wall_clock = time.time
        self._started = False
        self._accepting = True
        self._start_lock: asyncio.Lock | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lazy_task: asyncio.Task[None] | None = None
        if isinstance(self.backend, Cluster):
            self.backend.on_control(self.handle_control)
        if isinstance(self.backend, ReportsReconnects):
            self.backend.on_reconnect(self.metrics.backend_reconnected)

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
            tg.start_soon(self._heartbeats)
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
            self._lazy_task = asyncio.get_running_loop().create_task(self._heartbeats())
            self._lazy_task.add_done_callback(_log_crash)
            self._started = True
            logger.info("realtime node %s started on first connection (no lifespan)", self.node_id)

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
                while link.busy and self.clock() < deadline:
                    await anyio.sleep(0.01)
                link.abort(status.WS_1001_GOING_AWAY, "server shutdown")
            if start + cfg.shutdown_batch < len(links):
                await anyio.sleep(cfg.shutdown_interval)
        with anyio.move_on_after(max(0.0, deadline - self.clock()) + 1.0):
            while self.links:
                await anyio.sleep(0.01)
        if self._lazy_task is not None:
            self._lazy_task.cancel()
            self._lazy_task = None

    async def _heartbeats(self) -> None:
        cfg = self.config
        tick = max(0.05, min(1.0, cfg.ping_interval / 4, cfg.ping_timeout / 4))
        while True:
            await anyio.sleep(tick)
            self.metrics.tick()
            now = self.clock()
            wall = self.wall_clock()
            for link in list(self.links):
                # Credential expiry rides on this loop: no timer per connection.
                if link.expires_at is not None and wall >= link.expires_at:
                    link.check_expiry(wall)
                action = heartbeat_action(
                    now,
                    last_received=link.last_received,
                    ping_sent=link.ping_sent,
                    last_ping=link.last_ping,
                    interval=cfg.ping_interval,
                    timeout=cfg.ping_timeout,
                )
                if action is HeartbeatAction.PING:
                    link.last_ping = now
                    link.ping_sent = now
                    ping = link.protocol.ping()
                    link.outbox.push(link.codec.message(ping), len(ping), volatile=False)
                elif action is HeartbeatAction.TIMEOUT:
                    self.metrics.closed_by_server("heartbeat_timeout")
                    logger.info(
                        "heartbeat timeout, closing with 4005 (link=%s)", link.id,
                        extra=log_fields(link, reason="heartbeat timeout", close_code=status.WS_4005_HEARTBEAT_TIMEOUT),
                    )
                    link.abort(status.WS_4005_HEARTBEAT_TIMEOUT, "heartbeat timeout")

    # ASGI --------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self._started:
            await self._lazy_start()
        if not self._origin_allowed(scope):
            logger.info(
                "handshake refused, closing with 1008: foreign origin",
                extra=log_fields(None, reason="foreign origin", close_code=status.WS_1008_POLICY_VIOLATION),
            )
            await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION})
            return
        codec = next((self.codecs[p] for p in scope.get("subprotocols", ()) if p in self.codecs), None)
        if codec is None:
            await _deny(scope, send, 400, "unsupported subprotocol: offer rt.v1.json or rt.v1.msgpack")
            return
        if not self._accepting:
            await _deny(scope, send, 503, "server shutting down")
            return
        await send({"type": "websocket.accept", "subprotocol": codec.subprotocol})
        max_conn = self.limits.max_connections
        if max_conn is not None and len(self.links) >= max_conn:
            await send({"type": "websocket.close", "code": status.WS_1013_TRY_AGAIN_LATER, "reason": "server full"})
            return
        link = Link(self, scope, receive, send, codec)
        self.links.add(link)
        try:
            await link.run()
        except Exception:
            # A crash is not a close on purpose (1000, after which clients stop for good).
            if link.close_with is None:
                link.close_with = (status.WS_1011_INTERNAL_ERROR, "internal error")
            raise
        finally:
            self.links.discard(link)
            if link.remote_code is None:
                code, reason = link.close_with or (status.WS_1000_NORMAL_CLOSURE, "")
                with anyio.move_on_after(1.0, shield=True):
                    with contextlib.suppress(Exception):
                        await send({"type": "websocket.close", "code": code, "reason": reason})

    def _origin_allowed(self, scope: dict[str, Any]) -> bool:
        allowed = self.allowed_origins
        if allowed is None:
            # Cross-site hijacking needs credentials the browser adds by itself (cookies).
            if not (self._ambient_credentials or "session" in scope or "user" in scope):
                return True
        elif "*" in allowed:
            return True
        origin = host = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        if origin is None:
            return self.allow_missing_origin
        if allowed is not None:
            return origin in allowed
        return same_origin(origin, host)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        for name, ctype in (("client.js", b"text/javascript"), ("client.d.ts", b"application/typescript")):
            if path.endswith("/" + name):
                body = resources.files("starlette_realtime").joinpath("static", name).read_bytes()
                headers = [(b"content-type", ctype + b"; charset=utf-8"), (b"cache-control", b"no-cache")]
                await _respond(send, 200, body, headers)
                return
        await _respond(send, 426, b"this endpoint speaks WebSocket (subprotocol rt.v1.json or rt.v1.msgpack)\n",
                       [(b"content-type", b"text/plain; charset=utf-8"), (b"upgrade", b"websocket")])

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

    # Connections and rooms (used by Link and Connection) ---------------------

    async def _establish(self, conn: Connection, frame: Connect) -> None:
        await establish(self, conn, frame)

    async def _add_stream(self, conn: Connection, stream: str) -> None:
        if self.hub.rooms.add((conn.namespace, stream), conn.sid, conn):
            await self.backend.subscribe(conn.namespace, stream)
        if isinstance(self.backend, History):
            conn.joined[stream] = await self.backend.position(conn.namespace, stream)
        else:
            conn.joined[stream] = None

    async def _remove_stream(self, conn: Connection, stream: str) -> None:
        conn.joined.pop(stream, None)
        if self.hub.rooms.discard((conn.namespace, stream), conn.sid):
            await self.backend.unsubscribe(conn.namespace, stream)

    async def _join(self, conn: Connection, room: str) -> None:
        from .exceptions import LimitExceeded

        if len(conn.rooms) >= self.limits.max_rooms:
            raise LimitExceeded(f"at most {self.limits.max_rooms} rooms per connection")
        conn.rooms.add(room)
        await self._add_stream(conn, room)
        await conn.endpoint.on_join(conn, room)

    async def _leave(self, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        await self._remove_stream(conn, room)
        await conn.endpoint.on_leave(conn, room)

    async def _forget(self, conn: Connection, *, keep_session: bool = False) -> None:
        """Remove every trace of a connection; keep its session for recovery if asked."""
        joined = dict(conn.joined)
        rooms = list(conn.rooms) if conn.state is not ConnectionState.CONNECTING else []
        for stream in list(conn.joined):
            try:
                await self._remove_stream(conn, stream)
            except Exception:
                logger.exception(
                    "unsubscribe from %r failed (sid=%s namespace=%s)", stream, conn.sid, conn.namespace,
                    extra=log_fields(None, conn),
                )
        conn.rooms.clear()
        for room in rooms:
            try:
                await conn.endpoint.on_leave(conn, room)
            except Exception:
                logger.exception(
                    "on_leave failed (sid=%s namespace=%s room=%r)", conn.sid, conn.namespace, room,
                    extra=log_fields(None, conn),
                )
        conn.buffer = None
        key = user_key(conn.user)
        if key is not None and conn.state is not ConnectionState.CONNECTING:
            left = self.users.get(key, 0) - 1
            if left > 0:
                self.users[key] = left
            else:
                self.users.pop(key, None)
        if keep_session and isinstance(self.backend, SessionStore):
            state = SessionState(key, joined, conn.dedup.last_id)
            try:
                await self.backend.save_session(
                    session_key(conn.namespace, conn.sid), STATE_ENCODER.encode(state), self.config.recovery_window
                )
            except Exception:
                logger.warning(
                    "could not save the session for recovery (sid=%s namespace=%s)", conn.sid, conn.namespace,
                    exc_info=True, extra=log_fields(None, conn),
                )

    def check_user_limit(self, conn: Connection) -> None:
        limit = self.limits.max_connections_per_user
        key = user_key(conn.user)
        if limit is not None and key is not None and self.users.get(key, 0) >= limit:
            raise Rejected("TOO_MANY_CONNECTIONS", f"at most {limit} connections per user", retryable=True)

    def _count_user(self, conn: Connection) -> None:
        key = user_key(conn.user)
        if key is not None:
            self.users[key] = self.users.get(key, 0) + 1

    # Emitting and cluster-wide operations ----------------------------------------

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Target rooms from outside any connection (pass ``namespace=`` to ``emit``)."""
        return BroadcastOperator(self.publisher).to(*rooms)

    def to_sid(self, sid: str, *, namespace: str) -> BroadcastOperator:
        """Target one connection by sid, on whichever node it is."""
        return BroadcastOperator(self.publisher, namespace=namespace).to_sid(sid)

    async def emit(self, event: str, data: Any = None, *, namespace: str, volatile: bool = False) -> None:
        """Emit to every connection of a namespace, on every node."""
        await BroadcastOperator(self.publisher).emit(event, data, namespace=namespace, volatile=volatile)

    async def _control(self, request: ControlRequest) -> list[ControlReply]:
        if isinstance(self.backend, Cluster):
            return await self.backend.control(request, timeout=self.config.control_timeout)
        return [await self.handle_control(request)]

    async def members(self, room: str, *, namespace: str) -> list[str]:
        """The sids of the connections in a room, across every node that answers in time."""
        replies = await self._control(ControlRequest("members", namespace, room=room))
        return sorted({sid for r in replies for sid in r.items})

    async def rooms_of(self, sid: str, *, namespace: str) -> set[str] | None:
        """The rooms of a connection on any node (``None`` when no node has it)."""
        for reply in await self._control(ControlRequest("rooms", namespace, sid=sid)):
            if reply.found:
                return set(reply.items)
        return None

    async def join(self, sid: str, room: str, *, namespace: str) -> bool:
        """Make a connection on any node join a room; ``True`` when some node had it."""
        if room_error(room) is not None:
            raise ValueError(room_error(room))
        return any(r.found for r in await self._control(ControlRequest("join", namespace, sid=sid, room=room)))

    async def leave(self, sid: str, room: str, *, namespace: str) -> bool:
        """Make a connection on any node leave a room."""
        return any(r.found for r in await self._control(ControlRequest("leave", namespace, sid=sid, room=room)))

    async def disconnect(self, sid: str, *, namespace: str, reason: str = "disconnected by server") -> bool:
        """Close a namespace connection on any node."""
        req = ControlRequest("disconnect", namespace, sid=sid, reason=reason)
        return any(r.found for r in await self._control(req))

    async def disconnect_user(self, user: str, *, reason: str = "disconnected by server") -> int:
        """Close every WebSocket of a user on every node with 4503 (logout, ban); returns how many."""
        replies = await self._control(ControlRequest("disconnect_user", user=user, reason=reason))
        return sum(len(r.items) for r in replies)

    def local_connection(self, sid: str, namespace: str) -> Connection | None:
        from .rooms import sid_room

        members = self.hub.rooms.members((namespace, sid_room(sid)))
        return None if not members else members.get(sid)

    async def handle_control(self, req: ControlRequest) -> ControlReply:
        """Answer a cluster request for this node."""
        node = self.node_id
        if req.op == "members":
            members = self.hub.rooms.members((req.ns, req.room))
            return ControlReply(node, bool(members), list(members or ()))
        if req.op == "disconnect_user":
            closed = []
            for link in list(self.links):
                if any(user_key(c.user) == req.user for c in link.connections.values()):
                    closed.append(link.id)
                    link.abort(status.WS_4503_KICKED, req.reason or "kicked")
            return ControlReply(node, bool(closed), closed)
        conn = self.local_connection(req.sid, req.ns)
        if conn is None or conn.state is not ConnectionState.OPEN:
            return ControlReply(node, False)
        if req.op == "rooms":
            return ControlReply(node, True, sorted(conn.rooms))
        if req.op == "join":
            await conn.join(req.room)
        elif req.op == "leave":
            await conn.leave(req.room)
        elif req.op == "disconnect":
            await conn.disconnect(req.reason)
        return ControlReply(node, True)

    def stats(self) -> dict[str, int]:
        """Counts for tests and dashboards: links, connections, rooms, hub deliveries."""
        return {
            "links": len(self.links),
            "connections": sum(len(link.connections) for link in self.links),
            "rooms": len(self.hub.rooms),
            "users": len(self.users),
            "deliveries": self.hub.deliveries,
        }

    def __repr__(self) -> str:
        return f"RealtimeRouter(namespaces={sorted(self.endpoints)!r}, backend={self.backend!r})"


def user_key(user: Any) -> str | None:
    """A stable string identity for a user object (``None`` for anonymous)."""
    if user is None:
        return None
    if isinstance(user, str):
        return user
    for attr in ("identity", "id", "user_id", "username"):
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:
            continue
        if value is not None:
            return str(value)
    return str(user)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str, host: str | None) -> bool:
    """Tell whether an Origin header names the host (and port) of the Host header.

    Default ports are ignored on both sides, so that a TLS proxy in front of the
    server (``https://app.example`` to ``Host: app.example``) still matches.

    Args:
        origin: the Origin header, e.g. ``https://app.example:8443``.
        host: the Host header, e.g. ``app.example:8443``.

    Returns:
        ``True`` when they name the same host and port.
    """
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or not hostname:
        return False
    if ":" in hostname:
        hostname = f"[{hostname}]"
    netloc = hostname if port is None or port == default else f"{hostname}:{port}"
    host = host.lower()
    for suffix in (":80", ":443"):
        if host.endswith(suffix):
            host = host[: -len(suffix)]
    return netloc == host


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("realtime heartbeat scheduler crashed", exc_info=task.exception())


async def _respond(send: Any, code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _deny(scope: dict[str, Any], send: Any, code: int, text: str) -> None:
    if "websocket.http.response" in scope.get("extensions", {}) or {}:
        await send({
            "type": "websocket.http.response.start",
            "status": code,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        })
        await send({"type": "websocket.http.response.body", "body": text.encode()})
    else:
        await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION})


__all__ = ["RealtimeConfig", "RealtimeRouter", "user_key"]
