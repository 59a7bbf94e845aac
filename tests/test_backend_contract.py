"""One contract, every backend: the memory backend, the Redis backend and the Redis backend on a Redis Cluster.

The Redis variant runs against a real redis-server that this module starts, the
cluster variant against the local Redis Cluster of ``tests/redis_cluster.py``
(three masters, three replicas).  Without redis-server (or redis-cli) their
tests fail in CI and are skipped elsewhere.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from conftest import ManualClock
from procs import RedisServer
from redis_cluster import LocalRedisCluster

from starlette_realtime.backends import History, MemoryBackend, SessionStore
from starlette_realtime.backends.base import Publication
from starlette_realtime.backends.redis import RedisBackend
from starlette_realtime.frames import Position

pytestmark = pytest.mark.anyio

NS = "/chat"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


Factory = Callable[..., Any]


@pytest.fixture(params=["memory", "redis", "cluster"])
def make(request: pytest.FixtureRequest) -> Factory:
    if request.param == "memory":
        # Time passes only through Started.elapse: TTL rules are tested on this clock, not on sleeps.
        return lambda **options: MemoryBackend(clock=ManualClock(), **options)
    prefix = "t" + secrets.token_hex(4)
    if request.param == "cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        return lambda **options: RedisBackend(cluster.url, prefix=prefix, **options)
    server: RedisServer = request.getfixturevalue("redis_server")
    return lambda **options: RedisBackend(server.url, prefix=prefix, **options)


class Started:
    """A started backend and what it delivered."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.got: list[Publication] = []

    async def elapse(self, seconds: float) -> None:
        """Let ``seconds`` pass for the backend: the memory backend's clock moves, Redis's own takes real time."""
        clock = getattr(self.backend, "_clock", None)
        if isinstance(clock, ManualClock):
            clock.advance(seconds)
        else:
            await anyio.sleep(seconds)  # Redis expires keys on its own clock: real time must pass

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Publication]:
        with anyio.fail_after(timeout):
            while len(self.got) < count:
                await anyio.sleep(0.005)
        return self.got


@pytest.fixture
async def open_backend(make: Factory) -> AsyncIterator[Callable[..., Any]]:
    started: list[Started] = []

    async def opener(**options: Any) -> Started:
        s = Started(make(**options))
        with anyio.fail_after(10):
            await s.backend.start(s.got.append)
        started.append(s)
        return s

    yield opener
    for s in started:
        with anyio.fail_after(10):
            await s.backend.stop()


def pub(room: str, i: int = 0, **kw: Any) -> Publication:
    return Publication(NS, room, "said", b'{"i":%d}' % i, **kw)


async def publish_n(s: Started, room: str, n: int, start: int = 0) -> list[Publication]:
    out = []
    with anyio.fail_after(10):
        for i in range(start, start + n):
            out.append(await s.backend.publish(pub(room, i)))
    return out


async def test_capabilities(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    assert isinstance(s.backend, History)
    assert isinstance(s.backend, SessionStore)
    assert s.backend.healthy


async def test_publish_order_and_offsets(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    with anyio.fail_after(5):
        await s.backend.subscribe(NS, "lobby")
    sent = await publish_n(s, "lobby", 30)
    assert [p.offset for p in sent] == list(range(1, 31))
    assert len({p.epoch for p in sent}) == 1 and sent[0].epoch
    got = await s.wait_for(30)
    assert [p.offset for p in got] == list(range(1, 31))
    assert [p.data for p in got] == [b'{"i":%d}' % i for i in range(30)]
    assert all(p.epoch == sent[0].epoch for p in got)


async def test_fields_survive_the_trip(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    with anyio.fail_after(5):
        await s.backend.subscribe(NS, "b")
        sent = await s.backend.publish(pub("b", 7, exclude="sid1", rooms=("a", "b"), ts=12.5))
    (got,) = await s.wait_for(1)
    assert got == sent
    assert (got.exclude, got.rooms, got.ts) == ("sid1", ("a", "b"), 12.5)


async def test_streams_are_independent(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    a = await publish_n(s, "a", 3)
    b = await publish_n(s, "b", 2)
    assert [p.offset for p in a] == [1, 2, 3]
    assert [p.offset for p in b] == [1, 2]
    assert a[0].epoch != b[0].epoch


async def test_position_and_since(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    be = s.backend
    with anyio.fail_after(5):
        assert await be.position(NS, "r") is None
        assert await be.since(NS, "r", None) == await be.since(NS, "r", None)
        empty = await be.since(NS, "r", None)
        assert (empty.recovered, list(empty.publications), empty.position) == (True, [], None)
    sent = await publish_n(s, "r", 10)
    epoch = sent[0].epoch
    with anyio.fail_after(5):
        assert await be.position(NS, "r") == Position(epoch, 10)
        everything = await be.since(NS, "r", None)
        assert everything.recovered and [p.offset for p in everything.publications] == list(range(1, 11))
        assert everything.publications == sent
        after4 = await be.since(NS, "r", Position(epoch, 4))
        assert after4.recovered and [p.offset for p in after4.publications] == list(range(5, 11))
        assert after4.position == Position(epoch, 10)
        current = await be.since(NS, "r", Position(epoch, 10))
        assert current.recovered and not current.publications
        ahead = await be.since(NS, "r", Position(epoch, 99))
        assert ahead.recovered and not ahead.publications
        other = await be.since(NS, "r", Position("elsewhere.1", 4))
        assert not other.recovered and not other.publications and other.position == Position(epoch, 10)


async def test_epoch_rule_for_missing_streams(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    be = s.backend
    (known,) = await publish_n(s, "known", 1)
    with anyio.fail_after(5):
        # A stream that does not exist, asked from a position of this backend's
        # epoch: it expired while idle, nothing was missed.
        same = await be.since(NS, "idle", Position(known.epoch, 3))
        assert (same.recovered, list(same.publications), same.position) == (True, [], None)
        # From another epoch: the history was lost (a restarted, emptied store).
        lost = await be.since(NS, "idle", Position("zzzzzz.1", 3))
        assert (lost.recovered, list(lost.publications), lost.position) == (False, [], None)


async def test_trimmed_history_is_not_recovered(open_backend: Callable[..., Any]) -> None:
    s = await open_backend(history_size=5)
    sent = await publish_n(s, "r", 20)
    epoch = sent[0].epoch
    with anyio.fail_after(5):
        old = await s.backend.since(NS, "r", Position(epoch, 2))
        assert not old.recovered and not old.publications
        recent = await s.backend.since(NS, "r", Position(epoch, 17))
        assert recent.recovered and [p.offset for p in recent.publications] == [18, 19, 20]
        tail = await s.backend.since(NS, "r", None)
        assert [p.offset for p in tail.publications] == [16, 17, 18, 19, 20]


async def test_old_entries_are_not_replayed(open_backend: Callable[..., Any]) -> None:
    # Entry 2 comes while the stream lives, and is asked for while it lives: on Redis, whose
    # clock cannot be moved, each of those has 0.7 s of margin for a slow machine.
    s = await open_backend(history_ttl=1.5)
    (first,) = await publish_n(s, "r", 1)
    await s.elapse(0.75)
    await publish_n(s, "r", 1, start=1)
    await s.elapse(0.8)
    with anyio.fail_after(5):
        # Entry 1 is older than the TTL, entry 2 is not: from 0 there is a gap.
        reply = await s.backend.since(NS, "r", Position(first.epoch, 0))
        assert not reply.recovered
        fresh = await s.backend.since(NS, "r", Position(first.epoch, 1))
        assert fresh.recovered and [p.offset for p in fresh.publications] == [2]


async def test_idle_stream_expires_and_restarts(open_backend: Callable[..., Any]) -> None:
    s = await open_backend(history_ttl=0.3)
    (first,) = await publish_n(s, "r", 1)
    await s.elapse(1.1)
    await publish_n(s, "other", 1)  # the memory backend sweeps lazily, at most once a second
    with anyio.fail_after(5):
        assert await s.backend.position(NS, "r") is None
        reply = await s.backend.since(NS, "r", Position(first.epoch, 1))
        assert reply.recovered and not reply.publications
    (again,) = await publish_n(s, "r", 1)
    assert again.offset == 1 and again.epoch != first.epoch
    assert again.epoch.split(".")[0] == first.epoch.split(".")[0]


async def test_volatile_has_no_history(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    with anyio.fail_after(5):
        await s.backend.subscribe(NS, "v")
        out = await s.backend.publish(pub("v", 1, volatile=True))
    assert (out.offset, out.epoch) == (0, "")
    (got,) = await s.wait_for(1)
    assert got.volatile and got.offset == 0 and got.data == b'{"i":1}'
    with anyio.fail_after(5):
        assert await s.backend.position(NS, "v") is None
        assert not (await s.backend.since(NS, "v", None)).publications


async def test_no_history_means_no_offsets(open_backend: Callable[..., Any]) -> None:
    s = await open_backend(history_size=0)
    (out,) = await publish_n(s, "r", 1)
    assert out.offset == 0
    with anyio.fail_after(5):
        assert await s.backend.position(NS, "r") is None


async def test_sessions(open_backend: Callable[..., Any]) -> None:
    s = await open_backend()
    be = s.backend
    with anyio.fail_after(5):
        assert await be.take_session("nobody") is None
        await be.save_session("k1", b"\x00state\xff", 10)
        assert await be.take_session("k1") == b"\x00state\xff"
        assert await be.take_session("k1") is None
        await be.save_session("k2", b"short", 0.2)
    await s.elapse(0.4)
    with anyio.fail_after(5):
        assert await be.take_session("k2") is None
