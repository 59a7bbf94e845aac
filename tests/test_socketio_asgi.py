"""Engine.IO over real uvicorn: both transports, the upgrade, heartbeat and close, with an echo socket server.

These follow the rules of the Engine.IO v4 description one by one, against :class:`EngineIO` alone (the socket
server it feeds echoes every message back), so that the transport layer is checked apart from the Socket.IO wire.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from starlette_realtime.socketio.asgi import EngineIO
from starlette_realtime.socketio.live import Receive, Send
from starlette_realtime.socketio.packets import unpack_unit
from tests.conftest import ServerThread, serve

PI, PT = 0.3, 0.2


async def echo(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """A socket server that sends every message back (binary packets with their attachments)."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            head, attachments = unpack_unit(message["bytes"])
            parts = [head] + ["b" + base64.b64encode(a).decode() for a in attachments]
            await send({"type": "websocket.send", "text": "\x1e".join(parts)})
        elif text.startswith("4"):
            await send({"type": "websocket.send", "text": text})
        if text == '42["bye"]':
            await send({"type": "websocket.close", "code": 1000})


class App:
    def __init__(self) -> None:
        self.engine = EngineIO(echo, ping_interval=PI, ping_timeout=PT, max_payload=1_000_000)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            async with self.engine:
                await send({"type": "lifespan.startup.complete"})
                await receive()
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await self.engine(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with serve(App()) as srv:
        yield srv


@pytest.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http + "/socket.io/", timeout=5) as client:
        yield client


def url(server: ServerThread, sid: str | None = None) -> str:
    return f"{server.url}/socket.io/?EIO=4&transport=websocket" + (f"&sid={sid}" if sid else "")


async def open_polling(http: httpx.AsyncClient) -> str:
    r = await http.get("", params={"EIO": "4", "transport": "polling"})
    assert r.status_code == 200 and r.text[0] == "0"
    return str(msgspec.json.decode(r.text[1:])["sid"])


def q(sid: str) -> dict[str, str]:
    return {"EIO": "4", "transport": "polling", "sid": sid}


# -- handshake ----------------------------------------------------------------


async def test_polling_handshake(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        r = await http.get("", params={"EIO": "4", "transport": "polling"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    hs = msgspec.json.decode(r.text[1:])
    assert set(hs) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert (hs["upgrades"], hs["pingInterval"], hs["pingTimeout"], hs["maxPayload"]) == (["websocket"], 300, 200, 10**6)


async def test_websocket_handshake(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with websockets.connect(url(server)) as ws:
            first = await ws.recv()
    assert isinstance(first, str) and first[0] == "0"
    assert msgspec.json.decode(first[1:])["upgrades"] == []


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("GET", {"transport": "polling"}, 5),
        ("GET", {"EIO": "abc", "transport": "polling"}, 5),
        ("GET", {"EIO": "4"}, 0),
        ("GET", {"EIO": "4", "transport": "abc"}, 0),
        ("POST", {"EIO": "4", "transport": "polling"}, 2),
        ("PUT", {"EIO": "4", "transport": "polling"}, 2),
        ("GET", {"EIO": "4", "transport": "polling", "sid": "unknown"}, 1),
        ("POST", {"EIO": "4", "transport": "polling", "sid": "unknown"}, 1),
    ],
)
async def test_handshake_errors_are_400_with_code_and_message(
    http: httpx.AsyncClient, method: str, params: dict[str, str], code: int
) -> None:
    with anyio.fail_after(5):
        r = await http.request(method, "", params=params)
    assert r.status_code == 400
    assert r.json()["code"] == code and isinstance(r.json()["message"], str)


@pytest.mark.parametrize(
    "query",
    [
        "transport=websocket",
        "EIO=abc&transport=websocket",
        "EIO=4",
        "EIO=4&transport=abc",
        "EIO=4&transport=websocket&sid=unknown",
    ],
)
async def test_a_bad_websocket_request_is_refused(server: ServerThread, query: str) -> None:
    with anyio.fail_after(5), pytest.raises((websockets.InvalidStatus, ConnectionClosed)):
        async with websockets.connect(f"{server.url}/socket.io/?{query}") as ws:
            await ws.recv()


# -- messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '42["hello"]',
        '42["t1"]\x1e42["t2"]\x1e42["t3"]',
        '42["hello"]\x1e451-["b",{"_placeholder":true,"num":0}]\x1ebAQIDBA==',
    ],
)
async def test_polling_messages_come_back_in_one_payload(http: httpx.AsyncClient, body: str) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        r = await http.post("", params=q(sid), content=body)
        assert (r.status_code, r.text) == (200, "ok")
        parts: list[str] = []
        while len(parts) <= body.count("\x1e"):
            r = await http.get("", params=q(sid))
            assert r.status_code == 200
            parts += r.text.split("\x1e")
        got = "\x1e".join(parts)
    assert got == body


async def test_websocket_text_and_binary_messages(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with websockets.connect(url(server)) as ws:
            await ws.recv()
            await ws.send('42["hello"]')
            assert await ws.recv() == '42["hello"]'
            await ws.send('451-["b",{"_placeholder":true,"num":0}]')
            await ws.send(b"\x01\x02\x03\x04")
            assert await ws.recv() == '451-["b",{"_placeholder":true,"num":0}]'
            assert await ws.recv() == b"\x01\x02\x03\x04"


async def test_an_invalid_polling_packet_closes_the_session(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        r = await http.post("", params=q(sid), content="abc")
        assert r.status_code == 400
        r = await http.get("", params=q(sid))
        assert r.status_code == 400


async def test_an_invalid_websocket_packet_closes(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with websockets.connect(url(server)) as ws:
            await ws.recv()
            await ws.send("abc")
            with pytest.raises(ConnectionClosed):
                await ws.recv()


async def test_a_duplicate_get_closes_the_session(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with anyio.create_task_group() as tg:
            first: list[httpx.Response] = []

            async def poll() -> None:
                first.append(await http.get("", params=q(sid)))

            tg.start_soon(poll)
            await anyio.sleep(0.05)
            second = await http.get("", params={**q(sid), "t": "burst"})
        assert (first[0].status_code, first[0].text) == (200, "1")
        assert second.status_code == 400
        assert (await http.get("", params=q(sid))).status_code == 400


async def test_a_post_over_max_payload_is_refused(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        r = await http.post("", params=q(sid), content="4" + "x" * 1_000_001)
        assert r.status_code == 413
        assert (await http.get("", params=q(sid))).status_code == 400


# -- heartbeat ------------------------------------------------------------------


async def test_polling_ping_pong(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        for _ in range(3):
            r = await http.get("", params=q(sid))
            assert (r.status_code, r.text) == (200, "2")
            assert (await http.post("", params=q(sid), content="3")).status_code == 200


async def test_polling_ping_timeout_closes(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        await anyio.sleep(PI + PT + 0.15)
        assert (await http.get("", params=q(sid))).status_code == 400


async def test_websocket_ping_pong_and_timeout(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with websockets.connect(url(server)) as ws:
            await ws.recv()
            for _ in range(3):
                assert await ws.recv() == "2"
                await ws.send("3")
            assert await ws.recv() == "2"
            with pytest.raises(ConnectionClosed):
                await ws.recv()  # no pong: closed after ping_timeout
        assert ws.close_code == 4005


# -- close --------------------------------------------------------------------


async def test_polling_forced_close(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with anyio.create_task_group() as tg:
            got: list[httpx.Response] = []

            async def poll() -> None:
                got.append(await http.get("", params=q(sid)))

            tg.start_soon(poll)
            await anyio.sleep(0.05)
            assert (await http.post("", params=q(sid), content="1")).status_code == 200
        assert (got[0].status_code, got[0].text) == (200, "6")
        assert (await http.get("", params=q(sid))).status_code == 400


async def test_websocket_forced_close(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with websockets.connect(url(server)) as ws:
            await ws.recv()
            await ws.send("1")
            with pytest.raises(ConnectionClosed):
                await ws.recv()


async def test_a_server_close_reaches_a_websocket(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with websockets.connect(url(server)) as ws:
            await ws.recv()
            await ws.send('42["bye"]')
            assert await ws.recv() == '42["bye"]'
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1000


# -- upgrade ------------------------------------------------------------------


async def test_upgrade_from_polling_to_websocket(server: ServerThread, http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with websockets.connect(url(server, sid)) as ws:
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
            r = await http.get("", params=q(sid))
            assert (r.status_code, r.text) == (200, "6")
            await ws.send("5")
            await ws.send('42["hello"]')
            assert await ws.recv() == '42["hello"]'


async def test_a_waiting_get_is_released_by_the_probe(server: ServerThread, http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with anyio.create_task_group() as tg, websockets.connect(url(server, sid)) as ws:
            got: list[httpx.Response] = []

            async def poll() -> None:
                got.append(await http.get("", params=q(sid)))

            tg.start_soon(poll)
            await anyio.sleep(0.05)
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
        assert got[0].text == "6"


async def test_polling_with_the_same_sid_after_upgrade_is_refused(
    server: ServerThread, http: httpx.AsyncClient
) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with websockets.connect(url(server, sid)) as ws:
            await ws.send("2probe")
            await ws.send("5")
            assert await ws.recv() == "3probe"
            await anyio.sleep(0.05)
            assert (await http.get("", params=q(sid))).status_code == 400
            await ws.send('42["hello"]')
            assert await ws.recv() == '42["hello"]'


async def test_a_second_websocket_with_the_same_sid_is_refused(server: ServerThread, http: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with websockets.connect(url(server, sid)) as ws:
            await ws.send("2probe")
            await ws.send("5")
            assert await ws.recv() == "3probe"
            with pytest.raises((websockets.InvalidStatus, ConnectionClosed)):
                async with websockets.connect(url(server, sid)) as ws2:
                    await ws2.recv()
            await ws.send('42["hello"]')
            assert await ws.recv() == '42["hello"]'


async def test_messages_sent_during_the_probe_arrive_on_the_websocket(
    server: ServerThread, http: httpx.AsyncClient
) -> None:
    with anyio.fail_after(5):
        sid = await open_polling(http)
        async with websockets.connect(url(server, sid)) as ws:
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
            assert (await http.post("", params=q(sid), content='42["queued"]')).status_code == 200
            await ws.send("5")
            assert await ws.recv() == '42["queued"]'


async def test_handshakes_beyond_max_sessions_are_turned_away() -> None:
    full = EngineIO(echo, max_sessions=1)
    app = App()
    app.engine = full
    with serve(app) as srv, anyio.fail_after(5):
        async with httpx.AsyncClient(base_url=srv.http + "/socket.io/", timeout=5) as http:
            await open_polling(http)
            r = await http.get("", params={"EIO": "4", "transport": "polling"})
            assert r.status_code == 503
            async with websockets.connect(url(srv)) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert ws.close_code == 1013
