"""The Redis backend against a real redis-server that is killed, stopped and restarted.

Detection times asserted here are the documented ones (docs/deployment.md):
a stopped Redis is noticed within ``link_timeout`` + one heartbeat, and the
link is back within about a second of Redis answering again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import redis as sync_redis
from conftest import LOAD_MARGIN, free_port
from procs import RedisServer
from redis.asyncio import Redis as AsyncRedis

from starlette_realtime import BackendUnavailable, Emitter
from starlette_realtime.backends import backend_from_url
from starlette_realtime.backends.base import Publication
from starlette_realtime.backends.presence_redis import RedisPresence
from starlette_realtime.backends.redis import RedisBackend
from starlette_realtime.backends.redis_rooms import RoomOrder, RoomSub
from starlette_realtime.backends.redis_sessions import TOUCH_BATCH
from starlette_realtime.cluster import ControlReply, ControlRequest
from starlette_realtime.presence_tracker import Tracker

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NS = "/chat"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def pub(room: str, i: int) -> Publication:
    return Publication(NS, room, "said", b'{"i":%d}' % i)


class Node:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.got: list[Publication] = []

    def offsets(self, room: str) -> list[int]:
        return [p.offset for p in self.got if p.room == room and p.event != "$resync"]

    def events(self, room: str) -> list[str]:
        return [p.event for p in self.got if p.room == room]


@pytest.fixture
async def nodes(server: RedisServer) -> AsyncIterator[Any]:
    started: list[Node] = []
    prefix = "t" + secrets.token_hex(3)

    async def make(*, control: bool = True, **options: Any) -> Node:
        options.setdefault("heartbeat_interval", 0.5)
        options.setdefault("link_timeout", 1.5)
        options.setdefault("command_timeout", 0.5)
        options.setdefault("reconnect_max_delay", 0.5)
        backend = RedisBackend(server.url, prefix=prefix, **options)
        node = Node(backend)
        if control:
            async def answer(req: ControlRequest) -> ControlReply:
                return ControlReply(backend.node_id, True, [backend.node_id])

            backend.on_control(answer)
        with anyio.fail_after(10):
            await backend.start(node.got.append)
        started.append(node)
        return node

    yield make
    for node in started:
        with anyio.fail_after(10):
            await node.backend.stop()


async def wait(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
    return time.monotonic() - start


async def test_url_and_client_forms(server: RedisServer) -> None:
    be = backend_from_url(server.url + "?history_size=50&prefix=x")
    assert isinstance(be, RedisBackend) and be.history_size == 50 and be.prefix == "x"
    client = AsyncRedis(port=server.port)
    try:
        own = RedisBackend(client, prefix="own")
        with anyio.fail_after(5):
            await own.start(lambda p: None)
            out = await own.publish(pub("r", 1))
            await own.stop()
        assert out.offset == 1
        assert own.redis is client
        with anyio.fail_after(5):
            assert await client.ping()  # stop() leaves a client it did not make open
    finally:
        await client.aclose()
    with pytest.raises(ValueError, match="decode"):
        RedisBackend(AsyncRedis(decode_responses=True))


async def test_unreachable_at_startup_fails_fast_and_hides_the_password() -> None:
    port = free_port()
    be = RedisBackend(f"redis://:s3cret@127.0.0.1:{port}/0", connect_timeout=1.0)
    start = time.monotonic()
    with anyio.fail_after(5), pytest.raises(BackendUnavailable) as info:
        await be.start(lambda p: None)
    assert time.monotonic() - start < 2.0
    assert f"127.0.0.1:{port}" in str(info.value) and "s3cret" not in str(info.value)
    assert not be.healthy


async def test_emitter_without_subscriptions_is_cheap(server: RedisServer, nodes: Any) -> None:
    receiver = await nodes()
    with anyio.fail_after(5):
        await receiver.backend.subscribe(NS, "lobby")
    probe = sync_redis.Redis(port=server.port)
    before = int(probe.info("clients")["connected_clients"])
    emitter = Emitter(RedisBackend(server.url, prefix=receiver.backend.prefix))
    with anyio.fail_after(5):
        await emitter.to("lobby").emit("said", {"text": "hi"}, namespace=NS)
    assert emitter.backend.health()["link"] == "none"  # type: ignore[attr-defined]
    assert int(probe.info("clients")["connected_clients"]) == before + 1  # one command connection, no pub/sub
    await wait(lambda: receiver.got, 5, "the emit")
    assert receiver.got[0].data == b'{"text":"hi"}' and receiver.got[0].offset == 1
    with anyio.fail_after(5):
        await emitter.aclose()
    await wait(lambda: int(probe.info("clients")["connected_clients"]) == before, 5, "the emitter to disconnect")
    assert probe.zrange(f"{receiver.backend.prefix}:nodes", 0, -1) == [receiver.backend.node_id.encode()]


async def test_publish_fails_fast_while_redis_is_down(server: RedisServer, nodes: Any) -> None:
    node = await nodes()
    server.kill()
    for _ in range(3):
        start = time.monotonic()
        with anyio.fail_after(5), pytest.raises(BackendUnavailable):
            await node.backend.publish(pub("r", 1))
        assert time.monotonic() - start < 0.5 * LOAD_MARGIN  # command_timeout, not the 5 s guard
    await wait(lambda: not node.backend.healthy, 5, "link down")
    server.start()
    await wait(lambda: node.backend.healthy, 5, "link up")
    with anyio.fail_after(5):
        assert (await node.backend.publish(pub("r", 2))).offset == 1


async def test_sigstop_is_detected_and_recovered(server: RedisServer, nodes: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "starlette_realtime.backends.redis")
    node = await nodes()
    be = node.backend
    server.pause()
    try:
        start = time.monotonic()
        with anyio.fail_after(5), pytest.raises(BackendUnavailable):
            await be.publish(pub("r", 1))  # a command times out instead of hanging
        assert time.monotonic() - start < 0.5 * LOAD_MARGIN  # command_timeout
        await wait(lambda: not be.healthy, 5, "a stopped Redis to be noticed")
        detected = time.monotonic() - start
        assert be.health()["link"] == "down"
        # At most link_timeout (1.5 s) + one heartbeat (0.5 s) + a watchdog tick.
        assert detected <= (1.5 + 0.5) * LOAD_MARGIN, detected
        with anyio.fail_after(1), pytest.raises(BackendUnavailable):
            await be.publish(pub("r", 1))  # known down: fails at once
    finally:
        server.resume()
    back = await wait(lambda: be.healthy, 5, "the link to come back")
    assert back < (0.5 + 0.5) * LOAD_MARGIN  # reconnect cap + the next heartbeat
    assert any(r.levelno == logging.ERROR and "link down" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.WARNING and "up again" in r.getMessage() for r in caplog.records)


async def test_lost_pubsub_connection_catches_up_from_the_stream(server: RedisServer, nodes: Any) -> None:
    receiver = await nodes()
    publisher = await nodes(control=False)  # no pub/sub link of its own
    with anyio.fail_after(5):
        await receiver.backend.subscribe(NS, "r")
        for i in range(10):
            await publisher.backend.publish(pub("r", i))
    await wait(lambda: len(receiver.offsets("r")) == 10, 5, "the first 10")
    probe = sync_redis.Redis(port=server.port)
    probe.client_kill_filter(_type="pubsub")
    with anyio.fail_after(5):
        # Published while the receiver has no subscription: only the stream has them.
        for i in range(10, 60):
            await publisher.backend.publish(pub("r", i))
    await wait(lambda: len(receiver.offsets("r")) >= 60, 10, "catch-up")
    with anyio.fail_after(5):
        for i in range(60, 70):
            await publisher.backend.publish(pub("r", i))
    await wait(lambda: len(receiver.offsets("r")) >= 70, 5, "live messages after catch-up")
    await anyio.sleep(0.2)
    assert receiver.offsets("r") == list(range(1, 71))
    assert "$resync" not in receiver.events("r")
    assert receiver.backend.health()["caught_up"] > 0
    assert receiver.backend.health()["sessions"] == 2


async def test_a_stream_that_went_back_skips_ahead(server: RedisServer, nodes: Any) -> None:
    # What a Redis Cluster failover can do: the new master lacks the last writes the old one
    # acknowledged (asynchronous replication).  Simulated on one server: offsets 4 and 5 vanish.
    receiver = await nodes()
    publisher = await nodes(control=False)
    with anyio.fail_after(5):
        await receiver.backend.subscribe(NS, "r")
        for i in range(5):
            await publisher.backend.publish(pub("r", i))
    await wait(lambda: len(receiver.offsets("r")) == 5, 5, "the first 5")
    meta, stream, _ = receiver.backend.names.stream(NS, "r")
    probe = sync_redis.Redis(port=server.port)
    kept = probe.xrange(stream, "1-0", "3-0")
    probe.delete(stream)  # the stream as the replica had it: entries 1..3, counter at 3
    for entry_id, fields in kept:
        probe.xadd(stream, fields, id=entry_id)
    probe.hset(meta, "o", 3)
    probe.client_kill_filter(_type="pubsub")  # the receiver reconnects and catches up
    await wait(lambda: receiver.backend.health()["rollbacks"] == 1, 5, "the rollback noticed")
    with anyio.fail_after(5):
        after = await publisher.backend.publish(pub("r", 5))
    assert after.offset == 6  # above every offset the receiver delivered, not a reused 4
    await wait(lambda: len(receiver.offsets("r")) == 6, 5, "the next message")
    assert receiver.offsets("r") == [1, 2, 3, 4, 5, 6]
    assert "$resync" not in receiver.events("r")


async def test_restart_without_data_sends_resync(server: RedisServer, nodes: Any) -> None:
    node = await nodes()
    with anyio.fail_after(5):
        await node.backend.subscribe(NS, "r")
        first = await node.backend.publish(pub("r", 1))
    await wait(lambda: node.offsets("r") == [1], 5, "first message")
    server.restart()
    await wait(lambda: "$resync" in node.events("r"), 10, "$resync")
    resync = next(p for p in node.got if p.event == "$resync")
    assert resync.offset == 0 and resync.data == b'{"room":"r","epoch":null}'
    await wait(lambda: node.backend.healthy, 5, "link up")
    with anyio.fail_after(5):
        again = await node.backend.publish(pub("r", 2))
    assert again.offset == 1 and again.epoch.split(".")[0] != first.epoch.split(".")[0]
    await wait(lambda: node.offsets("r")[-1:] == [1] and len(node.offsets("r")) == 2, 5, "new epoch delivered")


async def test_cluster_queries_wait_for_live_nodes_only(server: RedisServer, nodes: Any) -> None:
    a, b, c = await nodes(), await nodes(), await nodes()
    req = ControlRequest("members", NS, room="r")
    start = time.monotonic()
    with anyio.fail_after(5):
        replies = await a.backend.control(req, timeout=3)
    assert time.monotonic() - start < 0.5  # every live node answered: no waiting for the timeout
    assert sorted(r.items[0] for r in replies) == sorted(n.backend.node_id for n in (a, b, c))
    with anyio.fail_after(5):
        await c.backend.stop()
        replies = await a.backend.control(req, timeout=3)
    assert len(replies) == 2
    # A registered node that never answers makes the request wait for the timeout.
    probe = sync_redis.Redis(port=server.port)
    probe.zadd(f"{a.backend.prefix}:nodes", {"ghost": time.time() * 1000 + 60_000})
    start = time.monotonic()
    with anyio.fail_after(5):
        replies = await a.backend.control(req, timeout=0.5)
    assert 0.45 < time.monotonic() - start < 1.5 and len(replies) == 2


async def test_concurrent_subscribe_unsubscribe_converge(server: RedisServer, nodes: Any) -> None:
    node = await nodes()
    be = node.backend
    probe = sync_redis.Redis(port=server.port)
    channel = be.names.channel(NS, "busy")

    async def flip(wanted: bool, delay: float) -> None:
        await anyio.sleep(delay)
        await (be.subscribe(NS, "busy") if wanted else be.unsubscribe(NS, "busy"))

    for final in (True, False, True):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(flip, i % 2 == 0, (i % 7) * 0.001)
                tg.start_soon(flip, final, 0.02)
            await anyio.sleep(0.1)
            await be.subscribe(NS, "probe")  # a barrier: the flusher has caught up
        assert dict(probe.pubsub_numsub(channel))[channel] == (1 if final else 0)


async def test_heartbeat_callbacks(nodes: Any) -> None:
    node = await nodes()
    calls: list[float] = []

    async def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("a failing callback does not stop later runs")

    node.backend.add_heartbeat_callback(tick)
    await wait(lambda: len(calls) >= 3, 5, "three heartbeats")
    node.backend.remove_heartbeat_callback(tick)
    count = len(calls)
    await anyio.sleep(1.0)
    assert len(calls) <= count + 1


# Presence: the change and its event in one script -------------------------------------


class _Owner:
    """The bookkeeping a presence store re-syncs (none here)."""

    def mark_all(self) -> None:
        pass

    async def flush_dirty(self) -> bool:
        return True

    async def collect(self) -> int:
        return 0

    def stored_rooms(self) -> list[str]:
        return []


class _Conn:
    state = None


async def _not_called(room: str, changes: Any) -> None:
    raise AssertionError(f"the store publishes its events itself, yet {changes} were handed out")


async def _already_published(room: str, changes: Any) -> None:
    pass  # what the router passes to its tracker when the store publishes


def presence_events(node: Node, room: str) -> list[tuple[str, str]]:
    return [(d["user"], d["status"]) for p in node.got if p.room == room and p.event == "$presence"
            for d in [json.loads(p.data)]]


async def test_a_presence_change_and_its_event_are_one_step(nodes: Any) -> None:
    a, b = await nodes(), await nodes()
    with anyio.fail_after(5):
        await b.backend.subscribe(NS, "room")
    store = RedisPresence(a.backend, namespace=NS, ttl=2.0, event="$presence")
    with anyio.fail_after(5):
        await store.start(_Owner(), _not_called)
        (change,) = await store.presence_apply(NS, "room", [("u1", b'{"n":"\\u00e9"}')], [])
        assert await store.presence_apply(NS, "#online", [("u1", b"{}")], []) != []
    # Node a does nothing more (it may die here): the event is out, and in the room's history.
    await wait(lambda: presence_events(b, "room") == [("u1", "online")], 5, "the online event")
    (got,) = [p for p in b.got if p.event == "$presence"]
    assert json.loads(got.data) == {"room": "room", "user": "u1", "status": "online", "meta": {"n": "é"},
                                    "seq": change.seq}
    with anyio.fail_after(5):
        history = await b.backend.since(NS, "room", None)
        assert [p.event for p in history.publications] == ["$presence"] and got.offset == 1
        assert await b.backend.position(NS, "#online") is None  # no events for '#' rooms
    # Node a dies without a word: a survivor reaps its member, and the offline
    # event comes out of the same script as the removal.
    store.close()
    survivor = RedisPresence(b.backend, namespace=NS, ttl=2.0, event="$presence")
    with anyio.fail_after(5):
        await survivor.start(_Owner(), _not_called)
    await wait(lambda: presence_events(b, "room") == [("u1", "online"), ("u1", "offline")], 5, "the offline event")
    survivor.close()


async def test_users_who_leave_while_redis_is_down_go_offline_when_it_is_back(
    server: RedisServer, nodes: Any
) -> None:
    a, b = await nodes(), await nodes()
    with anyio.fail_after(5):
        await b.backend.subscribe(NS, "room")
    store = RedisPresence(a.backend, namespace=NS, ttl=5.0, event="$presence")
    tracker = Tracker(NS, store, _already_published)
    conn = _Conn()
    with anyio.fail_after(5):
        await store.start(tracker, _not_called)
        await tracker.track("room", "u1", conn, b"{}")  # type: ignore[arg-type]
    await wait(lambda: presence_events(b, "room") == [("u1", "online")], 5, "the online event")
    server.pause()
    try:
        with anyio.fail_after(5):
            await tracker.untrack("room", "u1", conn)  # type: ignore[arg-type]
        assert tracker.stats()["dirty"] == 1  # the store did not answer: retried on a later beat
        await anyio.sleep(2.0)  # the link goes down too
    finally:
        server.resume()
    await wait(lambda: presence_events(b, "room") == [("u1", "online"), ("u1", "offline")], 10, "the offline event")
    await wait(lambda: tracker.stats()["dirty"] == 0, 5, "the retry")
    await anyio.sleep(1.0)
    assert presence_events(b, "room") == [("u1", "online"), ("u1", "offline")]  # once
    store.close()


# The ordering rules of one subscriber (redis_rooms.RoomOrder), with a scripted stream ---------------------


def _order(stream: list[Publication], epoch: str = "g.s") -> tuple[RoomOrder, list[Publication], list[int]]:
    delivered: list[Publication] = []
    skipped: list[int] = []

    async def read(ns: str, room: str, after: int, from_epoch: str) -> tuple[str | None, int, list[Publication]]:
        last = max((p.offset for p in stream), default=0)
        return epoch, last, [p for p in stream if p.offset > after]

    async def skip_ahead(ns: str, room: str, e: str, offset: int) -> None:
        skipped.append(offset)

    return RoomOrder(delivered.append, read, skip_ahead, lambda: "g"), delivered, skipped


def _at(offset: int, epoch: str = "g.s") -> Publication:
    return Publication(NS, "r", "said", b"%d" % offset, epoch=epoch, offset=offset)


async def test_room_order_fills_a_gap_from_the_stream_then_drains_the_buffer() -> None:
    order, delivered, _ = _order([_at(i) for i in range(1, 6)])
    sub = order.rooms[b"c"] = RoomSub(NS, "r", b"c")
    assert not order.on_pub(sub, _at(1)) and not order.on_pub(sub, _at(2))
    assert order.on_pub(sub, _at(5))  # 3 and 4 are missing: catch up
    assert not order.on_pub(sub, _at(6))  # buffered meanwhile
    with anyio.fail_after(5):
        await order.catch_up(sub)
    assert [p.offset for p in delivered] == [1, 2, 3, 4, 5, 6]
    assert not order.on_pub(sub, _at(4)) and len(delivered) == 6  # already delivered: dropped


async def test_room_order_reports_a_gap_the_stream_no_longer_covers() -> None:
    order, delivered, _ = _order([_at(i) for i in range(8, 11)])  # trimmed: 3..7 are gone
    sub = order.rooms[b"c"] = RoomSub(NS, "r", b"c")
    order.on_pub(sub, _at(2))
    assert order.on_pub(sub, _at(10))
    with anyio.fail_after(5):
        await order.catch_up(sub)
    assert [p.event for p in delivered] == ["said", "$resync"] and order.resyncs == 1


async def test_room_order_skips_ahead_when_the_stream_went_back() -> None:
    order, delivered, skipped = _order([_at(i) for i in range(1, 4)])  # the store lost 4 and 5
    sub = order.rooms[b"c"] = RoomSub(NS, "r", b"c")
    for i in range(1, 6):
        order.on_pub(sub, _at(i))
    sub.buffer = []  # a new session: the room catches up
    with anyio.fail_after(5):
        await order.catch_up(sub)
    assert skipped == [5] and (sub.epoch, sub.offset) == ("g.s", 5) and order.rollbacks == 1
    assert not order.on_pub(sub, _at(6)) and delivered[-1].offset == 6


async def test_a_storm_of_commands_waits_for_a_connection_instead_of_failing(nodes: Any) -> None:
    # More concurrent commands than the URL-built client's pool holds: they queue, none fails.
    # (Queueing, not speed, is the point: a command deadline a loaded machine can meet.)
    node = await nodes(command_timeout=5.0)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(600):
                tg.start_soon(node.backend.save_session, f"storm{i}", b"x", 10.0)
        assert await node.backend.take_session("storm599") == b"x"


async def test_touch_sessions_refreshes_every_session_in_batches(server: RedisServer, nodes: Any) -> None:
    # A node refreshes all of its live sessions at once; more of them than one pipeline holds
    # are sent in TOUCH_BATCH chunks, each within command_timeout, and every one is refreshed.
    node = await nodes(command_timeout=5.0)  # the batching is the point, not a loaded machine's speed
    be = node.backend
    keys = [f"/:s{i}" for i in range(2 * TOUCH_BATCH + 5)]
    with anyio.fail_after(20):
        for start in range(0, len(keys), 500):
            await asyncio.gather(*(
                be.put_session(k, b"\x90", 5.0, owner="o", create=True) for k in keys[start : start + 500]
            ))
        real, sent = be.command, []

        async def counted(aw: Any) -> Any:
            sent.append(aw)
            return await real(aw)

        be.command = counted  # type: ignore[method-assign]
        await be.touch_sessions(keys, 600.0)
        be.command = real  # type: ignore[method-assign]
    assert len(sent) == 3  # 2,005 keys: two full pipelines and one of five
    probe = sync_redis.Redis(port=server.port)
    ttls = [probe.pttl(be.names.session(k)) for k in keys]
    assert min(ttls) > 500_000, sorted(ttls)[:5]


async def test_commands_after_a_redis_restart_do_not_fail_on_stale_pooled_connections(
    server: RedisServer, nodes: Any
) -> None:
    # The pool keeps connections to the Redis that died; once the link is up again, a command
    # that picks one of them must not fail with "unavailable" (it reconnects once, at once).
    node = await nodes()
    be = node.backend
    with anyio.fail_after(10):
        await asyncio.gather(*(be.publish(pub(f"r{i}", 1)) for i in range(40)))  # several pooled connections
    server.restart()
    await wait(lambda: not be.healthy, 5, "the link to notice the restart")
    await wait(lambda: be.healthy, 10, "the link to come back")
    with anyio.fail_after(10):
        outs = await asyncio.gather(*(be.publish(pub(f"r{i}", 2)) for i in range(40)), return_exceptions=True)
    assert [o for o in outs if isinstance(o, BaseException)] == []
