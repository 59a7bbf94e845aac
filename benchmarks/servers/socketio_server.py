"""python-socketio peer: ``socketio.AsyncServer(async_mode="asgi")`` served by uvicorn.

Events (default namespace "/", engine.io v4 over a plain WebSocket at /socket.io/):
    join(room) -> ack True            enter_room(sid, room)
    publish(data) -> ack True         emit("msg", data, to="bench") - the sender too, when it is in the room
    echo(data) -> ack data

Heartbeat: engine.io ping every BENCH_PING_INTERVAL seconds (default 25), timeout BENCH_PING_TIMEOUT (default 20).
"""

from __future__ import annotations

import os

import socketio

sio = socketio.AsyncServer(
    async_mode="asgi",
    ping_interval=float(os.environ.get("BENCH_PING_INTERVAL", "25")),
    ping_timeout=float(os.environ.get("BENCH_PING_TIMEOUT", "20")),
    cors_allowed_origins="*",
    transports=["websocket"],
    logger=False,
    engineio_logger=False,
)


@sio.on("join")
async def join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


@sio.on("publish")
async def publish(sid: str, data: object) -> bool:
    await sio.emit("msg", data, to="bench")
    return True


@sio.on("echo")
async def echo(sid: str, data: object) -> object:
    return data


app = socketio.ASGIApp(sio)
