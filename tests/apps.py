"""Small apps the end-to-end tests serve."""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette

from starlette_realtime import Connection, HandlerError, RealtimeEndpoint, RealtimeRouter, on_event


class Say(msgspec.Struct):
    room: str
    text: str


class Chat(RealtimeEndpoint):
    namespace = "/chat"

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> list[str]:
        await conn.join(room)
        return sorted(conn.rooms)

    @on_event("leave")
    async def leave(self, conn: Connection, room: str) -> list[str]:
        await conn.leave(room)
        return sorted(conn.rooms)

    @on_event("say")
    async def say(self, conn: Connection, msg: Say) -> None:
        await conn.to(msg.room).emit("said", msg)

    @on_event("shout")
    async def shout(self, conn: Connection, msg: Say) -> None:
        await self.to(msg.room).emit("said", msg)

    @on_event("echo")
    async def echo(self, conn: Connection, data: dict[str, int] | list[int] | str | int | None) -> object:
        return data

    @on_event("fail")
    async def fail(self, conn: Connection) -> None:
        raise RuntimeError("handler bug")

    @on_event("refuse")
    async def refuse(self, conn: Connection) -> None:
        raise HandlerError("nope", "refused on purpose")

    @on_event("ask", concurrent=True)
    async def ask(self, conn: Connection, question: str) -> object:
        return await conn.call("question", question, timeout=5)

    @on_event("me")
    async def me(self, conn: Connection) -> str:
        await conn.emit("direct", {"sid": conn.sid})
        return conn.sid


def make_app(**options: object) -> tuple[Starlette, RealtimeRouter]:
    realtime = RealtimeRouter([Chat], **options)  # type: ignore[arg-type]
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app, realtime


class Feed(RealtimeEndpoint):
    """A publisher pushes numbered messages into a room; subscribers follow it."""

    namespace = "/feed"

    @on_event("follow")
    async def follow(self, conn: Connection, room: str) -> bool:
        await conn.join(room)
        return conn.recovered

    @on_event("publish")
    async def publish(self, conn: Connection, item: list[int | str]) -> None:
        room, n = item
        await self.to(str(room)).emit("n", n)


def make_feed_app(**options: object) -> tuple[Starlette, RealtimeRouter]:
    realtime = RealtimeRouter([Feed, Chat], **options)  # type: ignore[arg-type]
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app, realtime
