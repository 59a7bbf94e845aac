"""starlette-realtime peer ("ours").  *** STUB - TO BE FINISHED WHEN THE LIBRARY IS READY ***

This follows the public API as specified for the library; it will not import until starlette_realtime exports
RealtimeRouter, RealtimeEndpoint, on_event and Connection. The harness's "ours" dialect (benchmarks/harness.py,
class RtDialect) already speaks docs/protocol.md (subprotocol rt.v1.json) against ws://host:port/ws.

Clients connect to ws://host:port/ws/ (with the slash: a Starlette Mount does not match "/ws" for a WebSocket).

Status: with the library's working tree of 2026-11-25 18:00 UTC this file already passed the harness's smoke mode
(capacity, fanout, ack: every connection opened, every message delivered in order with increasing offsets, every ack
answered, PING/PONG heartbeats). It stays marked as a stub until the API is final.

TODO when finishing it:
  * confirm the API below (RealtimeRouter options ping_interval / ping_timeout, backend URL) against the release;
  * the `cluster` workload will start this file with BENCH_BACKEND=redis://127.0.0.1:PORT;
  * remove the word STUB from the first line of this docstring: benchmarks/test_smoke.py then runs ours in CI.
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
