"""The app the Socket.IO interop tests serve: our endpoints, reached by Socket.IO clients and our own alike."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.applications import Starlette

from starlette_realtime import Connection, HandlerError, RealtimeEndpoint, RealtimeRouter, Rejected, on_event
from starlette_realtime.socketio import Args, SocketIOOptions


class Main(RealtimeEndpoint):
    namespace = "/"

    @on_event("handshake")
    async def handshake(self, conn: Connection) -> Any:
        return conn.auth

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data

    @on_event("sum")
    async def sum(self, conn: Connection, a: int, b: int) -> Args:
        return Args(a + b, a * b)

    @on_event("refuse")
    async def refuse(self, conn: Connection) -> None:
        raise HandlerError("nope", "refused on purpose")

    @on_event("upload")
    async def upload(self, conn: Connection, name: str, data: bytes) -> Args:
        return Args(name, len(data), data[::-1])

    @on_event("ask", concurrent=True)
    async def ask(self, conn: Connection, text: str) -> Any:
        return await conn.call("question", Args(text, 2), timeout=5)

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> list[str]:
        await conn.join(room)
        return sorted(conn.rooms)

    @on_event("say")
    async def say(self, conn: Connection, room: str, text: str) -> None:
        await self.to(room).emit("said", {"text": text})

    @on_event("pump", concurrent=True)
    async def pump(self, conn: Connection, room: str, count: int) -> int:
        for i in range(count):
            await self.to(room).emit("tick", i)
            await anyio.sleep(0.005)
        return count

    @on_event("recovered")
    async def recovered(self, conn: Connection) -> bool:
        return conn.recovered

    @on_event("whereami")
    async def whereami(self, conn: Connection) -> str:
        return str(self.router.node_id)

    @on_event("kick")
    async def kick(self, conn: Connection) -> None:
        await conn.disconnect()


class Admin(RealtimeEndpoint):
    namespace = "/admin"

    async def on_connect(self, conn: Connection) -> None:
        if not isinstance(conn.auth, dict) or conn.auth.get("token") != "admin":
            raise Rejected("FORBIDDEN_NS", "admin only")

    @on_event("whoami")
    async def whoami(self, conn: Connection) -> str:
        return "admin"


def make_app(*, socketio: bool | SocketIOOptions = True, **options: Any) -> tuple[Starlette, RealtimeRouter]:
    realtime = RealtimeRouter([Main, Admin], socketio=socketio, **options)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/", realtime)
    return app, realtime


def __getattr__(name: str) -> Any:
    """``uvicorn tests.socketio.app:node``: one node on Redis (REDIS_URL, NODE_ID, SECRET, SOCKETIO_RECOVERY)."""
    if name != "node":
        raise AttributeError(name)
    import os

    from starlette_realtime.backends.redis import RedisBackend

    node_id = os.environ.get("NODE_ID", "node")
    backend = RedisBackend(os.environ["REDIS_URL"], node_id=node_id)
    socketio = SocketIOOptions(recovery=True) if os.environ.get("SOCKETIO_RECOVERY") else True
    app, _ = make_app(
        socketio=socketio, backend=backend, secret_key=os.environ.get("SECRET", "socketio-secret"), node_id=node_id
    )
    return app
