"""The app presence tests serve, in-process or as a uvicorn node.

As a node (``uvicorn presence_app:app``) it is configured by environment
variables: ``REDIS_URL`` (else ``memory://``), ``NODE_ID``, ``SECRET`` (signs the
test tokens) and ``PRESENCE_TTL`` (seconds).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, Rejected, on_event
from starlette_realtime.presence import PresenceList, PresenceMixin

SALT = "presence-test"


class User:
    """A user object with a private field that must never reach other clients."""

    def __init__(self, id: str, name: str, email: str) -> None:
        self.id = id
        self.name = name
        self.email = email


def token(secret: str, user: str, name: str | None = None) -> str:
    return URLSafeSerializer(secret, salt=SALT).dumps({"id": user, "name": name or user.title(), "email": f"{user}@x"})


class Online(msgspec.Struct):
    user: str
    room: str | None = None


def make_chat(secret: str, ttl: float) -> type[RealtimeEndpoint]:
    serializer = URLSafeSerializer(secret, salt=SALT)

    class Chat(PresenceMixin, RealtimeEndpoint):
        namespace = "/chat"
        presence_fields = ("name",)
        presence_ttl = ttl

        async def authenticate(self, conn: Connection) -> Any:
            auth = conn.auth if isinstance(conn.auth, dict) else {}
            if "token" not in auth:
                return None  # anonymous: may join rooms, is not tracked
            try:
                claims = serializer.loads(auth["token"])
            except BadSignature:
                raise Rejected("INVALID_TOKEN", "bad token") from None
            return User(claims["id"], claims["name"], claims["email"])

        @on_event("join")
        async def join(self, conn: Connection, room: str) -> list[str]:
            await conn.join(room)
            return sorted(conn.rooms)

        @on_event("join_list")
        async def join_list(self, conn: Connection, room: str) -> PresenceList:
            await conn.join(room)
            return await self.list_presence(conn, room)

        @on_event("leave")
        async def leave(self, conn: Connection, room: str) -> list[str]:
            await conn.leave(room)
            return sorted(conn.rooms)

        @on_event("rooms")
        async def rooms(self, conn: Connection) -> list[str]:
            return sorted(conn.rooms)

        @on_event("who")
        async def who(self, conn: Connection, room: str) -> list[str]:
            return [m.user for m in await self.presence(room)]

        @on_event("online")
        async def online(self, conn: Connection, q: Online) -> bool:
            return await self.is_online(q.user, q.room)

        @on_event("count")
        async def count(self, conn: Connection, room: str | None) -> int:
            return await self.presence_count(room)

    return Chat


def make_app(
    backend: str = "memory://", *, secret: str = "s3cret", ttl: float = 30.0, node_id: str | None = None
) -> tuple[Starlette, RealtimeRouter]:
    chosen: Any = backend
    if backend.startswith("redis://"):
        from starlette_realtime.backends.redis import RedisBackend

        chosen = RedisBackend(backend, node_id=node_id, prefix=os.environ.get("REDIS_PREFIX", "rt"))
    realtime = RealtimeRouter(
        [make_chat(secret, ttl)], backend=chosen, secret_key=secret, node_id=node_id, ping_interval=5, ping_timeout=5
    )
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app, realtime


if os.environ.get("SECRET"):
    app, realtime = make_app(
        os.environ.get("REDIS_URL", "memory://"),
        secret=os.environ["SECRET"],
        ttl=float(os.environ.get("PRESENCE_TTL", "30")),
        node_id=os.environ.get("NODE_ID"),
    )
