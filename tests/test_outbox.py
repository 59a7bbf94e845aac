"""The outbox: direct writes while the socket keeps up, a bounded queue when it does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from starlette_realtime.outbox import Outbox, Overflow


class FakeSocket:
    """An ASGI send that completes at once while writable, and blocks while paused."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.writable = asyncio.Event()
        self.writable.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        self.sent.append(message["text"])


def make(sock: FakeSocket, overflow: Overflow = Overflow.DISCONNECT, max_messages: int = 3) -> tuple[Outbox, list[int]]:
    overflowed: list[int] = []
    box = Outbox(sock.send, max_messages=max_messages, max_bytes=1000, overflow=overflow,
                 on_overflow=lambda: overflowed.append(1))
    box.attach(spawn)
    return box, overflowed


WRITERS: list[asyncio.Task[None]] = []


def spawn(fn: Any) -> None:
    WRITERS.append(asyncio.get_running_loop().create_task(fn()))


def msg(i: int) -> dict[str, Any]:
    return {"type": "websocket.send", "text": str(i)}


async def test_writes_directly_while_the_socket_keeps_up() -> None:
    sock = FakeSocket()
    box, _ = make(sock)
    for i in range(10):
        assert box.push(msg(i), 1)
    # No task ran: the sends completed synchronously.
    assert sock.sent == [str(i) for i in range(10)]
    assert box.queued == 0


async def test_queues_in_order_when_the_socket_falls_behind() -> None:
    sock = FakeSocket()
    box, overflowed = make(sock, max_messages=10)
    sock.writable.clear()
    for i in range(5):
        assert box.push(msg(i), 1)
    assert sock.sent == []
    assert box.queued == 4  # one send is suspended in flight
    sock.writable.set()
    async with asyncio.timeout(2):
        while len(sock.sent) < 5:
            await asyncio.sleep(0.001)
    assert sock.sent == ["0", "1", "2", "3", "4"]
    # Back to direct writes once drained, and the writer task is gone.
    await asyncio.sleep(0.01)
    assert WRITERS[-1].done()
    box.push(msg(5), 1)
    assert sock.sent[-1] == "5"
    assert not overflowed


@pytest.mark.parametrize(
    ("policy", "expected", "disconnected"),
    [
        (Overflow.DISCONNECT, ["0"], True),
        (Overflow.DROP_NEWEST, ["0", "1", "2", "3"], False),
        (Overflow.DROP_OLDEST, ["0", "3", "4", "5"], False),
    ],
)
async def test_overflow_policies(policy: Overflow, expected: list[str], disconnected: bool) -> None:
    sock = FakeSocket()
    box, overflowed = make(sock, policy)
    sock.writable.clear()
    for i in range(6):
        box.push(msg(i), 1)
    assert bool(overflowed) is disconnected
    assert box.dropped == (1 if disconnected else 2)
    sock.writable.set()
    await asyncio.sleep(0.05)
    if disconnected:
        assert box.closed
    assert sock.sent == expected


async def test_volatile_messages_are_dropped_not_queued() -> None:
    sock = FakeSocket()
    box, _ = make(sock)
    sock.writable.clear()
    box.push(msg(0), 1)
    assert box.push(msg(1), 1, volatile=True) is False
    assert box.dropped == 1
    sock.writable.set()
    await asyncio.sleep(0.02)
    assert sock.sent == ["0"]


async def test_byte_limit() -> None:
    sock = FakeSocket()
    box = Outbox(sock.send, max_messages=100, max_bytes=10, overflow=Overflow.DROP_NEWEST, on_overflow=lambda: None)
    sock.writable.clear()
    box.push(msg(0), 4)  # in flight
    assert box.push(msg(1), 6)
    assert box.push(msg(2), 4)
    assert box.push(msg(3), 1) is False
    assert box.queued_bytes == 10
