"""The life of a namespace connection on this node: open, run its events, close.

:class:`Lifecycle` is what a :class:`~starlette_realtime.link.Link` is handed as
its node (:class:`~starlette_realtime.link.LinkNode`): the link's core decides
*that* a namespace opens or an event runs, this decides *how*: authentication,
``on_connect``, recovery, the handler, ``on_disconnect``, leaving rooms, saving
the session.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import anyio
import msgspec

from . import status
from .config import RealtimeConfig
from .connection import Connection, ConnectionState, Hooks
from .core import DedupWindow, Dispatch
from .emitter import Publisher
from .exceptions import Rejected
from .fastpath import message_frame
from .frames import PROTOCOL_VERSION, Connect, Hello, Ping
from .identity import user_key
from .invoke import Invoker, Owner
from .link import Link
from .logs import log_fields
from .membership import Membership
from .metrics import Metrics
from .recovery import Recovery
from .session import Sessions, SessionState
from .wire import Wire

logger = logging.getLogger(__name__)


class Endpoint(Hooks, Owner, Protocol):
    """The hooks of a namespace (a :class:`~starlette_realtime.RealtimeEndpoint`)."""

    async def on_connect(self, conn: Connection) -> None: ...

    async def on_disconnect(self, conn: Connection, reason: str) -> None: ...


class Lifecycle:
    """Opens, runs and closes the namespace connections of one node.

    Args:
        config: the router's settings.
        metrics: where counts go.
        node_id: this node's name.
        clock: the monotonic clock.
        endpoints: the endpoint of each namespace.
        membership: room membership on this node.
        recovery: establishes connections and resumes sessions.
        sessions: the session store.
        publisher: turns emits into publications.
    """

    def __init__(
        self,
        *,
        config: RealtimeConfig,
        metrics: Metrics,
        node_id: str,
        clock: Callable[[], float],
        endpoints: Mapping[str, Endpoint],
        membership: Membership,
        recovery: Recovery,
        sessions: Sessions,
        publisher: Publisher,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.node_id = node_id
        self.clock = clock
        self.endpoints = endpoints
        self.membership = membership
        self.recovery = recovery
        self.sessions = sessions
        self.publisher = publisher
        self.invoker = Invoker(metrics, self.persist if sessions.write_through else None)
        self._hello: dict[str, tuple[dict[str, Any], int]] = {}
        self._bind_dispatch()
        self._ping: dict[str, tuple[dict[str, Any], int, bytes]] = {}
        if sessions.write_through:
            membership.on_change = self._changed

    def hello(self, wire: Wire) -> tuple[dict[str, Any], int]:
        """The HELLO message of this node on ``wire``, encoded once per wire."""
        cached = self._hello.get(wire.name)
        if cached is None:
            cfg = self.config
            raw = wire.encode(
                Hello(PROTOCOL_VERSION, self.node_id, cfg.ping_interval, cfg.ping_timeout, cfg.max_message_size)
            )
            cached = self._hello[wire.name] = (wire.message(raw), len(raw))
        return cached

    def ping(self, wire: Wire) -> tuple[dict[str, Any], int, bytes]:
        """The PING message on ``wire``, its size and its pre-built WebSocket frame, once per wire."""
        cached = self._ping.get(wire.name)
        if cached is None:
            raw = wire.encode(Ping())
            message = wire.message(raw)
            cached = self._ping[wire.name] = (message, len(raw), message_frame(message))
        return cached

    def owner(self, link: Link) -> str:
        """The owner mark of a socket's sessions in the backend: this node and this socket."""
        return f"{self.node_id}/{link.id}"

    def state(self, link: Link, conn: Connection) -> SessionState:
        """What a connection's session is now: its user, streams with positions, dedup window."""
        window = link.core.windows.get(conn.namespace)
        dedup = None if window is None else window.export(conn.codec.to_json)
        return SessionState(user_key(conn.user), dict(conn.joined), -1 if window is None else window.high, dedup)

    def persist(self, link: Link, conn: Connection) -> None:
        """Note that a session changed: the node writes it through to the backend within ``flush_interval``."""
        self.sessions.changed(conn.namespace, conn.sid, lambda: self.state(link, conn), self.owner(link))

    async def _changed(self, conn: Connection) -> None:
        link = conn.link
        if isinstance(link, Link):
            self.persist(link, conn)

    async def open(self, link: Link, frame: Connect) -> tuple[Connection, DedupWindow | None]:
        """Authenticate, run ``on_connect``, establish (with recovery) and send CONNECTED.

        Raises:
            Rejected: the connection is refused (the link answers CONNECT_ERROR).
        """
        ns = frame.ns
        endpoint = self.endpoints[ns]
        conn = Connection(secrets.token_urlsafe(12), ns, link, endpoint, self.membership, self.publisher)
        try:
            try:
                raw = bytes(frame.auth)
                conn.auth = None if raw in (b"null", b"\xc0") else conn.codec.payload_decoder(Any)(frame.auth)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                raise Rejected(status.REJECTED, "undecodable auth payload") from None
            conn.user = await endpoint.authenticate(conn)
            link.track_expiry(conn)
            self.membership.check_user_limit(conn)
            await endpoint.on_connect(conn)
            window = await self.recovery.establish(conn, frame)
        except Rejected as exc:
            await self.membership.forget(conn)
            conn.state = ConnectionState.CLOSED
            logger.info(
                "connection refused with %s (link=%s sid=%s namespace=%s)", exc.code, link.id, conn.sid, ns,
                extra=log_fields(link, conn, reason=exc.code),
            )
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.membership.forget(conn)
            conn.state = ConnectionState.CLOSED
            raise
        self.sessions.opened(ns, conn.sid, user_key(conn.user), link.supersede)
        if self.sessions.write_through:
            # From now on the session lives in the backend too: a crash of this node loses nothing.
            dedup = None if window is None else window.export(conn.codec.to_json)
            state = SessionState(user_key(conn.user), dict(conn.joined), -1 if window is None else window.high, dedup)
            await self.sessions.put(ns, conn.sid, state, owner=self.owner(link), create=True)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "connection opened (link=%s sid=%s namespace=%s recovered=%s)", link.id, conn.sid, ns, conn.recovered,
                extra=log_fields(link, conn),
            )
        return conn, window

    async def dispatch(self, link: Link, conn: Connection, action: Dispatch) -> None:
        """Run one event's handler (its answer goes to the link)."""
        await self.invoker.dispatch(link, conn, action)

    def _bind_dispatch(self) -> None:
        # The reader's hot path goes straight to the invoker: one coroutine less per event.
        self.dispatch = self.invoker.dispatch  # type: ignore[method-assign]

    async def close(
        self, link: Link, conn: Connection, reason: str, *, was_open: bool, keep_session: bool,
        window: DedupWindow | None,
    ) -> None:
        """Run ``on_disconnect``, leave every room, and save the session when asked."""
        try:
            if was_open:
                try:
                    await self.endpoints[conn.namespace].on_disconnect(conn, reason)
                except Exception:
                    logger.exception(
                        "on_disconnect failed (link=%s sid=%s namespace=%s)", link.id, conn.sid, conn.namespace,
                        extra=log_fields(link, conn, reason=reason),
                    )
        finally:
            streams = dict(conn.joined)
            await self.membership.forget(conn)
            if was_open:
                self.membership.uncount_user(conn)
            if keep_session and self.sessions.enabled:
                dedup = None if window is None else window.export(conn.codec.to_json)
                state = SessionState(user_key(conn.user), streams, -1 if window is None else window.high, dedup)
                await self.sessions.save(conn.namespace, conn.sid, state, owner=self.owner(link))
            self.sessions.closed(conn.namespace, conn.sid)

    def __repr__(self) -> str:
        return f"Lifecycle(node={self.node_id!r}, namespaces={sorted(self.endpoints)!r})"


__all__ = ["Endpoint", "Lifecycle"]
