"""The soak's load (benchmarks/soak.py): the fault proxy, the churning clients, the stayers and the broadcaster.

Raw WebSocket clients of protocol v1 (docs/protocol.md), so that the load does not depend on our client library;
each counts what it sent, what was acknowledged and what it received in a :class:`Tally` the soak checks at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

HOST = "127.0.0.1"
NS = "/soak"


class FaultProxy:
    """Forwards TCP to the server; ``drop(port)`` makes one connection vanish without a close frame or a FIN."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.pipes: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = {}
        self.held = 0  # server sides kept open and silent after a drop
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        port = c_writer.get_extra_info("peername")[1]
        try:
            s_reader, s_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            c_writer.transport.abort()
            return
        dropped = asyncio.Event()
        self.pipes[port] = (c_writer, s_writer, dropped)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await asyncio.gather(self._pump(c_reader, s_writer, dropped), self._pump(s_reader, c_writer, dropped))
        finally:
            self.pipes.pop(port, None)
            self.tasks.discard(task)
            c_writer.transport.abort()
            s_writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dropped: asyncio.Event) -> None:
        # After a drop, what the server sends is read and thrown away until it gives up on the peer.
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if dropped.is_set():
                    continue
                writer.write(data)
                await writer.drain()

    def drop(self, client_port: int) -> None:
        pipe = self.pipes.get(client_port)
        if pipe is None:
            return
        c_writer, _s_writer, dropped = pipe
        dropped.set()
        c_writer.transport.abort()  # the client learns at once; the server only from its heartbeat

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c_writer, s_writer, _ in list(self.pipes.values()):
            c_writer.transport.abort()
            s_writer.transport.abort()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)


# Clients --------------------------------------------------------------------------------------------------


class Problem(Exception):
    """Something a client saw that must not happen."""


class Session:
    """One WebSocket speaking rt.v1.json: acks by id, shouts recorded, PINGs answered."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 1
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.shouts: dict[str, list[int]] = {}
        self.connected: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None  # the server's, when it closed the WebSocket
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, slot: int, timeout: float) -> Session:
        async with asyncio.timeout(timeout):
            ws = await websockets.connect(url, subprotocols=["rt.v1.json"],  # type: ignore[list-item]
                                          compression=None, ping_interval=None, max_size=None, open_timeout=None)
            session = cls(ws)
            await ws.send(json.dumps([1, NS, {"slot": slot}]))
            reply = await session.connected
        if reply[0] != 2:
            raise Problem(f"CONNECT refused: {reply}")
        return session

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                frame = json.loads(message)
                kind = frame[0]
                if kind == 7:  # PING
                    await self.ws.send("[8]")
                elif kind == 6:
                    fut = self.waiting.pop(frame[2], None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                elif kind == 5 and frame[2] == "shout":
                    self.shouts.setdefault(frame[3]["room"], []).append(frame[3]["seq"])
                elif kind in (2, 3) and not self.connected.done():
                    self.connected.set_result(frame)
                elif kind == 9:
                    raise Problem(f"ERROR frame {frame}")
        self.close_code = self.ws.close_code
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed by the server with {self.close_code}"))

    async def call(self, event: str, data: Any, timeout: float) -> Any:
        ack_id = self.next_id
        self.next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[ack_id] = fut
        await self.ws.send(json.dumps([5, NS, event, data, ack_id]))
        async with asyncio.timeout(timeout):
            frame = await fut
        if len(frame) > 4 and frame[4]:
            raise Problem(f"{event}: error ack {frame[4]}")
        return frame[3]

    def local_port(self) -> int:
        return int(self.ws.transport.get_extra_info("sockname")[1])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader

    async def abort(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader
        self.ws.transport.abort()


@dataclass
class Tally:
    sessions: int = 0
    drops: int = 0
    closes: int = 0
    acked: int = 0
    connect_failures: int = 0
    heartbeat_closes: int = 0  # live clients closed with 4005: this process was too busy to answer a PING
    uncertain: int = 0  # emits in flight when their WebSocket closed: handled at most once, maybe not at all
    problems: list[str] = field(default_factory=list)
    seq: dict[int, int] = field(default_factory=dict)  # per slot: the last acked seq


async def churner(slot: int, args: argparse.Namespace, urls: tuple[str, str], proxy: FaultProxy, tally: Tally,
                  stop: asyncio.Event) -> None:
    rng = random.Random(slot)
    mean_life = (args.slots - args.stayers) / args.churn
    await asyncio.sleep(rng.uniform(0, mean_life))  # spread the first connections out
    while not stop.is_set():
        drop = rng.random() < 1 / 3
        try:
            session = await Session.open(urls[1] if drop else urls[0], slot, args.timeout)
        except (OSError, TimeoutError, websockets.WebSocketException, Problem) as exc:
            tally.connect_failures += 1
            if tally.connect_failures > args.max_connect_failures:
                tally.problems.append(f"slot {slot}: connect failed: {exc!r}")
            await asyncio.sleep(0.5)
            continue
        tally.sessions += 1
        deadline = time.monotonic() + rng.expovariate(1 / mean_life)
        in_flight = None
        try:
            room = f"r{rng.randrange(args.rooms)}"
            await session.call("join", room, args.timeout)
            while time.monotonic() < deadline and not stop.is_set():
                seq = in_flight = tally.seq.get(slot, 0) + 1
                if await session.call("work", seq, args.timeout) != seq:
                    tally.problems.append(f"slot {slot}: work {seq} acked with another value")
                in_flight = None
                tally.seq[slot] = seq
                tally.acked += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.expovariate(1 / args.emit_every))
        except (Problem, TimeoutError, ConnectionError, websockets.WebSocketException) as exc:
            if session.ws.close_code == 4005:
                tally.heartbeat_closes += 1  # this process was too busy to answer a PING: not the server's fault
            else:
                tally.problems.append(f"slot {slot}: {exc!r}")
            if in_flight is not None:
                # Handled or not, nobody knows: never resent (that could handle it twice), never counted as acked.
                tally.uncertain += 1
                tally.seq[slot] = in_flight
        if drop:
            tally.drops += 1
            proxy.drop(session.local_port())
            await session.abort()
        else:
            tally.closes += 1
            await session.close()


@dataclass
class Stayer:
    slot: int
    session: Session
    rooms: set[str]


async def stayers_run(args: argparse.Namespace, url: str, tally: Tally, stop: asyncio.Event,
                      ready: asyncio.Event) -> list[Stayer]:
    rng = random.Random(-1)
    stayers = []
    for k in range(args.stayers):
        session = await Session.open(url, args.slots + k, args.timeout)
        rooms = {f"r{rng.randrange(args.rooms)}" for _ in range(3)}
        for room in sorted(rooms):
            await session.call("join", room, args.timeout)  # before the first broadcast
        stayers.append(Stayer(args.slots + k, session, rooms))
    ready.set()
    # Room moves of their own: a stayer leaves one extra room and joins it again, now and then.
    while not stop.is_set():
        stayer = rng.choice(stayers)
        extra = f"x{stayer.slot}"
        try:
            await stayer.session.call("join", extra, args.timeout)
            await stayer.session.call("leave", extra, args.timeout)
        except (Problem, TimeoutError, ConnectionError) as exc:
            tally.problems.append(f"stayer {stayer.slot}: {exc!r}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return stayers


async def broadcaster(args: argparse.Namespace, url: str, tally: Tally, stop: asyncio.Event,
                      sent: dict[str, int], ready: asyncio.Event) -> None:
    await ready.wait()
    session = await Session.open(url, -2, args.timeout)
    i = 0
    try:
        while not stop.is_set():
            room = f"r{i % args.rooms}"
            i += 1
            seq = sent.get(room, 0) + 1
            try:
                await session.call("shout", {"room": room, "seq": seq}, args.timeout)
            except (Problem, TimeoutError, ConnectionError) as exc:
                tally.problems.append(f"broadcaster: {exc!r}")
                return
            sent[room] = seq
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / args.shouts)
    finally:
        await session.close()


# The server, Redis, sampling ------------------------------------------------------------------------------
