"""Pub/sub on a Redis Cluster: fixed channels with ``SUBSCRIBE``, rooms with ``SSUBSCRIBE`` per shard.

A room's channel shares its hash tag with the room's stream, so ``SPUBLISH``
(inside the publish script) and ``SSUBSCRIBE`` reach the master that owns the
room's slot: a room's traffic touches one shard.  The control and node
channels are few and quiet; they use classic pub/sub, which the cluster bus
carries to every node, on one more connection.

The slot map is redis-py's (``RedisCluster.get_node_from_key``); it is
refreshed at the start of every session after a failure, which is how a
session finds the new master after a failover.  A shard connection that
fails or stops answering PINGs, an ``SSUBSCRIBE`` answered by ``MOVED``, or a
``sunsubscribe`` the server sends because the slot left the node, all end the
session; the subscriber then opens a new one and every room catches up from
its stream.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .redis_channels import LinkLost, OnMessage, Pinger, close_pubsub, pubsub_on, read

if TYPE_CHECKING:
    from redis.asyncio import RedisCluster
    from redis.asyncio.client import PubSub

logger = logging.getLogger("starlette_realtime.backends.redis")


class _Shard:
    __slots__ = ("channels", "name", "ps")

    def __init__(self, name: str, ps: PubSub) -> None:
        self.name = name
        self.ps = ps
        self.channels: set[bytes] = set()


class ShardedChannels:
    """The connections of one pub/sub session on a Redis Cluster.

    Args:
        cluster: the backend's cluster client (its slot map and connection settings).
        on_message: called for each message.
        timeout: seconds a PING may take.
        probe_interval: seconds between PINGs on each shard connection (a stopped
            master neither fails nor answers: only a PING finds it).
        refresh: refresh the slot map before connecting (after a failure).
    """

    def __init__(
        self, cluster: RedisCluster, on_message: OnMessage, timeout: float, probe_interval: float, *, refresh: bool
    ) -> None:
        self._cluster = cluster
        self._on_message = on_message
        self._pinger = Pinger(timeout)
        self._probe_interval = probe_interval
        self._refresh = refresh
        self._fixed: PubSub | None = None
        self._shards: dict[str, _Shard] = {}
        self._where: dict[bytes, _Shard] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def open(self, tg: anyio.abc.TaskGroup, fixed: list[bytes], rooms: list[bytes]) -> None:
        self._tg = tg
        if self._refresh:
            await self._cluster.nodes_manager.initialize()
        ps = self._fixed = pubsub_on(self._node(fixed[0]))
        await ps.subscribe(*fixed)
        tg.start_soon(read, ps, self._on_message, self._pinger)
        await self.add(rooms)
        tg.start_soon(self._probe)

    def _node(self, channel: bytes) -> Any:
        node = self._cluster.get_node_from_key(channel.decode())
        if node is None:
            raise LinkLost(f"no master serves the slot of {channel!r}")
        return node

    def _shard(self, channel: bytes) -> _Shard:
        node = self._node(channel)
        shard = self._shards.get(node.name)
        if shard is None:
            shard = self._shards[node.name] = _Shard(node.name, pubsub_on(node))
            assert self._tg is not None
            self._tg.start_soon(self._read_shard, shard)
        return shard

    async def _read_shard(self, shard: _Shard) -> None:
        # The first SSUBSCRIBE connects; wait for it before reading.
        while shard.ps.connection is None:
            await anyio.sleep(0.01)
        await read(shard.ps, self._on_message, self._pinger, sharded=shard.channels)

    async def add(self, rooms: list[bytes]) -> None:
        # SSUBSCRIBE takes channels of one slot only: one command per slot.
        by_slot: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for channel in rooms:
            shard = self._shard(channel)
            by_slot[(shard.name, self._cluster.keyslot(channel))].append(channel)
        for (name, _), channels in by_slot.items():
            shard = self._shards[name]
            shard.channels.update(channels)
            for channel in channels:
                self._where[channel] = shard
            await shard.ps.ssubscribe(*channels)

    async def drop(self, rooms: list[bytes]) -> None:
        by_slot: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for channel in rooms:
            shard = self._where.pop(channel, None)
            if shard is not None:
                shard.channels.discard(channel)
                by_slot[(shard.name, self._cluster.keyslot(channel))].append(channel)
        for (name, _), channels in by_slot.items():
            await self._shards[name].ps.sunsubscribe(*channels)

    async def barrier(self) -> None:
        pubsubs = [self._fixed] + [shard.ps for shard in self._shards.values() if shard.ps.connection is not None]
        for ps in pubsubs:
            if ps is not None:
                await self._pinger.ping(ps)

    async def _probe(self) -> None:
        while True:
            await anyio.sleep(self._probe_interval)
            for shard in list(self._shards.values()):
                if shard.ps.connection is not None:
                    await self._pinger.ping(shard.ps)

    async def close(self) -> None:
        self._pinger.cancel()
        pubsubs: list[Any] = [self._fixed] + [shard.ps for shard in self._shards.values()]
        self._fixed = None
        self._shards.clear()
        self._where.clear()
        for ps in pubsubs:
            if ps is not None:
                await close_pubsub(ps)
                with anyio.move_on_after(1.0, shield=True):
                    try:
                        await ps.connection_pool.disconnect()
                    except Exception:
                        logger.debug("closing a shard connection pool failed", exc_info=True)

    def __repr__(self) -> str:
        return f"ShardedChannels(shards={sorted(self._shards)}, rooms={len(self._where)})"


__all__ = ["LinkLost", "ShardedChannels"]
