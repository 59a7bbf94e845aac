"""Three uvicorn nodes on one real redis-server, with Python clients on every node.

The fault tests come last in the module (they share its nodes): Redis is
killed and restarted mid-stream, then stopped with SIGSTOP and continued.
Detection and recovery times are printed (run with ``-s``) and asserted
against the figures documented in docs/deployment.md.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from conftest import LOAD_MARGIN
from procs import Node, RedisServer

from starlette_realtime import BackendUnavailable, Emitter
from starlette_realtime.client import RealtimeClient

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

NS = "/chat"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[RedisServer, list[Node]]]:
    with RedisServer() as redis:
        secret = secrets.token_hex(16)
        nodes = [
            Node("cluster_app:app", {"REDIS_URL": redis.url, "NODE_ID": f"n{i}", "SECRET": secret})
            for i in range(3)
        ]
        try:
            for node in nodes:
                node.start()
            yield redis, nodes
        finally:
            for node in nodes:
                node.terminate(5)


class Client:
    """A RealtimeClient that records what the application sees."""

    def __init__(self, node: Node, name: str) -> None:
        self.name = name
        self.rt = RealtimeClient(node.url + "/realtime", namespaces=[NS], reconnection_delay=0.2,
                                 reconnection_delay_max=1.0)
        self.events: list[tuple[str, Any]] = []
        for event in ("said", "news", "direct", "$resync", "disconnect", "connect"):
            self.rt.on(event, lambda data, event=event: self.events.append((event, data)), namespace=NS)

    def got(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    @property
    def sid(self) -> str:
        sid = self.rt.sid(NS)
        assert sid is not None
        return sid


@pytest.fixture
async def clients(cluster: tuple[RedisServer, list[Node]]) -> AsyncIterator[Any]:
    made: list[Client] = []
    _, nodes = cluster

    async def make(per_node: int = 1) -> list[Client]:
        out = []
        for i, node in enumerate(nodes):
            for j in range(per_node):
                c = Client(node, f"n{i}c{j}")
                with anyio.fail_after(10):
                    await c.rt.connect()
                made.append(c)
                out.append(c)
        return out

    yield make
    for c in made:
        with anyio.fail_after(10):
            await c.rt.close()


async def wait(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
    return time.monotonic() - start


async def http(method: str, node: Node, path: str, **kw: Any) -> Any:
    async with httpx.AsyncClient(base_url=node.http, timeout=5) as h:
        with anyio.fail_after(6):
            response = await h.request(method, path, **kw)
    return response.json()


async def join_all(clients: list[Client], room: str) -> None:
    with anyio.fail_after(10):
        for c in clients:
            assert room in await c.rt.call("join", room, namespace=NS)


async def test_room_messages_reach_every_node_once_in_order(clients: Any) -> None:
    everyone = await clients(per_node=2)
    await join_all(everyone, "lobby")
    per_sender = 15
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for c in everyone:
                async def shout(c: Client = c) -> None:
                    for i in range(per_sender):
                        await c.rt.call("shout", {"room": "lobby", "text": f"{c.name}:{i}"}, namespace=NS)
                tg.start_soon(shout)
    total = per_sender * len(everyone)
    await wait(lambda: all(len(c.got("said")) >= total for c in everyone), 15, "every message everywhere")
    await anyio.sleep(0.2)
    reference = [m["text"] for m in everyone[0].got("said")]
    for c in everyone:
        texts = [m["text"] for m in c.got("said")]
        assert len(texts) == total and len(set(texts)) == total  # exactly once
        assert texts == reference  # one order, the room's, on every node
    for sender in everyone:
        mine = [t for t in reference if t.startswith(sender.name + ":")]
        assert mine == [f"{sender.name}:{i}" for i in range(per_sender)]  # each publisher's order kept


async def test_emits_from_outside_reach_every_node(cluster: tuple[RedisServer, list[Node]], clients: Any) -> None:
    redis, nodes = cluster
    everyone = await clients()
    await join_all(everyone[:2], "room-a")
    async with Emitter(redis.url) as emitter:
        with anyio.fail_after(5):
            await emitter.to("room-a").emit("news", {"n": 1}, namespace=NS)
            await emitter.emit("news", {"n": 2}, namespace=NS)  # the whole namespace (#all)
            await emitter.to_sid(everyone[2].sid).emit("direct", {"n": 3}, namespace=NS)
    with anyio.fail_after(5):
        assert await http("POST", nodes[2], "/emit", params={"room": "room-a", "event": "news"}, json={"n": 4})
    await wait(lambda: len(everyone[0].got("news")) == 3 and len(everyone[2].got("direct")) == 1, 5, "emits")
    await anyio.sleep(0.2)
    assert everyone[0].got("news") == everyone[1].got("news") == [{"n": 1}, {"n": 2}, {"n": 4}]
    assert everyone[2].got("news") == [{"n": 2}]
    assert everyone[2].got("direct") == [{"n": 3}] and not everyone[0].got("direct")


async def test_cluster_queries_across_nodes(cluster: tuple[RedisServer, list[Node]], clients: Any) -> None:
    _, nodes = cluster
    a, b, c = await clients()
    await join_all([a, b], "team")
    start = time.monotonic()
    members = await http("GET", nodes[2], "/members", params={"room": "team"})
    assert time.monotonic() - start < 1.0  # all three nodes answered: no waiting for the timeout
    assert sorted(members) == sorted([a.sid, b.sid])
    assert await http("GET", nodes[0], "/rooms", params={"sid": c.sid}) == []
    assert await http("POST", nodes[0], "/join", params={"sid": c.sid, "room": "team"}) is True
    assert await http("GET", nodes[1], "/rooms", params={"sid": c.sid}) == ["team"]
    assert sorted(await http("GET", nodes[0], "/members", params={"room": "team"})) == sorted([a.sid, b.sid, c.sid])
    with anyio.fail_after(5):
        await a.rt.call("shout", {"room": "team", "text": "hello c"}, namespace=NS)
    await wait(lambda: c.got("said") == [{"room": "team", "text": "hello c"}], 5, "c to hear the team")
    assert await http("POST", nodes[1], "/leave", params={"sid": c.sid, "room": "team"}) is True
    assert await http("GET", nodes[2], "/rooms", params={"sid": c.sid}) == []
    assert await http("GET", nodes[0], "/rooms", params={"sid": "nobody"}) is None
    assert await http("POST", nodes[0], "/disconnect", params={"sid": b.sid}) is True
    await wait(lambda: b.got("disconnect"), 5, "b to be disconnected from node 1")
    assert sorted(await http("GET", nodes[2], "/members", params={"room": "team"})) == [a.sid]


async def test_redis_killed_mid_stream_delivery_resumes(
    cluster: tuple[RedisServer, list[Node]], clients: Any
) -> None:
    redis, nodes = cluster
    everyone = await clients()
    await join_all(everyone, "stream")
    sent: list[int] = []
    stop = anyio.Event()

    async def publish() -> None:
        emitter = Emitter(redis.url)
        i = 0
        try:
            while not stop.is_set():
                try:
                    with anyio.fail_after(3):
                        await emitter.to("stream").emit("news", {"i": i}, namespace=NS)
                    sent.append(i)
                except (BackendUnavailable, OSError):
                    await emitter.aclose()  # start again once Redis is back
                i += 1
                await anyio.sleep(0.01)
        finally:
            with anyio.fail_after(5):
                await emitter.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        await wait(lambda: all(len(c.got("news")) >= 20 for c in everyone), 10, "the stream to flow")
        redis.kill()
        killed = time.monotonic()
        await anyio.sleep(1.0)
        redis.start()
        await wait(lambda: all(_healthy(n) for n in nodes), 15, "every node's link")
        reconnected = time.monotonic() - killed - 1.0
        mark = len(sent)
        await wait(lambda: len(sent) >= mark + 20, 10, "publishing to resume")
        last = sent[-1]
        await wait(lambda: all(c.got("news") and c.got("news")[-1]["i"] >= last for c in everyone), 10,
                   "delivery to resume on every node")
        stop.set()
    print(f"\nredis restart: every node healthy {reconnected:.2f} s after Redis came back")
    for c in everyone:
        received = [m["i"] for m in c.got("news")]
        assert received == sorted(set(received))  # in order, never twice
        # Never silence: a message missing from the sequence comes with a $resync.
        # Redis restarted empty, so every stream the node hosts (#all and #sid:<sid>
        # too) gets one, with the new epoch when the stream was already recreated.
        lost = set(sent) - set(received)
        resyncs = [r for r in c.got("$resync") if r["room"] == "stream"]
        assert not lost or resyncs, (c.name, sorted(lost)[:10])


def _healthy(node: Node) -> bool:
    try:
        return bool(httpx.get(node.http + "/health", timeout=1).json()["healthy"])
    except (httpx.HTTPError, ValueError):
        return False


async def test_sigstopped_redis_is_detected_and_recovered(
    cluster: tuple[RedisServer, list[Node]], clients: Any
) -> None:
    redis, nodes = cluster
    everyone = await clients()
    await join_all(everyone, "pause")
    await wait(lambda: all(_healthy(n) for n in nodes), 10, "healthy nodes")
    redis.pause()
    paused = time.monotonic()
    try:
        await wait(lambda: not any(_healthy(n) for n in nodes), 8, "every node to report the link down")
        detected = time.monotonic() - paused
        async with httpx.AsyncClient(base_url=nodes[0].http, timeout=2) as h:
            with anyio.fail_after(3):
                report = await h.get("/health")
        assert report.status_code == 503 and report.json()["link"] == "down"
        assert all(c.rt.state.value == "connected" for c in everyone)  # local connections stay open
    finally:
        redis.resume()
    resumed = time.monotonic()
    await wait(lambda: all(_healthy(n) for n in nodes), 10, "every node to recover")
    recovered = time.monotonic() - resumed
    print(f"\nSIGSTOP: detected on all nodes after {detected:.2f} s; recovered {recovered:.2f} s after SIGCONT")
    # Documented (docs/deployment.md): down within link_timeout + heartbeat_interval (3 s + 1 s); healthy again
    # within the reconnect cap (2 s) + a connect + the next heartbeat (1 s).
    assert detected <= (3.0 + 1.0) * LOAD_MARGIN
    assert recovered <= (2.0 + 1.0) * LOAD_MARGIN
    with anyio.fail_after(5):
        await everyone[0].rt.call("shout", {"room": "pause", "text": "after"}, namespace=NS)
    await wait(lambda: all({"room": "pause", "text": "after"} in c.got("said") for c in everyone), 5, "delivery")
