"""Memory per idle connection: what the library itself allocates for each socket, bounded.

tracemalloc, in this process, against a real uvicorn (in a thread): the allocations made between two snapshots, with
the library's own code on their stack (the innermost frame in ``starlette_realtime``, client excluded), divided by the
number of idle connections opened in between.  Counted in bytes Python allocated, not RSS, so the figure is exact and
repeatable; ``benchmarks/idle_memory.py`` prints the whole picture (uvicorn, websockets, Starlette, by site and type).
"""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from collections import defaultdict

import anyio
import pytest
from conftest import serve
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, on_event
from starlette_realtime.session import _Live
from starlette_realtime.testing import RealtimeTester

LIBRARY = f"{os.sep}starlette_realtime{os.sep}"
CLIENT = f"{LIBRARY}client{os.sep}"
CONNS = 200
#: Measured ~7,600 B here (asyncio loop, websockets-sansio) after issue 14's cuts (the live session's event made
#: only when waited for, ~900 B; no empty rooms set, 216 B; no task group per socket, ~1,000 B); ~2,700 B of it is
#: uvicorn answering our accept() and receive() calls, ~830 B the reader's cancel scope.  The bound catches a new
#: per-connection structure (docs/benchmarks.md, "Memory per connection").
OWN_BYTES_PER_CONN = 8_400
#: Measured ~5,100 B (three deques of the queue, one of the event, the request's and response's headers).
SAVED_BY_FASTPATH = 4_000
PREFRAMED = "starlette_realtime.fastpath.uvicorn:PreframedProtocol"


class Bench(RealtimeEndpoint):
    namespace = "/bench"


def _own(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, dict[str, int]]:
    sites: dict[str, int] = defaultdict(int)
    for stat in after.compare_to(before, "traceback"):
        for frame in reversed(stat.traceback):  # the most recent call first
            if LIBRARY in frame.filename and CLIENT not in frame.filename:
                sites[f"{frame.filename.rsplit(LIBRARY, 1)[1]}:{frame.lineno}"] += stat.size_diff
                break
    return sum(sites.values()), sites


async def _open(url: str, n: int) -> list[ClientConnection]:
    async def one() -> ClientConnection:
        ws = await connect(url, subprotocols=["rt.v1.json"], ping_interval=None, compression=None)  # type: ignore[list-item]
        await ws.send('[1,"/bench",null]')
        while not str(await ws.recv()).startswith("[2,"):
            pass
        return ws

    sockets: list[ClientConnection] = []
    for start in range(0, n, 25):
        sockets += await asyncio.gather(*(one() for _ in range(start, min(n, start + 25))))
    return sockets


async def _per_connection(ws: str) -> tuple[float, float, str]:
    """Open CONNS idle connections on uvicorn with the WebSocket protocol ``ws``; return the bytes allocated per
    connection with the library's code on the stack, all bytes per connection (server and client: the client's
    part is the same whatever the server's protocol), and the library's top allocation sites."""
    realtime = RealtimeRouter([Bench], ping_interval=25, ping_timeout=20)
    app = Starlette(lifespan=realtime.lifespan)
    realtime.mount(app, "/ws")
    with serve(app, ws=ws) as server:
        url = f"{server.url}/ws/"
        with anyio.fail_after(60):
            for sock in await _open(url, 10):  # first-use caches and lazy imports are not per connection
                await sock.close()
        tracemalloc.start(40)
        try:
            gc.collect()
            before = tracemalloc.take_snapshot()
            with anyio.fail_after(120):
                sockets = await _open(url, CONNS)
                await anyio.sleep(0.5)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        with anyio.fail_after(30):
            for sock in sockets:
                await sock.close()
    own, sites = _own(before, after)
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    top = sorted(sites.items(), key=lambda kv: -kv[1])[:12]
    breakdown = "\n".join(f"  {size / CONNS:8,.0f} B  {site}" for site, size in top)
    return own / CONNS, total / CONNS, breakdown


@pytest.mark.anyio
async def test_library_allocations_per_idle_connection_are_bounded() -> None:
    per_conn, _, breakdown = await _per_connection("websockets-sansio")
    assert per_conn <= OWN_BYTES_PER_CONN, f"{per_conn:,.0f} B per idle connection:\n{breakdown}"


@pytest.mark.anyio
async def test_the_fast_path_protocol_holds_less_per_idle_connection_than_uvicorns() -> None:
    """The pre-framed protocol's inbox and write gate instead of an asyncio.Queue and Event, and the handshake's
    request and response let go: at least SAVED_BY_FASTPATH bytes less per idle connection, same app, same client."""
    _, plain, _ = await _per_connection("websockets-sansio")
    _, fast, breakdown = await _per_connection(PREFRAMED)
    assert plain - fast >= SAVED_BY_FASTPATH, (
        f"{fast:,.0f} B per connection on the fast path, {plain:,.0f} B on uvicorn's protocol:\n{breakdown}"
    )


@pytest.mark.anyio
async def test_live_session_makes_no_event_until_waited_for() -> None:
    live = _Live("u", lambda: None)
    assert live._closed is None  # no asyncio.Event (and its deque) per connection
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(live.wait_closed)
            await anyio.sleep(0.01)
            assert live._closed is not None
            live.close()
    live2 = _Live(None, lambda: None)
    live2.close()
    with anyio.fail_after(1):
        await live2.wait_closed()  # already closed: returns at once, still without an event
    assert live2._closed is None



class RoomsApp(RealtimeEndpoint):
    namespace = "/r"

    def __init__(self) -> None:
        super().__init__()
        self.conns: list[Connection] = []

    async def on_connect(self, conn: Connection) -> None:
        self.conns.append(conn)

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> list[str]:
        await conn.join(room)
        return sorted(conn.rooms)

    @on_event("leave")
    async def leave(self, conn: Connection, room: str) -> list[str]:
        await conn.leave(room)
        return sorted(conn.rooms)


@pytest.mark.anyio
async def test_a_connection_in_no_room_shares_one_empty_frozenset() -> None:
    endpoint = RoomsApp()
    realtime = RealtimeRouter([endpoint])
    with anyio.fail_after(10):
        async with RealtimeTester(realtime) as tester:
            alice = await tester.connect("/r")
            bob = await tester.connect("/r")
            a, b = endpoint.conns
            assert a.rooms == frozenset() and a.rooms is b.rooms  # no set per connection
            assert await alice.call("join", "x") == ["x"]
            assert await alice.call("join", "y") == ["x", "y"]
            assert await alice.call("leave", "x") == ["y"]
            assert b.rooms == frozenset() and isinstance(a.rooms, frozenset)
            await bob.disconnect()
