"""Socket.IO v5 conformance over the whole stack (router, session core, handlers), one test per rule of the
published description (socketio/socket.io-protocol, v5), with raw WebSocket frames and HTTP requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import msgspec
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerThread, serve
from tests.socketio.app import make_app

PI, PT, CONNECT_TIMEOUT = 0.3, 0.4, 0.8


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app, _ = make_app(ping_interval=PI, ping_timeout=PT, connect_timeout=CONNECT_TIMEOUT)
    with serve(app) as srv:
        yield srv


async def engine(server: ServerThread) -> ClientConnection:
    ws = await websockets.connect(f"{server.url}/socket.io/?EIO=4&transport=websocket")
    opened = await ws.recv()
    assert isinstance(opened, str) and opened[0] == "0"
    return ws


@pytest.fixture
async def ws(server: ServerThread) -> AsyncIterator[ClientConnection]:
    with anyio.fail_after(5):
        conn = await engine(server)
        await conn.send("40")
        reply = await conn.recv()
        assert isinstance(reply, str) and reply.startswith("40{")
    yield conn
    await conn.close()


async def recv_skipping_pings(ws: ClientConnection) -> str | bytes:
    while True:
        got = await ws.recv()
        if got != "2":
            return got
        await ws.send("3")


async def closes(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            await ws.recv()


# -- connection to a namespace ------------------------------------------------------


async def test_connect_to_the_main_namespace_replies_with_a_sid(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        await ws.send("40")
        reply = await ws.recv()
        assert isinstance(reply, str) and reply.startswith("40")
        assert set(msgspec.json.decode(reply[2:])) == {"sid"}
        await ws.close()


async def test_connect_with_a_payload_is_the_auth(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        await ws.send('40{"token":"123"}')
        assert str(await ws.recv()).startswith("40{")
        await ws.send('421["handshake"]')
        assert await recv_skipping_pings(ws) == '431[{"token":"123"}]'
        await ws.close()


async def test_connect_to_a_custom_namespace_with_a_payload(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        await ws.send('40/admin,{"token":"admin"}')
        reply = await ws.recv()
        assert isinstance(reply, str) and reply.startswith("40/admin,{")
        assert set(msgspec.json.decode(reply[len("40/admin,") :])) == {"sid"}
        await ws.send('42/admin,7["whoami"]')
        assert await recv_skipping_pings(ws) == '43/admin,7["admin"]'
        await ws.close()


async def test_a_refused_connect_is_a_connect_error_with_message_and_data(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        await ws.send('40/admin,{"token":"no"}')
        reply = await ws.recv()
        assert reply == '44/admin,{"message":"admin only","data":{"code":"FORBIDDEN_NS","retryable":false}}'
        await ws.close()


async def test_an_unknown_namespace_is_an_invalid_namespace(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        await ws.send("40/random")
        reply = await ws.recv()
        assert isinstance(reply, str) and reply.startswith('44/random,{"message":"Invalid namespace"')
        await ws.close()


async def test_an_invalid_handshake_closes(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        await ws.send("4abc")
        await closes(ws)


async def test_no_connect_closes_after_the_connect_timeout(server: ServerThread) -> None:
    with anyio.fail_after(5):
        ws = await engine(server)
        started = anyio.current_time()
        with pytest.raises(ConnectionClosed):
            while True:
                await recv_skipping_pings(ws)  # answered pings do not keep it open
        assert anyio.current_time() - started >= CONNECT_TIMEOUT - 0.1
        assert ws.close_code == 4007


# -- disconnection ------------------------------------------------------------------


async def test_a_disconnect_from_the_main_namespace_keeps_the_connection(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send("41")
        assert await ws.recv() == "2"  # until connect_timeout passes with no namespace open


async def test_connect_then_disconnect_a_custom_namespace(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send('40/admin,{"token":"admin"}')
        assert str(await recv_skipping_pings(ws)).startswith("40/admin,")
        await ws.send("41/admin,")
        await ws.send('423["echo","to main"]')
        assert await recv_skipping_pings(ws) == '433["to main"]'


async def test_the_server_disconnects_a_namespace(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send('42["kick"]')
        assert await recv_skipping_pings(ws) == "41"


# -- events and acks ------------------------------------------------------------------


async def test_a_plain_event_with_several_arguments_and_an_ack(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send('42456["sum",6,7]')
        assert await recv_skipping_pings(ws) == "43456[13,42]"
        await ws.send('42457["echo",1,"2",{"3":[false]}]')
        assert await recv_skipping_pings(ws) == '43457[[1,"2",{"3":[false]}]]'


async def test_a_binary_event_with_an_ack_gets_a_binary_ack(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send('451-789["upload","f.bin",{"_placeholder":true,"num":0}]')
        await ws.send(b"\x01\x02\x03")
        assert await recv_skipping_pings(ws) == '461-789["f.bin",3,{"_placeholder":true,"num":0}]'
        assert await recv_skipping_pings(ws) == b"\x03\x02\x01"


async def test_the_server_calls_the_client(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send('429["ask","hi"]')
        question = await recv_skipping_pings(ws)
        assert isinstance(question, str) and question.startswith("42") and question.endswith('["question","hi",2]')
        ack_id = question[2 : question.index("[")]
        await ws.send(f'43{ack_id}["HI",4]')
        assert await recv_skipping_pings(ws) == '439[["HI",4]]'


async def test_an_error_ack(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        await ws.send('421["refuse"]')
        assert await recv_skipping_pings(ws) == '431[{"error":{"code":"nope","message":"refused on purpose"}}]'
        await ws.send('422["no-such-event"]')
        reply = await recv_skipping_pings(ws)
        assert isinstance(reply, str) and reply.startswith('432[{"error":{"code":"unknown_event"')


@pytest.mark.parametrize("packet", ['42460["sum",6]', '42460["sum",6,7,8]', '42460["sum","6",7]', '42460["sum"]'])
async def test_the_wrong_arity_or_types_get_an_invalid_payload_ack(ws: ClientConnection, packet: str) -> None:
    with anyio.fail_after(5):
        await ws.send(packet)
        reply = await recv_skipping_pings(ws)
        assert isinstance(reply, str) and reply.startswith('43460[{"error":{"code":"invalid_payload"')


@pytest.mark.parametrize(
    "packet", ["4abc", "42{}", '42abc["echo",1]', '42["connect"]', "44{}", '451-["echo",{"_placeholder":true,"num":0}]']
)
async def test_an_invalid_packet_closes_the_connection(ws: ClientConnection, packet: str) -> None:
    with anyio.fail_after(5):
        await ws.send(packet)
        if packet.startswith("45"):
            await ws.send('42["echo"]')  # text where an attachment was expected
        await closes(ws)


# -- heartbeat over the whole stack ----------------------------------------------------


async def test_pings_come_every_interval_and_a_silent_client_is_closed(ws: ClientConnection) -> None:
    with anyio.fail_after(5):
        assert await ws.recv() == "2"
        await ws.send("3")
        assert await ws.recv() == "2"
        await closes(ws)


async def test_polling_carries_the_same_packets(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with httpx.AsyncClient(base_url=server.http + "/socket.io/", timeout=5) as http:
            r = await http.get("", params={"EIO": "4", "transport": "polling"})
            sid = msgspec.json.decode(r.text[1:])["sid"]
            q = {"EIO": "4", "transport": "polling", "sid": sid}
            assert (await http.post("", params=q, content='40{"token":"p"}\x1e421["handshake"]')).text == "ok"
            got: list[str] = []
            while len(got) < 2:
                r = await http.get("", params=q)
                got += [p for p in r.text.split("\x1e") if p != "2"]
            assert got[0].startswith("40{")
            assert got[1] == '431[{"token":"p"}]'


async def test_polling_sessions_get_pings_and_a_silent_one_is_closed(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with httpx.AsyncClient(base_url=server.http + "/socket.io/", timeout=5) as http:
            r = await http.get("", params={"EIO": "4", "transport": "polling"})
            sid = msgspec.json.decode(r.text[1:])["sid"]
            q = {"EIO": "4", "transport": "polling", "sid": sid}
            assert (await http.post("", params=q, content="40")).text == "ok"
            assert (await http.get("", params=q)).text.startswith("40{")
            for _ in range(2):
                assert (await http.get("", params=q)).text == "2"
                assert (await http.post("", params=q, content="3")).text == "ok"
            assert (await http.get("", params=q)).text == "2"
            last = await http.get("", params=q)  # no pong: the session closes within ping_timeout
            assert last.text in ("1", "41\x1e1", "41")
            assert (await http.get("", params=q)).status_code == 400


async def test_polling_carries_binary_both_ways(server: ServerThread) -> None:
    with anyio.fail_after(5):
        async with httpx.AsyncClient(base_url=server.http + "/socket.io/", timeout=5) as http:
            r = await http.get("", params={"EIO": "4", "transport": "polling"})
            sid = msgspec.json.decode(r.text[1:])["sid"]
            q = {"EIO": "4", "transport": "polling", "sid": sid}
            body = '40\x1e451-3["upload","f.bin",{"_placeholder":true,"num":0}]\x1ebAQID'
            assert (await http.post("", params=q, content=body)).text == "ok"
            got: list[str] = []
            while len(got) < 3:
                r = await http.get("", params=q)
                got += [p for p in r.text.split("\x1e") if p != "2"]
            assert got[0].startswith("40{")
            assert got[1:] == ['461-3["f.bin",3,{"_placeholder":true,"num":0}]', "bAwIB"]
