"""Connection state recovery on Redis, with real processes: uvicorn nodes on one redis-server.

The memory-backend version is tests/test_recovery.py.  Here a subscriber drops
abruptly (no close frame) and comes back to the same node or to the other one,
Redis dies and comes back empty, one node's pub/sub connection is killed, and a
session outlives the recovery window.  The 10,000-message run prints its
figures (run with ``-s``); docs/recovery.md ("Measured on Redis") quotes them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psutil
import pytest
from procs import Node, RedisServer
from redis.asyncio import Redis

from starlette_realtime.client import AckError, RealtimeClient

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NS = "/feed"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[RedisServer, Node, Node]]:
    """Two nodes with the same secret key on one redis-server (the fault tests come last: they share them)."""
    with RedisServer() as redis:
        secret = secrets.token_hex(16)
        a = Node("cluster_app:app", {"REDIS_URL": redis.url, "NODE_ID": "a", "SECRET": secret})
        b = Node("cluster_app:app", {"REDIS_URL": redis.url, "NODE_ID": "b", "SECRET": secret})
        try:
            a.start()
            b.start()
            yield redis, a, b
        finally:
            a.terminate(5)
            b.terminate(5)


@pytest.fixture
def short_window(cluster: tuple[RedisServer, Node, Node]) -> Iterator[Node]:
    """A third node on the same Redis whose recovery window is one second."""
    redis, _, _ = cluster
    node = Node("cluster_app:app", {"REDIS_URL": redis.url, "NODE_ID": "short", "SECRET": "short-secret",
                                    "RECOVERY_WINDOW": "1.0"})
    try:
        node.start()
        yield node
    finally:
        node.terminate(5)


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    made: list[RealtimeClient] = []

    async def make(*nodes: Node, **kw: Any) -> RealtimeClient:
        kw.setdefault("reconnection_delay", 0.05)
        kw.setdefault("reconnection_delay_max", 0.2)
        client = RealtimeClient([node.url + "/realtime" for node in nodes], namespaces=[NS], **kw)
        made.append(client)
        async with asyncio.timeout(15):
            await client.connect()
        return client

    try:
        yield make
    finally:
        for client in made:
            async with asyncio.timeout(10):
                await client.close()


async def until(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def health(node: Node) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=node.http, timeout=2) as h, asyncio.timeout(3):
        report: dict[str, Any] = (await h.get("/health")).json()
    return report


async def wait_healthy(node: Node, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                if (await health(node))["healthy"]:
                    return
            except (httpx.HTTPError, TimeoutError):
                pass
            await asyncio.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (with 20 samples, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def assert_sent_once(client: RealtimeClient, room: str, total: int, *, epochs: int = 1) -> None:
    """What arrived on the wire, before the client's own de-duplication: each message once, none skipped."""
    wire = client.wire_stats.stream(room, NS)
    assert (wire.received, wire.duplicates, wire.gaps, wire.epochs) == (total, 0, 0, epochs), wire


async def test_ten_thousand_messages_survive_twenty_drops_across_two_nodes(
    cluster: tuple[RedisServer, Node, Node], clients: Any
) -> None:
    _, a, b = cluster
    # Each node is listed twice: the client's round robin then reconnects alternately to
    # the same node and to the other one (a, a, b, b, a, ...), ten times each.  A fixed
    # 50 ms reconnect delay keeps the timings comparable from run to run.
    delay = 0.05
    sub: RealtimeClient = await clients(a, a, b, b, backoff=lambda: itertools.repeat(delay))
    pub: RealtimeClient = await clients(b)
    total, drops = 10_000, 20
    got: list[int] = []
    connects: list[tuple[bool, bool, str]] = []  # (recovered, recovery_failed, url)
    killed_at: list[float] = []
    to_recovered: list[float] = []
    to_caught_up: list[float] = []
    owed: list[tuple[int, float]] = []  # (the last number sent before a drop, when it dropped)
    sent = 0

    def on_n(n: int) -> None:
        got.append(n)
        while owed and n >= owed[0][0]:
            to_caught_up.append(time.perf_counter() - owed.pop(0)[1])

    def on_connect(info: dict[str, Any]) -> None:
        connects.append((info["recovered"], info["recovery_failed"], sub.url))
        to_recovered.append(time.perf_counter() - killed_at[-1])

    sub.on("n", on_n, namespace=NS)
    sub.on("connect", on_connect, namespace=NS)
    async with asyncio.timeout(5):
        await sub.call("follow", "ten-k", namespace=NS, timeout=5)

    async def publisher() -> None:
        nonlocal sent
        for i in range(total):
            await pub.emit("publish", ["ten-k", i], namespace=NS)
            sent = i + 1
            if i % 50 == 49:
                await pub.drain(10)
                await asyncio.sleep(0.02)  # a steady rate
        await pub.drain(10)

    async def killer() -> None:
        for k in range(drops):
            # Spread the drops evenly over the stream, whatever its rate.
            await until(lambda k=k: sent >= (k + 1) * total // (drops + 1), 30, f"message {k}")
            killed_at.append(time.perf_counter())
            if sent:
                owed.append((sent - 1, killed_at[-1]))
            sub.kill_transport()  # no close frame, like a network failure
            await sub.wait_connected(10)

    start = time.perf_counter()
    async with asyncio.timeout(60):
        await asyncio.gather(publisher(), killer())
        try:
            await until(lambda: len(got) >= total, 20, "every message")
        except AssertionError:
            missing = sorted(set(range(total)) - set(got))
            raise AssertionError(
                f"got {len(got)}, missing {len(missing)}: {missing[:5]}..{missing[-5:]}; connects {connects}; "
                f"a {await health(a)}; b {await health(b)}"
            ) from None
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.3)  # a late duplicate would show up now

    assert sub.reconnects == drops
    assert [(rec, failed) for rec, failed, _ in connects] == [(True, False)] * drops  # every reconnect recovered
    urls = [a.url + "/realtime/"] + [url for _, _, url in connects]
    moves = sum(1 for before, after in itertools.pairwise(urls) if before != after)
    assert moves == drops // 2  # half of the reconnects went to the other node
    assert got == list(range(total))  # all of them, in order, none twice
    assert_sent_once(sub, "ten-k", total)  # and the server sent none twice (the client would have hidden it)
    ms = {name: [round((t - delay) * 1000, 1) for t in values]
          for name, values in (("recovered", to_recovered), ("caught up", to_caught_up))}
    print(
        f"\nredis recovery: {total} messages, {drops} drops ({moves} to the other node) in {elapsed:.2f} s; "
        f"net of the {delay * 1000:.0f} ms reconnect delay: "
        + "; ".join(f"drop -> {name} p50 {percentile(v, 50)} ms, p99 {percentile(v, 99)} ms" for name, v in ms.items())
    )


async def test_immediate_reconnects_to_the_other_node_recover(
    cluster: tuple[RedisServer, Node, Node], clients: Any
) -> None:
    # No delay at all: the CONNECT can reach the other node before the first one has
    # saved the session (it does so once it has left the connection's rooms).
    _, a, b = cluster
    sub: RealtimeClient = await clients(a, b, backoff=lambda: itertools.repeat(0.0))
    pub: RealtimeClient = await clients(a)
    got: list[int] = []
    sub.on("n", got.append, namespace=NS)
    async with asyncio.timeout(5):
        await sub.call("follow", "at-once", namespace=NS, timeout=5)
    for i in range(10):
        sub.kill_transport()
        async with asyncio.timeout(5):
            await pub.call("publish", ["at-once", i], namespace=NS, timeout=5)
        await sub.wait_connected(5)
        assert sub.recovered(NS), f"reconnect {i + 1} was not recovered"
    await until(lambda: len(got) >= 10, 5, "every message")
    assert got == list(range(10))
    assert_sent_once(sub, "at-once", 10)


async def test_a_connection_older_than_the_window_still_recovers(short_window: Node, clients: Any) -> None:
    # The window counts from the drop, not from when the connection was opened.
    sub: RealtimeClient = await clients(short_window)
    pub: RealtimeClient = await clients(short_window)
    got: list[int] = []
    sub.on("n", got.append, namespace=NS)
    async with asyncio.timeout(5):
        await sub.call("follow", "old", namespace=NS, timeout=5)
    await asyncio.sleep(1.5)  # older than the one-second window
    sub.kill_transport()
    async with asyncio.timeout(5):
        await pub.call("publish", ["old", 1], namespace=NS, timeout=5)
    await sub.wait_connected(5)
    assert sub.recovered(NS)
    await until(lambda: got == [1], 5, "the message sent while away")


async def test_a_reconnect_after_the_window_is_reported_not_recovered(short_window: Node, clients: Any) -> None:
    sub: RealtimeClient = await clients(short_window, reconnection_delay=1.6, randomization_factor=0.0)
    infos: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        await sub.call("follow", "late", namespace=NS, timeout=5)
    sub.on("connect", infos.append, namespace=NS)
    sub.kill_transport()
    await until(lambda: len(infos) == 1, 10, "the reconnect")
    assert infos[0]["recovered"] is False
    assert infos[0]["recovery_failed"] is True
    assert not sub.recovered(NS)


async def _pubsub_connection_of(redis: RedisServer, node: Node) -> str:
    """The address (as Redis sees it) of the node's pub/sub connection."""
    assert node.proc is not None
    mine = {
        f"127.0.0.1:{c.laddr.port}"
        for c in psutil.Process(node.proc.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == redis.port
    }
    client = Redis.from_url(redis.url)
    try:
        async with asyncio.timeout(5):
            listed = await client.client_list(_type="pubsub")
    finally:
        async with asyncio.timeout(5):
            await client.aclose()
    found = [c["addr"] for c in listed if c["addr"] in mine]
    assert len(found) == 1, (found, listed)
    return found[0]


async def test_a_killed_pubsub_connection_catches_up_from_the_stream(
    cluster: tuple[RedisServer, Node, Node], clients: Any
) -> None:
    redis, a, b = cluster
    sub: RealtimeClient = await clients(a)
    pub: RealtimeClient = await clients(b)  # published on a node whose link still works
    got: list[int] = []
    resyncs: list[Any] = []
    sub.on("n", got.append, namespace=NS)
    sub.on("$resync", resyncs.append, namespace=NS)
    async with asyncio.timeout(5):
        await sub.call("follow", "gap", namespace=NS, timeout=5)
    before = await health(a)
    total, sent = 1500, 0

    async def publisher() -> None:
        nonlocal sent
        for i in range(total):
            await pub.emit("publish", ["gap", i], namespace=NS)
            sent = i + 1
            if i % 20 == 19:
                await pub.drain(10)
                await asyncio.sleep(0.01)
        await pub.drain(10)

    async def kill_pubsub() -> None:
        await until(lambda: sent >= 300, 20, "the stream to flow")
        addr = await _pubsub_connection_of(redis, a)
        client = Redis.from_url(redis.url)
        try:
            async with asyncio.timeout(5):
                assert await client.client_kill_filter(_type="pubsub", addr=addr) == 1
        finally:
            async with asyncio.timeout(5):
                await client.aclose()

    async with asyncio.timeout(40):
        await asyncio.gather(publisher(), kill_pubsub())
        await until(lambda: len(got) >= total, 20, "every message")
    await asyncio.sleep(0.3)
    after = await health(a)
    assert got == list(range(total))  # in order, none lost, none twice
    assert_sent_once(sub, "gap", total)
    assert not resyncs and sub.reconnects == 0  # the client noticed nothing
    assert after["sessions"] > before["sessions"]  # the link did restart ...
    assert after["caught_up"] > before["caught_up"]  # ... and read what it missed from the stream
    assert after["resyncs"] == before["resyncs"]


async def test_redis_restarted_empty_fails_publishes_then_reports_the_loss(
    cluster: tuple[RedisServer, Node, Node], clients: Any
) -> None:
    redis, a, b = cluster
    # Two subscribers stay connected (one per node); a third one drops while Redis is down.
    subs: list[RealtimeClient] = [await clients(a), await clients(b), await clients(a)]
    pub: RealtimeClient = await clients(b)
    got: list[list[int]] = [[], [], []]
    resyncs: list[list[dict[str, Any]]] = [[], [], []]
    for sub, mine, resynced in zip(subs, got, resyncs, strict=True):
        sub.on("n", mine.append, namespace=NS)
        sub.on("$resync", resynced.append, namespace=NS)
        async with asyncio.timeout(5):
            await sub.call("follow", "lost", namespace=NS, timeout=5)
    async with asyncio.timeout(10):
        for i in range(50):
            await pub.call("publish", ["lost", i], namespace=NS, timeout=5)
    await until(lambda: all(len(mine) == 50 for mine in got), 5, "the first 50")
    infos: list[dict[str, Any]] = []
    subs[2].on("connect", infos.append, namespace=NS)

    redis.kill()
    # Publishing fails fast and says so: an error ack, not silence.
    for attempt in range(3):
        started = time.perf_counter()
        with pytest.raises(AckError) as refused:
            await pub.call("publish", ["lost", 1000 + attempt], namespace=NS, timeout=5)
        assert refused.value.code == "unavailable"
        assert time.perf_counter() - started < 2.5  # within the backend's command_timeout (2 s)
        await asyncio.sleep(0.3)
    subs[2].kill_transport()  # its session cannot be saved now
    await asyncio.sleep(0.5)
    redis.start()  # empty: every stream's history and every saved session is gone
    await wait_healthy(a, 15)
    await wait_healthy(b, 15)
    # Never silence: each node tells its connected clients that the room's history is gone
    # (and that of every other stream it hosts: the whole namespace's, the connection's own) ...
    await until(lambda: all(len(resynced) >= 3 for resynced in resyncs[:2]), 10, "$resync on both nodes")
    await asyncio.sleep(0.2)
    for sub, resynced in zip(subs, resyncs[:2], strict=False):
        assert sorted(r["room"] for r in resynced) == sorted(["#all", f"#sid:{sub.sid(NS)}", "lost"])
    # ... and the client that dropped meanwhile is told that its session is gone.
    await until(lambda: bool(infos), 10, "the reconnect")
    assert infos[0]["recovered"] is False and infos[0]["recovery_failed"] is True
    async with asyncio.timeout(5):
        await subs[2].call("follow", "lost", namespace=NS, timeout=5)  # what an application does then
    async with asyncio.timeout(10):
        for i in range(10):
            await pub.call("publish", ["lost", 100 + i], namespace=NS, timeout=5)
    await until(lambda: all(len(mine) == 60 for mine in got), 5, "the messages of the new epoch")
    for mine in got:
        assert mine == list(range(50)) + list(range(100, 110))  # the refused publishes never arrive
    for sub in subs:
        assert_sent_once(sub, "lost", 60, epochs=2)  # 50 in the first epoch, 10 in the new one
