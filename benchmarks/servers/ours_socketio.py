"""starlette-realtime over the Socket.IO wire ("ours-sio"): the same endpoint as ``ours.py``, reached by the harness's
``sio`` dialect (engine.io 4 / socket.io 5 over a plain WebSocket), like the python-socketio and Node peers.

``RealtimeRouter([Bench], socketio=True)`` mounted at ``/``; clients connect to
ws://host:port/socket.io/?EIO=4&transport=websocket and open the default namespace "/".

    join(room) -> ack true        conn.join(room)
    publish(data) -> ack true     self.to("bench").emit("msg", data): every member of room "bench"
    echo(data) -> ack data

Environment: BENCH_PING_INTERVAL / BENCH_PING_TIMEOUT, BENCH_BACKEND (default memory://).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, on_event

PING_INTERVAL = float(os.environ.get("BENCH_PING_INTERVAL", "25"))
PING_TIMEOUT = float(os.environ.get("BENCH_PING_TIMEOUT", "20"))
BACKEND = os.environ.get("BENCH_BACKEND", "memory://")


class Bench(RealtimeEndpoint):
    namespace = "/"

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> bool:
        await conn.join(room)
        return True

    @on_event("publish")
    async def publish(self, conn: Connection, data: dict) -> bool:  # fan-out to the room, sender included
        await self.to("bench").emit("msg", data)
        return True

    @on_event("echo")
    async def echo(self, conn: Connection, data: dict) -> dict:
        return data


realtime = RealtimeRouter(
    [Bench], backend=BACKEND, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, socketio=True
)
app = Starlette(lifespan=realtime.lifespan)
app.mount("/", realtime)
