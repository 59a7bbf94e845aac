"""The app whose contract tests/test_contract*.py export, check with the AsyncAPI parser and compile against."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Any, ClassVar, Literal, TypedDict

import msgspec
import pydantic

from starlette_realtime import Connection, PresenceMixin, RealtimeEndpoint, RealtimeRouter, on_event
from starlette_realtime.auth import SignedTokenAuth
from starlette_realtime.contract import emits


class Say(msgspec.Struct, forbid_unknown_fields=True):
    """A message a user sends to a room."""

    room: Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="the room")]
    text: Annotated[str, msgspec.Meta(max_length=2000)]
    reply_to: int | None = None


class Said(msgspec.Struct):
    """A message as the room sees it."""

    room: str
    user: str
    text: str
    at: float


class Mood(enum.Enum):
    HAPPY = "happy"
    GRUMPY = "grumpy"


class Text(msgspec.Struct, tag="text"):
    body: str


class Image(msgspec.Struct, tag="image"):
    url: str
    size: tuple[int, int]


class Stats(TypedDict):
    rooms: int
    users: dict[str, list[str]]


@dataclasses.dataclass
class Kick:
    user: str
    reason: str = ""


@emits({"said": Said, "typing": str, "mood": Mood}, post=Text | Image)
class Chat(PresenceMixin, RealtimeEndpoint):
    """The chat: rooms, messages and who is there."""

    namespace = "/chat"
    auth = SignedTokenAuth("k" * 32, max_age=3600)

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> list[str]:
        """Join a room; the ACK lists the rooms the connection is in."""
        await conn.join(room)
        return sorted(conn.rooms)

    @on_event("say")
    async def say(self, conn: Connection, msg: Say) -> None:
        """Say something in a room the connection joined."""

    @on_event("post")
    async def post(self, conn: Connection, item: Text | Image) -> Literal["ok", "queued"]:
        return "ok"

    @on_event("room:stats")
    async def stats(self, conn: Connection) -> Stats:
        return {"rooms": 0, "users": {}}


class Admin(RealtimeEndpoint):
    namespace = "/admin/rooms"
    # The other way to declare them: a class attribute.
    emits: ClassVar[dict[str, Any]] = {"kicked": Kick, "blob": bytes}

    @on_event("kick")
    async def kick(self, conn: Connection, kick: Kick) -> bool:
        return True


class Item(pydantic.BaseModel):
    """A line of an order (a Pydantic model: its schema comes from Pydantic)."""

    sku: str = pydantic.Field(min_length=3, description="the article")
    quantity: int = pydantic.Field(ge=1, default=1)


class Order(pydantic.BaseModel):
    items: list[Item]
    pay: Literal["card", "cash"]
    slot: tuple[int, int] | None = None


class Receipt(pydantic.BaseModel):
    order_id: int
    total: float


@emits(shipped=Receipt)
class Shop(RealtimeEndpoint):
    namespace = "/shop"

    @on_event("order")
    async def order(self, conn: Connection, order: Order) -> Receipt:
        return Receipt(order_id=1, total=0.0)


class Root(RealtimeEndpoint):
    @on_event("ping")
    async def ping(self, conn: Connection) -> int:
        return 1


router = RealtimeRouter([Chat, Admin, Shop, Root])
