"""The router over a real uvicorn server: rooms, acks, errors, limits, lifecycle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from apps import make_app
from conftest import ServerThread, serve
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from starlette_realtime import AckError, Connection, RealtimeEndpoint, RealtimeRouter, on_event
from starlette_realtime.client import RealtimeClient

ENCODINGS = ["json", "msgpack"]


@pytest.fixture
def server() -> Iterator[tuple[ServerThread, RealtimeRouter]]:
    app, realtime = make_app(max_message_size=64 * 1024)
    with serve(app) as srv:
        yield srv, realtime


def client(srv: ServerThread, encoding: str = "json", **kw: Any) -> RealtimeClient:
    return RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], encoding=encoding, **kw)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_room_emits_with_and_without_the_sender(server: Any, encoding: str) -> None:
    srv, _ = server
    got: dict[str, list[Any]] = {"a": [], "b": [], "c": []}
    async with client(srv, encoding) as a, client(srv, encoding) as b, client(srv, encoding) as c:
        for name, cl in (("a", a), ("b", b), ("c", c)):
            cl.on("said", got[name].append, namespace="/chat")
        assert await a.call("join", "lobby", namespace="/chat", timeout=5) == ["lobby"]
        assert await b.call("join", "lobby", namespace="/chat", timeout=5) == ["lobby"]
        # c stays outside the room
        await a.call("say", {"room": "lobby", "text": "to others"}, namespace="/chat", timeout=5)
        await a.call("shout", {"room": "lobby", "text": "to all"}, namespace="/chat", timeout=5)
        await until(lambda: len(got["b"]) == 2 and len(got["a"]) == 1)
        await asyncio.sleep(0.1)
        assert got["a"] == [{"room": "lobby", "text": "to all"}]
        assert got["b"] == [{"room": "lobby", "text": "to others"}, {"room": "lobby", "text": "to all"}]
        assert got["c"] == []


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_acks_both_ways_and_error_codes(server: Any, encoding: str) -> None:
    srv, _ = server
    async with client(srv, encoding) as a:
        a.on("question", lambda q: {"answer": q.upper()}, namespace="/chat")
        assert await a.call("echo", {"n": 1}, namespace="/chat", timeout=5) == {"n": 1}
        assert await a.call("ask", "why", namespace="/chat", timeout=5) == {"answer": "WHY"}
        with pytest.raises(AckError) as bad:
            await a.call("say", {"room": 7}, namespace="/chat", timeout=5)
        assert bad.value.code == "invalid_payload"
        assert "Expected `str`, got `int`" in bad.value.message
        with pytest.raises(AckError) as unknown:
            await a.call("nope", namespace="/chat", timeout=5)
        assert unknown.value.code == "unknown_event"
        with pytest.raises(AckError) as internal:
            await a.call("fail", namespace="/chat", timeout=5)
        assert internal.value.code == "internal_error"
        assert "handler bug" not in internal.value.message  # no leak of the exception text
        with pytest.raises(AckError) as refused:
            await a.call("refuse", namespace="/chat", timeout=5)
        assert (refused.value.code, refused.value.message) == ("nope", "refused on purpose")
        # The connection survived all of that.
        assert await a.call("echo", 5, namespace="/chat", timeout=5) == 5


async def test_emit_to_one_connection_and_from_outside(server: Any) -> None:
    srv, realtime = server
    direct: list[Any] = []
    outside: list[Any] = []
    async with client(srv) as a, client(srv) as b:
        a.on("direct", direct.append, namespace="/chat")
        b.on("news", outside.append, namespace="/chat")
        a.on("news", outside.append, namespace="/chat")
        sid = await a.call("me", namespace="/chat", timeout=5)
        await until(lambda: direct == [{"sid": sid}])
        await b.call("join", "lobby", namespace="/chat", timeout=5)
        loop = asyncio.get_running_loop()
        # From outside any connection, on the server's own loop (an HTTP view or a worker there).
        fut = asyncio.run_coroutine_threadsafe(
            realtime.to("lobby").emit("news", "room only", namespace="/chat"), srv_loop(srv)
        )
        await loop.run_in_executor(None, fut.result, 5)
        fut = asyncio.run_coroutine_threadsafe(realtime.emit("news", "everyone", namespace="/chat"), srv_loop(srv))
        await loop.run_in_executor(None, fut.result, 5)
        fut = asyncio.run_coroutine_threadsafe(
            realtime.to_sid(sid, namespace="/chat").emit("news", "just a"), srv_loop(srv)
        )
        await loop.run_in_executor(None, fut.result, 5)
        await until(lambda: len(outside) == 4)
        assert sorted(outside) == sorted(["room only", "everyone", "everyone", "just a"])


def srv_loop(srv: ServerThread) -> asyncio.AbstractEventLoop:
    loop = srv.loop
    assert loop is not None
    return loop


async def test_oversized_frame_closes_with_1009(server: Any) -> None:
    srv, _ = server
    async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
        await ws.recv()
        await ws.send(json.dumps([1, "/chat", None]))
        await ws.recv()
        await ws.send(json.dumps([5, "/chat", "echo", "x" * (65 * 1024), 1]))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_unknown_subprotocol_is_refused(server: Any) -> None:
    srv, _ = server
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with asyncio.timeout(5):
            await websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v9.json"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 400
    assert b"rt.v1.json" in refused.value.response.body


async def test_events_before_connect_and_unknown_namespace(server: Any) -> None:
    srv, _ = server
    async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
        hello = json.loads(await ws.recv())
        assert hello[0] == 0 and hello[1] == 1
        await ws.send(json.dumps([5, "/chat", "echo", 1, 3]))
        assert json.loads(await ws.recv()) == [6, "/chat", 3, None, ["not_connected", "namespace not connected"]]
        await ws.send(json.dumps([1, "/nope", None]))
        reply = json.loads(await ws.recv())
        assert reply[:3] == [3, "/nope", "UNKNOWN_NAMESPACE"]
        await ws.send(json.dumps([1, "/chat", None]))
        assert json.loads(await ws.recv())[0] == 2
        await ws.send(json.dumps([1, "/chat", None]))
        assert json.loads(await ws.recv())[:3] == [3, "/chat", "ALREADY_CONNECTED"]
        await ws.send(json.dumps([5, "/chat", "echo", 2, 4]))
        assert json.loads(await ws.recv()) == [6, "/chat", 4, 2, None]


async def test_a_retried_event_is_handled_once(server: Any) -> None:
    srv, _ = server
    async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
        await ws.recv()
        await ws.send(json.dumps([1, "/chat", None]))
        await ws.recv()
        await ws.send(json.dumps([5, "/chat", "join", "r1", 1]))
        first = json.loads(await ws.recv())
        await ws.send(json.dumps([5, "/chat", "join", "r2", 1]))  # same id: a retry
        second = json.loads(await ws.recv())
        assert first == second == [6, "/chat", 1, ["r1"], None]
        await ws.send(json.dumps([5, "/chat", "join", "r2", 2]))
        assert json.loads(await ws.recv()) == [6, "/chat", 2, ["r1", "r2"], None]


async def test_a_client_that_stops_reading_is_cut_off_and_others_keep_receiving() -> None:
    app, realtime = make_app(max_queue_bytes=256 * 1024, max_queue_messages=10_000)
    with serve(app) as srv:
        received: list[Any] = []
        async with client(srv) as fast, client(srv) as sender:
            fast.on("said", received.append, namespace="/chat")
            await fast.call("join", "flood", namespace="/chat", timeout=5)
            # The slow client: websockets stops reading from the socket once 1 message waits.
            slow = await websockets.connect(
                srv.url + "/realtime/", subprotocols=["rt.v1.json"], max_queue=1, compression=None  # type: ignore[list-item]
            )
            await slow.recv()
            await slow.send(json.dumps([1, "/chat", None]))
            await slow.recv()
            await slow.send(json.dumps([5, "/chat", "join", "flood", 1]))
            await slow.recv()
            text = "x" * 4096
            n = 4000
            for i in range(n):
                await sender.emit("say", {"room": "flood", "text": f"{i}:{text}"}, namespace="/chat")
                if i % 200 == 0:
                    await sender.drain(10)
            await sender.drain(20)
            await until(lambda: len(received) == n, timeout=30)
            assert [int(m["text"].split(":")[0]) for m in received] == list(range(n))
            # The slow one was closed with 4004 (slow consumer) ...
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await slow.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
            # ... and left nothing behind.
            await until(lambda: realtime.stats()["links"] == 2)


async def test_heartbeat_closes_a_silent_client_with_4005() -> None:
    app, _ = make_app(ping_interval=0.2, ping_timeout=0.3)
    with serve(app) as srv:
        async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            frames = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        frames.append(await ws.recv())  # reads, but never answers a PING
            assert "[7]" in frames
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4005


async def test_the_client_answers_pings_and_stays_connected() -> None:
    app, realtime = make_app(ping_interval=0.1, ping_timeout=0.2)
    with serve(app) as srv:
        async with client(srv) as a:
            await asyncio.sleep(1.0)
            assert await a.call("echo", 1, namespace="/chat", timeout=5) == 1
            assert a.reconnects == 0


async def test_one_thousand_connect_disconnect_cycles_leave_nothing_behind(server: Any) -> None:
    srv, realtime = server
    loop = srv_loop(srv)
    tasks_before = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_count_tasks(), loop))

    async def cycle(i: int) -> None:
        async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.recv()
            await ws.send(json.dumps([1, "/chat", None]))
            await ws.recv()
            await ws.send(json.dumps([5, "/chat", "join", f"room-{i % 7}", 1]))
            await ws.recv()
            if i % 3 == 0:
                ws.transport.abort()  # drop with no close frame
            elif i % 3 == 1:
                await ws.send(json.dumps([4, "/chat"]))  # namespace disconnect, then close

    async with asyncio.timeout(120):
        for start in range(0, 1000, 50):
            await asyncio.gather(*(cycle(i) for i in range(start, start + 50)))
        await until(lambda: realtime.stats()["links"] == 0, timeout=10)
    stats = realtime.stats()
    assert stats == {**stats, "links": 0, "connections": 0, "rooms": 0, "users": 0}
    assert len(realtime.hub.rooms) == 0
    tasks_after = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_count_tasks(), loop))
    assert tasks_after <= tasks_before


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())


async def test_terminal_close_codes_stop_the_client(server: Any) -> None:
    srv, realtime = server
    async with client(srv) as a:
        sid = a.sid("/chat")
        assert sid is not None
        conn = realtime.local_connection(sid, "/chat")
        assert conn is not None
        srv_loop(srv).call_soon_threadsafe(conn.link.abort, 4503, "kicked")
        await until(lambda: a.state.value == "closed")
        assert a.last_close_code == 4503
        assert a.reconnects == 0


async def test_retryable_close_codes_reconnect(server: Any) -> None:
    srv, realtime = server
    async with client(srv, reconnection_delay=0.05, reconnection_delay_max=0.1) as a:
        sid = a.sid("/chat")
        assert sid is not None
        conn = realtime.local_connection(sid, "/chat")
        assert conn is not None
        srv_loop(srv).call_soon_threadsafe(conn.link.abort, 1011, "oops")
        await until(lambda: a.reconnects == 1)
        await a.wait_connected(5)
        assert a.last_close_code == 1011
        assert await a.call("echo", 1, namespace="/chat", timeout=5) == 1


async def test_http_get_serves_the_browser_client_or_426(server: Any) -> None:
    import httpx

    srv, _ = server
    async with httpx.AsyncClient() as http:
        plain = await http.get(srv.http + "/realtime/")
        assert plain.status_code == 426


async def test_graceful_shutdown_closes_with_1001_in_batches() -> None:
    import threading

    import uvicorn
    from conftest import free_port

    from starlette_realtime.server import Server

    app, realtime = make_app(shutdown_batch=2, shutdown_interval=0.2)
    port = free_port()
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), [realtime])
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    await until(lambda: server.started, timeout=10)
    closes: list[tuple[int | None, float]] = []
    loop = asyncio.get_running_loop()

    async def watch() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.recv()
            await ws.send(json.dumps([1, "/chat", None]))
            await ws.recv()
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as exc:
                closes.append((exc.rcvd.code if exc.rcvd else None, loop.time()))

    async with asyncio.timeout(20):
        watchers = [asyncio.create_task(watch()) for _ in range(6)]
        await until(lambda: realtime.stats()["connections"] == 6)
        server.should_exit = True
        await asyncio.gather(*watchers)
    thread.join(10)
    assert [code for code, _ in closes] == [1001] * 6
    times = sorted(t for _, t in closes)
    assert times[-1] - times[0] >= 0.3  # three batches, 0.2 s apart


class _Slow(RealtimeEndpoint):
    namespace = "/slow"

    @on_event("work")
    async def work(self, conn: Connection, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"


@pytest.mark.parametrize("concurrent", [False, True])
async def test_graceful_shutdown_lets_a_running_handler_answer_before_it_closes_its_socket(concurrent: bool) -> None:
    import threading

    import uvicorn
    from conftest import free_port

    from starlette_realtime.server import Server

    class Slow(_Slow):
        work = on_event("work", concurrent=concurrent)(_Slow.work)

    realtime = RealtimeRouter([Slow], shutdown_timeout=10.0)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    port = free_port()
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), [realtime])
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    await until(lambda: server.started, timeout=10)
    got: list[Any] = []
    async with asyncio.timeout(20):
        async with websockets.connect(f"ws://127.0.0.1:{port}/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.recv()
            await ws.send(json.dumps([1, "/slow", None]))
            await ws.recv()
            await ws.send(json.dumps([5, "/slow", "work", 0.5, 1]))
            await until(lambda: realtime.stats()["links"] == 1 and any(link.busy for link in realtime.links))
            server.should_exit = True
            try:
                while True:
                    got.append(json.loads(await ws.recv()))
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
        await asyncio.to_thread(thread.join, 10)
    # The answer went out first, then the 1001; the shutdown waited on the handler, not on its time-out.
    assert [6, "/slow", 1, "done"] in [frame[:4] for frame in got]
    assert code == 1001
    assert not thread.is_alive()
    assert realtime.stats()["links"] == 0


class _SpawnsABug(RealtimeEndpoint):
    namespace = "/spawn"

    @on_event("go")
    async def go(self, conn: Connection, data: Any) -> str:
        async def bug() -> None:
            await asyncio.sleep(0)
            raise RuntimeError("a bug in a task of the socket")

        conn.link.spawn(bug)
        return "started"


async def test_a_failing_task_of_the_socket_closes_it_with_1011_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A socket's tasks are plain tasks, not a task group's: a failure must still end the socket, loudly."""
    realtime = RealtimeRouter([_SpawnsABug])
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    with serve(app) as srv, caplog.at_level("ERROR", logger="starlette_realtime"):
        async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send('[1,"/spawn",null]')
            await ws.send('[5,"/spawn","go",null,1]')
            frames = []
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        frames.append(json.loads(await ws.recv()))
            assert ws.close_code == 1011
        assert [6, "/spawn", 1, "started"] in [f[:4] for f in frames]
        async with asyncio.timeout(10):
            while realtime.stats()["links"]:
                await asyncio.sleep(0.01)
    assert any("a task of the socket failed" in r.getMessage() and r.exc_info for r in caplog.records)


class _Crashes(RealtimeEndpoint):
    """``on_connect`` fails with a bug the first ``crashes`` times."""

    namespace = "/crash"
    crashes = 0

    async def on_connect(self, conn: Connection) -> None:
        if _Crashes.crashes:
            _Crashes.crashes -= 1
            raise RuntimeError("a bug in on_connect")


async def test_a_crash_closes_with_1011_and_the_client_retries() -> None:
    realtime = RealtimeRouter([_Crashes])
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    _Crashes.crashes = 1
    with serve(app) as srv:
        # It used to close with 1000 ("closed on purpose"), after which clients stop for good.
        async with RealtimeClient(srv.url + "/realtime", namespaces=["/crash"], reconnection_delay=0.05) as a:
            assert a.last_close_code == 1011 and a.reconnects == 1
