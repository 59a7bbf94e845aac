"""The pre-framed fast path: frames, the uvicorn protocol over a real socket, plain ASGI servers without it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import uvicorn
from apps import make_app as make_realtime_app
from conftest import free_port, serve, wait_until
from starlette.testclient import TestClient
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

from starlette_realtime import server as rt_server
from starlette_realtime.fastpath import EXTENSION, Preframed, message_frame, preframed, ws_frame
from starlette_realtime.fastpath.uvicorn import PreframedProtocol, _Gate, _Inbox, protocol_class
from starlette_realtime.outbox import Outbox, Overflow

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000]


def payload(size: int) -> bytes:
    return (b"0123456789abcdefghijklmnopqrstuvwxyz" * (size // 36 + 1))[:size]


# The frame helper against websockets' own serializer --------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("binary", [False, True])
def test_ws_frame_matches_websockets_serializer(size: int, binary: bool) -> None:
    data = payload(size)
    expected = Frame(Opcode.BINARY if binary else Opcode.TEXT, data).serialize(mask=False)
    assert ws_frame(data, binary=binary) == expected


def test_message_frame() -> None:
    assert message_frame({"type": "websocket.send", "text": "é"}) == ws_frame("é".encode(), binary=False)
    assert message_frame({"type": "websocket.send", "bytes": b"\x00"}) == ws_frame(b"\x00", binary=True)


def test_preframed_lookup() -> None:
    assert preframed({"type": "websocket"}) is None
    assert preframed({"extensions": None}) is None
    assert preframed({"extensions": {"websocket.http.response": {}}}) is None
    assert preframed({"extensions": {EXTENSION: {"write": None, "send": None}}}) is None

    async def send(frame: bytes) -> None:
        pass

    found = preframed({"extensions": {EXTENSION: {"write": bool, "send": send}}})
    assert found == Preframed(bool, send)


# The outbox with a pre-framed writer (no server) -------------------------------------------


class FakeServer:
    """Both paths of one socket: the ASGI send and the pre-framed writer, one wire, one pause switch."""

    def __init__(self) -> None:
        self.wire: list[bytes] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = False

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        self.wire.append(message_frame(message))

    def write(self, frame: bytes) -> bool:
        if not self.writable.is_set():
            return False
        if self.gone:
            raise OSError("gone")
        self.wire.append(frame)
        return True

    async def send_frame(self, frame: bytes) -> None:
        await self.writable.wait()
        self.wire.append(frame)


def outbox(server: FakeServer, **options: Any) -> tuple[Outbox, list[int]]:
    overflowed: list[int] = []
    box = Outbox(server.send, max_messages=options.pop("max_messages", 3), max_bytes=10_000,
                 overflow=options.pop("overflow", Overflow.DISCONNECT), on_overflow=lambda: overflowed.append(1),
                 preframed=Preframed(server.write, server.send_frame))
    box.attach(lambda fn: asyncio.get_running_loop().create_task(fn()))
    return box, overflowed


def text(i: int) -> dict[str, Any]:
    return {"type": "websocket.send", "text": f"m{i}"}


async def test_outbox_writes_frames_directly_and_in_order_with_asgi_messages() -> None:
    server = FakeServer()
    box, _ = outbox(server)
    for i in range(6):
        if i % 2:
            assert box.push(text(i), 2)
        else:
            assert box.push_frame(message_frame(text(i)), text(i), 2)
    assert server.wire == [message_frame(text(i)) for i in range(6)]


async def test_outbox_without_a_writer_sends_the_asgi_message() -> None:
    server = FakeServer()
    box = Outbox(server.send, max_messages=3, max_bytes=100, overflow=Overflow.DISCONNECT, on_overflow=lambda: None)
    assert box.push_frame(b"never written", text(1), 2)
    assert server.wire == [message_frame(text(1))]


async def test_outbox_holds_one_frame_in_flight_queues_then_cuts_while_paused() -> None:
    server = FakeServer()
    box, overflowed = outbox(server, max_messages=3)
    server.writable.clear()
    frames = [message_frame(text(i)) for i in range(5)]
    for i in range(4):
        assert box.push_frame(frames[i], text(i), 2)
    # As on the ASGI path: the first one in flight, three queued, nothing written.
    assert server.wire == [] and box.queued == 3 and not overflowed
    assert not box.push_frame(frames[4], text(4), 2)
    assert overflowed == [1] and box.closed


async def test_outbox_drains_frames_in_order_once_resumed() -> None:
    server = FakeServer()
    box, _ = outbox(server, max_messages=10)
    server.writable.clear()
    for i in range(5):
        if i == 2:
            box.push(text(i), 2)
        else:
            box.push_frame(message_frame(text(i)), text(i), 2)
    assert box.push_frame(b"x", text(9), 1, volatile=True) is False
    server.writable.set()
    async with asyncio.timeout(2):
        while len(server.wire) < 5:
            await asyncio.sleep(0.001)
    assert server.wire == [message_frame(text(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert box.push_frame(message_frame(text(5)), text(5), 2)
    assert server.wire[-1] == message_frame(text(5))  # direct again


async def test_outbox_closes_when_a_pre_framed_write_fails() -> None:
    server = FakeServer()
    box, _ = outbox(server)
    server.gone = True
    assert not box.push_frame(b"\x81\x00", text(0), 2)
    assert box.closed
    assert not box.push_frame(b"\x81\x00", text(0), 2)


# A raw ASGI app that sends what a raw-socket client asks for, by either path ---------------


class Probe:
    """What the app saw, shared with the test thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []
        self.offered: list[bool] = []
        self.release = threading.Event()

    def note(self, name: str, value: Any = None) -> None:
        with self.lock:
            self.events.append((name, value))

    def seen(self, name: str) -> Any:
        with self.lock:
            for key, value in self.events:
                if key == name:
                    return value
        raise KeyError(name)

    def has(self, name: str) -> bool:
        with self.lock:
            return any(key == name for key, _ in self.events)


def make_app(probe: Probe) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "websocket"
        await receive()
        fast = preframed(scope)
        probe.offered.append(fast is not None)
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if fast is not None:
                    try:
                        fast.write(ws_frame(b"late", binary=False))
                    except Exception as exc:
                        probe.note("write-after-disconnect", type(exc))
                    else:
                        probe.note("write-after-disconnect", None)
                return
            cmd = json.loads(message["text"])
            op = cmd["op"]
            data = payload(cmd.get("size", 0))
            binary = cmd.get("binary", False)
            if op == "asgi":
                await send({"type": "websocket.send", "bytes": data} if binary else
                           {"type": "websocket.send", "text": data.decode()})
            elif op == "fast":
                assert fast is not None
                assert fast.write(ws_frame(data, binary=binary))
            elif op == "flood":
                assert fast is not None
                frame = ws_frame(data, binary=binary)
                written = 0
                while fast.write(frame):
                    written += 1
                    if written > 10_000:
                        raise AssertionError("write never reported flow control")
                probe.note("paused", written)
                await fast.send(frame)
                probe.note("sent")
            elif op == "close-then-write":
                assert fast is not None
                await send({"type": "websocket.close", "code": 1000})
                for name, attempt in (("write", fast.write), ("send", fast.send)):
                    try:
                        result = attempt(b"\x81\x00")
                        if asyncio.iscoroutine(result):
                            await result
                    except Exception as exc:
                        probe.note(f"{name}-after-close", type(exc))
                return

    return app


class RawClient:
    """A blocking WebSocket client on a plain socket that returns the server's frames byte for byte."""

    def __init__(
        self,
        port: int,
        *,
        path: str = "/",
        subprotocol: str | None = None,
        rcvbuf: int | None = None,
        deflate: bool = False,
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        if subprotocol is not None:
            extra += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        self.sock.sendall(
            (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.response_headers = head.decode("latin-1").lower()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def command(self, **cmd: Any) -> None:
        self.send_message(json.dumps(cmd).encode(), binary=False)

    def send_message(self, data: bytes, *, binary: bool) -> None:
        self.sock.sendall(Frame(Opcode.BINARY if binary else Opcode.TEXT, data).serialize(mask=True))

    def read_frame(self) -> bytes:
        """One whole frame as it came off the wire (header and payload)."""
        head = self._take(2)
        n = head[1] & 0x7F
        assert not head[1] & 0x80, "server frames are never masked"
        ext = b""
        if n == 126:
            ext = self._take(2)
            n = int.from_bytes(ext, "big")
        elif n == 127:
            ext = self._take(8)
            n = int.from_bytes(ext, "big")
        return head + ext + self._take(n)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def fast_server(probe: Probe, **options: Any) -> Iterator[Any]:
    with serve(make_app(probe), ws=PreframedProtocol, **options) as srv:
        yield srv


# Byte-identical frames on the wire ---------------------------------------------------------


def test_fast_and_asgi_paths_put_identical_bytes_on_the_wire() -> None:
    probe = Probe()
    with fast_server(probe) as srv:
        client = RawClient(srv.port)
        try:
            for binary in (False, True):
                for size in SIZES:
                    client.command(op="asgi", size=size, binary=binary)
                    via_asgi = client.read_frame()
                    client.command(op="fast", size=size, binary=binary)
                    via_fast = client.read_frame()
                    assert via_fast == via_asgi, (binary, size)
                    assert via_fast == ws_frame(payload(size), binary=binary)
        finally:
            client.close()
    assert probe.offered == [True]


# Flow control and the close state ------------------------------------------------------------


def _transports(srv: Any) -> list[Any]:
    return [c.transport for c in srv.server.server_state.connections if isinstance(c, PreframedProtocol)]


def test_writes_wait_while_the_transport_is_paused() -> None:
    probe = Probe()
    size = 256 * 1024
    with fast_server(probe) as srv:
        client = RawClient(srv.port, rcvbuf=64 * 1024)
        try:
            client.command(op="flood", size=size, binary=True)
            # The client reads nothing: the transport pauses and write() says so, writing nothing more.
            wait_until(lambda: probe.has("paused"), message="write() to report a paused transport")
            written = probe.seen("paused")
            (transport,) = _transports(srv)
            _, high = transport.get_write_buffer_limits()
            # Bounded: at most the high-water mark plus the frame that crossed it.
            assert transport.get_write_buffer_size() <= high + size + 16
            # send() waits exactly as the ASGI send does while the peer does not read.
            time.sleep(0.3)
            assert not probe.has("sent")
            assert transport.get_write_buffer_size() <= high + size + 16
            frames = [client.read_frame() for _ in range(written + 1)]
            wait_until(lambda: probe.has("sent"), message="send() to finish once the peer reads")
            assert all(f == ws_frame(payload(size), binary=True) for f in frames)
        finally:
            client.close()


def test_after_close_pre_framed_writes_fail_as_asgi_sends_do() -> None:
    probe = Probe()
    with fast_server(probe) as srv:
        client = RawClient(srv.port)
        try:
            client.command(op="close-then-write")
            close = client.read_frame()
            assert close[0] == 0x88  # FIN + close
            wait_until(lambda: probe.has("send-after-close"), message="the app to try both writes")
            assert probe.seen("write-after-close") is RuntimeError
            assert probe.seen("send-after-close") is RuntimeError
        finally:
            client.close()


def test_after_the_peer_is_gone_pre_framed_writes_fail() -> None:
    probe = Probe()
    with fast_server(probe) as srv:
        client = RawClient(srv.port)
        client.command(op="fast", size=10)
        client.read_frame()
        client.close()
        wait_until(lambda: probe.has("write-after-disconnect"), message="the app to see the disconnect")
    exc = probe.seen("write-after-disconnect")
    assert exc is not None and issubclass(exc, OSError)  # uvicorn's ClientDisconnected, as from its send()


def test_not_offered_when_the_socket_is_compressed() -> None:
    probe = Probe()
    with fast_server(probe, ws_per_message_deflate=True) as srv:
        compressed = RawClient(srv.port, deflate=True)
        assert "permessage-deflate" in compressed.response_headers
        plain = RawClient(srv.port)
        try:
            wait_until(lambda: len(probe.offered) == 2, message="both sockets to reach the app")
        finally:
            compressed.close()
            plain.close()
    assert sorted(probe.offered) == [False, True]


# Through the library: one broadcast, a socket on each path ----------------------------------


class SplitProtocol(PreframedProtocol):
    """The fast path for every socket but those whose query has ``plain``: both paths on one server."""

    fast_writes = 0

    async def run_asgi(self) -> None:
        if b"plain" in self.scope["query_string"]:
            await WebSocketsSansIOProtocol.run_asgi(self)
        else:
            await super().run_asgi()

    def write_frame(self, frame: bytes) -> bool:
        written = super().write_frame(frame)
        SplitProtocol.fast_writes += written
        return written


class RtClient(RawClient):
    """A raw-socket client of protocol v1 on the ``/chat`` namespace of tests/apps.py."""

    def __init__(self, port: int, subprotocol: str, *, plain: bool = False, rcvbuf: int | None = None) -> None:
        super().__init__(port, path="/realtime/?plain=1" if plain else "/realtime/", subprotocol=subprotocol,
                         rcvbuf=rcvbuf)
        self.binary = subprotocol.endswith("msgpack")
        self.read_frame()  # HELLO
        self.send([1, "/chat", None])
        assert self.decode(self.read_frame())[0] == 2  # CONNECTED

    def send(self, frame: list[Any]) -> None:
        data = msgspec.msgpack.encode(frame) if self.binary else msgspec.json.encode(frame)
        self.send_message(data, binary=self.binary)

    def decode(self, raw: bytes) -> Any:
        length = raw[1] & 0x7F
        start = 2 if length < 126 else 4 if length == 126 else 10
        body = raw[start:]
        return msgspec.msgpack.decode(body) if self.binary else msgspec.json.decode(body)

    def join(self, room: str) -> None:
        self.send([5, "/chat", "join", room, 1])
        assert self.decode(self.read_frame())[:3] == [6, "/chat", 1]


@pytest.mark.parametrize("subprotocol", ["rt.v1.json", "rt.v1.msgpack"])
def test_a_broadcast_is_byte_identical_on_both_paths(subprotocol: str) -> None:
    app, _ = make_realtime_app()
    with serve(app, ws=SplitProtocol) as srv:
        fast = RtClient(srv.port, subprotocol)
        plain = RtClient(srv.port, subprotocol, plain=True)
        try:
            for c in (fast, plain):
                c.join("r")
            before = SplitProtocol.fast_writes
            for size in (10, 1000, 70_000):
                text = payload(size).decode()
                # "shout" fans out to the whole room, the sender included; no ack id, no ack.
                fast.send([5, "/chat", "shout", {"room": "r", "text": text}])
                via_fast, via_asgi = fast.read_frame(), plain.read_frame()
                assert via_fast == via_asgi, size
                assert fast.decode(via_fast)[:4] == [5, "/chat", "said", {"room": "r", "text": text}]
            # Each broadcast went to the fast socket as one pre-framed write.
            assert SplitProtocol.fast_writes - before == 3
        finally:
            fast.close()
            plain.close()


@pytest.mark.parametrize("subprotocol", ["rt.v1.json", "rt.v1.msgpack"])
@pytest.mark.parametrize("fast", [True, False], ids=["preframed", "websockets-sansio"])
def test_the_heartbeats_answer_is_handled_in_the_servers_reader(subprotocol: str, fast: bool) -> None:
    # A PONG is intercepted by the pre-framed protocol (no ASGI message, no task switch) and still
    # keeps the socket alive; on uvicorn's own protocol it reaches the application as before.
    app, realtime = make_realtime_app(ping_interval=0.1, ping_timeout=0.4)
    seen: list[Any] = []

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive":
                seen.append(message.get("text") or message.get("bytes"))
            return message

        await app(scope, counted, send)

    pong = msgspec.msgpack.encode([8]) if subprotocol.endswith("msgpack") else "[8]"
    with serve(watched, ws=PreframedProtocol if fast else "websockets-sansio") as srv:
        client = RtClient(srv.port, subprotocol)
        try:
            pings = 0
            deadline = time.monotonic() + 1.5  # about fifteen PINGs, each answered within its 0.4 s
            while time.monotonic() < deadline:
                if client.decode(client.read_frame())[0] == 7:
                    client.send([8])
                    pings += 1
            client.send([5, "/chat", "echo", "alive", 1])
            while (answer := client.decode(client.read_frame()))[0] == 7:
                client.send([8])
            assert answer[:4] == [6, "/chat", 1, "alive"]
        finally:
            client.close()
    assert pings >= 5
    pongs = seen.count(pong)
    assert pongs == (0 if fast else pings), (pongs, pings)
    assert realtime.stats()["links"] == 0


def test_a_receiver_that_stops_reading_is_queued_then_cut_on_the_fast_path() -> None:
    app, realtime = make_realtime_app(max_queue_bytes=256 * 1024, max_queue_messages=10_000)
    with serve(app, ws=SplitProtocol) as srv:
        slow = RtClient(srv.port, "rt.v1.json", rcvbuf=16 * 1024)
        sender = RtClient(srv.port, "rt.v1.json")
        try:
            slow.join("flood")
            before = SplitProtocol.fast_writes
            text = "x" * 4096
            buffered = []
            for i in range(4000):
                # "say" reaches the room but the sender: it reads nothing, the slow one stops reading.
                sender.send([5, "/chat", "say", {"room": "flood", "text": f"{i}:{text}"}])
                if i % 500 == 0:
                    buffered.append(max((t.get_write_buffer_size() for t in _transports(srv)), default=0))
            assert max(buffered) <= 64 * 1024 + 8192  # uvicorn's high-water mark plus a frame at most
            # The slow one gets what its socket held, then a 4004 close, and nothing more.
            count = 0
            while True:
                frame = slow.read_frame()
                if frame[0] == 0x88:
                    assert int.from_bytes(frame[2:4], "big") == 4004
                    break
                assert slow.decode(frame)[3]["text"].startswith(f"{count}:")
                count += 1
            assert 0 < count < 4000
            assert SplitProtocol.fast_writes > before
            wait_until(lambda: realtime.stats()["links"] == 1, message="the slow link to be gone")
        finally:
            slow.close()
            sender.close()


# Servers without the extension keep working ------------------------------------------------


def test_uvicorns_own_protocol_does_not_offer_it() -> None:
    probe = Probe()
    with serve(make_app(probe)) as srv:
        client = RawClient(srv.port)
        try:
            client.command(op="asgi", size=5)
            assert client.read_frame() == ws_frame(payload(5), binary=False)
        finally:
            client.close()
    assert probe.offered == [False]


def test_testclient_does_not_offer_it() -> None:
    probe = Probe()
    with TestClient(make_app(probe)) as tc, tc.websocket_connect("/") as ws:
        ws.send_text(json.dumps({"op": "asgi", "size": 7}))
        assert ws.receive_text() == payload(7).decode()
    assert probe.offered == [False]


def _hypercorn() -> Any:
    try:
        import hypercorn.asyncio
        import hypercorn.config
    except ImportError:
        message = "hypercorn is missing: pip install -e '.[test]'"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return hypercorn


@contextlib.contextmanager
def hypercorn_server(app: Any) -> Iterator[int]:
    """Serve ``app`` with hypercorn (asyncio) in a thread; yields its port once it accepts connections."""
    hypercorn = _hypercorn()
    port = free_port()
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("test.hypercorn")
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def run() -> None:
        async def main() -> None:
            stopped = asyncio.Event()
            stop.append((asyncio.get_running_loop(), stopped))
            await hypercorn.asyncio.serve(app, config, shutdown_trigger=stopped.wait)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise
                time.sleep(0.05)
        yield port
    finally:
        wait_until(lambda: bool(stop), message="hypercorn to start")
        loop, stopped = stop[0]
        loop.call_soon_threadsafe(stopped.set)
        thread.join(10)


def test_hypercorn_does_not_offer_it() -> None:
    probe = Probe()
    with hypercorn_server(make_app(probe)) as port:
        client = RawClient(port)
        try:
            for binary in (False, True):
                client.command(op="asgi", size=70_000, binary=binary)
                assert client.read_frame() == ws_frame(payload(70_000), binary=binary)
        finally:
            client.close()
    assert probe.offered == [False]


@pytest.mark.parametrize("subprotocol", ["rt.v1.json", "rt.v1.msgpack"])
def test_the_library_on_hypercorn_puts_the_same_bytes_on_the_wire(subprotocol: str) -> None:
    # The same broadcast through the library on hypercorn (ASGI messages) and on uvicorn with the fast path.
    frames: dict[str, list[bytes]] = {}
    for name in ("hypercorn", "fast"):
        app, realtime = make_realtime_app()
        with contextlib.ExitStack() as stack:
            if name == "hypercorn":
                port = stack.enter_context(hypercorn_server(app))
            else:
                port = stack.enter_context(serve(app, ws=PreframedProtocol)).port
            a, b = RtClient(port, subprotocol), RtClient(port, subprotocol)
            stack.callback(a.close)
            stack.callback(b.close)
            a.join("r")
            b.join("r")
            for size in (10, 70_000):
                a.send([5, "/chat", "shout", {"room": "r", "text": payload(size).decode()}])
                got = a.read_frame()
                assert b.read_frame() == got
                # The room's epoch is random per server: the same length, masked out.
                epoch = a.decode(got)[6].encode()
                frames.setdefault(name, []).append(got.replace(epoch, b"E" * len(epoch)))
    assert frames["hypercorn"] == frames["fast"]


# server.run's default ------------------------------------------------------------------------


def test_run_uses_the_protocol_on_a_tested_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rt_server.default_ws() is PreframedProtocol
    captured: dict[str, Any] = {}

    class FakeServer:
        def __init__(self, config: uvicorn.Config, routers: Any) -> None:
            captured["ws"] = config.ws

        def run(self) -> None:
            pass

    monkeypatch.setattr(rt_server, "Server", FakeServer)
    rt_server.run(object(), routers=[])
    assert captured["ws"] is PreframedProtocol
    rt_server.run(object(), routers=[], ws="wsproto")
    assert captured["ws"] == "wsproto"


def test_untested_uvicorn_falls_back_to_plain_asgi(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    with caplog.at_level(logging.WARNING, "starlette_realtime.fastpath.uvicorn"):
        assert protocol_class() is None
        assert rt_server.default_ws() is None
    assert "not one the pre-framed fast path is tested with" in caplog.text


# The protocol's inbox and write gate (the parts of asyncio.Queue and asyncio.Event uvicorn uses) -----------------


async def _inbox_behaves_like_a_queue_for_one_reader() -> None:
    inbox = _Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    for i in range(3):
        inbox.put_nowait(i)
    assert inbox.qsize() == 3 and not inbox.empty()
    assert [await inbox.get() for _ in range(3)] == [0, 1, 2]
    assert inbox.empty()
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        await inbox.get()
    inbox.put_nowait("woken")
    assert await asyncio.wait_for(waiting, 1) == "woken"
    # A reader cancelled while waiting loses nothing that arrives afterwards.
    cancelled = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    inbox.put_nowait("kept")
    inbox.put_nowait("and this")
    assert [await inbox.get(), await inbox.get()] == ["kept", "and this"]


async def _gate_holds_writers_while_paused() -> None:
    gate = _Gate()
    assert gate.is_set() and await asyncio.wait_for(gate.wait(), 1)
    gate.clear()
    first, second = asyncio.ensure_future(gate.wait()), asyncio.ensure_future(gate.wait())
    gone = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0.01)
    assert not (first.done() or second.done() or gone.done())
    gone.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 1) == [True, True]
    assert gone.cancelled() and gate._waiters is None


def test_the_inbox_behaves_like_a_queue_for_one_reader() -> None:
    asyncio.run(_inbox_behaves_like_a_queue_for_one_reader())


def test_the_write_gate_holds_writers_while_writing_is_paused() -> None:
    asyncio.run(_gate_holds_writers_while_paused())


def test_the_protocol_uses_the_small_inbox_and_gate() -> None:
    """What keeps an idle connection on the fast path below uvicorn's own protocol (tests/test_memory.py)."""
    config = uvicorn.Config(make_realtime_app(), ws=PreframedProtocol)
    config.load()
    from uvicorn.server import ServerState

    loop = asyncio.new_event_loop()
    try:
        proto = PreframedProtocol(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()
    assert type(proto.queue) is _Inbox and type(proto.writable) is _Gate and proto.writable.is_set()
