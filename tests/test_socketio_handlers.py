"""How handlers see a Socket.IO event's arguments: one payload, a tuple, or several typed parameters."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from starlette_realtime import Connection, RealtimeEndpoint, on_event
from starlette_realtime.frames import Event
from starlette_realtime.socketio.wire import SocketIOWire


class Point(msgspec.Struct):
    x: int
    y: int


class Handlers(RealtimeEndpoint):
    namespace = "/"

    @on_event("one")
    async def one(self, conn: Connection, p: Point) -> int:
        return p.x + p.y

    @on_event("pair")
    async def pair(self, conn: Connection, args: tuple[str, int]) -> str:
        return args[0] * args[1]

    @on_event("spread")
    async def spread(self, conn: Connection, name: str, count: int, p: Point | None) -> str:
        return f"{name}:{count}:{p}"


W = SocketIOWire()


def run(event: str, text: str) -> object:
    frame = W.receive(text, None)
    assert isinstance(frame, Event) and frame.event == event
    handler = Handlers.handlers[event]
    payload = handler.decode(W, frame.data)  # type: ignore[arg-type]

    async def call() -> object:
        with anyio.fail_after(1):
            return await handler.func(Handlers(), None, payload)

    return anyio.run(call)


def test_one_argument_is_the_payload() -> None:
    assert run("one", '42["one",{"x":1,"y":2}]') == 3


def test_several_arguments_fit_a_tuple() -> None:
    assert run("pair", '42["pair","ab",3]') == "ababab"


def test_several_arguments_spread_into_several_typed_parameters() -> None:
    assert run("spread", '42["spread","n",2,{"x":1,"y":1}]') == "n:2:Point(x=1, y=1)"
    assert run("spread", '42["spread","n",2,null]') == "n:2:None"
    assert Handlers.handlers["spread"].payload_type == tuple[str, int, Point | None]


def test_the_wrong_arity_or_types_do_not_decode() -> None:
    handler = Handlers.handlers["spread"]
    for text in ('42["spread","n",2]', '42["spread","n","2",null]', '42["spread","n"]'):
        frame = W.receive(text, None)
        assert isinstance(frame, Event)
        with pytest.raises(msgspec.ValidationError):
            handler.decode(W, frame.data)  # type: ignore[arg-type]
