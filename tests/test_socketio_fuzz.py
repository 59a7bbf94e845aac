"""Random and mutated Engine.IO / Socket.IO input never breaks the sans-I/O layers: it decodes or is a ProtocolError."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import anyio
import httpx
import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.socketio import engineio, packets
from starlette_realtime.socketio.packets import pack_unit
from starlette_realtime.socketio.session import CLOSE_CODES, EngineSession, Transport, Verdict
from starlette_realtime.socketio.wire import SocketIOWire
from tests.conftest import ServerThread, serve
from tests.socketio.app import make_app

W = SocketIOWire()
VALID = [
    "40",
    '40{"token":"x"}',
    "40/admin,",
    '42["ev",1,"2",{"3":[true]}]',
    '42/chat,12["ev"]',
    "43/chat,12[]",
    '452-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    "41",
    "41/chat,",
    "3",
    "2probe",
    "5",
    "6",
]
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutate(data: st.DataObject) -> str:
    base = data.draw(st.sampled_from(VALID))
    ops = data.draw(st.lists(st.tuples(st.integers(0, 60), st.text(max_size=3)), max_size=4))
    for pos, insert in ops:
        pos = min(pos, len(base))
        cut = data.draw(st.integers(0, 2))
        base = base[:pos] + insert + base[pos + cut :]
    return base


@SETTINGS
@given(st.data())
def test_mutated_packets_decode_or_are_protocol_errors(data: st.DataObject) -> None:
    text = mutate(data) if data.draw(st.booleans()) else data.draw(st.text(max_size=40))
    for fn in (
        lambda: W.receive(text, None),
        lambda: packets.Decoder().feed(text),
        lambda: engineio.decode_ws(text, None),
    ):
        try:
            fn()
        except ProtocolError:
            pass


@SETTINGS
@given(st.binary(max_size=64), st.lists(st.binary(max_size=8), max_size=3), st.text(max_size=30))
def test_random_binary_units_decode_or_are_protocol_errors(blob: bytes, attachments: list[bytes], head: str) -> None:
    for data in (blob, pack_unit([head, *attachments]), pack_unit(["4" + head, *attachments])):
        try:
            W.receive(None, data)
        except ProtocolError:
            pass


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=20), st.binary(max_size=20), st.sampled_from(VALID)), max_size=12))
def test_a_session_survives_any_sequence_of_frames(frames: list[str | bytes]) -> None:
    for transport in Transport:
        s = EngineSession("x", transport=transport, now=0.0, max_payload=64)
        if transport is Transport.POLLING:
            s.begin_upgrade()
        for i, frame in enumerate(frames):
            if isinstance(frame, bytes):
                s.receive_ws(None, frame, float(i))
            else:
                s.receive_ws(frame, None, float(i))
            s.tick(float(i))
            s.ws_frames()
            s.messages()
        assert s.close_reason in (None, *CLOSE_CODES)


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_a_polling_session_survives_any_posts(bodies: list[bytes]) -> None:
    s = EngineSession("x", transport=Transport.POLLING, now=0.0, max_payload=64)
    for body in bodies:
        if s.begin_post(len(body)) is Verdict.OK:
            assert s.receive_post(body, 0.0) in tuple(Verdict)
        s.begin_get()
        s.take_get_body()
        for message in s.messages():
            try:
                if isinstance(message, str):
                    W.receive(message, None)
            except ProtocolError:
                pass


def test_encoded_server_frames_are_valid_engineio_payloads() -> None:
    from starlette_realtime.frames import Ack, Event

    for frame in (Event("/", "ev", W.encode_payload({"b": b"\x00\x01"})), Ack("/a", 1, W.encode_payload([1, "x"]))):
        first, *attachments = engineio.decode_payload(W.encode(frame))
        assert first.type is engineio.PacketType.MESSAGE and isinstance(first.data, str)
        decoded = packets.decode(first.data)
        if attachments:
            assert isinstance(decoded, packets.Partial) and decoded.expected == len(attachments)


# -- live: random and mutated packets against a real server, beside a control connection -----------------------


def _mutations(rng: random.Random, count: int) -> list[str | bytes]:
    alphabet = '0123456789[]{}",:/-_abcxyz\x1e\\ \u00e9\u20ac'
    out: list[str | bytes] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            out.append(rng.randbytes(rng.randint(0, 16)))
        elif roll < 0.25:
            out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))))
        else:
            text = "4" + rng.choice(VALID)
            for _ in range(rng.randint(1, 3)):
                pos = rng.randint(0, len(text))
                text = (
                    text[:pos]
                    + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))
                    + text[pos + rng.randint(0, 2) :]
                )
            out.append(text)
    return out


@pytest.fixture(scope="module")
def live_server() -> Iterator[ServerThread]:
    app, _ = make_app(ping_interval=5.0, ping_timeout=5.0)
    with serve(app) as srv:
        yield srv


async def test_live_fuzz_on_both_transports_beside_a_control_connection(
    live_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    import socketio  # type: ignore[import-untyped]

    # uvicorn reports a crashed ASGI call on "uvicorn.error", which does not propagate to caplog's root handler.
    crashed: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = crashed.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    rng = random.Random(13)
    base = live_server.http + "/socket.io/"
    control = socketio.AsyncClient(reconnection=False)
    sent = {"websocket": 0, "polling": 0}
    with anyio.fail_after(60):
        await control.connect(live_server.http, transports=["websocket"], wait_timeout=5)

        async def ws_fuzz() -> None:
            ws = None
            # Until 1,200 packets went out: a packet sent to a socket the server just closed does not count,
            # and how many that is depends on how the two fuzzers interleave.
            for packet in _mutations(rng, 3000):
                if sent["websocket"] >= 1200:
                    break
                if ws is None:
                    ws = await websockets.connect(f"{live_server.url}/socket.io/?EIO=4&transport=websocket")
                    await ws.recv()
                    await ws.send("40")
                try:
                    await ws.send(packet)
                    sent["websocket"] += 1
                except ConnectionClosed:
                    ws = None
                if ws is not None and rng.random() < 0.3:
                    with anyio.move_on_after(0.01):
                        try:
                            await ws.recv()
                        except ConnectionClosed:
                            ws = None
            if ws is not None:
                await ws.close()

        async def polling_fuzz() -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                sid = None
                for packet in _mutations(rng, 1000):
                    if sid is None:
                        r = await http.get(base, params={"EIO": "4", "transport": "polling"})
                        sid = msgspec.json.decode(r.text[1:])["sid"]
                        await http.post(base, params={"EIO": "4", "transport": "polling", "sid": sid}, content="40")
                    body = packet if isinstance(packet, bytes) else packet.encode()
                    r = await http.post(base, params={"EIO": "4", "transport": "polling", "sid": sid}, content=body)
                    sent["polling"] += 1
                    assert r.status_code in (200, 400, 413)
                    if r.status_code != 200:
                        sid = None

        async def control_loop(done: anyio.Event) -> None:
            i = 0
            while not done.is_set():
                assert await control.call("echo", i, timeout=5) == i
                i += 1
                await anyio.sleep(0.01)

        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(control_loop, done)
            async with anyio.create_task_group() as fuzzers:
                fuzzers.start_soon(ws_fuzz)
                fuzzers.start_soon(polling_fuzz)
            done.set()
        assert await control.call("echo", "still here", timeout=5) == "still here"
        await control.disconnect()
    assert sent["websocket"] + sent["polling"] >= 2000, sent
    logging.getLogger("uvicorn.error").removeHandler(handler)
    crashes = crashed + [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes[:5]]
