"""Malformed frames: a table of hand-made bad frames with their documented answers, then Hypothesis.

Everything runs against one live uvicorn for the whole module, over raw WebSockets, while a
control connection keeps working.  The answers checked here are the ones docs/protocol.md
lists under *Errors*.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import websockets
from conftest import ServerThread, eventually, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from starlette_realtime import Connection, Limits, RealtimeEndpoint, RealtimeRouter, SignedTokenAuth, on_event
from starlette_realtime.client import RealtimeClient
from starlette_realtime.codec import JsonCodec, MsgpackCodec
from starlette_realtime.exceptions import InvalidRoom, ProtocolError
from starlette_realtime.frames import Connect, Disconnect, Event
from starlette_realtime.limits import MAX_NESTING
from starlette_realtime.rooms import room_error

MAX_MESSAGE = 64 * 1024
MAX_PAYLOAD = 16 * 1024
MAX_DEPTH = 32
#: Probes go to a namespace nobody serves: their answer is a link-level ``not_connected`` ack.
PROBE_NS = "/probe"

#: Every code the server may answer with (docs/protocol.md, *Errors*).
ERROR_CODES = {"bad_frame", "not_connected"}
ACK_CODES = {
    "invalid_payload", "unknown_event", "not_connected", "rate_limited", "forbidden",
    "limit_exceeded", "bad_room", "duplicate", "INVALID_TOKEN", "AUTHENTICATION_REQUIRED",
}
CONNECT_CODES = {
    "UNKNOWN_NAMESPACE", "ALREADY_CONNECTED", "AUTHENTICATION_REQUIRED", "INVALID_TOKEN", "REJECTED",
    "TOO_MANY_NAMESPACES", "TOO_MANY_CONNECTIONS", "rate_limited",
}
CLOSE_CODES = {4501, 1009}


class Say(msgspec.Struct):
    room: str
    text: str


class Chat(RealtimeEndpoint):
    namespace = "/chat"

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> list[str]:
        await conn.join(room)
        return sorted(conn.rooms)

    @on_event("leave")
    async def leave(self, conn: Connection, room: str) -> list[str]:
        await conn.leave(room)
        return sorted(conn.rooms)

    @on_event("say")
    async def say(self, conn: Connection, msg: Say) -> None:
        if room_error(msg.room) is not None:
            raise InvalidRoom(str(room_error(msg.room)))
        await conn.to(msg.room).emit("said", msg)

    @on_event("noop")
    async def noop(self, conn: Connection) -> None:
        return None


class Private(RealtimeEndpoint):
    namespace = "/private"
    auth = SignedTokenAuth(["fuzz-key"], max_age=600)

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Env:
    srv: ServerThread
    router: RealtimeRouter
    errors: ErrorLog
    runner: asyncio.Runner
    control: RealtimeClient
    ticks: list[int] = field(default_factory=list)
    sent: int = 0

    @property
    def url(self) -> str:
        return self.srv.url + "/realtime/"

    async def check_control(self) -> None:
        """The control connection is still served, both ways."""
        n = self.sent
        self.sent += 1
        assert await self.control.call("echo", n, namespace="/chat", timeout=5) == n
        # ... and what it says in its room reaches the listener.
        await self.control.call("say", {"room": "ctl", "text": str(n)}, namespace="/chat", timeout=5)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    realtime = RealtimeRouter(
        [Chat, Private],
        max_message_size=MAX_MESSAGE,
        limits=Limits(max_payload_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH, max_rooms=8),
    )
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    errors = ErrorLog()
    watched = [logging.getLogger(name) for name in ("starlette_realtime", "uvicorn.error", "uvicorn.asgi")]
    for logger in watched:
        logger.addHandler(errors)
    runner = asyncio.Runner()
    try:
        # No WebSocket-level pings on either side: their payloads come from the global `random`,
        # which Hypothesis must have to itself while it draws examples.
        with serve(app, ws_max_size=2 * MAX_MESSAGE, ws_ping_interval=None) as srv:
            control = RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], reconnection=False)
            environment = Env(srv, realtime, errors, runner, control)

            listener = RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], reconnection=False)

            def tick(message: dict[str, Any]) -> None:
                if message.get("room") == "ctl" and str(message.get("text")).isdigit():
                    environment.ticks.append(int(message["text"]))

            async def start() -> None:
                await control.connect()
                await listener.connect()
                listener.on("said", tick, namespace="/chat")
                await listener.call("join", "ctl", namespace="/chat", timeout=5)

            runner.run(start())
            yield environment
            runner.run(control.close())
            runner.run(listener.close())
            assert srv.thread.is_alive(), "the server died"
    finally:
        runner.close()
        for logger in watched:
            logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


# The raw client ---------------------------------------------------------------------------------------


class Raw:
    def __init__(self, ws: Any, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.binary = encoding == "msgpack"
        self.codec = MsgpackCodec() if self.binary else JsonCodec()
        self.next_id = 1
        self.chat = False  # whether /chat is connected
        self.closed = False

    @classmethod
    async def open(cls, url: str, encoding: str) -> Raw:
        async with asyncio.timeout(5):
            ws = await websockets.connect(
                url,
                subprotocols=[f"rt.v1.{encoding}"],  # type: ignore[list-item]
                compression=None,
                max_size=None,
                ping_interval=None,
            )
        raw = cls(ws, encoding)
        hello = await raw.recv()
        assert hello[0] == 0
        return raw

    def encode(self, frame: Any) -> bytes | str:
        if self.binary:
            return msgspec.msgpack.encode(frame)
        return json.dumps(frame)

    async def send(self, data: bytes | str) -> None:
        try:
            await self.ws.send(data)
        except ConnectionClosed:
            self.closed = True

    async def recv(self, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            data = await self.ws.recv()
        return msgspec.msgpack.decode(data) if isinstance(data, bytes) else json.loads(data)

    async def open_chat(self) -> None:
        await self.send(self.encode([1, "/chat", None]))
        while True:
            reply = await self.recv()
            if reply[0] in (2, 3) and reply[1] == "/chat":
                assert reply[0] == 2 or reply[2] == "ALREADY_CONNECTED", reply
                self.chat = True
                return

    async def probe(self) -> tuple[list[Any], int | None, bool]:
        """Send an event to a namespace nobody serves; read until its ``not_connected`` ack or the close.

        The probe stays outside every session, so no deduplication window (moved by the ids
        of the frames under test) can ever swallow or repeat its answer.

        Returns the frames received before, the close code (when closed) and whether it was closed.
        """
        ack_id = self.next_id
        self.next_id = (self.next_id + 1) % 2**31
        await self.send(self.encode([5, PROBE_NS, "probe", None, ack_id]))
        frames: list[Any] = []
        try:
            async with asyncio.timeout(10):
                while True:
                    frame = await self.recv(10)
                    if frame[0] == 6 and frame[1] == PROBE_NS and frame[2] == ack_id:
                        assert frame[4][0] == "not_connected", frame
                        return frames, None, False
                    frames.append(frame)
        except ConnectionClosed as exc:
            self.closed = True
            return frames, (exc.rcvd.code if exc.rcvd is not None else None), True

    async def close(self) -> None:
        if not self.closed:
            async with asyncio.timeout(5):
                await self.ws.close()
            self.closed = True


def check_answers(frames: list[Any]) -> None:
    """Every frame the server sent is well-formed and carries a documented code."""
    for frame in frames:
        kind = frame[0]
        assert kind in (2, 3, 4, 5, 6, 7, 9), frame
        if kind == 9:
            assert frame[1] in ERROR_CODES, frame
        elif kind == 6 and len(frame) > 4 and frame[4] is not None:
            assert frame[4][0] in ACK_CODES, frame
        elif kind == 3:
            assert frame[2] in CONNECT_CODES, frame


# The table ----------------------------------------------------------------------------------------------


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def msgpack_event_with(payload: bytes, ack_id: int = 1) -> bytes:
    template = msgspec.msgpack.encode([5, "/chat", "echo", None, ack_id])
    return template.replace(b"\xc0", payload, 1)


@dataclass
class Case:
    name: str
    encoding: str
    frames: list[Any]  # each: a list (encoded for the connection), or str (text frame) / bytes (binary frame)
    expect: tuple[Any, ...]  # ("close", code, error code | None) / ("ack", id, code | None) / ("error", code)
    #                          / ("connect_error", code) / ("connected", recovery_failed) / ("nothing",)
    connect: bool = True


def table() -> list[Case]:
    big = "x" * (MAX_MESSAGE + 10)
    cases = [
        Case("invalid JSON", "json", ["{not json"], ("close", 4501, "bad_frame")),
        Case("JSON with trailing garbage", "json", ["[8] x"], ("close", 4501, "bad_frame")),
        Case("JSON NaN", "json", ['[5,"/chat","echo",NaN,1]'], ("close", 4501, "bad_frame")),
        Case("empty text frame", "json", [""], ("close", 4501, "bad_frame")),
        Case("invalid MessagePack", "msgpack", [b"\xc1"], ("close", 4501, "bad_frame")),
        Case("truncated MessagePack", "msgpack", [msgspec.msgpack.encode([5, "/chat", "echo", "abc", 1])[:-3]],
             ("close", 4501, "bad_frame")),
        Case("wrong type: event name an int", "json", [[5, "/chat", 123, None]], ("close", 4501, "bad_frame")),
        Case("wrong type: namespace an int", "msgpack", [[5, 7, "echo", None]], ("close", 4501, "bad_frame")),
        Case("wrong type: not an array", "json", [{"t": 5}], ("close", 4501, "bad_frame")),
        Case("wrong type: a string", "msgpack", ["hello"], ("close", 4501, "bad_frame")),
        Case("empty array", "json", [[]], ("close", 4501, "bad_frame")),
        Case("unknown frame type", "json", [[42, "/chat"]], ("close", 4501, "bad_frame")),
        Case("unknown frame type", "msgpack", [[-1]], ("close", 4501, "bad_frame")),
        Case("server-only frame (HELLO)", "json", [[0, 1, "n", 1.0, 1.0, 10]], ("close", 4501, "bad_frame")),
        Case("server-only frame (ERROR)", "msgpack", [[9, "bad_frame"]], ("close", 4501, "bad_frame")),
        Case("event name over 64 characters", "json", [[5, "/chat", "e" * 65, None]], ("close", 4501, "bad_frame")),
        Case("empty namespace", "json", [[5, "", "echo", None]], ("close", 4501, "bad_frame")),
        Case("namespace over 128 characters", "msgpack", [[1, "/" * 129, None]], ("close", 4501, "bad_frame")),
        Case("ack id 2**31", "json", [[5, "/chat", "echo", None, 2**31]], ("close", 4501, "bad_frame")),
        Case("ack id -1", "json", [[5, "/chat", "echo", None, -1]], ("close", 4501, "bad_frame")),
        Case("ack id 2**64", "json", [[5, "/chat", "echo", None, 2**64]], ("close", 4501, "bad_frame")),
        Case("ack id 2**64-1", "msgpack", [[5, "/chat", "echo", None, 2**64 - 1]], ("close", 4501, "bad_frame")),
        Case("ack id a float", "json", [[5, "/chat", "echo", None, 1.5]], ("close", 4501, "bad_frame")),
        Case("ack id a string", "msgpack", [[5, "/chat", "echo", None, "1"]], ("close", 4501, "bad_frame")),
        Case("client ACK id 2**31", "json", [[6, "/chat", 2**31, None]], ("close", 4501, "bad_frame")),
        Case("binary frame on a JSON connection", "json", [b'[5,"/chat","echo",1,1]'], ("close", 4501, "bad_frame")),
        Case("text frame on a MessagePack connection", "msgpack", ['[5,"/chat","echo",1,1]'],
             ("close", 4501, "bad_frame")),
        Case("nesting 10,000 deep", "json", [f'[5,"/chat","echo",{deep_json(10_000)},1]'],
             ("close", 4501, "bad_frame")),
        Case("nesting 10,000 deep", "msgpack", [msgpack_event_with(deep_msgpack(10_000))],
             ("close", 4501, "bad_frame")),
        Case("nesting one level over MAX_NESTING", "json", [f'[5,"/chat","echo",{deep_json(MAX_NESTING + 1)},1]'],
             ("close", 4501, "bad_frame")),
        Case("nesting one level over MAX_NESTING", "msgpack", [msgpack_event_with(deep_msgpack(MAX_NESTING + 1))],
             ("close", 4501, "bad_frame")),
        Case("nesting 1,000 deep in a CONNECT", "json", [f'[1,"/private",{deep_json(1000)}]'],
             ("close", 4501, "bad_frame"), connect=False),
        Case("MessagePack string that is not UTF-8", "msgpack", [b"\x94\x05\xa5/chat\xa4ech\xff\xc0"],
             ("close", 4501, "bad_frame")),
        Case("positions key over 300 characters", "json", [[1, "/private", None, "s", {"r" * 301: ["e", 1]}]],
             ("close", 4501, "bad_frame")),
        Case("oversized message", "json", [[5, "/chat", "echo", big, 1]], ("close", 1009, None)),
        Case("oversized message", "msgpack", [[5, "/chat", "echo", big, 1]], ("close", 1009, None)),
        Case("over uvicorn's ws_max_size", "json", [[5, "/chat", "echo", big * 2, 1]], ("close", 1009, None)),
        # The connection survives everything below.
        Case("nesting 100 deep (over max_depth)", "json", [f'[5,"/chat","echo",{deep_json(100)},1]'],
             ("ack", 1, "limit_exceeded")),
        Case("nesting 100 deep (over max_depth)", "msgpack", [msgpack_event_with(deep_msgpack(100))],
             ("ack", 1, "limit_exceeded")),
        Case("nesting MAX_NESTING deep", "json", [f'[5,"/chat","echo",{deep_json(MAX_NESTING)},1]'],
             ("ack", 1, "limit_exceeded")),
        Case("nesting MAX_NESTING deep", "msgpack", [msgpack_event_with(deep_msgpack(MAX_NESTING))],
             ("ack", 1, "limit_exceeded")),
        Case("payload over max_payload_bytes", "msgpack", [[5, "/chat", "echo", "y" * (MAX_PAYLOAD + 1), 1]],
             ("ack", 1, "limit_exceeded")),
        Case("unknown event", "json", [[5, "/chat", "nope", None, 1]], ("ack", 1, "unknown_event")),
        Case("unknown event without id", "msgpack", [[5, "/chat", "nope", None]], ("nothing",)),
        Case("reserved event from the client", "json", [[5, "/chat", "$presence", None, 1]],
             ("ack", 1, "unknown_event")),
        Case("a non-ASCII event name", "msgpack", [[5, "/chat", "é", None, 1]], ("ack", 1, "unknown_event")),
        Case("payload of the wrong type", "json", [[5, "/chat", "say", {"room": 7}, 1]], ("ack", 1, "invalid_payload")),
        Case("payload string that is not UTF-8", "msgpack", [msgpack_event_with(b"\xa2\xff\xfe")],
             ("ack", 1, "invalid_payload")),
        Case("auth payload that is not UTF-8", "msgpack", [b"\x93\x01\xa8/private\xa1\xff"],
             ("connect_error", "REJECTED")),
        Case("payload missing for a typed handler", "msgpack", [[5, "/chat", "say", None, 1]],
             ("ack", 1, "invalid_payload")),
        Case("empty room name", "json", [[5, "/chat", "join", "", 1]], ("ack", 1, "bad_room")),
        Case("300-character room name", "msgpack", [[5, "/chat", "join", "r" * 300, 1]], ("ack", 1, "bad_room")),
        Case("reserved room name", "json", [[5, "/chat", "join", "#all", 1]], ("ack", 1, "bad_room")),
        Case("event before the namespace is connected", "json", [[5, "/chat", "echo", 1, 1]],
             ("ack", 1, "not_connected"), connect=False),
        Case("event before the namespace is connected, no id", "msgpack", [[5, "/chat", "echo", 1]],
             ("error", "not_connected"), connect=False),
        Case("event for an unknown namespace", "json", [[5, "/nope", "echo", 1, 1]], ("ack", 1, "not_connected")),
        Case("ack for a call never made", "msgpack", [[6, "/chat", 77, None]], ("error", "bad_frame")),
        Case("CONNECT to an unknown namespace", "json", [[1, "/nope", None]], ("connect_error", "UNKNOWN_NAMESPACE")),
        Case("CONNECT twice", "msgpack", [[1, "/chat", None]], ("connect_error", "ALREADY_CONNECTED")),
        Case("CONNECT without a token", "json", [[1, "/private", None]],
             ("connect_error", "AUTHENTICATION_REQUIRED")),
        Case("CONNECT with a forged token", "msgpack", [[1, "/private", {"token": "a.b.c"}]],
             ("connect_error", "INVALID_TOKEN")),
        Case("CONNECT with a forged session", "json", [[1, "/private", {"token": Private.auth.issue("ada")}, "x.y"]],
             ("connected", True)),
        Case("DISCONNECT of a namespace not connected", "msgpack", [[4, "/private"]], ("nothing",)),
        Case("PONG", "json", [[8]], ("nothing",)),
        Case("$auth on an anonymous namespace", "msgpack", [[5, "/chat", "$auth", {"token": "t"}, 1]],
             ("ack", 1, None)),
        Case("extra trailing elements", "json", [[5, "/chat", "echo", 1, 1, None, None, None, "more", 7]],
             ("ack", 1, None)),
    ]
    return cases


CASES = table()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.encoding}: {c.name}" for c in CASES])
def test_malformed_frame_table(env: Env, case: Case) -> None:
    env.runner.run(asyncio.wait_for(run_case(env, case), 30))


async def run_case(env: Env, case: Case) -> None:
    raw = await Raw.open(env.url, case.encoding)
    raw.next_id = 1_000  # probe ids never collide with the cases' own
    if case.connect:
        await raw.open_chat()
    for frame in case.frames:
        await raw.send(frame if isinstance(frame, (str, bytes)) else raw.encode(frame))
    kind = case.expect[0]
    if kind == "close":
        frames: list[Any] = []
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    frames.append(await raw.recv(10))
        check_answers(frames)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == case.expect[1], (frames, closed.value)
        errors = [f for f in frames if f[0] == 9]
        if case.expect[2] is None:
            assert not errors
        else:
            assert [e[1] for e in errors] == [case.expect[2]]
    else:
        frames, code, was_closed = await raw.probe()
        assert not was_closed, f"closed with {code}"
        check_answers(frames)
        if kind == "ack":
            ack = [f for f in frames if f[0] == 6 and f[2] == case.expect[1]]
            assert len(ack) == 1, frames
            error = ack[0][4] if len(ack[0]) > 4 else None
            assert (error[0] if error else None) == case.expect[2], ack
        elif kind == "error":
            assert [f[1] for f in frames if f[0] == 9] == [case.expect[1]], frames
        elif kind == "connect_error":
            assert [f[2] for f in frames if f[0] == 3] == [case.expect[1]], frames
        elif kind == "connected":
            connected = [f for f in frames if f[0] == 2]
            assert len(connected) == 1 and connected[0][5] is case.expect[1], frames
        else:
            assert [f for f in frames if f[0] != 7] == [], frames
        await raw.close()
    await env.check_control()


# Nesting depth: one answer for every depth --------------------------------------------------------------


def expected_depth_answer(depth: int, max_depth: int | None) -> str:
    """What the server answers an event whose payload nests ``depth`` levels (docs/security.md)."""
    if depth > MAX_NESTING:
        return "close"  # 4501 bad_frame, decided before decoding
    if max_depth is not None and depth > max_depth:
        return "limit_exceeded"
    return "ok"


def nested(depth: int) -> Any:
    value = None
    for _ in range(depth):
        value = [value]
    return value


def deep_event(encoding: str, depth: int, ack_id: int) -> bytes:
    """An ``echo`` event whose payload is ``nested(depth)``, encoded by hand (no encoder recursion)."""
    if encoding == "msgpack":
        return msgpack_event_with(deep_msgpack(depth), ack_id)
    return f'[5,"/chat","echo",{"[" * depth}null{"]" * depth},{ack_id}]'.encode()


def judge_depth(codec: Any, limits: Limits, message: bytes, stack: int) -> str:
    """The server's two decisions (the codec's, then the limit's) made ``stack`` frames deep."""
    if stack > 0:
        return judge_depth(codec, limits, message, stack - 1)
    try:
        frame = codec.decode(message)
    except ProtocolError:
        return "close"
    assert type(frame) is Event
    return "limit_exceeded" if limits.payload_error(frame.data, binary=codec.binary) else "ok"


@pytest.mark.parametrize("max_depth", [MAX_DEPTH, None])
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_every_depth_has_one_answer(encoding: str, max_depth: int | None) -> None:
    """Every depth from 0 to 6,000, and 10,000, whatever the caller's stack: the answer depends on the depth only."""
    codec = MsgpackCodec() if encoding == "msgpack" else JsonCodec()
    limits = Limits(max_depth=max_depth)
    for depth in [*range(6_001), 10_000]:
        message = deep_event(encoding, depth, 1)
        want = expected_depth_answer(depth, max_depth)
        assert judge_depth(codec, limits, message, 0) == want, depth
        if abs(depth - MAX_NESTING) <= 2 or depth % 500 == 0:
            # 600 frames of our own leave msgspec fewer than 400 of the default 1000.
            assert judge_depth(codec, limits, message, 600) == want, depth


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_every_depth_is_answered_by_the_live_server(env: Env, encoding: str) -> None:
    """Over the socket: each depth up to MAX_NESTING + 2 on one connection, deeper ones on a fresh one each."""

    async def sweep() -> None:
        raw = await Raw.open(env.url, encoding)
        await raw.open_chat()
        for depth in range(MAX_NESTING + 3):
            ack_id = depth + 1
            await raw.send(deep_event(encoding, depth, ack_id).decode() if encoding == "json"
                           else deep_event(encoding, depth, ack_id))
            want = expected_depth_answer(depth, MAX_DEPTH)
            if want == "close":
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(10):
                        while True:
                            await raw.recv(10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501, depth
                break
            async with asyncio.timeout(10):
                while True:
                    frame = await raw.recv(10)
                    if frame[0] == 6 and frame[2] == ack_id:
                        break
            error = frame[4][0] if len(frame) > 4 and frame[4] else None
            assert error == (None if want == "ok" else want), (depth, frame[4] if len(frame) > 4 else None)
            if want == "ok":
                assert frame[3] == nested(depth), depth
        else:
            raise AssertionError("MAX_NESTING + 1 did not close the connection")
        for depth in (MAX_NESTING + 2, 500, 999, 1000, 1001, 2000, 4999, 5000, 5001, 12_000):
            raw = await Raw.open(env.url, encoding)
            await raw.open_chat()
            await raw.send(deep_event(encoding, depth, 1).decode() if encoding == "json"
                           else deep_event(encoding, depth, 1))
            frames: list[Any] = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        frames.append(await raw.recv(10))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501, depth
            assert [f[1] for f in frames if f[0] == 9] == ["bad_frame"], (depth, frames)
        await env.check_control()

    env.runner.run(asyncio.wait_for(sweep(), 60))


# Hypothesis -------------------------------------------------------------------------------------------------

_scalar = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["/chat", "/private", "/nope", "echo", "join", "say", "$auth", "#all"])
)
_value = st.recursive(
    _scalar, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def valid_frames(draw: st.DrawFn) -> list[Any]:
    """Frames a real client could send (in list form), with random payloads."""
    ns = draw(st.sampled_from(["/chat", "/chat", "/chat", "/private", "/nope"]))
    ack_id = draw(st.none() | st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["event", "event", "event", "connect", "disconnect", "ack", "pong"]))
    if kind == "event":
        event = draw(st.sampled_from(["echo", "join", "leave", "say", "noop", "$auth", "nope"]))
        frame = [5, ns, event, draw(_value)]
        if ack_id is not None:
            frame.append(ack_id)
        return frame
    if kind == "connect":
        return [1, ns, draw(_value), *draw(st.lists(_value, max_size=2))]
    if kind == "disconnect":
        return [4, ns]
    if kind == "ack":
        return [6, ns, ack_id or 0, draw(_value)]
    return [8]


@st.composite
def fuzz_frames(draw: st.DrawFn, binary: bool) -> bytes | str:
    """One WebSocket message: garbage, random structures, or valid frames mutated."""
    how = draw(st.sampled_from(["garbage", "structure", "mutated", "mutated", "valid", "valid", "tag", "kind",
                                "deep", "big"]))
    encode = msgspec.msgpack.encode if binary else msgspec.json.encode
    if how == "garbage":
        return draw(st.binary(max_size=64)) if binary else draw(st.text(max_size=64))
    if how == "structure":
        data = encode(draw(_value))
    elif how == "deep":
        # The whole range, each depth with one answer (test_every_depth_has_one_answer): near the
        # limits, and anywhere up to twice the interpreter's recursion limit and beyond.
        depth = draw(st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1, MAX_NESTING, MAX_NESTING + 1])
                     | st.integers(0, 6_000) | st.integers(5_000, 12_000))
        data = msgpack_event_with(deep_msgpack(depth), draw(st.integers(0, 100))) if binary else (
            f'[5,"/chat","echo",{deep_json(depth)}]'.encode()
        )
    elif how == "big":
        size = draw(st.integers(MAX_PAYLOAD - 50, MAX_MESSAGE + 50))
        data = encode([5, "/chat", "echo", "z" * size, draw(st.integers(0, 100))])
    else:
        frame = draw(valid_frames())
        if how == "tag":
            frame[draw(st.integers(0, len(frame) - 1))] = draw(_value)
        data = encode(frame)
        if how == "mutated" and data:
            op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "dup"]))
            i = draw(st.integers(0, len(data) - 1))
            if op == "flip":
                data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
            elif op == "cut":
                data = data[:i] + data[i + draw(st.integers(1, 8)) :]
            elif op == "insert":
                data = data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
            elif op == "truncate":
                data = data[:i]
            else:
                data = data[:i] + data[i:] + data[i:]
    if how == "kind":
        return data.decode("utf-8", "replace") if binary else data
    if binary:
        return data
    return data.decode("utf-8", "replace")


@st.composite
def examples(draw: st.DrawFn) -> tuple[str, list[bytes | str]]:
    encoding = draw(st.sampled_from(["json", "msgpack"]))
    return encoding, draw(st.lists(fuzz_frames(encoding == "msgpack"), min_size=1, max_size=3))


def oracle(codec: Any, binary: bool, message: bytes | str) -> tuple[str, Any]:
    """What the server must do with a message: ("close", code) or ("ok", frame)."""
    if isinstance(message, str) == binary:
        return "close", 4501
    raw = message if isinstance(message, bytes) else message.encode()
    if len(raw) > MAX_MESSAGE:
        return "close", 1009
    try:
        return "ok", codec.decode(raw)
    except (ProtocolError, UnicodeDecodeError):
        return "close", 4501


class Fuzzer:
    def __init__(self, env: Env) -> None:
        self.env = env
        # msgspec's nesting limit shrinks with the caller's stack depth: judge in a thread with
        # an almost empty stack, as shallow as the server's reader.
        self.judge = concurrent.futures.ThreadPoolExecutor(1)
        self.conns: dict[str, Raw] = {}
        self.examples = 0
        self.closes: dict[int, int] = {}

    async def conn(self, encoding: str) -> Raw:
        raw = self.conns.get(encoding)
        if raw is None or raw.closed:
            raw = self.conns[encoding] = await Raw.open(self.env.url, encoding)
        if not raw.chat:
            await raw.open_chat()
        return raw

    async def run(self, encoding: str, messages: list[bytes | str]) -> None:
        self.examples += 1
        for message in messages:
            raw = await self.conn(encoding)
            verdict, frame = await asyncio.get_running_loop().run_in_executor(
                self.judge, oracle, raw.codec, raw.binary, message
            )
            await raw.send(message)
            frames, code, closed = await raw.probe()
            check_answers(frames)
            if verdict == "close":
                assert closed and code == frame, (message[:200], frames, code)
                if code == 4501:
                    assert [f[1] for f in frames if f[0] == 9] == ["bad_frame"], frames
                self.closes[code] = self.closes.get(code, 0) + 1
                continue
            assert not closed, f"a valid frame closed the connection with {code}: {message[:200]!r} {frames}"
            if type(frame) is Event and frame.id is not None:
                assert any(f[0] == 6 and f[1] == frame.ns and f[2] == frame.id for f in frames), (frame, frames)
            if type(frame) is Connect:
                assert any(f[0] in (2, 3) and f[1] == frame.ns for f in frames), (frame, frames)
                if frame.ns == "/chat":
                    raw.chat = True
            if type(frame) is Disconnect and frame.ns == "/chat":
                raw.chat = False
        await self.env.check_control()


@pytest.fixture(scope="module")
def fuzzer(env: Env) -> Iterator[Fuzzer]:
    fz = Fuzzer(env)
    yield fz
    for raw in fz.conns.values():
        env.runner.run(raw.close())
    fz.judge.shutdown()


@settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(example=examples())
def test_random_and_mutated_frames_never_break_the_server(env: Env, fuzzer: Fuzzer, example: Any) -> None:
    encoding, messages = example
    env.runner.run(asyncio.wait_for(fuzzer.run(encoding, messages), 60))


def test_the_fuzzer_saw_every_kind_of_outcome(env: Env, fuzzer: Fuzzer) -> None:
    """Runs after the Hypothesis test: it closed connections both ways and the control saw everything."""
    assert fuzzer.examples >= 2000
    assert fuzzer.closes.get(4501, 0) > 100 and fuzzer.closes.get(1009, 0) > 0, fuzzer.closes

    async def drained() -> None:
        await env.check_control()
        await eventually(lambda: len(env.ticks) >= env.sent, message="the listener to hear every control message")

    env.runner.run(drained())
    # The listener got every message the control said, in order, all along.
    assert env.ticks == list(range(env.sent))
    assert env.router.stats()["links"] <= 4
