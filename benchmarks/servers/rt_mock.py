"""A stand-in that speaks docs/protocol.md (rt.v1.json), only to test the harness's "rt" dialect before
starlette-realtime exists. NOT a peer and not a benchmark figure: a raw loop like raw_starlette.py, namespace /bench,
events join / publish / echo, HELLO, CONNECTED, ACK, room EVENTs with room/epoch/offset, and PING every
BENCH_PING_INTERVAL seconds (closing with 4005 when nothing arrives within BENCH_PING_TIMEOUT of a PING).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PING_INTERVAL = float(os.environ.get("BENCH_PING_INTERVAL", "25"))
PING_TIMEOUT = float(os.environ.get("BENCH_PING_TIMEOUT", "20"))
NS = "/bench"
ROOMS: dict[str, set[WebSocket]] = {}
OFFSETS: dict[str, int] = {}
EPOCH = uuid.uuid4().hex[:8]
_dumps = json.JSONEncoder(separators=(",", ":")).encode


async def endpoint(ws: WebSocket) -> None:
    await ws.accept(subprotocol="rt.v1.json")
    await ws.send_text(_dumps([0, 1, "mock", PING_INTERVAL, PING_TIMEOUT, 1048576]))
    joined: list[str] = []
    last_seen = time.monotonic()

    async def pinger() -> None:
        sent = None
        while True:
            await asyncio.sleep(PING_INTERVAL)
            now = time.monotonic()
            if sent is not None and last_seen < sent and now - sent > PING_TIMEOUT:
                await ws.close(4005)
                return
            if sent is None or last_seen >= sent:
                sent = now
                await ws.send_text("[7]")

    task = asyncio.create_task(pinger())
    try:
        while True:
            f = json.loads(await ws.receive_text())
            last_seen = time.monotonic()
            t = f[0]
            if t == 8:
                continue
            if t == 1:
                sid = uuid.uuid4().hex[:12]
                await ws.send_text(_dumps([2, f[1], sid, f"{sid}.0.sig"]))
                continue
            if t != 5:
                continue
            ev, data, ack_id = f[2], f[3], (f[4] if len(f) > 4 else None)
            result = None
            if ev == "join":
                ROOMS.setdefault(data, set()).add(ws)
                joined.append(data)
            elif ev == "publish":
                room = "bench"
                OFFSETS[room] = off = OFFSETS.get(room, 0) + 1
                out = _dumps([5, NS, "msg", data, None, room, EPOCH, off])
                for member in tuple(ROOMS.get(room, ())):
                    with contextlib.suppress(Exception):
                        await member.send_text(out)
            elif ev == "echo":
                result = data
            if ack_id is not None:
                await ws.send_text(_dumps([6, NS, ack_id, result]))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        task.cancel()
        for room in joined:
            ROOMS.get(room, set()).discard(ws)


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
