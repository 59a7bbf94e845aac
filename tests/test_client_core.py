"""The Python client's core without a socket: frames in, frames out, through a stand-in for the connection loop."""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
import pytest

from starlette_realtime.client import AckError, ClientClosed, NamespaceNotOpen
from starlette_realtime.client.core import ClientCore
from starlette_realtime.client.namespace import NamespaceState
from starlette_realtime.client.outgoing import Outgoing
from starlette_realtime.codec import JsonCodec
from starlette_realtime.frames import Ack, Connected, Disconnect, Error, ErrorInfo, Event, Frame, Hello, Ping


class FakeLoop:
    """What the core asks of the connection loop, recorded."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.silence = 45.0
        self.opened = 0
        self.retries = 0

    async def send(self, message: bytes | str) -> bool:
        self.sent.append(message.encode() if isinstance(message, str) else message)
        return True

    def mark_opened(self) -> None:
        self.opened += 1

    async def close_for_retry(self) -> None:
        self.retries += 1


CODEC = JsonCodec()
RAW = msgspec.json.Decoder()


def make(*names: str) -> tuple[ClientCore, FakeLoop, list[tuple[str, str, Any]]]:
    states = {n: NamespaceState(n, None, Outgoing(60, 100)) for n in names}
    core, loop = ClientCore(CODEC, states), FakeLoop()
    core.attach(loop)  # type: ignore[arg-type]
    seen: list[tuple[str, str, Any]] = []
    for name in names:
        core.handlers.add(name, "*", lambda event, data, name=name: seen.append((name, event, data)))
        for event in ("connect", "disconnect", "error", "recovery_failed"):
            core.handlers.add(name, event, lambda data, name=name, event=event: seen.append((name, event, data)))
    return core, loop, seen


async def feed(core: ClientCore, *frames: Frame) -> None:
    with anyio.fail_after(5):
        for frame in frames:
            await core.on_message(CODEC.encode(frame))


def sent(loop: FakeLoop) -> list[Any]:
    """The frames sent since the last look, without trailing nulls."""
    out = []
    for raw in loop.sent:
        frame = RAW.decode(raw)
        while frame and frame[-1] is None:
            frame.pop()
        out.append(frame)
    loop.sent.clear()
    return out


def said(n: int, *, room: str = "r", epoch: str = "e1", ns: str = "/a") -> Event:
    return Event(ns, "said", msgspec.Raw(msgspec.json.encode(n)), None, room, epoch, n)


async def test_connected_opens_a_namespace_and_ready_waits_for_every_one() -> None:
    core, loop, seen = make("/a", "/b")
    await feed(core, Hello(1, "n", 5.0, 3.0, 1000), Connected("/a", "sid-a", "sess-a"))
    assert loop.silence == 8.0 and core.max_message_size == 1000 and loop.opened == 1
    assert core.ns["/a"].connected and not core.ready.is_set()
    await feed(core, Connected("/b", "sid-b", "sess-b", recovered=False, recovery_failed=True))
    assert core.ready.is_set() and core.state.value == "connected"
    assert seen == [
        ("/a", "connect", {"sid": "sid-a", "recovered": False, "recovery_failed": False}),
        ("/b", "connect", {"sid": "sid-b", "recovered": False, "recovery_failed": True}),
        ("/b", "recovery_failed", {"sid": "sid-b"}),
    ]


async def test_pending_events_go_again_with_their_ids_after_connected() -> None:
    core, loop, _ = make("/a")
    ns = core.ns["/a"]
    first = ns.outgoing.add("pay", 1, now=time.monotonic())
    first.sent = True  # it left on the previous socket; its answer was lost
    ns.outgoing.add("pay", 2, now=time.monotonic())
    await feed(core, Connected("/a", "sid", "sess", recovered=True))
    assert sent(loop) == [[5, "/a", "pay", 1, 1], [5, "/a", "pay", 2, 2]]


async def test_acks_settle_calls_and_duplicate_is_an_error() -> None:
    core, loop, seen = make("/a")
    await feed(core, Connected("/a", "sid", "sess"))
    ns = core.ns["/a"]
    waiters = [anyio_future() for _ in range(3)]
    for i, waiter in enumerate(waiters):
        ns.outgoing.add("pay", i, now=time.monotonic(), waiter=waiter)
    emit = ns.outgoing.add("note", None, now=time.monotonic())
    await feed(
        core,
        Ack("/a", 1, msgspec.Raw(b'{"paid":1}')),
        Ack("/a", 2, CODEC.null, ErrorInfo("declined", "no")),
        Ack("/a", 3, CODEC.null, ErrorInfo("duplicate", "already handled")),
        Ack("/a", emit.id, CODEC.null, ErrorInfo("duplicate", "already handled")),
        Ack("/a", 99, CODEC.null),  # late or unknown: ignored
    )
    assert waiters[0].result() == {"paid": 1}
    assert [(e.code, e.message) for e in (waiters[1].exception(), waiters[2].exception())  # type: ignore[union-attr]
            ] == [("declined", "no"), ("duplicate", "already handled")]
    assert all(isinstance(w.exception(), AckError) for w in waiters[1:])
    assert len(ns.outgoing) == 0
    assert [s for s in seen if s[1] == "error"] == []  # a duplicate emit was handled: no error to report


async def test_room_messages_are_delivered_once_but_counted_as_they_arrived() -> None:
    core, loop, seen = make("/a")
    await feed(core, Connected("/a", "sid", "sess"))
    seen.clear()
    await feed(core, said(1), said(2), said(2), said(1), said(3))
    assert [data for _, event, data in seen if event == "said"] == [1, 2, 3]
    wire = core.wire_stats.stream("r", "/a")
    assert (wire.received, wire.duplicates) == (5, 2)
    # $resync forgets the room's position: the next message is delivered whatever its offset.
    await feed(core, Event("/a", "$resync", msgspec.Raw(b'{"room":"r","epoch":"e2"}')), said(1, epoch="e1"))
    assert [data for _, event, data in seen if event == "said"] == [1, 2, 3, 1]


async def test_a_server_call_is_answered_by_a_handler_or_unknown_event() -> None:
    core, loop, _ = make("/a")
    core.handlers.add("/a", "question", lambda q: q * 2)
    await feed(core, Connected("/a", "sid", "sess"), Ping())
    assert sent(loop) == [[8]]  # PONG
    await feed(core, Event("/a", "question", msgspec.Raw(b"21"), 7), Event("/b", "question", CODEC.null, 8))
    await feed(core, Event("/a", "nobody", CODEC.null, 9))
    # The catch-all of make() has no return value, and answers with null; an unknown namespace gets nothing.
    assert sent(loop) == [[6, "/a", 7, 42], [6, "/a", 9]]
    core.handlers.remove("/a", "*")
    await feed(core, Event("/a", "nobody", CODEC.null, 10))
    assert sent(loop) == [[6, "/a", 10, None, ["unknown_event", "unknown_event"]]]


async def test_a_server_disconnect_closes_the_namespace_for_good() -> None:
    core, loop, seen = make("/a", "/b")
    await feed(core, Connected("/a", "sid", "sess"), Connected("/b", "sid", "sess"))
    waiter = anyio_future()
    core.ns["/b"].outgoing.add("pay", 1, now=time.monotonic(), waiter=waiter)
    seen.clear()
    await feed(core, Disconnect("/b", "kicked"))
    assert ("/b", "disconnect", {"reason": "kicked", "code": None}) in seen
    assert isinstance(waiter.exception(), NamespaceNotOpen)
    assert not core.ns["/b"].active and core.ready.is_set()  # the others are still open
    with pytest.raises(NamespaceNotOpen, match="closed"):
        core.namespace("/b")
    with pytest.raises(ClientClosed, match="every namespace"):
        await feed(core, Disconnect("/a", "kicked"))


async def test_error_frames_reach_the_error_handlers_and_garbage_is_dropped() -> None:
    core, loop, seen = make("/a", "/b")
    await feed(core, Error("not_connected", "no", "/b"), Error("bad_frame", "what"))
    assert [(ns, data["code"]) for ns, event, data in seen if event == "error"] == [
        ("/b", "not_connected"), ("/a", "bad_frame"), ("/b", "bad_frame")
    ]
    with anyio.fail_after(5):
        await core.on_message(b"[5,")  # not a frame: dropped, the client carries on
    assert core.wire_stats.frames == 2


def anyio_future() -> Any:
    import asyncio

    return asyncio.get_running_loop().create_future()
