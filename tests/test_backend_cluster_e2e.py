"""Clients over a Redis Cluster failover: uvicorn nodes on the local cluster (three masters, three replicas).

Ten clients follow a room on node A; a publisher on node B publishes numbered messages; a third of the way the
master that owns the room's slot fails over, politely (``CLUSTER FAILOVER`` on its replica) or by SIGKILL. Every
client must end with every message, in order, none twice on the wire, on the same WebSocket. A publish that failed
during the failover (an error ack) is sent again, so a message may be published twice; the test counts those.
Figures print with ``-s``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from procs import Node
from redis_cluster import LocalRedisCluster

from starlette_realtime.backends.redis_wire import Names
from starlette_realtime.client import AckError, AckTimeout, RealtimeClient

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NS = "/feed"
ROOM = "news"
CLIENTS = 10
TOTAL = 900


@pytest.fixture
def nodes(redis_cluster: LocalRedisCluster) -> Iterator[tuple[LocalRedisCluster, str, Node, Node]]:
    secret = secrets.token_hex(16)
    prefix = "fo" + secrets.token_hex(3)
    pair = [Node("cluster_app:app", {"REDIS_URL": redis_cluster.url, "NODE_ID": name, "SECRET": secret,
                                     "REDIS_PREFIX": prefix}) for name in ("a", "b")]
    try:
        for node in pair:
            node.start()
        yield redis_cluster, prefix, pair[0], pair[1]
    finally:
        for node in pair:
            node.terminate(5)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def fail_over_under_traffic(a: Node, b: Node, fault: Callable[[], Any]) -> dict[str, Any]:
    subs: list[RealtimeClient] = []
    got: list[list[int]] = [[] for _ in range(CLIENTS)]
    pub = RealtimeClient(b.url + "/realtime", namespaces=[NS], reconnection_delay=0.05)
    retried = 0
    try:
        async with asyncio.timeout(30):
            for i in range(CLIENTS):
                sub = RealtimeClient(a.url + "/realtime", namespaces=[NS], reconnection_delay=0.05)
                sub.on("n", got[i].append, namespace=NS)
                await sub.connect()
                await sub.call("follow", ROOM, namespace=NS, timeout=10)
                subs.append(sub)
            await pub.connect()
        faulted_at = 0.0
        async with asyncio.timeout(120):
            for n in range(TOTAL):
                while True:
                    try:
                        await pub.call("publish", [ROOM, n], namespace=NS, timeout=5)
                        break
                    except (AckError, AckTimeout):
                        retried += 1  # the backend was unavailable: publish the same number again
                        await asyncio.sleep(0.05)
                if n == TOTAL // 3:
                    faulted_at = time.monotonic()
                    await asyncio.to_thread(fault)
                await asyncio.sleep(0.002)
            await until(lambda: all(set(range(TOTAL)) <= set(g) for g in got), 60, "every message at every client")
        delivered = time.monotonic() - faulted_at
        await asyncio.sleep(0.5)
        for i, sub in enumerate(subs):
            assert got[i] == sorted(got[i]), f"client {i}: out of order"
            assert set(got[i]) == set(range(TOTAL)), f"client {i}: lost {sorted(set(range(TOTAL)) - set(got[i]))}"
            assert len(got[i]) - TOTAL <= retried, f"client {i}: more duplicates than retried publishes"
            wire = sub.wire_stats.stream(ROOM, NS)
            assert wire.duplicates == 0 and wire.gaps == 0, f"client {i}: {wire}"
        assert [sub.reconnects for sub in subs] == [0] * CLIENTS  # nobody had to reconnect
        return {"messages": TOTAL, "publishes retried": retried,
                "republished copies delivered": len(got[0]) - TOTAL,
                "from the fault to the last message delivered (s)": round(delivered, 2)}
    finally:
        for sub in subs:
            async with asyncio.timeout(10):
                await sub.close()
        async with asyncio.timeout(10):
            await pub.close()


async def test_clients_get_everything_across_a_polite_failover(
    nodes: tuple[LocalRedisCluster, str, Node, Node],
) -> None:
    cluster, prefix, a, b = nodes
    master = cluster.master_of(Names(prefix).channel(NS, ROOM).decode())

    def cluster_failover() -> None:
        cluster.failover(master)

    figures = await fail_over_under_traffic(a, b, cluster_failover)
    print(f"\n[clients over CLUSTER FAILOVER] {figures}")
    cluster.wait_healthy(30)


async def test_clients_get_everything_across_a_killed_master(
    nodes: tuple[LocalRedisCluster, str, Node, Node],
) -> None:
    cluster, prefix, a, b = nodes
    master = cluster.master_of(Names(prefix).channel(NS, ROOM).decode())

    def sigkill_master() -> None:
        master.kill()

    try:
        figures = await fail_over_under_traffic(a, b, sigkill_master)
    finally:
        cluster.restart(master)
    print(f"\n[clients over a SIGKILLed master] {figures}")
    cluster.wait_healthy(30)
