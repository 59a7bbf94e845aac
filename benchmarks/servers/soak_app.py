"""The server of the soak benchmark (benchmarks/soak.py): ours, with counters and a stats route.

    C->S  CONNECT /soak {"slot": n}      the client's slot (0 .. slots-1), stable across its reconnections
    C->S  EVENT join(room)               -> conn.join(room), ack null
    C->S  EVENT leave(room)              -> conn.leave(room), ack null
    C->S  EVENT work(seq)                -> counted per slot (acked emits: each seq must be handled once), ack seq
    C->S  EVENT shout({room, seq})       -> self.to(room).emit("shout", ...) to every member, ack null
    GET   /soak/stats                    -> what the soak samples inside the process (JSON)

Environment: SOAK_BACKEND (default memory://), SOAK_PING_INTERVAL / SOAK_PING_TIMEOUT (seconds).
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, on_event

BACKEND = os.environ.get("SOAK_BACKEND", "memory://")
PING_INTERVAL = float(os.environ.get("SOAK_PING_INTERVAL", "5"))
PING_TIMEOUT = float(os.environ.get("SOAK_PING_TIMEOUT", "5"))


class Shout(msgspec.Struct):
    room: str
    seq: int


class Counters:
    """Acked emits per slot: a slot sends seq 1, 2, 3 ... one at a time, resending only what was not acked."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}  # bounded by the number of slots
        self.handled = 0
        self.duplicates = 0  # a seq handled again
        self.gaps = 0  # a seq skipped (an acked emit lost would show as a resend, never as a gap)

    def work(self, slot: int, seq: int) -> None:
        last = self.last.get(slot, 0)
        if seq <= last:
            self.duplicates += 1
            return
        if seq != last + 1:
            self.gaps += 1
        self.last[slot] = seq
        self.handled += 1


COUNTERS = Counters()


class Soak(RealtimeEndpoint):
    namespace = "/soak"

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> None:
        await conn.join(room)

    @on_event("leave")
    async def leave(self, conn: Connection, room: str) -> None:
        await conn.leave(room)

    @on_event("work")
    async def work(self, conn: Connection, seq: int) -> int:
        slot = conn.auth.get("slot") if isinstance(conn.auth, dict) else None
        COUNTERS.work(slot if isinstance(slot, int) else -1, seq)
        return seq

    @on_event("shout")
    async def shout(self, conn: Connection, msg: Shout) -> None:
        await self.to(msg.room).emit("shout", {"room": msg.room, "seq": msg.seq})


realtime = RealtimeRouter([Soak], backend=BACKEND, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)


def _backend_sizes(backend: Any) -> dict[str, int]:
    # The memory backend's own structures (private names: a benchmark may look inside).
    sizes: dict[str, int] = {}
    for name in ("_streams", "_sessions"):
        value = getattr(backend, name, None)
        if isinstance(value, dict):
            sizes[name.lstrip("_")] = len(value)
    return sizes


async def stats(request: Request) -> Response:
    if request.query_params.get("gc"):
        gc.collect()
    body = {
        "tasks": len(asyncio.all_tasks()),
        "router": realtime.stats(),
        "backend": _backend_sizes(realtime.backend),
        "handled": COUNTERS.handled,
        "duplicates": COUNTERS.duplicates,
        "gaps": COUNTERS.gaps,
        "gc_objects": len(gc.get_objects()) if request.query_params.get("gc") else None,
    }
    return Response(msgspec.json.encode(body), media_type="application/json")


app = Starlette(routes=[Route("/soak/stats", stats), Mount("/ws", realtime)], lifespan=realtime.lifespan)
