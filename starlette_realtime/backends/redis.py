"""The Redis backend (``redis://``, ``rediss://``, ``redis+cluster://``): many server processes behave as one.

Each room stream has its own pub/sub channel, Redis Stream (history) and
offset counter under one hash tag; see docs/deployment.md for the design, its
costs and its fault behaviour.  It runs on redis-py's asyncio clients, which
are asyncio-only: this backend does not run on trio.

This module composes the node from its parts (``redis_client``, ``redis_heartbeat``,
``redis_control``, ``redis_streams``, ``redis_pubsub``), which see it only through
the small protocols of ``redis_node`` and never import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

import anyio
import anyio.abc

from ..cluster import ControlHandler, ControlReply, ControlRequest
from ..exceptions import BackendUnavailable
from ..frames import Position
from .base import Deliver, HistoryReply, Publication
from .redis_client import Client, NodeClient
from .redis_control import ControlBus
from .redis_heartbeat import HeartbeatCallback, NodeHeartbeat
from .redis_pubsub import RedisSubscriber
from .redis_sessions import PUT_SESSION_LUA, TAKE_FINAL_LUA, RedisSessions
from .redis_streams import RoomStreams
from .redis_wire import LIVE_LUA, PUBLISH_LUA, READ_LUA, REGISTER_LUA, SKIP_AHEAD_LUA, Names

#: The Lua scripts the backend and its parts run, by name (:meth:`RedisBackend.script`).
SCRIPTS: Final[Mapping[str, str]] = {
    "publish": PUBLISH_LUA, "read": READ_LUA, "live": LIVE_LUA, "skip": SKIP_AHEAD_LUA,
    "register": REGISTER_LUA, "put_session": PUT_SESSION_LUA, "take_final": TAKE_FINAL_LUA,
}

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RedisBackend(RedisSessions):
    """A backend on Redis: pub/sub per room, Streams for history, cluster queries, sessions.

    Implements :class:`~starlette_realtime.backends.base.Backend`, ``History``,
    ``SessionStore``, ``HealthCheck`` and :class:`~starlette_realtime.cluster.Cluster`.
    It needs Redis 6.2 or newer (7.0 for Redis Cluster, whose sharded pub/sub it
    uses) and runs on redis-py's asyncio clients, so it is asyncio-only.

    Between :meth:`start` and :meth:`stop` the backend owns one anyio task group
    (in a background task) running the pub/sub subscriber's supervisor and the
    node heartbeat (``redis_heartbeat``).

    Other components may share the connection: :attr:`redis` is the client,
    :attr:`prefix` the key prefix (use keys under ``f"{prefix}:..."``) and
    :attr:`node_id` this node's id.

    Args:
        url: ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS),
            ``redis+cluster://host:port`` (any node of a Redis Cluster;
            ``rediss+cluster://`` for TLS), or a ready ``redis.asyncio.Redis`` or
            ``redis.asyncio.RedisCluster`` (you own it: its pool, TLS and timeouts;
            it must not decode responses; it is not closed by :meth:`stop`).
        prefix: the prefix of every key and channel; no ``{`` or ``}``.
        node_id: this node's id, unique in the cluster (random by default).
        history_size: messages kept per room stream (0: no history and no offsets).
        history_ttl: seconds a room stream is kept after its last message.
        heartbeat_interval: seconds between node heartbeats.
        link_timeout: seconds without our own heartbeat before the link is declared down.
        connect_timeout: seconds :meth:`start` waits for Redis before giving up.
        command_timeout: seconds any command may take before it fails with
            :class:`~starlette_realtime.BackendUnavailable`.
        reconnect_max_delay: the cap of the jittered exponential reconnect backoff.
    """

    def __init__(
        self,
        url: str | Client = "redis://localhost:6379/0",
        *,
        prefix: str = "rt",
        node_id: str | None = None,
        history_size: int = 1000,
        history_ttl: float = 120.0,
        heartbeat_interval: float = 1.0,
        link_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 2.0,
        reconnect_max_delay: float = 2.0,
    ) -> None:
        self._client = NodeClient(url)
        self.url = self._client.url
        self.cluster_mode = self._client.cluster_mode
        self.names = Names(prefix)
        self.node_id = node_id or secrets.token_hex(4)
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.heartbeat_interval = heartbeat_interval
        self.link_timeout = link_timeout
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.subscriber: RedisSubscriber | None = None
        # Each part sees this node through a protocol of redis_node.py and gets what it needs
        # from a sibling as a callback (or the sibling itself, when that sits below it).
        self.heartbeat = NodeHeartbeat(
            self,
            answers=lambda: self.bus.handler is not None,
            link_up=lambda: self.subscriber is not None and self.subscriber.up,
        )
        self.bus = ControlBus(self, live_nodes=self.heartbeat.live_nodes)
        self.streams = RoomStreams(self)
        #: ``SPUBLISH`` on a Redis Cluster (sharded pub/sub), else ``PUBLISH``: for scripts that publish to a room.
        self.publish_command = "SPUBLISH" if self.cluster_mode else "PUBLISH"
        self._deliver: Deliver = _drop
        self._task: asyncio.Task[None] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._link_started = False

    # Attributes shared with other components ----------------------------------------

    @property
    def redis(self) -> Any:
        """The redis-py asyncio client: ``Redis``, or ``RedisCluster`` (available once started, or when passed in).

        Raises:
            RuntimeError: the backend was built from a URL and is not started.
        """
        return self._client.redis

    @property
    def global_epoch(self) -> str:
        """The epoch of everything Redis holds (read and renewed by the node heartbeat)."""
        return self.heartbeat.global_epoch

    @property
    def prefix(self) -> str:
        """The prefix of every key and channel of this backend."""
        return self.names.prefix

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time the pub/sub link comes back after an outage (for metrics)."""
        self._reconnect_callbacks.append(callback)

    async def drop_idle_connections(self) -> None:
        """Close the pooled connections not in use (they reconnect when next taken)."""
        await self._client.drop_idle_connections()

    def reconnected(self) -> None:
        """Run the :meth:`on_reconnect` callbacks (called by the subscriber)."""
        for callback in self._reconnect_callbacks:
            try:
                callback()
            except Exception:
                logger.exception("reconnect callback failed")

    def add_heartbeat_callback(self, fn: HeartbeatCallback) -> None:
        """Run ``await fn()`` on every node heartbeat (about every ``heartbeat_interval`` s).

        A run is skipped while the previous one is still going; an exception is
        logged and does not stop later runs.  Callbacks run while the link is down
        too (they then usually fail with ``BackendUnavailable``).
        """
        self.heartbeat.add(fn)
        self._ensure_link()

    def remove_heartbeat_callback(self, fn: HeartbeatCallback) -> None:
        """Stop running a callback added with :meth:`add_heartbeat_callback`."""
        self.heartbeat.remove(fn)

    def script(self, name: str) -> Any:
        """One of the backend's registered Lua scripts (``publish``, ``read``, ...), once started."""
        return self._client.script(name)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool:
        """Run ``fn(*args)`` in the backend's task group; ``False`` when the backend is stopped."""
        if self._tg is None:
            return False
        self._tg.start_soon(fn, *args)
        return True

    # Health -----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether Redis is reachable: the pub/sub link is up (or, without a link, commands succeed)."""
        if self._task is None:
            return False
        if self._link_started and self.subscriber is not None:
            return self.subscriber.up
        return not self._client.failing

    def health(self) -> dict[str, Any]:
        """A JSON-able report: ``healthy``, link state, seconds since our last heartbeat, counters."""
        sub = self.subscriber
        report: dict[str, Any] = {
            "healthy": self.healthy,
            "node": self.node_id,
            "started": self._task is not None,
            "link": "none" if not self._link_started or sub is None else ("up" if sub.up else "down"),
        }
        if sub is not None and self._link_started:
            report.update(sub.report())
        return report

    # Lifecycle --------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        """Connect and start the node's tasks.

        Args:
            deliver: called with each publication of a room this node subscribed to.

        Raises:
            BackendUnavailable: Redis did not answer within ``connect_timeout``.
            RuntimeError: already started.
        """
        if self._task is not None:
            raise RuntimeError("RedisBackend already started")
        redis = self._client.open(SCRIPTS, connect_timeout=self.connect_timeout, command_timeout=self.command_timeout)
        try:
            with anyio.fail_after(self.connect_timeout):
                if self.cluster_mode:
                    await redis.initialize()
                await redis.ping()
                await self.heartbeat.refresh_epoch()
        except Exception as exc:
            await self._client.close()
            raise BackendUnavailable(
                f"cannot reach Redis at {self._where()} within {self.connect_timeout} s: {exc!r}"
            ) from exc
        self._deliver = deliver
        self._client.failing = False
        self.subscriber = RedisSubscriber(self, streams=self.streams, bus=self.bus, heartbeat=self.heartbeat)
        ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._main(ready))
        await ready.wait()
        if self.bus.handler is not None or self.heartbeat.callbacks:
            self._ensure_link()
            if not await self.subscriber.wait_up(self.connect_timeout):
                await self.stop()
                raise BackendUnavailable(f"no pub/sub link to Redis at {self._where()} within {self.connect_timeout} s")

    async def _main(self, ready: asyncio.Event) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            ready.set()
            await anyio.sleep_forever()

    def _ensure_link(self) -> None:
        if self._tg is None or self.subscriber is None or self._link_started:
            return
        self._link_started = True
        self._tg.start_soon(self.subscriber.run)
        self._tg.start_soon(self.heartbeat.run, self._tg)

    async def stop(self) -> None:
        """Stop the node's tasks, leave the node registry and close the client if we made it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tg = None
        if self._link_started:
            with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await self.redis.zrem(self.names.nodes, self.node_id)
        self.subscriber = None
        self._link_started = False
        await self.heartbeat.close()
        self.bus.close()
        self._deliver = _drop
        await self._client.close()

    # Commands -----------------------------------------------------------------------

    async def command(self, aw: Awaitable[T]) -> T:
        """Await a Redis command with a deadline; an outage becomes ``BackendUnavailable``.

        Raises:
            BackendUnavailable: Redis is down or did not answer within ``command_timeout``.
        """
        return await self._client.command(aw, timeout=self.command_timeout)

    def _check(self) -> None:
        if self._task is None:
            raise BackendUnavailable("RedisBackend is not started")
        if self._link_started and self.subscriber is not None and not self.subscriber.up:
            raise BackendUnavailable(f"the link to Redis at {self._where()} is down")

    def deliver(self, pub: Publication) -> None:
        """Hand a publication to the node (called by the subscriber)."""
        self._deliver(pub)

    # Backend -----------------------------------------------------------------------

    async def publish(self, pub: Publication) -> Publication:
        """Publish to the room's stream, atomically assigning epoch and offset.

        Args:
            pub: the publication (its ``data`` already JSON-encoded).

        Returns:
            The publication with its epoch and offset (unchanged when volatile).

        Raises:
            BackendUnavailable: Redis is down or did not answer within ``command_timeout``.
        """
        self._check()
        return await self.streams.publish(pub)

    async def subscribe(self, ns: str, room: str) -> None:
        """Receive the room's publications on this node (returns once Redis confirmed, or the link is down)."""
        if self.subscriber is not None:
            if not self._link_started:
                # The first room of a backend started without a link (an emitter that
                # now listens): bring the link up before relying on it.
                self._ensure_link()
                await self.subscriber.wait_up(self.connect_timeout)
            await self.subscriber.subscribe(ns, room)

    async def unsubscribe(self, ns: str, room: str) -> None:
        """Stop receiving the room's publications on this node."""
        if self.subscriber is not None:
            await self.subscriber.unsubscribe(ns, room)

    # History -----------------------------------------------------------------------

    async def position(self, ns: str, room: str) -> Position | None:
        """The stream's current position (``None`` when it has no retained history).

        Raises:
            BackendUnavailable: Redis is down.
        """
        return await self.streams.position(ns, room)

    async def since(self, ns: str, room: str, position: Position | None) -> HistoryReply:
        """Every retained publication after ``position`` (all of them when ``None``).

        ``recovered`` is ``False`` when the history no longer covers the position:
        trimmed, older than ``history_ttl``, another epoch, or lost by Redis.

        Raises:
            BackendUnavailable: Redis is down.
        """
        return await self.streams.since(ns, room, position)

    # Cluster ------------------------------------------------------------------------

    def on_control(self, handler: ControlHandler) -> None:
        """Set the function answering cluster requests on this node (the router does)."""
        self.bus.handler = handler
        self._ensure_link()

    async def control(self, request: ControlRequest, *, timeout: float) -> list[ControlReply]:
        """Send a request to every live node (this one included) and gather the replies.

        Returns as soon as every node of the registry answered, or at ``timeout``.

        Args:
            request: the operation.
            timeout: seconds to wait for the other nodes.

        Returns:
            The replies that arrived, this node's first.

        Raises:
            BackendUnavailable: Redis is down.
        """
        self._check()
        return await self.bus.request(request, timeout)

    # ---------------------------------------------------------------------------------

    def _where(self) -> str:
        return self._client.where()

    def __repr__(self) -> str:
        return (
            f"RedisBackend({self._where()!r}, prefix={self.prefix!r}, node_id={self.node_id!r}, "
            f"history_size={self.history_size}, history_ttl={self.history_ttl})"
        )


def _drop(pub: Publication) -> None:
    return None


__all__ = ["HeartbeatCallback", "RedisBackend"]
