"""Presence on the memory backend: the tracker and store, and the mixin over a real uvicorn server.

The Redis store and several nodes are tested in test_presence_cluster.py.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import ServerThread, serve
from presence_app import make_app, token

from starlette_realtime import AckError, RealtimeEndpoint, RealtimeRouter
from starlette_realtime.backends.base import PresenceChange, PresenceReset, PresenceStore
from starlette_realtime.client import RealtimeClient
from starlette_realtime.connection import ConnectionState
from starlette_realtime.presence import PresenceMixin
from starlette_realtime.presence_tracker import MemoryPresence, Tracker

NS = "/chat"
SECRET = "s3cret"


# Helpers -------------------------------------------------------------------------


class FakeConn:
    """What the tracker needs of a connection: identity and a state."""

    def __init__(self) -> None:
        self.state = ConnectionState.OPEN


class Recorder:
    """Collects published transitions per room and checks them."""

    def __init__(self) -> None:
        self.events: dict[str, list[PresenceChange]] = defaultdict(list)

    async def __call__(self, room: str, changes: Any) -> None:
        self.events[room].extend(changes)


def check_events(events: list[tuple[str, bool, int]], final: set[str], where: str) -> None:
    """Per user, by seq: online and offline alternate, starting with online; the last one gives ``final``."""
    seqs = [seq for _, _, seq in events]
    assert len(seqs) == len(set(seqs)), f"{where}: a seq was repeated (duplicate event)"
    state: dict[str, bool] = {}
    for user, online, seq in sorted(events, key=lambda e: e[2]):
        before = state.get(user, False)
        assert online != before, f"{where}: {user} {'online' if online else 'offline'} twice in a row (seq {seq})"
        state[user] = online
    assert {u for u, on in state.items() if on} == final, f"{where}: the events do not add up to the member list"


def rt_client(srv: ServerThread, user: str | None = None, **kw: Any) -> RealtimeClient:
    auth = token(SECRET, user) if user else None
    return RealtimeClient(srv.url + "/realtime", namespaces=[NS], auth=auth, reconnection_delay=0.1,
                          reconnection_delay_max=0.5, **kw)


class Watcher:
    """An anonymous client (not tracked itself) recording the ``$presence`` events of rooms."""

    def __init__(self, srv: ServerThread) -> None:
        self.rt = rt_client(srv)
        self.events: list[dict[str, Any]] = []
        self.rt.on("$presence", self.events.append, namespace=NS)

    def of(self, room: str) -> list[tuple[str, bool, int]]:
        return [(e["user"], e["status"] == "online", e["seq"]) for e in self.events if e["room"] == room]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def eventually(ask: Any, expected: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while await ask() != expected:
            await asyncio.sleep(0.02)


def online_set(events: list[tuple[str, bool, int]]) -> set[str]:
    """The members that events applied in seq order leave online."""
    state: dict[str, bool] = {}
    for user, online, _ in sorted(events, key=lambda e: e[2]):
        state[user] = online
    return {u for u, on in state.items() if on}


@pytest.fixture
def server() -> Iterator[tuple[ServerThread, RealtimeRouter]]:
    app, realtime = make_app(secret=SECRET)
    with serve(app) as srv:
        yield srv, realtime


@pytest.fixture
async def clients() -> AsyncIterator[list[RealtimeClient]]:
    made: list[RealtimeClient] = []
    yield made
    async with asyncio.timeout(10):
        for c in made:
            await c.close()


# The tracker and the memory store ------------------------------------------------


async def test_memory_store_counts_transitions_and_seq_grows() -> None:
    ticks = iter([5, 5, 5, 100, 100])
    store = MemoryPresence(clock=lambda: next(ticks))
    assert isinstance(store, PresenceStore)
    a = await store.presence_apply(NS, "r", [("ada", b'{"n":1}'), ("bob", b"{}")], [])
    assert [(c.user, c.online, c.seq) for c in a] == [("ada", True, 5), ("bob", True, 6)]
    assert await store.presence_apply(NS, "r", [("ada", b"{}")], []) == []  # already there
    b = await store.presence_apply(NS, "r", [], ["ada"])
    assert [(c.user, c.online, c.seq, c.meta) for c in b] == [("ada", False, 7, b'{"n":1}')]
    c = await store.presence_apply(NS, "r", [("cy", b"{}")], [], replace=True)  # bob is not in the new set
    assert [(x.user, x.online, x.seq) for x in c] == [("bob", False, 100), ("cy", True, 101)]
    page = await store.presence_page(NS, "r", None, None)
    assert page.members == [("cy", b"{}")] and page.seq == 101
    assert await store.presence_contains(NS, "r", "cy") and not await store.presence_contains(NS, "r", "bob")


async def test_memory_store_pages_cover_the_room() -> None:
    store = MemoryPresence()
    await store.presence_apply(NS, "big", [(f"u{i:05d}", b"{}") for i in range(2500)], [])
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await store.presence_page(NS, "big", cursor, 1000)
        seen += [u for u, _ in page.members]
        cursor = page.cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 2500
    assert await store.presence_count(NS, "big") == 2500


async def test_tracker_one_transition_per_user_not_per_connection() -> None:
    rec = Recorder()
    tracker = Tracker(NS, MemoryPresence(), rec)
    tabs = [FakeConn() for _ in range(3)]
    for conn in tabs:
        await tracker.track("r", "ada", conn, b"{}")  # type: ignore[arg-type]
    await tracker.track("r", "ada", tabs[0], b"{}")  # type: ignore[arg-type]  # idempotent
    for conn in tabs[:2]:
        await tracker.untrack("r", "ada", conn)  # type: ignore[arg-type]
    assert [(c.user, c.online) for c in rec.events["r"]] == [("ada", True)]
    await tracker.untrack("r", "ada", tabs[2])  # type: ignore[arg-type]
    await tracker.untrack("r", "ada", tabs[2])  # type: ignore[arg-type]  # not counted any more
    assert [(c.user, c.online) for c in rec.events["r"]] == [("ada", True), ("ada", False)]
    assert tracker.stats() == {"rooms": 0, "entries": 0, "connections": 0, "dirty": 0}


class FlakyStore(MemoryPresence):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    async def presence_apply(self, ns: str, room: str, adds: Any, removes: Any, *, replace: bool = False) -> Any:
        if self.fail:
            raise ConnectionError("store down")
        return await super().presence_apply(ns, room, adds, removes, replace=replace)


async def test_tracker_resyncs_a_room_after_a_store_failure() -> None:
    store = FlakyStore()
    rec = Recorder()
    tracker = Tracker(NS, store, rec)
    a, b = FakeConn(), FakeConn()
    await tracker.track("r", "ada", a, b"{}")  # type: ignore[arg-type]
    store.fail = True
    await tracker.track("r", "bob", b, b"{}")  # type: ignore[arg-type]  # lost for now
    await tracker.untrack("r", "ada", a)  # type: ignore[arg-type]
    assert tracker.stats()["dirty"] == 1
    assert not await tracker.flush_dirty()
    store.fail = False
    assert await tracker.flush_dirty()
    assert [m for m, _ in (await store.presence_page(NS, "r", None, None)).members] == ["bob"]
    check_events([(c.user, c.online, c.seq) for c in rec.events["r"]], {"bob"}, "resync")


async def test_tracker_writes_the_room_again_when_the_store_resets() -> None:
    class ResettingStore(MemoryPresence):
        def __init__(self) -> None:
            super().__init__()
            self.resets = 1
            self.calls: list[bool] = []

        async def presence_apply(self, ns: str, room: str, adds: Any, removes: Any, *, replace: bool = False) -> Any:
            self.calls.append(replace)
            if self.resets:
                self.resets -= 1
                raise PresenceReset
            return await super().presence_apply(ns, room, adds, removes, replace=replace)

    store = ResettingStore()
    tracker = Tracker(NS, store, Recorder())
    await tracker.track("r", "ada", FakeConn(), b"{}")  # type: ignore[arg-type]
    assert store.calls == [False, True]
    assert await store.presence_contains(NS, "r", "ada") and tracker.stats()["dirty"] == 0


def test_metadata_is_an_allowlist_with_a_size_limit() -> None:
    class Chat(PresenceMixin, RealtimeEndpoint):
        namespace = "/chat"
        presence_fields = ("name", "avatar", "missing")
        presence_max_meta = 64

    class Conn:
        sid, namespace = "s", "/chat"

        def __init__(self, user: Any) -> None:
            self.user = user

    endpoint = Chat()
    user = type("U", (), {"name": "Ada", "avatar": "a.png", "email": "ada@x", "password": "pw"})()
    assert endpoint._encode_meta(Conn(user)) == b'{"name":"Ada","avatar":"a.png"}'  # type: ignore[arg-type]
    assert endpoint._encode_meta(Conn({"name": "Bob", "email": "b@x"})) == b'{"name":"Bob"}'  # type: ignore[arg-type]
    assert endpoint._encode_meta(Conn({"name": "x" * 100})) == b"{}"  # type: ignore[arg-type]  # too large
    Chat.presence_meta = lambda self, conn: ["not", "a", "dict"]  # type: ignore[assignment,method-assign,misc]
    assert endpoint._encode_meta(Conn(user)) == b"{}"  # type: ignore[arg-type]


async def test_tracker_collects_connections_that_closed_without_leaving() -> None:
    rec = Recorder()
    tracker = Tracker(NS, MemoryPresence(), rec)
    conn = FakeConn()
    await tracker.track("#online", "ada", conn, b"{}")  # type: ignore[arg-type]
    assert await tracker.collect() == 0
    conn.state = ConnectionState.CLOSED
    assert await tracker.collect() == 1
    assert tracker.stats()["entries"] == 0


@pytest.mark.parametrize("seed", range(6))
async def test_tracker_random_interleavings(seed: int) -> None:
    # Many connections of a few users join and leave a few rooms concurrently, with
    # random delays inside the store; the events must add up exactly.
    rng = random.Random(seed)
    inner = MemoryPresence()

    class SlowStore:
        async def presence_apply(self, *args: Any, **kw: Any) -> Any:
            await asyncio.sleep(rng.random() * 0.002)
            result = await inner.presence_apply(*args, **kw)
            await asyncio.sleep(rng.random() * 0.002)
            return result

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    rec = Recorder()
    tracker = Tracker(NS, SlowStore(), rec)  # type: ignore[arg-type]
    users = [f"u{i}" for i in range(5)]
    rooms = ["a", "b", "c"]
    conns = [(users[i % len(users)], FakeConn()) for i in range(15)]
    inside: set[tuple[int, str]] = set()

    async def actor(i: int) -> None:
        user, conn = conns[i]
        for _ in range(40):
            room = rng.choice(rooms)
            if (i, room) in inside:
                inside.discard((i, room))
                await tracker.untrack(room, user, conn)  # type: ignore[arg-type]
            else:
                inside.add((i, room))
                await tracker.track(room, user, conn, b"{}")  # type: ignore[arg-type]
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    async with asyncio.timeout(20):
        await asyncio.gather(*(actor(i) for i in range(len(conns))))
    for room in rooms:
        expected = {conns[i][0] for i, r in inside if r == room}
        page = await inner.presence_page(NS, room, None, None)
        assert {u for u, _ in page.members} == expected
        check_events([(c.user, c.online, c.seq) for c in rec.events[room]], expected, f"seed {seed} room {room}")


# The mixin over a real server --------------------------------------------------------


async def test_several_connections_of_one_user_make_one_presence(server: Any, clients: list[Any]) -> None:
    srv, _ = server
    watcher = Watcher(srv)
    tabs = [rt_client(srv, "ada") for _ in range(3)]
    bob = rt_client(srv, "bob")
    clients += [watcher.rt, *tabs, bob]
    async with asyncio.timeout(10):
        for c in clients:
            await c.connect()
        await watcher.rt.call("join", "lobby", namespace=NS)
        for tab in tabs:
            await tab.call("join", "lobby", namespace=NS)
        await bob.call("join", "lobby", namespace=NS)
        await until(lambda: len(watcher.of("lobby")) == 2)
        await tabs[0].call("leave", "lobby", namespace=NS)
        await tabs[1].close()
        await asyncio.sleep(0.1)
        assert await bob.call("who", "lobby", namespace=NS) == ["ada", "bob"]
        assert [e[:2] for e in watcher.of("lobby")] == [("ada", True), ("bob", True)]
        await tabs[2].close()
        await until(lambda: len(watcher.of("lobby")) == 3)
        assert watcher.of("lobby")[-1][:2] == ("ada", False)
        assert await bob.call("who", "lobby", namespace=NS) == ["bob"]
        # ada's first tab is still connected (in no room): online in the namespace only.
        assert await bob.call("online", {"user": "ada"}, namespace=NS) is True
        assert await bob.call("online", {"user": "ada", "room": "lobby"}, namespace=NS) is False
        assert await bob.call("count", None, namespace=NS) == 2
        await tabs[0].close()
        await eventually(lambda: bob.call("online", {"user": "ada"}, namespace=NS), False)
        assert await bob.call("count", None, namespace=NS) == 1
        check_events(watcher.of("lobby"), {"bob"}, "lobby")


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_list_is_for_members_and_shows_only_public_metadata(
    server: Any, clients: list[Any], encoding: str
) -> None:
    srv, _ = server
    ada, bob, anon = rt_client(srv, "ada", encoding=encoding), rt_client(srv, "bob", encoding=encoding), rt_client(srv)
    events: list[Any] = []
    ada.on("$presence", events.append, namespace=NS)
    clients += [ada, bob, anon]
    async with asyncio.timeout(10):
        for c in clients:
            await c.connect()
        joined = await ada.call("join_list", "lobby", namespace=NS)
        assert joined["members"] == [{"user": "ada", "meta": {"name": "Ada"}}]
        await anon.call("join", "lobby", namespace=NS)  # anonymous: a member, never listed
        with pytest.raises(AckError) as denied:
            await bob.call("$presence.list", {"room": "lobby"}, namespace=NS)
        assert denied.value.code == "forbidden"
        await bob.call("join", "lobby", namespace=NS)
        listing = await bob.call("$presence.list", {"room": "lobby"}, namespace=NS)
        assert listing["members"] == [
            {"user": "ada", "meta": {"name": "Ada"}},
            {"user": "bob", "meta": {"name": "Bob"}},
        ]
        assert listing["cursor"] is None and listing["seq"] >= joined["seq"]
        assert await anon.call("$presence.list", {"room": "lobby"}, namespace=NS) == listing
        with pytest.raises(AckError) as bad:
            await bob.call("$presence.list", {"room": "lobby", "limit": 0}, namespace=NS)
        assert bad.value.code == "invalid_payload"
        await until(lambda: len(events) == 2)
        assert events[1] == {"room": "lobby", "user": "bob", "status": "online", "meta": {"name": "Bob"},
                             "seq": listing["seq"]}
        assert "email" not in str(events) + str(listing)  # the private field never leaves the server


async def test_list_pages_merge_with_events_by_seq(server: Any, clients: list[Any]) -> None:
    srv, _ = server
    users = [rt_client(srv, f"user{i:02d}") for i in range(12)]
    clients += users
    async with asyncio.timeout(15):
        for c in users:
            await c.connect()
            await c.call("join", "big", namespace=NS)
        seen: dict[str, Any] = {}
        cursor = None
        pages = 0
        while True:
            page = await users[0].call("$presence.list", {"room": "big", "limit": 5, "cursor": cursor}, namespace=NS)
            pages += 1
            seen.update({m["user"]: m["meta"] for m in page["members"]})
            cursor = page["cursor"]
            if cursor is None:
                break
        assert pages == 3 and sorted(seen) == [f"user{i:02d}" for i in range(12)]


async def test_presence_of_a_recovered_connection(server: Any, clients: list[Any]) -> None:
    srv, _ = server
    watcher = Watcher(srv)
    ada = rt_client(srv, "ada")
    clients += [watcher.rt, ada]
    async with asyncio.timeout(10):
        await watcher.rt.connect()
        await ada.connect()
        await watcher.rt.call("join", "lobby", namespace=NS)
        await ada.call("join", "lobby", namespace=NS)
        ada.kill_transport()  # an abrupt drop: the client reconnects and recovers its rooms
        await asyncio.sleep(0.3)
        await ada.wait_connected(5)
        assert await ada.call("rooms", namespace=NS) == ["lobby"]
        assert await watcher.rt.call("who", "lobby", namespace=NS) == ["ada"]
        check_events(watcher.of("lobby"), {"ada"}, "recovered")


async def test_a_backend_without_presence_is_refused() -> None:
    from starlette_realtime.presence import PresenceMixin as Mixin

    class Chat(Mixin, RealtimeEndpoint):
        namespace = "/chat"

    class NoPresence:
        async def start(self, deliver: Any) -> None: ...

    router = RealtimeRouter([Chat], backend=NoPresence())  # type: ignore[arg-type]
    endpoint = router.endpoints["/chat"]
    assert isinstance(endpoint, PresenceMixin)
    with pytest.raises(TypeError, match="supports no presence"):
        await endpoint.presence("lobby")


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_schedule_over_real_connections(server: Any, clients: list[Any], seed: int) -> None:
    srv, _ = server
    await random_schedule([srv], clients, seed, steps=12)


async def random_schedule(servers: list[Any], clients: list[Any], seed: int, *, steps: int) -> None:
    """Clients of a few users join, leave, disconnect and reconnect at random, concurrently.

    A watcher on every server is in every room from the start; at the end, on every
    server, the events of each room must add up to its member list, which must be
    exactly the users with a connection in the room.
    """
    rng = random.Random(seed)
    # Fresh room names: clients of an earlier run on the same nodes may still be leaving theirs.
    rooms = [f"r{i}-{secrets.token_hex(3)}" for i in range(3)]
    users = ["ann", "ben", "cat", "dan"]
    watchers = [Watcher(srv) for srv in servers]
    clients += [w.rt for w in watchers]
    async with asyncio.timeout(30):
        for w in watchers:
            await w.rt.connect()
            for room in rooms:
                await w.rt.call("join", room, namespace=NS)
        slots: list[list[Any]] = []  # [user, server, client or None]
        for i in range(10):
            slots.append([users[i % len(users)], servers[i % len(servers)], None])

        async def actor(slot: list[Any], r: random.Random) -> None:
            for _ in range(steps):
                user, srv, c = slot
                if c is None:
                    c = slot[2] = rt_client(srv, user)
                    clients.append(c)
                    await c.connect()
                    continue
                roll = r.random()
                if roll < 0.08:
                    await c.close()
                    slot[2] = None
                elif roll < 0.12:
                    c.kill_transport()
                    await c.wait_connected(10)
                elif roll < 0.6:
                    await c.call("join", r.choice(rooms), namespace=NS, timeout=10)
                else:
                    await c.call("leave", r.choice(rooms), namespace=NS, timeout=10)
                if r.random() < 0.3:
                    await asyncio.sleep(r.random() * 0.01)

        await asyncio.gather(*(actor(s, random.Random(rng.random())) for s in slots))
        expected: dict[str, set[str]] = {room: set() for room in rooms}
        for user, _, c in slots:
            if c is not None:
                for room in await c.call("rooms", namespace=NS, timeout=10):
                    expected[room].add(user)
        for room in rooms:
            listed = await watchers[0].rt.call("$presence.list", {"room": room}, namespace=NS)
            assert {m["user"] for m in listed["members"]} == expected[room], room
            for n, w in enumerate(watchers):
                await until(lambda w=w, room=room: online_set(w.of(room)) == expected[room], 10)
                check_events(w.of(room), expected[room], f"seed {seed} room {room} watcher {n}")
                # Every watcher saw the same events (publications may still be in flight: wait a bit).
                await until(lambda w=w, room=room: sorted(w.of(room)) == sorted(watchers[0].of(room)), 5)
