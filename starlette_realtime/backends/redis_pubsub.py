"""The Redis backend's subscriber: one supervised pub/sub session per node, subscribed per room.

A *session* is the life of the node's pub/sub connections (one on a single
server, one per shard on a Redis Cluster: see ``redis_channels``): subscribe
to the control channel, the node's own channel and every hosted room's
channel, then read.  The session ends when a connection fails or when the
node has not heard its own heartbeat for ``link_timeout`` seconds (the only
way to notice a Redis that is stopped rather than dead: redis-py then neither
raises nor returns).  The supervisor then opens a new session after a
jittered, capped backoff, and every room catches up from its stream
(``redis_rooms``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec

from ..exceptions import BackendUnavailable
from .redis_channels import Channels, LinkLost, PlainChannels
from .redis_rooms import RoomOrder, RoomSub
from .redis_wire import HEARTBEAT, REPLY, decode_message

if TYPE_CHECKING:
    from .redis_control import ControlBus
    from .redis_heartbeat import NodeHeartbeat
    from .redis_node import SubscriberNode
    from .redis_streams import RoomStreams

logger = logging.getLogger("starlette_realtime.backends.redis")


def backoff(first: float, cap: float) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform in [d/2, d], d doubling up to ``cap``."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


class RedisSubscriber:
    """The pub/sub side of a Redis backend node (asyncio only, like redis-py).

    Args:
        node: the backend (its client, names, id, settings, ``deliver``, ``reconnected``).
        streams: the node's room streams (catching up, the positions of new rooms).
        bus: the node's cluster request bus (fed the requests and replies read here).
        heartbeat: the node's heartbeat (the global epoch, the registry).
    """

    def __init__(
        self, node: SubscriberNode, *, streams: RoomStreams, bus: ControlBus, heartbeat: NodeHeartbeat
    ) -> None:
        self.node = node
        self._streams = streams
        self._bus = bus
        self._heartbeat = heartbeat
        self.order = RoomOrder(node.deliver, streams.read, streams.skip_ahead, lambda: heartbeat.global_epoch)
        self.up = False
        self.changed = time.monotonic()
        self.last_beat = 0.0
        self.sessions = 0
        self.last_error: str | None = None
        self._channels: Channels | None = None
        self._actual: set[bytes] = set()
        #: Channels whose wanted state changed since the flusher last looked (it
        #: never scans every room: a node holds one per connection, its ``#sid``).
        self._pending: set[bytes] = set()
        self._dirty = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._ever_up = False
        self._failed = False
        self._up_event = asyncio.Event()
        self._node_channel = node.names.node(node.node_id)

    @property
    def rooms(self) -> dict[bytes, RoomSub]:
        return self.order.rooms

    # Rooms (called by the backend) ------------------------------------------------

    async def subscribe(self, ns: str, room: str) -> None:
        channel = self.node.names.channel(ns, room)
        sub = self.rooms.get(channel)
        if sub is None:
            sub = self.rooms[channel] = RoomSub(ns, room, channel)
        sub.wanted = True
        self._pending.add(channel)
        await self._sync()

    async def unsubscribe(self, ns: str, room: str) -> None:
        sub = self.rooms.get(self.node.names.channel(ns, room))
        if sub is not None:
            sub.wanted = False
            self._pending.add(sub.channel)
            await self._sync()

    async def _sync(self) -> None:
        # Callers only declare what they want; one flusher per session turns the
        # wanted set into (S)SUBSCRIBE/(S)UNSUBSCRIBE batches, so concurrent calls
        # for the same room cannot interleave badly: the last declaration wins.
        # Without a link the next session subscribes whatever is wanted then.
        self._dirty.set()
        if not self.up:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        with anyio.move_on_after(self.node.link_timeout):
            await asyncio.shield(fut)

    async def wait_up(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            await self._up_event.wait()
        return self.up

    # Supervision ------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a session going until cancelled; log and restart after any failure."""
        node = self.node
        delays = backoff(0.1, node.reconnect_max_delay)
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except Exception as exc:
                self._failed = True
                leaves = _leaves(exc)
                if all(_is_outage(leaf) for leaf in leaves):
                    self._down("; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves))
                else:
                    # A bug, not an outage: say so loudly, with the traceback.
                    logger.exception("redis pub/sub listener crashed (node %s); restarting it", node.node_id)
                    self._down(f"listener crashed: {exc!r}")
            if time.monotonic() - started > 10 * node.link_timeout:
                delays = backoff(0.1, node.reconnect_max_delay)
            await anyio.sleep(next(delays))

    def _down(self, reason: str) -> None:
        self.last_error = reason
        self._up_event.clear()
        if self.up:
            self.up = False
            self.changed = time.monotonic()
            logger.error("redis link down (node %s): %s; reconnecting", self.node.node_id, reason)
        else:
            logger.debug("redis link still down (node %s): %s", self.node.node_id, reason)

    def _mark_up(self) -> None:
        now = time.monotonic()
        if self._ever_up:
            logger.warning(
                "redis link up again (node %s) after %.1f s down; %d rooms resubscribed",
                self.node.node_id, now - self.changed, len(self._actual),
            )
            self.node.reconnected()
        else:
            logger.info("redis link up (node %s)", self.node.node_id)
        self._ever_up = True
        self.up = True
        self.changed = now
        self._up_event.set()

    def _open_channels(self) -> Channels:
        node = self.node
        if node.cluster_mode:
            from .redis_shards import ShardedChannels

            return ShardedChannels(
                node.redis,  # type: ignore[arg-type]
                self._on_message, node.link_timeout, node.heartbeat_interval, refresh=self._failed,
            )
        return PlainChannels(node.redis, self._on_message, node.link_timeout)  # type: ignore[arg-type]

    async def _session(self) -> None:
        node = self.node
        channels = self._channels = self._open_channels()
        self._actual = set()
        self._pending.clear()  # the session subscribes every wanted room; later changes land here again
        self.sessions += 1
        # Rooms we delivered from before must catch up; their live messages wait.
        for channel, sub in list(self.rooms.items()):
            if not sub.wanted:
                del self.rooms[channel]
            elif sub.epoch is not None or self._ever_up:
                sub.buffer = []
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                with anyio.fail_after(node.connect_timeout):
                    if self._failed:
                        # After an outage the pool's idle connections may lead to a Redis
                        # that is gone: each would fail one command before being replaced.
                        await node.drop_idle_connections()
                    wanted = [ch for ch, sub in self.rooms.items() if sub.wanted]
                    await channels.open(tg, [node.names.control, self._node_channel], wanted)
                    self._actual.update(wanted)
                    await channels.barrier()
                    await self._heartbeat.refresh_epoch()
                    await self._heartbeat.register()
                self.last_beat = time.monotonic()
                self._mark_up()
                tg.start_soon(self._flusher, channels)
                tg.start_soon(self.order.catch_up_all, [s for s in self.rooms.values() if s.buffer is not None])
                fresh = [sub for sub in self.rooms.values() if sub.buffer is None and sub.epoch is None]
                if fresh:
                    tg.start_soon(self._position, fresh)
                await self._watch()
        finally:
            self._tg = None
            self._channels = None
            self._release_waiters()
            await channels.close()

    async def _watch(self) -> None:
        node = self.node
        tick = min(0.25, node.heartbeat_interval / 4)
        seen, lag = self.last_beat, 0.0
        while True:
            before = time.monotonic()
            await anyio.sleep(tick)
            now = time.monotonic()
            if self.last_beat != seen:
                seen, lag = self.last_beat, 0.0
            # The time the event loop could not run us (a saturated node) is not Redis'
            # silence: the heartbeat was as late to be sent and read as this tick.
            lag += max(0.0, now - before - tick)
            silent = now - self.last_beat
            if silent - lag > node.link_timeout:
                raise LinkLost(f"no heartbeat of our own for {silent:.1f} s (the event loop lagged {lag:.1f} s)")

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _flusher(self, channels: Channels) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            waiters, self._waiters = self._waiters, []
            pending, self._pending = self._pending, set()
            rooms = self.rooms
            adds = [ch for ch in pending if ch in rooms and rooms[ch].wanted and ch not in self._actual]
            drops = [ch for ch in pending if ch in self._actual and (ch not in rooms or not rooms[ch].wanted)]
            await channels.add(adds)
            self._actual.update(adds)
            if drops:
                await channels.drop(drops)
                self._actual.difference_update(drops)
            for ch in pending:
                sub = rooms.get(ch)
                if sub is not None and not sub.wanted and ch not in self._actual:
                    del rooms[ch]
            if adds or drops:
                await channels.barrier()
            fresh = [self.rooms[ch] for ch in adds if ch in self.rooms and self.rooms[ch].epoch is None]
            if fresh:
                try:
                    await self._position(fresh)
                except BackendUnavailable as exc:
                    # Slow is not down (a storm of queued commands): the session's own
                    # checks decide that.  These rooms take their position from their
                    # first message instead.
                    logger.debug("positions of %d new rooms not read: %s", len(fresh), exc)
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def _position(self, subs: list[RoomSub]) -> None:
        positions = await self._streams.positions([(sub.ns, sub.room) for sub in subs])
        for sub, pos in zip(subs, positions, strict=True):
            if sub.epoch is None:
                sub.epoch, sub.offset = pos

    # Reading ------------------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        sub = self.rooms.get(channel)
        if sub is not None:
            try:
                pub = decode_message(data)
            except (ValueError, msgspec.DecodeError):
                logger.warning("dropped a malformed message on %r", channel)
                return
            if self.order.on_pub(sub, pub) and self._tg is not None:
                self._tg.start_soon(self.order.catch_up_all, [sub])
        elif channel == self._node_channel:
            if data == HEARTBEAT:
                self.last_beat = time.monotonic()
            elif data[:1] == REPLY:
                self._bus.on_reply(data[1:])
        elif channel == self.node.names.control:
            self._bus.on_request(data)

    def report(self) -> dict[str, Any]:
        """Counters for the backend's health report."""
        now = time.monotonic()
        return {
            "state_for": round(now - self.changed, 3),
            "heartbeat_age": round(now - self.last_beat, 3) if self.last_beat else None,
            "sessions": self.sessions,
            "rooms": len(self.rooms),
            "resyncs": self.order.resyncs,
            "rollbacks": self.order.rollbacks,
            "caught_up": self.order.caught_up,
            "last_error": self.last_error,
        }

    def __repr__(self) -> str:
        return f"RedisSubscriber(up={self.up}, rooms={len(self.rooms)}, sessions={self.sessions})"


def _leaves(exc: BaseException) -> list[BaseException]:
    # Task groups wrap failures in exception groups; classify the real errors.
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _is_outage(exc: BaseException) -> bool:
    from redis import exceptions as rx

    # A Redis Cluster in the middle of a failover answers MOVED, TRYAGAIN or
    # CLUSTERDOWN: an outage too, over once the new master took the slots.
    return isinstance(
        exc,
        (LinkLost, BackendUnavailable, rx.ConnectionError, rx.TimeoutError, TimeoutError, OSError,
         rx.ClusterError, rx.AskError, rx.TryAgainError, rx.RedisClusterException),
    ) or "CLUSTERDOWN" in str(exc)


__all__ = ["RedisSubscriber", "backoff"]
