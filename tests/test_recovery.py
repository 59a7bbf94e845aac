"""Connection state recovery over a real server on the memory backend."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from apps import make_feed_app
from conftest import serve

from starlette_realtime import BackendUnavailable
from starlette_realtime.backends.base import HistoryReply
from starlette_realtime.backends.memory import MemoryBackend
from starlette_realtime.client import RealtimeClient
from starlette_realtime.frames import Position


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def assert_sent_once(client: RealtimeClient, room: str, total: int, namespace: str = "/feed") -> None:
    """What arrived on the wire, before the client's own de-duplication: each message once, none skipped."""
    wire = client.wire_stats.stream(room, namespace)
    assert (wire.received, wire.duplicates, wire.gaps, wire.epochs) == (total, 0, 0, 1), wire
    assert wire.last_offset is not None and wire.first_offset is not None
    assert wire.last_offset - wire.first_offset == total - 1, wire


def feed_client(url: str, **kw: Any) -> RealtimeClient:
    kw.setdefault("reconnection_delay", 0.05)
    kw.setdefault("reconnection_delay_max", 0.2)
    return RealtimeClient(url + "/realtime", namespaces=["/feed"], **kw)


async def test_ten_thousand_messages_survive_twenty_abrupt_drops() -> None:
    app, realtime = make_feed_app(secret_key="test-secret")
    with serve(app) as srv:
        got: list[int] = []
        recovered: list[bool] = []
        async with feed_client(srv.url) as sub, feed_client(srv.url) as pub:
            sub.on("n", got.append, namespace="/feed")
            sub.on("connect", lambda info: recovered.append(info["recovered"]), namespace="/feed")
            await sub.call("follow", "room", namespace="/feed", timeout=5)
            total = 10_000

            async def publisher() -> None:
                for i in range(total):
                    await pub.emit("publish", ["room", i], namespace="/feed")
                    if i % 50 == 49:
                        await pub.drain(10)
                        await asyncio.sleep(0.02)  # a steady rate, about 2,000 messages/s
                await pub.drain(10)

            async def killer() -> None:
                for _ in range(20):
                    await asyncio.sleep(0.2)
                    sub.kill_transport()  # no close frame, like a network failure
                    await sub.wait_connected(10)

            async with asyncio.timeout(90):
                await asyncio.gather(publisher(), killer())
                await until(lambda: len(got) >= total, timeout=30)
            await asyncio.sleep(0.2)
        assert sub.reconnects == 20
        assert recovered == [True] * 20  # one connect per reconnect, each recovered
        assert got == list(range(total))
        assert_sent_once(sub, "room", total)  # the server sent none twice (the client would have hidden it)


async def test_recovery_works_before_any_message_and_more_than_once() -> None:
    app, _ = make_feed_app(secret_key="test-secret")
    with serve(app) as srv:
        got: list[int] = []
        async with feed_client(srv.url) as sub, feed_client(srv.url) as pub:
            sub.on("n", got.append, namespace="/feed")
            await sub.call("follow", "quiet", namespace="/feed", timeout=5)
            for round_ in range(3):
                sub.kill_transport()
                # Published while the subscriber is away, before it ever received anything.
                await pub.call("publish", ["quiet", round_], namespace="/feed", timeout=5)
                await sub.wait_connected(10)
                assert sub.recovered("/feed")
                await until(lambda r=round_: len(got) == r + 1)
        assert got == [0, 1, 2]
        assert_sent_once(sub, "quiet", 3)


async def test_a_reconnect_after_the_window_is_reported_not_recovered() -> None:
    app, _ = make_feed_app(secret_key="test-secret", recovery_window=0.3)
    with serve(app) as srv:
        infos: list[dict[str, Any]] = []
        async with feed_client(srv.url, reconnection_delay=1.0, randomization_factor=0.0) as sub:
            sub.on("connect", infos.append, namespace="/feed")
            await sub.call("follow", "r", namespace="/feed", timeout=5)
            sub.kill_transport()
            await until(lambda: len(infos) == 1)  # the reconnect (the first connect came before on())
        assert infos[0]["recovered"] is False
        assert infos[0]["recovery_failed"] is True
        assert not sub.recovered("/feed")


async def test_a_forged_or_foreign_session_is_not_recovered() -> None:
    app, _ = make_feed_app(secret_key="test-secret")
    with serve(app) as srv:
        async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.recv()
            await ws.send(json.dumps([1, "/feed", None, "WyIvZmVlZCIsImFiYyJd.forged.sig"]))
            reply = json.loads(await ws.recv())
            assert reply[0] == 2 and reply[4] is False and reply[5] is True
            # A valid session of another namespace does not open this one.
            session = reply[3]
            await ws.send(json.dumps([1, "/chat", None, session]))
            other = json.loads(await ws.recv())
            assert other[0] == 2 and other[5] is True and other[2] != reply[2]


async def test_retried_emits_after_a_drop_are_handled_once() -> None:
    app, realtime = make_feed_app(secret_key="test-secret")
    with serve(app) as srv:
        got: list[int] = []
        async with feed_client(srv.url) as sub, feed_client(srv.url) as pub:
            sub.on("n", got.append, namespace="/feed")
            await sub.call("follow", "dedup", namespace="/feed", timeout=5)
            for i in range(200):
                await pub.emit("publish", ["dedup", i], namespace="/feed")
                if i % 40 == 0:
                    pub.kill_transport()  # unacked emits are resent after the reconnect
            await pub.wait_connected(10)
            await pub.drain(20)
            await until(lambda: len(got) >= 200)
            await asyncio.sleep(0.3)
        assert got == list(range(200))
        assert_sent_once(sub, "dedup", 200)  # each resent publish ran once


async def test_a_connection_older_than_the_window_still_recovers() -> None:
    # The window counts from the drop: the session string, signed when the connection
    # opened, used to expire with it, so a connection older than the window never recovered.
    app, _ = make_feed_app(secret_key="test-secret", recovery_window=1.0)
    with serve(app) as srv:
        got: list[int] = []
        async with feed_client(srv.url) as sub, feed_client(srv.url) as pub:
            sub.on("n", got.append, namespace="/feed")
            await sub.call("follow", "old", namespace="/feed", timeout=5)
            await asyncio.sleep(2.1)  # older than the window (time stamps have one-second resolution)
            sub.kill_transport()
            await pub.call("publish", ["old", 1], namespace="/feed", timeout=5)
            await sub.wait_connected(10)
            assert sub.recovered("/feed")
            await until(lambda: got == [1])
            assert_sent_once(sub, "old", 1)


class _HistoryTimesOutOnce(MemoryBackend):
    """The history read of a resume times out once, as Redis's did behind a reconnect storm."""

    fail_next = False

    async def since(self, ns: str, room: str, position: Position | None) -> HistoryReply:
        if self.fail_next:
            self.fail_next = False
            raise BackendUnavailable("timed out")
        return await super().since(ns, room, position)


async def test_a_resume_refused_as_retryable_keeps_its_session_for_the_retry() -> None:
    """benchmarks/reconnect_storm.py found 210 of 10,000 clients back without their session: a resume took the
    session, then timed out and was refused as retryable, and the retry found no session."""
    backend = _HistoryTimesOutOnce()
    app, _ = make_feed_app(secret_key="test-secret", backend=backend)
    with serve(app) as srv:
        got: list[int] = []
        errors: list[dict[str, Any]] = []
        async with feed_client(srv.url) as sub, feed_client(srv.url) as pub:
            sub.on("n", got.append, namespace="/feed")
            sub.on("connect_error", errors.append, namespace="/feed")
            await sub.call("follow", "storm", namespace="/feed", timeout=5)
            await pub.call("publish", ["storm", 0], namespace="/feed", timeout=5)
            await until(lambda: got == [0])
            backend.fail_next = True
            sub.kill_transport()
            await pub.call("publish", ["storm", 1], namespace="/feed", timeout=5)
            await until(lambda: bool(errors) and sub.recovered("/feed"))
        assert errors[0]["code"] == "UNAVAILABLE" and errors[0]["retryable"] is True
        assert got == [0, 1]
        assert_sent_once(sub, "storm", 2)
