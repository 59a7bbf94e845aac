"""The Redis backend (``redis://``, ``rediss://``): many server processes behave as one.

Each room stream has its own pub/sub channel, Redis Stream (history) and
offset counter under one hash tag; see docs/deployment.md for the design, its
costs and its fault behaviour.  It runs on redis-py's asyncio client, which is
asyncio-only: this backend does not run on trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

from ..cluster import ControlHandler, ControlReply, ControlRequest
from ..exceptions import BackendUnavailable
from ..frames import Position
from .base import Deliver, HistoryReply, Publication
from .redis_control import ControlBus
from .redis_link import Link
from .redis_wire import (
    HEARTBEAT,
    LIVE_LUA,
    PUBLISH_LUA,
    READ_LUA,
    REGISTER_LUA,
    Names,
    decode_read,
    encode_body,
    history_reply,
    volatile_message,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

T = TypeVar("T")
HeartbeatCallback = Callable[[], Awaitable[None]]


class RedisBackend:
    """A backend on Redis: pub/sub per room, Streams for history, cluster queries, sessions.

    Implements :class:`~starlette_realtime.backends.base.Backend`, ``History``,
    ``SessionStore``, ``HealthCheck`` and :class:`~starlette_realtime.cluster.Cluster`.
    It needs Redis 6.2 or newer and runs on redis-py's asyncio client, so it is
    asyncio-only.

    Between :meth:`start` and :meth:`stop` the backend owns one anyio task group
    (in a background task) running the pub/sub link's supervisor and the node
    heartbeat.  Every ``heartbeat_interval`` seconds the node publishes a
    heartbeat on its own channel (the link is declared down when it has not
    heard one for ``link_timeout`` seconds), refreshes its entry in the node
    registry and runs the callbacks added with :meth:`add_heartbeat_callback`.

    Other components may share the connection: :attr:`redis` is the client,
    :attr:`prefix` the key prefix (use keys under ``f"{prefix}:..."``) and
    :attr:`node_id` this node's id.

    Args:
        url: ``redis://[[user]:password@]host:port/db`` or ``rediss://`` (TLS),
            or a ready ``redis.asyncio.Redis`` (you own it: its pool, TLS and
            timeouts; it must not decode responses; it is not closed by :meth:`stop`).
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
        url: str | Redis = "redis://localhost:6379/0",
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
        if isinstance(url, str):
            self.url: str | None = url
            self._client: Redis | None = None
            self._owns_client = True
        else:
            kwargs = url.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise ValueError("the redis client must not decode responses (decode_responses=False)")
            self.url = None
            self._client = url
            self._owns_client = False
        self.names = Names(prefix)
        self.node_id = node_id or secrets.token_hex(4)
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.heartbeat_interval = heartbeat_interval
        self.link_timeout = link_timeout
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.global_epoch = ""
        self._deliver: Deliver = _drop
        self._callbacks: dict[HeartbeatCallback, bool] = {}
        self._bus = ControlBus(self)
        self._task: asyncio.Task[None] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._link: Link | None = None
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._link_started = False
        self._failing = False
        self._scripts: dict[str, Any] = {}

    # Attributes shared with other components ----------------------------------------

    @property
    def redis(self) -> Redis:
        """The ``redis.asyncio.Redis`` client (available once started, or when passed in).

        Raises:
            RuntimeError: the backend was built from a URL and is not started.
        """
        if self._client is None:
            raise RuntimeError("RedisBackend is not started")
        return self._client

    @property
    def prefix(self) -> str:
        """The prefix of every key and channel of this backend."""
        return self.names.prefix

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time the pub/sub link comes back after an outage (for metrics)."""
        self._reconnect_callbacks.append(callback)

    def _reconnected(self) -> None:
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
        self._callbacks[fn] = False
        self._ensure_link()

    def remove_heartbeat_callback(self, fn: HeartbeatCallback) -> None:
        """Stop running a callback added with :meth:`add_heartbeat_callback`."""
        self._callbacks.pop(fn, None)

    # Health -----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether Redis is reachable: the pub/sub link is up (or, without a link, commands succeed)."""
        if self._task is None:
            return False
        if self._link_started and self._link is not None:
            return self._link.up
        return not self._failing

    def health(self) -> dict[str, Any]:
        """A JSON-able report: ``healthy``, link state, seconds since our last heartbeat, counters."""
        link = self._link
        now = time.monotonic()
        report: dict[str, Any] = {
            "healthy": self.healthy,
            "node": self.node_id,
            "started": self._task is not None,
            "link": "none" if not self._link_started or link is None else ("up" if link.up else "down"),
        }
        if link is not None and self._link_started:
            report.update(
                state_for=round(now - link.changed, 3),
                heartbeat_age=round(now - link.last_beat, 3) if link.last_beat else None,
                sessions=link.sessions,
                rooms=len(link.rooms),
                resyncs=link.resyncs,
                caught_up=link.caught_up,
                last_error=link.last_error,
            )
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
        if self._owns_client:
            self._client = _client_from_url(self.url or "", self.connect_timeout, self.command_timeout)
        redis = self.redis
        for name, lua in (("publish", PUBLISH_LUA), ("read", READ_LUA), ("live", LIVE_LUA)):
            self._scripts[name] = redis.register_script(lua)
        try:
            with anyio.fail_after(self.connect_timeout):
                await redis.ping()
                await self._refresh_epoch()
        except Exception as exc:
            await self._close_client()
            raise BackendUnavailable(
                f"cannot reach Redis at {self._where()} within {self.connect_timeout} s: {exc!r}"
            ) from exc
        self._deliver = deliver
        self._failing = False
        self._link = Link(self)
        ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._main(ready))
        await ready.wait()
        if self._bus.handler is not None or self._callbacks:
            self._ensure_link()
            if not await self._link.wait_up(self.connect_timeout):
                await self.stop()
                raise BackendUnavailable(f"no pub/sub link to Redis at {self._where()} within {self.connect_timeout} s")

    async def _main(self, ready: asyncio.Event) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            ready.set()
            await anyio.sleep_forever()

    def _ensure_link(self) -> None:
        if self._tg is None or self._link is None or self._link_started:
            return
        self._link_started = True
        self._tg.start_soon(self._link.run)
        self._tg.start_soon(self._heartbeats)

    async def stop(self) -> None:
        """Stop the node's tasks, leave the node registry and close the client if we made it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tg = None
        if self._link_started and self._client is not None:
            with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await self._client.zrem(self.names.nodes, self.node_id)
        self._link = None
        self._link_started = False
        self._bus.close()
        self._deliver = _drop
        await self._close_client()

    async def _close_client(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await client.aclose()

    # Commands -----------------------------------------------------------------------

    async def _run(self, aw: Awaitable[T]) -> T:
        """Await a Redis command with a deadline; an outage becomes ``BackendUnavailable``."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            with anyio.fail_after(self.command_timeout):
                result = await aw
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            self._failing = True
            raise BackendUnavailable(f"Redis at {self._where()} is unavailable: {exc!r}") from exc
        self._failing = False
        return result

    def _check(self) -> None:
        if self._task is None:
            raise BackendUnavailable("RedisBackend is not started")
        if self._link_started and self._link is not None and not self._link.up:
            raise BackendUnavailable(f"the link to Redis at {self._where()} is down")

    async def _refresh_epoch(self) -> None:
        # The global epoch names everything Redis holds; a Redis that restarted
        # empty gets a new one from the first node that notices.
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.names.epoch, secrets.token_urlsafe(6), nx=True)
        pipe.get(self.names.epoch)
        _, epoch = await pipe.execute()
        self.global_epoch = epoch.decode()

    async def _register(self) -> None:
        if self._bus.handler is not None:
            ttl_ms = int((self.link_timeout + self.heartbeat_interval) * 1000)
            await self.redis.eval(REGISTER_LUA, 1, self.names.nodes, self.node_id, ttl_ms)

    async def _heartbeats(self) -> None:
        failing = False
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                with anyio.fail_after(max(self.heartbeat_interval, 0.5)):
                    await self.redis.publish(self.names.node(self.node_id), HEARTBEAT)
                    await self._refresh_epoch()
                    if self._link is not None and self._link.up:
                        await self._register()
                failing = False
            except Exception as exc:
                if not failing:
                    logger.warning("node %s heartbeat failed: %r", self.node_id, exc)
                failing = True
            for fn, running in list(self._callbacks.items()):
                if not running and self._tg is not None:
                    self._callbacks[fn] = True
                    self._tg.start_soon(self._run_callback, fn)

    async def _run_callback(self, fn: HeartbeatCallback) -> None:
        try:
            await fn()
        except Exception:
            logger.warning("heartbeat callback %r failed", fn, exc_info=True)
        finally:
            if fn in self._callbacks:
                self._callbacks[fn] = False

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
        body = encode_body(pub)
        meta, stream, channel = self.names.stream(pub.ns, pub.room)
        if pub.volatile or self.history_size <= 0:
            await self._run(self.redis.publish(channel, volatile_message(body)))
            return pub
        args = [channel, self.global_epoch, secrets.token_urlsafe(6), self.history_size,
                max(1, int(self.history_ttl * 1000)), body]
        offset, epoch = await self._run(self._scripts["publish"](keys=[meta, stream], args=args))
        return Publication(pub.ns, pub.room, pub.event, pub.data, pub.exclude, pub.rooms,
                           epoch.decode(), int(offset), pub.ts, pub.volatile)

    async def subscribe(self, ns: str, room: str) -> None:
        """Receive the room's publications on this node (returns once Redis confirmed, or the link is down)."""
        if self._link is not None:
            if not self._link_started:
                # The first room of a backend started without a link (an emitter that
                # now listens): bring the link up before relying on it.
                self._ensure_link()
                await self._link.wait_up(self.connect_timeout)
            await self._link.subscribe(ns, room)

    async def unsubscribe(self, ns: str, room: str) -> None:
        """Stop receiving the room's publications on this node."""
        if self._link is not None:
            await self._link.unsubscribe(ns, room)

    # History -----------------------------------------------------------------------

    async def position(self, ns: str, room: str) -> Position | None:
        """The stream's current position (``None`` when it has no retained history).

        Raises:
            BackendUnavailable: Redis is down.
        """
        meta = self.names.stream(ns, room)[0]
        epoch, offset = await self._run(self.redis.hmget(meta, ["e", "o"]))
        if epoch is None:
            return None
        return Position(_text(epoch), int(offset or 0))

    async def _positions(self, rooms: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
        pipe = self.redis.pipeline(transaction=False)
        for ns, room in rooms:
            pipe.hmget(self.names.stream(ns, room)[0], ["e", "o"])
        out: list[tuple[str, int]] = []
        for epoch, offset in await self._run(pipe.execute()):
            out.append((self.global_epoch + ".", 0) if epoch is None else (epoch.decode(), int(offset or 0)))
        return out

    async def _read(
        self, ns: str, room: str, after: int, epoch: str, *, all_on_new_epoch: bool = True
    ) -> tuple[str | None, int, list[Publication]]:
        meta, stream, _ = self.names.stream(ns, room)
        args = [after, max(self.history_size, 1), epoch, "1" if all_on_new_epoch else "0"]
        res = await self._run(self._scripts["read"](keys=[meta, stream], args=args))
        return decode_read(res, int(self.history_ttl * 1000))

    async def since(self, ns: str, room: str, position: Position | None) -> HistoryReply:
        """Every retained publication after ``position`` (all of them when ``None``).

        ``recovered`` is ``False`` when the history no longer covers the position:
        trimmed, older than ``history_ttl``, another epoch, or lost by Redis.

        Raises:
            BackendUnavailable: Redis is down.
        """
        after, asked = (0, "") if position is None else (position.offset, position.epoch)
        epoch, last, items = await self._read(ns, room, after, asked, all_on_new_epoch=position is None)
        if epoch is None:
            if position is None:
                return HistoryReply(True, (), None)
            # No stream: it expired while idle (nothing missed) only if it belonged
            # to the current global epoch; otherwise Redis lost it.
            current = await self._run(self.redis.get(self.names.epoch))
            same = current is not None and position.epoch.startswith(_text(current) + ".")
            return HistoryReply(same, (), None)
        return history_reply(position, epoch, last, items)

    # Sessions -----------------------------------------------------------------------

    async def save_session(self, key: str, state: bytes, ttl: float) -> None:
        """Keep a session's state for ``ttl`` seconds (``SET ... PX``).

        Raises:
            BackendUnavailable: Redis is down.
        """
        await self._run(self.redis.set(self.names.session(key), state, px=max(1, int(ttl * 1000))))

    async def take_session(self, key: str) -> bytes | None:
        """Return and forget a saved session (``GETDEL``).

        Raises:
            BackendUnavailable: Redis is down.
        """
        value = await self._run(self.redis.getdel(self.names.session(key)))
        return value.encode() if isinstance(value, str) else value

    # Cluster ------------------------------------------------------------------------

    def on_control(self, handler: ControlHandler) -> None:
        """Set the function answering cluster requests on this node (the router does)."""
        self._bus.handler = handler
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
        return await self._bus.request(request, timeout)

    # ---------------------------------------------------------------------------------

    def _where(self) -> str:
        if self.url is None:
            return "the given client"
        parts = urlsplit(self.url)
        if parts.password:
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:***@{host}{port}")
        return urlunsplit(parts)

    def __repr__(self) -> str:
        return (
            f"RedisBackend({self._where()!r}, prefix={self.prefix!r}, node_id={self.node_id!r}, "
            f"history_size={self.history_size}, history_ttl={self.history_ttl})"
        )


def _drop(pub: Publication) -> None:
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _client_from_url(url: str, connect_timeout: float, command_timeout: float) -> Redis:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # No silent retries: an outage must surface at once as BackendUnavailable
    # (the link reconnects on its own schedule).
    return Redis.from_url(
        url,
        socket_connect_timeout=min(connect_timeout, command_timeout),
        socket_timeout=command_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


__all__ = ["HeartbeatCallback", "RedisBackend"]
