"""The client's side of the dedup contract (issue 12), against a scripted server over a real socket.

A call whose reply is lost with the connection is resent with the same id after the reconnect;
the answer to that id settles it, and ``duplicate`` (the server no longer has the answer) never
resolves it as a success.  Both encodings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import pytest
import websockets
from conftest import free_port

from starlette_realtime.client import AckError, RealtimeClient
from starlette_realtime.codec import Codec, JsonCodec, MsgpackCodec
from starlette_realtime.frames import Ack, Connect, Connected, ErrorInfo, Event, Hello

CODECS: dict[str, Callable[[], Codec]] = {"json": JsonCodec, "msgpack": MsgpackCodec}


class Script:
    """A server that answers CONNECT, takes one EVENT per socket, and then does what the test says."""

    def __init__(self, codec: Codec, answer: Callable[[Event, int], Any]) -> None:
        self.codec = codec
        self.answer = answer  # (event, socket number) -> an Ack to send, or None to drop the socket
        self.events: list[Event] = []
        self.connects: list[Connect] = []
        self.sockets = 0

    async def send(self, ws: Any, frame: Any) -> None:
        raw = self.codec.encode(frame)
        await ws.send(raw if self.codec.binary else raw.decode())

    async def recv(self, ws: Any) -> Any:
        message = await ws.recv()
        return self.codec.decode(message if isinstance(message, bytes) else message.encode())

    async def __call__(self, ws: Any) -> None:
        self.sockets += 1
        n = self.sockets
        await self.send(ws, Hello(1, "script", 25.0, 20.0, 1 << 20))
        connect = await self.recv(ws)
        self.connects.append(connect)
        await self.send(ws, Connected(connect.ns, f"sid{n}", "session-1", recovered=n > 1))
        while True:
            frame = await self.recv(ws)
            if type(frame) is not Event:
                continue
            self.events.append(frame)
            reply = self.answer(frame, n)
            if reply is None:
                ws.transport.abort()  # the reply is lost: no close frame, as a network failure
                return
            await self.send(ws, reply)


@pytest.fixture(params=sorted(CODECS))
def encoding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def serve_script(script: Script) -> AsyncIterator[str]:
    port = free_port()
    async with websockets.serve(script, "127.0.0.1", port, subprotocols=[script.codec.subprotocol]):  # type: ignore[list-item]
        yield f"ws://127.0.0.1:{port}/rt"


async def run(encoding: str, answer: Callable[[Event, int], Any], body: Callable[[RealtimeClient], Any]) -> Script:
    script = Script(CODECS[encoding](), answer)
    async for url in serve_script(script):
        client = RealtimeClient(url, namespaces=["/pay"], encoding=encoding, reconnection_delay=0.05)
        with anyio.fail_after(10):
            await client.connect()
            try:
                await body(client)
            finally:
                await client.close()
    return script


def ack(codec: Codec, event: Event, value: Any = None, error: tuple[str, str] | None = None) -> Ack:
    assert event.id is not None
    info = ErrorInfo(*error) if error else None
    return Ack(event.ns, event.id, codec.null if error else codec.encode_payload(value), info)


async def test_a_call_whose_reply_was_lost_is_resent_with_its_id_and_gets_the_real_answer(encoding: str) -> None:
    codec = CODECS[encoding]()

    def answer(event: Event, socket: int) -> Any:
        return None if socket == 1 else ack(codec, event, {"charged": 42})

    async def body(client: RealtimeClient) -> None:
        assert await client.call("charge", 42, namespace="/pay", timeout=5) == {"charged": 42}

    script = await run(encoding, answer, body)
    assert [(e.event, e.id) for e in script.events] == [("charge", 1), ("charge", 1)]  # the same id, resent
    assert script.connects[1].session == "session-1"  # on the resumed session


async def test_a_resent_call_answered_with_an_error_raises_it(encoding: str) -> None:
    codec = CODECS[encoding]()

    def answer(event: Event, socket: int) -> Any:
        return None if socket == 1 else ack(codec, event, error=("nope", "card declined"))

    async def body(client: RealtimeClient) -> None:
        with pytest.raises(AckError) as err:
            await client.call("charge", 42, namespace="/pay", timeout=5)
        assert (err.value.code, err.value.message) == ("nope", "card declined")

    await run(encoding, answer, body)


async def test_duplicate_never_resolves_a_call_as_a_success(encoding: str) -> None:
    codec = CODECS[encoding]()

    def answer(event: Event, socket: int) -> Any:
        return None if socket == 1 else ack(codec, event, error=("duplicate", "already handled"))

    async def body(client: RealtimeClient) -> None:
        with pytest.raises(AckError) as err:
            await client.call("charge", 42, namespace="/pay", timeout=5)
        assert err.value.code == "duplicate"
        assert client.queued == 0

    await run(encoding, answer, body)


async def test_a_duplicate_for_a_plain_emit_is_no_error(encoding: str) -> None:
    codec = CODECS[encoding]()
    errors: list[Any] = []

    def answer(event: Event, socket: int) -> Any:
        return None if socket == 1 else ack(codec, event, error=("duplicate", "already handled"))

    async def body(client: RealtimeClient) -> None:
        client.on("error", errors.append, namespace="/pay")
        await client.emit("charge", 42, namespace="/pay")
        await client.drain(5)  # acknowledged: handled once, which is all an emit asks for

    script = await run(encoding, answer, body)
    assert errors == [] and [e.id for e in script.events] == [1, 1]


async def test_an_undecodable_frame_from_the_server_is_dropped() -> None:
    def answer(event: Event, socket: int) -> Any:
        return Ack(event.ns, event.id or 0, msgspec.Raw(b"[1,"))  # not JSON: the envelope cannot be decoded

    async def body(client: RealtimeClient) -> None:
        await client.emit("first", namespace="/pay")  # answered with garbage: dropped, still unacknowledged
        await anyio.sleep(0.1)
        assert client.state.value == "connected" and client.queued == 1

    await run("json", answer, body)


async def test_an_emit_from_a_connect_handler_goes_after_the_resent_events(encoding: str) -> None:
    codec = CODECS[encoding]()

    def answer(event: Event, socket: int) -> Any:
        return None if socket == 1 else ack(codec, event, event.event)

    async def body(client: RealtimeClient) -> None:
        async def on_connect(info: dict[str, Any]) -> None:
            await client.emit("hello", namespace="/pay")

        client.on("connect", on_connect, namespace="/pay")
        assert await client.call("charge", 1, namespace="/pay", timeout=5) == "charge"
        await client.drain(5)

    script = await run(encoding, answer, body)
    assert [(e.event, e.id) for e in script.events] == [("charge", 1), ("charge", 1), ("hello", 2)]
