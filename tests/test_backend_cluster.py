"""The Redis backend on a real local Redis Cluster (three masters, three replicas).

What a cluster adds to the contract suite (which runs on this cluster too):
every key of a room in one slot, a room's traffic on one shard (sharded
pub/sub), cluster queries across shards, and a master failing over under
publish traffic, politely (``CLUSTER FAILOVER``) and by SIGKILL.  The failover
tests print their figures (run with ``-s``); docs/deployment.md quotes them.
The failover tests change the cluster's topology, so they come last.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from redis_cluster import LocalRedisCluster, migrate_slot

from starlette_realtime.backends import backend_from_url
from starlette_realtime.backends.base import Publication
from starlette_realtime.backends.presence_redis import RedisPresence
from starlette_realtime.backends.redis import RedisBackend
from starlette_realtime.cluster import ControlReply, ControlRequest
from starlette_realtime.exceptions import BackendUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NS = "/chat"


class Node:
    """A started backend and the numbered messages it delivered."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.got: list[Publication] = []

    def numbers(self, room: str) -> list[int]:
        return [int(p.data[5:-1]) for p in self.got if p.room == room and p.event == "n"]


@pytest.fixture
async def nodes(redis_cluster: LocalRedisCluster) -> AsyncIterator[Callable[..., Any]]:
    prefix = "c" + secrets.token_hex(3)
    started: list[Node] = []

    async def start(name: str, **options: Any) -> Node:
        node = Node(RedisBackend(redis_cluster.url, prefix=prefix, node_id=name, **options))

        async def answer(request: ControlRequest) -> ControlReply:
            return ControlReply(name, True, [request.op])

        node.backend.on_control(answer)
        with anyio.fail_after(15):
            await node.backend.start(node.got.append)
        started.append(node)
        return node

    yield start
    for node in started:
        with anyio.fail_after(10):
            await node.backend.stop()


def numbered(room: str, i: int) -> Publication:
    return Publication(NS, room, "n", b'{"i":%d}' % i)


def spublish_calls(node: Any) -> int:
    for line in node.cli("info", "commandstats").splitlines():
        if line.startswith("cmdstat_spublish:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


async def test_every_key_of_a_room_is_in_one_slot(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    a = await nodes("a")
    be = a.backend
    meta, stream, channel = be.names.stream(NS, "lobby:42")
    tag = meta.split("}", 1)[0] + "}"
    presence = [f"{tag}:p:n:member", f"{tag}:p:c", f"{tag}:p:m", f"{tag}:p:q"]
    slots = {be.redis.keyslot(key) for key in [meta, stream, channel.decode(), *presence]}
    assert len(slots) == 1


async def test_a_rooms_traffic_touches_one_shard(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    a, b = await nodes("a"), await nodes("b")
    with anyio.fail_after(10):
        await a.backend.subscribe(NS, "one")
        await b.backend.subscribe(NS, "one")
    channel = a.backend.names.channel(NS, "one").decode()
    owner = redis_cluster.master_of(channel)
    masters = [redis_cluster.node(p) for p, i in redis_cluster.topology().items() if i["role"] == "master"]
    # Only the owner knows the room's subscribers (sharded pub/sub: SSUBSCRIBE there)...
    for master in masters:
        count = int(master.cli("pubsub", "shardnumsub", channel).split()[-1])
        assert count == (2 if master is owner else 0), (master, count)
    # ...and only the owner runs the room's publishes.
    before = {m.port: spublish_calls(m) for m in masters}
    with anyio.fail_after(10):
        for i in range(20):
            await a.backend.publish(numbered("one", i))
        while len(b.numbers("one")) < 20:
            await anyio.sleep(0.01)
    after = {m.port: spublish_calls(m) for m in masters}
    assert {port: after[port] - before[port] for port in after} == {
        m.port: (20 if m is owner else 0) for m in masters
    }
    assert a.numbers("one") == b.numbers("one") == list(range(20))


async def test_rooms_on_every_shard_and_cluster_queries(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    rooms = [f"r{i}" for i in range(12)]
    owners = {redis_cluster.master_of(a.backend.names.channel(NS, r).decode()).port for r in rooms}
    assert len(owners) == 3  # the rooms are spread over the three masters
    with anyio.fail_after(10):
        for room in rooms:
            await c.backend.subscribe(NS, room)
        for i, room in enumerate(rooms):
            await (a if i % 2 else b).backend.publish(numbered(room, i))
        while sum(len(c.numbers(r)) for r in rooms) < len(rooms):
            await anyio.sleep(0.01)
        replies = await a.backend.control(ControlRequest("ping"), timeout=5)
    assert sorted(r.node for r in replies) == ["a", "b", "c"]


async def test_url_and_client_forms(redis_cluster: LocalRedisCluster) -> None:
    from redis.asyncio import RedisCluster

    got: list[Publication] = []
    by_url = backend_from_url(redis_cluster.url + "?history_size=7")
    assert isinstance(by_url, RedisBackend) and by_url.cluster_mode and by_url.history_size == 7
    port = redis_cluster.nodes[0].port
    with pytest.raises(ValueError, match="decode"):
        RedisBackend(RedisCluster(host="127.0.0.1", port=port, decode_responses=True))
    client = RedisCluster(host="127.0.0.1", port=port)
    given = RedisBackend(client, prefix="c" + secrets.token_hex(3))
    assert given.cluster_mode and given.publish_command == "SPUBLISH"
    try:
        with anyio.fail_after(10):
            await given.start(got.append)
            await given.subscribe(NS, "forms")
            await given.publish(numbered("forms", 1))
            while not got:
                await anyio.sleep(0.01)
            await given.stop()
        assert await client.ping()  # the backend does not close a client it was given
    finally:
        await client.aclose()


async def test_a_storm_of_commands_waits_for_a_connection_instead_of_failing(nodes: Any) -> None:
    # More concurrent commands than redis-py's cluster client has connections per node: they queue.
    node = await nodes("storm")
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for i in range(900):
                tg.start_soon(node.backend.save_session, f"storm{i}", b"x", 10.0)
        assert await node.backend.take_session("storm899") == b"x"


async def test_presence_events_and_reaping_on_the_cluster(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    a, b = await nodes("a", heartbeat_interval=0.5), await nodes("b", heartbeat_interval=0.5)
    rooms = [f"p{i}" for i in range(6)]  # on every shard
    with anyio.fail_after(10):
        for room in rooms:
            await b.backend.subscribe(NS, room)
    store = RedisPresence(a.backend, namespace=NS, ttl=2.0, event="$presence")
    survivor = RedisPresence(b.backend, namespace=NS, ttl=2.0, event="$presence")
    try:
        with anyio.fail_after(10):
            await store.start(_Owner(), _not_called)
            await survivor.start(_Owner(), _not_called)
            for room in rooms:
                await store.presence_apply(NS, room, [("u1", b"{}")], [])
        store.close()  # node a stops beating, as if killed: b reaps its users on every shard
        with anyio.fail_after(10):
            while sum(1 for p in b.got if p.event == "$presence") < 2 * len(rooms):
                await anyio.sleep(0.05)
        statuses = {room: [json.loads(p.data)["status"] for p in b.got if p.room == room] for room in rooms}
        assert statuses == {room: ["online", "offline"] for room in rooms}
        with anyio.fail_after(5):
            assert [await survivor.presence_count(NS, room) for room in rooms] == [0] * len(rooms)
    finally:
        store.close()
        survivor.close()


class _Owner:
    def mark_all(self) -> None:
        pass

    async def flush_dirty(self) -> bool:
        return True

    async def collect(self) -> int:
        return 0

    def stored_rooms(self) -> list[str]:
        return []


async def _not_called(room: str, changes: Any) -> None:
    raise AssertionError("the store publishes its events itself")


async def _traffic(
    pub: Node, sub: Node, room: str, fault: Callable[[], Any], redis_cluster: LocalRedisCluster
) -> dict[str, Any]:
    """Publish numbered messages before, during and after ``fault()``; report what the subscriber got."""
    with anyio.fail_after(10):
        await sub.backend.subscribe(NS, room)
    acked: list[int] = []
    failed_attempts = 0
    t_fault = 0.0
    i = 0

    async def publisher(stop: anyio.Event) -> None:
        nonlocal i, failed_attempts
        while not stop.is_set():
            try:
                await pub.backend.publish(numbered(room, i))
            except BackendUnavailable:
                failed_attempts += 1
                await anyio.sleep(0.05)
                continue  # the same number again: a publish that did run shows up twice
            acked.append(i)
            i += 1
            await anyio.sleep(0.005)

    stop = anyio.Event()
    with anyio.fail_after(45):
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher, stop)
            await anyio.sleep(2)
            assert sub.backend.subscriber is not None
            sessions = sub.backend.subscriber.sessions
            t_fault = time.monotonic()
            await anyio.to_thread.run_sync(fault)
            # Healthy again: the subscriber noticed (a new pub/sub session) and is up,
            # and a message published after that was delivered.
            assert sub.backend.subscriber is not None
            while not (sub.backend.subscriber.sessions > sessions and sub.backend.healthy):
                await anyio.sleep(0.02)
            mark = i
            while not (max(sub.numbers(room), default=-1) >= mark and pub.backend.healthy):
                await anyio.sleep(0.02)
            t_healthy = time.monotonic()
            await anyio.sleep(2)
            stop.set()
        deadline = time.monotonic() + 10
        while not set(acked) <= set(sub.numbers(room)) and time.monotonic() < deadline:
            await anyio.sleep(0.05)
    got = sub.numbers(room)
    report = {
        "published": len(acked),
        "publish attempts refused": failed_attempts,
        "time to healthy (s)": round(t_healthy - t_fault, 2),
        "subscriber sessions": sub.backend.subscriber.sessions - sessions if sub.backend.subscriber else None,
        "lost": len(set(acked) - set(got)),
        "duplicates": len(got) - len(set(got)),
        "in order": got == sorted(got),
        "rollbacks": sub.backend.health().get("rollbacks"),
        "resyncs": sub.backend.health().get("resyncs"),
    }
    print(f"\n{fault.__name__}: {report}")
    return report


async def test_a_slot_moving_under_traffic_loses_nothing(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    pub, sub = await nodes("pub"), await nodes("sub")
    room = "moving"
    channel = pub.backend.names.channel(NS, room).decode()
    source = redis_cluster.master_of(channel)
    target = next(redis_cluster.node(p) for p, i in redis_cluster.topology().items()
                  if i["role"] == "master" and p != source.port)
    slot = pub.backend.redis.keyslot(channel)

    def migrate_the_rooms_slot() -> None:
        # Commands meet ASK (and TRYAGAIN) while the keys move, then MOVED.
        assert migrate_slot(redis_cluster, slot, source, target) >= 2  # the room's stream and its meta hash

    report = await _traffic(pub, sub, room, migrate_the_rooms_slot, redis_cluster)
    assert redis_cluster.master_of(channel) is target
    assert report["lost"] == 0 and report["in order"] and report["resyncs"] == 0


async def test_a_polite_failover_under_traffic_loses_nothing(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    pub, sub = await nodes("pub"), await nodes("sub")
    room = "polite"
    master = redis_cluster.master_of(pub.backend.names.channel(NS, room).decode())

    def cluster_failover() -> None:
        redis_cluster.failover(master)

    report = await _traffic(pub, sub, room, cluster_failover, redis_cluster)
    assert report["lost"] == 0 and report["in order"] and report["resyncs"] == 0
    with anyio.fail_after(30):
        while not redis_cluster.healthy():
            await anyio.sleep(0.1)


async def test_a_killed_master_under_traffic(redis_cluster: LocalRedisCluster, nodes: Any) -> None:
    pub, sub = await nodes("pub"), await nodes("sub")
    room = "killed"
    master = redis_cluster.master_of(pub.backend.names.channel(NS, room).decode())

    def sigkill_master() -> None:
        master.kill()

    try:
        report = await _traffic(pub, sub, room, sigkill_master, redis_cluster)
    finally:
        redis_cluster.restart(master)  # it rejoins as a replica of the new master
    assert report["lost"] == 0 and report["in order"]
    with anyio.fail_after(30):
        while not redis_cluster.healthy():
            await anyio.sleep(0.1)
