"""starlette-realtime peer ("ours").  *** STUB - TO BE FINISHED WHEN THE LIBRARY IS READY ***

This follows the public API as specified for the library; it will not import until starlette_realtime exports
RealtimeRouter, RealtimeEndpoint, on_event and Connection. The harness's "ours" dialect (benchmarks/harness.py,
class RtDialect) already speaks docs/protocol.md (subprotocol rt.v1.json) against ws://host:port/ws.

TODO when finishing it:
  * heartbeat: pass BENCH_PING_INTERVAL / BENCH_PING_TIMEOUT (seconds) to the router, whatever the option is called,
    so that `capacity` can run its connections through several PING/PONG rounds (the peers do the same);
  * backend: "memory://" here; the `cluster` workload will start this file with BENCH_BACKEND=redis://127.0.0.1:PORT;
  * check with `python -m benchmarks.harness fanout --smoke --servers ours` (and ack, capacity).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, on_event

PING_INTERVAL = float(os.environ.get("BENCH_PING_INTERVAL", "25"))  # TODO: hand to RealtimeRouter
PING_TIMEOUT = float(os.environ.get("BENCH_PING_TIMEOUT", "20"))  # TODO: hand to RealtimeRouter
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


realtime = RealtimeRouter([Bench], backend=BACKEND)
app = Starlette()
app.mount("/ws", realtime)  # clients connect to ws://host:port/ws with subprotocol rt.v1.json
