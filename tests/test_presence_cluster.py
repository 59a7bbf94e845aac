"""Presence on Redis: the store against a real redis-server, then uvicorn nodes as subprocesses.

Measured figures are printed (run with ``-s``): how long after a SIGKILL the
users of the dead node are reported offline, after a SIGTERM, and after Redis
restarted empty.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from procs import Node, RedisServer
from test_presence import NS, FakeConn, Recorder, check_events, online_set, random_schedule, until

from starlette_realtime.backends.base import PresenceStore
from starlette_realtime.backends.presence_redis import RedisPresence, is_redis_host
from starlette_realtime.client import RealtimeClient
from starlette_realtime.presence_tracker import Tracker

pytestmark = [pytest.mark.redis]

TTL = 3.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class Host:
    """What RedisPresence needs of a RedisBackend; the test drives the heartbeat."""

    def __init__(self, client: Any, node_id: str, prefix: str) -> None:
        self._client = client
        self._node_id = node_id
        self._prefix = prefix
        self.callbacks: list[Any] = []
        self.healthy = True
        self.heartbeat_interval = 0.25  # the test beats by hand

    @property
    def redis(self) -> Any:
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def node_id(self) -> str:
        return self._node_id

    def add_heartbeat_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def remove_heartbeat_callback(self, fn: Any) -> None:
        self.callbacks.remove(fn)


class StoreNode:
    """One node at the store level: a RedisPresence, a Tracker and what it published."""

    def __init__(self, client: Any, name: str, prefix: str, ttl: float = 1.0) -> None:
        self.host = Host(client, name, prefix)
        self.recorder = Recorder()
        self.store = RedisPresence(self.host, namespace=NS, ttl=ttl)
        self.tracker = Tracker(NS, self.store, self.recorder)

    async def start(self) -> StoreNode:
        await self.store.start(self.tracker, self.recorder)
        return self

    async def beat(self) -> None:
        await self.store.heartbeat()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


def prefix() -> str:
    return "t" + secrets.token_hex(3)


def events(*nodes: StoreNode, room: str = "r") -> list[tuple[str, bool, int]]:
    return [(c.user, c.online, c.seq) for n in nodes for c in n.recorder.events[room]]


# The store ----------------------------------------------------------------------------


async def test_the_store_fits_the_protocol(client: Any) -> None:
    node = StoreNode(client, "a", prefix())
    assert isinstance(node.store, PresenceStore) and is_redis_host(node.host)
    with pytest.raises(ValueError, match="at least two heartbeat intervals"):
        RedisPresence(node.host, namespace=NS, ttl=0.4)


async def test_one_transition_per_user_across_nodes(client: Any) -> None:
    p = prefix()
    a, b = await StoreNode(client, "a", p).start(), await StoreNode(client, "b", p).start()
    ca, cb = FakeConn(), FakeConn()
    async with asyncio.timeout(5):
        await a.tracker.track("r", "ada", ca, b'{"name":"Ada"}')  # type: ignore[arg-type]
        await b.tracker.track("r", "ada", cb, b'{"name":"Other"}')  # type: ignore[arg-type]
        assert events(a, b) == [("ada", True, events(a)[0][2])]
        page = await b.store.presence_page(NS, "r", None, None)
        assert page.members == [("ada", b'{"name":"Ada"}')] and page.seq == events(a)[0][2]
        await a.tracker.untrack("r", "ada", ca)  # type: ignore[arg-type]
        assert len(events(a, b)) == 1 and await a.store.presence_contains(NS, "r", "ada")
        await b.tracker.untrack("r", "ada", cb)  # type: ignore[arg-type]
        assert [(u, on) for u, on, _ in events(a, b)] == [("ada", True), ("ada", False)]
        assert events(b)[0][2] > events(a)[0][2]
        assert await a.store.presence_count(NS, "r") == 0
        # Nothing is left of the room but its sequence number (which expires).
        assert await client.keys(f"{p}:{{/chat:r}}:*") == [f"{p}:{{/chat:r}}:p:q".encode()]


async def test_a_dead_node_is_reaped_exactly_once_by_concurrent_survivors(client: Any) -> None:
    p = prefix()
    dead = await StoreNode(client, "dead", p).start()
    survivors = [await StoreNode(client, f"s{i}", p).start() for i in range(3)]
    shared = FakeConn()
    async with asyncio.timeout(15):
        for room in ("r1", "r2", "r3"):
            for i in range(40):
                await dead.tracker.track(room, f"u{i}", FakeConn(), b"{}")  # type: ignore[arg-type]
        await survivors[0].tracker.track("r1", "u0", shared, b"{}")  # type: ignore[arg-type]  # also elsewhere
        for _ in range(4):  # the dead node stops beating; its deadline (0.75 s) passes
            await asyncio.sleep(0.3)
            await asyncio.gather(*(s.store._liveness() for s in survivors))
        # Every survivor sweeps, twice, at the same time.
        await asyncio.gather(*(s.beat() for s in survivors for _ in range(2)))
        for room in ("r1", "r2", "r3"):
            offline = [(u, seq) for s in survivors for u, on, seq in events(s, room=room) if not on]
            expect = 39 if room == "r1" else 40
            assert len(offline) == expect, room
            assert len({u for u, _ in offline}) == expect
            members = await survivors[1].store.presence_page(NS, room, None, None)
            assert [u for u, _ in members.members] == (["u0"] if room == "r1" else [])
        assert sum(s.store.reaped for s in survivors) == 1
        assert await client.zcard(f"{p}:{{presence}}:{NS}:nodes") == 3


async def test_entries_come_back_after_redis_loses_them(client: Any) -> None:
    p = prefix()
    a = await StoreNode(client, "a", p).start()
    b = await StoreNode(client, "b", p).start()
    async with asyncio.timeout(5):
        for i in range(5):
            await a.tracker.track("r", f"u{i}", FakeConn(), b"{}")  # type: ignore[arg-type]
        await b.tracker.track("r", "u0", FakeConn(), b"{}")  # type: ignore[arg-type]
        old = a.store.member
        await client.delete(*(await client.keys(f"{p}:*")))  # as if Redis restarted empty
        await a.beat()
        await b.beat()
        assert a.store.member != old
        members = await a.store.presence_page(NS, "r", None, None)
        assert sorted(u for u, _ in members.members) == [f"u{i}" for i in range(5)]
        # The nodes said so: each user came online again exactly once, after the older events.
        check_events(events(a, b)[5:], {f"u{i}" for i in range(5)}, "after the loss")
        await a.beat()  # reaps a's old member (nothing left of it)
        assert [u for u, _ in (await a.store.presence_page(NS, "r", None, None)).members] == [f"u{i}" for i in range(5)]


async def test_changes_made_while_redis_is_unreachable_are_written_later(client: Any) -> None:
    p = prefix()
    a = await StoreNode(client, "a", p).start()
    b = await StoreNode(client, "b", p).start()
    ada, bob = FakeConn(), FakeConn()
    async with asyncio.timeout(5):
        await a.tracker.track("r", "ada", ada, b"{}")  # type: ignore[arg-type]
        a.host.healthy = False  # the backend's link is down: presence fails fast, locally
        await a.tracker.track("r", "bob", bob, b"{}")  # type: ignore[arg-type]
        await a.tracker.untrack("r", "ada", ada)  # type: ignore[arg-type]
        await a.beat()  # skipped while unhealthy
        assert a.tracker.stats()["dirty"] == 1
        assert [u for u, _ in (await b.store.presence_page(NS, "r", None, None)).members] == ["ada"]
        a.host.healthy = True
        await a.beat()
        assert [u for u, _ in (await b.store.presence_page(NS, "r", None, None)).members] == ["bob"]
        check_events(events(a), {"bob"}, "after the outage")


async def test_a_node_that_was_paused_past_its_deadline_comes_back_without_flapping(client: Any) -> None:
    p = prefix()
    a = await StoreNode(client, "a", p).start()
    b = await StoreNode(client, "b", p).start()
    async with asyncio.timeout(10):
        for i in range(3):
            await a.tracker.track("r", f"u{i}", FakeConn(), b"{}")  # type: ignore[arg-type]
        await asyncio.sleep(1.2)  # nobody beats: both deadlines pass (a Redis pause looks like this)
        await a.beat()  # a re-registers and writes its users again first...
        await b.beat()
        await b.beat()  # ...so that reaping a's old member changes nobody's presence
        await a.beat()
        assert [(u, on) for u, on, _ in events(a, b)] == [("u0", True), ("u1", True), ("u2", True)]
        assert await b.store.presence_count(NS, "r") == 3


async def test_a_room_of_ten_thousand_in_one_round_trip_or_in_pages(client: Any) -> None:
    p = prefix()
    a = await StoreNode(client, "a", p).start()
    async with asyncio.timeout(20):
        adds = [(f"user{i:05d}", b'{"name":"someone"}') for i in range(10_000)]
        changes = await a.store.presence_apply(NS, "big", adds, [])
        assert len(changes) == 10_000
        started = time.perf_counter()
        page = await a.store.presence_page(NS, "big", None, None)
        whole = time.perf_counter() - started
        assert len(page.members) == 10_000
        seen: set[str] = set()
        cursor: str | None = None
        pages = 0
        started = time.perf_counter()
        while True:
            part = await a.store.presence_page(NS, "big", cursor, 1000)
            pages += 1
            seen.update(u for u, _ in part.members)
            cursor = part.cursor
            if cursor is None or pages > 50:
                break
        paged = time.perf_counter() - started
        assert len(seen) == 10_000
        print(f"\n10,000 members: one round trip {whole * 1000:.1f} ms; {pages} pages in {paged * 1000:.1f} ms")


@pytest.mark.parametrize("seed", range(4))
async def test_random_interleavings_on_three_store_nodes(client: Any, seed: int) -> None:
    rng = random.Random(seed)
    p = prefix()
    nodes = [await StoreNode(client, f"n{i}", p).start() for i in range(3)]
    users = [f"u{i}" for i in range(5)]
    conns = [(nodes[i % 3], users[i % 5], FakeConn()) for i in range(15)]
    inside: set[tuple[int, str]] = set()

    async def actor(i: int) -> None:
        node, user, conn = conns[i]
        for _ in range(25):
            room = rng.choice(["a", "b"])
            if (i, room) in inside:
                inside.discard((i, room))
                await node.tracker.untrack(room, user, conn)  # type: ignore[arg-type]
            else:
                inside.add((i, room))
                await node.tracker.track(room, user, conn, b"{}")  # type: ignore[arg-type]

    async with asyncio.timeout(20):
        await asyncio.gather(*(actor(i) for i in range(len(conns))))
        for room in ("a", "b"):
            expected = {conns[i][1] for i, r in inside if r == room}
            page = await nodes[0].store.presence_page(NS, room, None, None)
            assert {u for u, _ in page.members} == expected
            check_events(events(*nodes, room=room), expected, f"seed {seed} room {room}")


# Uvicorn nodes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[tuple[RedisServer, list[Node]]]:
    env = {"REDIS_URL": redis_server.url, "SECRET": "s3cret", "PRESENCE_TTL": str(TTL), "REDIS_PREFIX": "e2e"}
    nodes = [Node("presence_app:app", {**env, "NODE_ID": name}) for name in ("A", "B")]
    try:
        for node in nodes:
            node.start()
        yield redis_server, nodes
    finally:
        for node in nodes:
            node.terminate(5)


class Watcher:
    def __init__(self, node: Node) -> None:
        self.rt = RealtimeClient(node.url + "/realtime", namespaces=[NS], reconnection_delay=0.1,
                                 reconnection_delay_max=0.5)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.rt.on("$presence", lambda e: self.events.append((time.monotonic(), e)), namespace=NS)

    def of(self, room: str) -> list[tuple[str, bool, int]]:
        return [(e["user"], e["status"] == "online", e["seq"]) for _, e in self.events if e["room"] == room]

    def when(self, room: str, user: str, status: str) -> list[float]:
        return [t for t, e in self.events if (e["room"], e["user"], e["status"]) == (room, user, status)]


def user_client(node: Node, user: str, **kw: Any) -> RealtimeClient:
    from presence_app import token

    return RealtimeClient(node.url + "/realtime", namespaces=[NS], auth=token("s3cret", user),
                          reconnection_delay=0.1, reconnection_delay_max=0.5, **kw)


class _Srv:
    """A node seen through the ServerThread interface the shared schedule uses."""

    def __init__(self, node: Node) -> None:
        self.url = node.url


@pytest.fixture
async def opened() -> AsyncIterator[list[RealtimeClient]]:
    made: list[RealtimeClient] = []
    yield made
    async with asyncio.timeout(10):
        for c in made:
            await c.close()


@pytest.mark.parametrize("seed", [11, 12])
async def test_random_schedule_on_two_nodes(cluster: Any, opened: list[Any], seed: int) -> None:
    _, nodes = cluster
    await random_schedule([_Srv(n) for n in nodes], opened, seed, steps=12)


async def test_users_of_a_killed_node_go_offline_for_the_others(cluster: Any, opened: list[Any]) -> None:
    _, (a, b) = cluster
    watcher = Watcher(a)
    stays = user_client(a, "stays")
    both_a, both_b = user_client(a, "both"), user_client(b, "both", reconnection=False)
    victims = [user_client(b, f"victim{i}", reconnection=False) for i in range(3)]
    opened += [watcher.rt, stays, both_a, both_b, *victims]
    async with asyncio.timeout(TTL + 20):
        for c in opened:
            await c.connect()
        for c in opened:
            await c.call("join", "crash", namespace=NS)
        await until(lambda: len(watcher.of("crash")) == 5)
        b.kill()
        killed = time.monotonic()
        await until(lambda: all(watcher.when("crash", f"victim{i}", "offline") for i in range(3)), TTL + 10)
        latency = max(watcher.when("crash", f"victim{i}", "offline")[0] for i in range(3)) - killed
        await asyncio.sleep(1.5)  # every survivor's sweep has run again by now: still one event each
        print(f"\nSIGKILL: users of the dead node offline after {latency:.2f} s (ttl {TTL} s)")
        assert latency <= TTL + 0.5
        assert sorted(u for u, on, _ in watcher.of("crash") if not on) == ["victim0", "victim1", "victim2"]
        check_events(watcher.of("crash"), {"stays", "both"}, "after the kill")
        assert await watcher.rt.call("who", "crash", namespace=NS) == ["both", "stays"]
    b.start()


async def test_a_graceful_shutdown_removes_its_users_at_once(cluster: Any, opened: list[Any]) -> None:
    _, (a, b) = cluster
    watcher = Watcher(a)
    leaving = [user_client(b, f"leaving{i}", reconnection=False) for i in range(3)]
    opened += [watcher.rt, *leaving]
    async with asyncio.timeout(20):
        for c in opened:
            await c.connect()
            await c.call("join", "bye", namespace=NS)
        await until(lambda: len(watcher.of("bye")) == 3)
        started = time.monotonic()
        await asyncio.to_thread(b.terminate, 10)
        await until(lambda: len(watcher.of("bye")) == 6, 5)
        latency = max(watcher.when("bye", f"leaving{i}", "offline")[0] for i in range(3)) - started
        print(f"\nSIGTERM: users of the stopped node offline after {latency:.2f} s")
        assert latency < TTL
        check_events(watcher.of("bye"), set(), "after the shutdown")
    b.start()


async def test_presence_is_written_again_after_redis_restarts_empty(cluster: Any, opened: list[Any]) -> None:
    redis, (a, b) = cluster
    users = [user_client(node, f"stay{i}") for i, node in enumerate((a, b, a, b))]
    watcher = Watcher(a)
    opened += [watcher.rt, *users]
    async with asyncio.timeout(40):
        for c in opened:
            await c.connect()
            await c.call("join", "restart", namespace=NS)
        await until(lambda: len(watcher.of("restart")) == 4)
        redis.restart()
        restarted = time.monotonic()
        expected = [f"stay{i}" for i in range(4)]
        while True:
            try:
                who = await watcher.rt.call("who", "restart", namespace=NS, timeout=2)
            except Exception:
                who = None
            if who == expected:
                break
            await asyncio.sleep(0.1)
        took = time.monotonic() - restarted
        print(f"\nRedis restarted empty: every member listed again after {took:.2f} s")
        assert took < 10
        await until(lambda: online_set(watcher.of("restart")) == set(expected), 10)
