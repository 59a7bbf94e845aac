"""The router's origin check and rate limits on the Socket.IO wire, over real uvicorn.

:class:`~starlette_realtime.socketio.server.SocketIOServer` checks every Engine.IO request's Origin with the router's
policy (HTTP 403 ``{"code": 4}`` on polling, the WebSocket handshake refused with 403); the router's limits and
``@on_event(..., rate=, burst=)`` reach Socket.IO clients through the same session core as our own wire (an ack
``{"error": {"code": "rate_limited"}}``, and ``abuse_threshold`` refusals in a row close the session with 4006).
The limits run on a manual clock: no token comes back until a test moves it, however loaded the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import websockets
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from starlette_realtime import Connection, Limits, RealtimeEndpoint, RealtimeRouter, on_event
from tests.conftest import ManualClock, ServerThread, eventually, serve

GOOD = "https://app.example"
FOREIGN = ["https://evil.example", "https://app.example.evil.example", "http://app.example", "null"]
TRANSPORTS = [["polling", "websocket"], ["websocket"]]


class Main(RealtimeEndpoint):
    namespace = "/"

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data

    @on_event("typing", rate=1, burst=2)
    async def typing(self, conn: Connection, room: str) -> str:
        return room


def make_app(**options: Any) -> tuple[Starlette, RealtimeRouter]:
    # No heartbeat during a test: a manual clock never reaches the next ping, so the clients' own ping
    # timeouts (interval + timeout) must outlast the test.
    realtime = RealtimeRouter([Main], socketio=True, ping_interval=30.0, ping_timeout=30.0, **options)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/", realtime)
    return app, realtime


def sessions(realtime: RealtimeRouter) -> int:
    assert realtime.socketio is not None
    return len(realtime.socketio.engine.sessions)


POLLING = {"EIO": "4", "transport": "polling"}


def ws_url(server: ServerThread, sid: str | None = None) -> str:
    return f"{server.url}/socket.io/?EIO=4&transport=websocket" + (f"&sid={sid}" if sid else "")


async def open_polling(http: httpx.AsyncClient, origin: str = GOOD) -> str:
    r = await http.get("", params=POLLING, headers={"origin": origin})
    assert r.status_code == 200 and r.text[0] == "0", r.text
    return str(msgspec.json.decode(r.text[1:])["sid"])


# Origins -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[ServerThread, RealtimeRouter]]:
    app, realtime = make_app(allowed_origins=[GOOD])
    with serve(app) as srv:
        yield srv, realtime


async def test_polling_from_a_foreign_origin_gets_403_code_4(guarded: tuple[ServerThread, RealtimeRouter]) -> None:
    srv, realtime = guarded
    before = sessions(realtime)
    async with httpx.AsyncClient(base_url=srv.http + "/socket.io/", timeout=10) as http:
        with anyio.fail_after(20):
            for origin in FOREIGN:
                r = await http.get("", params=POLLING, headers={"origin": origin})
                assert (r.status_code, r.json()) == (403, {"code": 4, "message": "Forbidden"}), origin
            assert sessions(realtime) == before  # refused before any Engine.IO session exists
            # Every request is checked, not only the handshake: a foreign page cannot post into a session.
            sid = await open_polling(http)
            params = {**POLLING, "sid": sid}
            r = await http.post("", params=params, content="40", headers={"origin": FOREIGN[0]})
            assert (r.status_code, r.json()["code"]) == (403, 4)
            r = await http.get("", params=params, headers={"origin": FOREIGN[0]})
            assert (r.status_code, r.json()["code"]) == (403, 4)
            # The session itself is untouched: its own page connects and gets an answer.
            r = await http.post("", params=params, content="40", headers={"origin": GOOD})
            assert (r.status_code, r.text) == (200, "ok")
            r = await http.get("", params=params, headers={"origin": GOOD})
            assert r.text.startswith('40{"sid":'), r.text
            await http.post("", params=params, content="1", headers={"origin": GOOD})
            # Without an Origin (not a browser) the default allow_missing_origin=True lets it through.
            r = await http.get("", params=POLLING)
            assert r.status_code == 200


async def test_a_websocket_from_a_foreign_origin_gets_403(guarded: tuple[ServerThread, RealtimeRouter]) -> None:
    srv, realtime = guarded
    before = sessions(realtime)
    with anyio.fail_after(30):
        for origin in FOREIGN:
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(ws_url(srv), origin=origin)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403, origin
        assert sessions(realtime) == before
        # The upgrade of a polling session is a WebSocket request of its own, checked the same way.
        async with httpx.AsyncClient(base_url=srv.http + "/socket.io/", timeout=10) as http:
            sid = await open_polling(http)
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(ws_url(srv, sid), origin=FOREIGN[0])  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
            async with websockets.connect(ws_url(srv, sid), origin=GOOD) as ws:  # type: ignore[arg-type]
                await ws.send("2probe")
                assert await ws.recv() == "3probe"
        async with websockets.connect(ws_url(srv), origin=GOOD) as ws:  # type: ignore[arg-type]
            assert str(await ws.recv())[0] == "0"


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_python_socketio_client_from_a_foreign_origin_cannot_connect(
    guarded: tuple[ServerThread, RealtimeRouter], transports: list[str]
) -> None:
    import socketio  # type: ignore[import-untyped]

    srv, _ = guarded
    with anyio.fail_after(30):
        evil = socketio.AsyncClient(reconnection=False)
        # python-engineio closes its HTTP session before reading a refused handshake's body: when the body was not
        # in the first read, aiohttp raises RuntimeError("Connection closed.") instead (the client's race; the 403
        # and its body are asserted over raw HTTP above).
        with pytest.raises((socketio.exceptions.ConnectionError, RuntimeError)):
            await evil.connect(srv.http, headers={"Origin": FOREIGN[0]}, transports=transports, wait_timeout=5)
        assert not evil.connected
        await evil.disconnect()
        good = socketio.AsyncClient(reconnection=False)
        await good.connect(srv.http, headers={"Origin": GOOD}, transports=transports, wait_timeout=5)
        assert await good.call("echo", "allowed", timeout=5) == "allowed"
        await good.disconnect()


async def test_without_allow_missing_origin_a_request_without_origin_gets_403() -> None:
    app, _ = make_app(allowed_origins=[GOOD], allow_missing_origin=False)
    with serve(app) as srv:
        async with httpx.AsyncClient(base_url=srv.http + "/socket.io/", timeout=10) as http:
            with anyio.fail_after(20):
                r = await http.get("", params=POLLING)
                assert (r.status_code, r.json()["code"]) == (403, 4)
                with pytest.raises(websockets.InvalidStatus) as refused:
                    await websockets.connect(ws_url(srv))
                assert refused.value.response.status_code == 403
                await open_polling(http)


# Rate limits ---------------------------------------------------------------------------------------------


def rate_limited(reply: Any) -> bool:
    return isinstance(reply, dict) and reply.get("error", {}).get("code") == "rate_limited"


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_the_router_rate_answers_rate_limited_acks(transports: list[str]) -> None:
    import socketio

    clock = ManualClock()
    app, _ = make_app(limits=Limits(rate=5, burst=5, abuse_threshold=50, clock=clock))
    with serve(app) as srv:
        sio = socketio.AsyncClient(reconnection=False)
        with anyio.fail_after(30):
            await sio.connect(srv.http, transports=transports, wait_timeout=5)
            # The CONNECT took the first token of the burst.
            assert [await sio.call("echo", i, timeout=5) for i in range(4)] == [0, 1, 2, 3]
            refused = await sio.call("echo", 4, timeout=5)
            assert refused == {"error": {"code": "rate_limited", "message": "over 5 events/s"}}
            # Unknown events pay too, and get rate_limited rather than unknown_event once over.
            assert rate_limited(await sio.call("no-such-event", timeout=5))
            clock.advance(0.5)  # two and a half tokens come back
            assert [await sio.call("echo", i, timeout=5) for i in (5, 6)] == [5, 6]
            assert rate_limited(await sio.call("echo", 7, timeout=5))
            assert sio.connected  # refusals below abuse_threshold keep the connection
            await sio.disconnect()


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_an_event_rate_has_its_own_bucket(transports: list[str]) -> None:
    import socketio

    app, _ = make_app(limits=Limits(abuse_threshold=50, clock=ManualClock()))
    with serve(app) as srv:
        sio = socketio.AsyncClient(reconnection=False)
        with anyio.fail_after(30):
            await sio.connect(srv.http, transports=transports, wait_timeout=5)
            answers = [await sio.call("typing", f"r{i}", timeout=5) for i in range(4)]
            assert answers[:2] == ["r0", "r1"]  # burst=2
            assert rate_limited(answers[2]) and rate_limited(answers[3])
            assert await sio.call("echo", "free", timeout=5) == "free"  # the router sets no rate of its own
            await sio.disconnect()


async def test_a_connect_over_the_rate_gets_a_retryable_connect_error() -> None:
    app, _ = make_app(limits=Limits(rate=2, burst=3, abuse_threshold=50, clock=ManualClock()))
    with serve(app) as srv:
        with anyio.fail_after(20):
            async with websockets.connect(ws_url(srv)) as ws:
                assert str(await ws.recv())[0] == "0"
                answers = []
                for _ in range(5):
                    await ws.send("40/nope,")
                    answers.append(str(await ws.recv()))
        assert (
            answers[:3]
            == ['44/nope,{"message":"Invalid namespace","data":{"code":"UNKNOWN_NAMESPACE","retryable":false}}'] * 3
        )
        refusal = {"message": "over 2 events/s", "data": {"code": "rate_limited", "retryable": True}}
        assert [msgspec.json.decode(a[len("44/nope,") :]) for a in answers[3:]] == [refusal] * 2


async def read_until_closed(ws: ClientConnection) -> list[str]:
    got: list[str] = []
    try:
        while True:
            got.append(str(await ws.recv()))
    except ConnectionClosed:
        return got


async def test_a_sustained_flood_closes_the_websocket_session_with_4006() -> None:
    app, realtime = make_app(limits=Limits(rate=5, burst=5, abuse_threshold=10, clock=ManualClock()))
    with serve(app) as srv:
        with anyio.fail_after(20):
            async with websockets.connect(ws_url(srv)) as ws:
                assert str(await ws.recv())[0] == "0"
                await ws.send("40")
                assert str(await ws.recv()).startswith('40{"sid":')
                # 1 token for the CONNECT, 4 for events 1-4; events 5-14 are the 10 refusals in a row.
                for i in range(1, 15):
                    await ws.send(f'42{i}["echo",{i}]')
                got = await read_until_closed(ws)
        assert got[:4] == [f"43{i}[{i}]" for i in range(1, 5)]
        refusal = '[{"error":{"code":"rate_limited","message":"over 5 events/s"}}]'
        assert got[4:] == [f"43{i}{refusal}" for i in range(5, 14)]
        # As the reference server closes a WebSocket transport: the close frame, no Engine.IO close packet.
        assert ws.close_code == 4006
        await eventually(lambda: sessions(realtime) == 0, 10)


async def test_a_sustained_flood_closes_the_polling_session_after_the_answers() -> None:
    app, realtime = make_app(limits=Limits(rate=5, burst=5, abuse_threshold=10, clock=ManualClock()))
    with serve(app) as srv:
        async with httpx.AsyncClient(base_url=srv.http + "/socket.io/", timeout=10) as http:
            with anyio.fail_after(20):
                sid = await open_polling(http)
                params = {**POLLING, "sid": sid}
                assert (await http.post("", params=params, content="40")).text == "ok"
                assert (await http.get("", params=params)).text.startswith('40{"sid":')
                flood = "\x1e".join(f'42{i}["echo",{i}]' for i in range(1, 15))
                assert (await http.post("", params=params, content=flood)).text == "ok"
                got: list[str] = []
                while got[-1:] != ["1"]:
                    r = await http.get("", params=params)
                    assert r.status_code == 200, (r.status_code, r.text, got)
                    got += r.text.split("\x1e")
        refusal = '[{"error":{"code":"rate_limited","message":"over 5 events/s"}}]'
        assert got == [f"43{i}[{i}]" for i in range(1, 5)] + [f"43{i}{refusal}" for i in range(5, 14)] + ["1"]
        await eventually(lambda: sessions(realtime) == 0, 10)


@pytest.mark.parametrize(
    ("transports", "reason"), [(["websocket"], "transport error"), (["polling"], "server disconnect")]
)
async def test_python_socketio_client_flooding_is_disconnected(transports: list[str], reason: str) -> None:
    import socketio

    app, _ = make_app(limits=Limits(rate=5, burst=5, abuse_threshold=10, clock=ManualClock()))
    with serve(app) as srv:
        sio = socketio.AsyncClient(reconnection=False)
        reasons: list[str] = []
        sio.on("disconnect", reasons.append)
        with anyio.fail_after(30):
            await sio.connect(srv.http, transports=transports, wait_timeout=5)
            for i in range(20):
                await sio.emit("echo", i)  # no ack: refusals are silent, but they count
            await eventually(lambda: bool(reasons), 15, f"the disconnect of a flooding {transports} client")
        # WebSocket: the close frame (4006) without an Engine.IO close packet, as the reference server closes a
        # WebSocket transport; polling: the close packet on the next GET.
        assert reasons == [reason]
        assert not sio.connected


async def test_a_client_reconnecting_after_4006_gets_a_full_bucket() -> None:
    import socketio

    app, _ = make_app(limits=Limits(rate=5, burst=5, abuse_threshold=10, clock=ManualClock()))
    with serve(app) as srv:
        sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5)
        connects: list[str] = []
        sio.on("connect", lambda: connects.append(sio.sid))
        with anyio.fail_after(30):
            await sio.connect(srv.http, transports=["websocket"], wait_timeout=5)
            for i in range(20):
                await sio.emit("echo", i)
            await eventually(lambda: len(connects) == 2 and sio.connected, 20, "the reconnection after 4006")
            assert connects[0] != connects[1]  # a new session, with a new bucket (the clock has not moved)
            assert await sio.call("echo", "again", timeout=5) == "again"
            await sio.disconnect()
