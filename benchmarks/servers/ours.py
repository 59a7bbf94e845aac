"""starlette-realtime peer ("ours"): the public API, as a user would write it.

``RealtimeRouter([Bench], backend=..., ping_interval=..., ping_timeout=...)`` mounted at ``/ws``; the harness's
``rt`` dialect (benchmarks/harness.py, class RtDialect) speaks docs/protocol.md (subprotocol rt.v1.json) to it.
Clients connect to ws://host:port/ws/ (with the slash: a Starlette Mount does not match "/ws" for a WebSocket).

    C->S  EVENT join(room)     -> conn.join(room), ack null
    C->S  EVENT publish(data)  -> self.to("bench").emit("msg", data): every member of room "bench", then ack null
    C->S  EVENT echo(data)     -> ack data

Environment: BENCH_PING_INTERVAL / BENCH_PING_TIMEOUT (the harness's --ping-interval / --ping-timeout) and
BENCH_BACKEND (default memory://; the cluster workloads start it with redis://127.0.0.1:PORT).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, on_event

PING_INTERVAL = float(os.environ.get("BENCH_PING_INTERVAL", "25"))
PING_TIMEOUT = float(os.environ.get("BENCH_PING_TIMEOUT", "20"))
BACKEND = os.environ.get("BENCH_BACKEND", "memory://")


class Bench(RealtimeEndpoint):
    namespace = "/bench"

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> None:
        await conn.join(room)

    @on_event("publish")
    async def publish(self, conn: Connection, data: dict) -> None:  # fan-out to the room, sender included
        await self.to("bench").emit("msg", data)

    @on_event("echo")
    async def echo(self, conn: Connection, data: dict) -> dict:
        return data


realtime = RealtimeRouter([Bench], backend=BACKEND, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)
app = Starlette()
app.mount("/ws", realtime)  # clients connect to ws://host:port/ws/ with subprotocol rt.v1.json
