"""Pydantic v2 types as handler payloads, acknowledgements and emitted values (``validation``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypedDict

import anyio
import msgspec
import pytest
from conftest import IN_CI, ROOT

if importlib.util.find_spec("pydantic") is None:
    if IN_CI:
        pytest.fail("missing pydantic (pip install -e '.[test]') -- CI must install it", pytrace=False)
    pytest.skip("missing pydantic (pip install -e '.[test]')", allow_module_level=True)

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from starlette_realtime import AckError, Connection, RealtimeEndpoint, RealtimeRouter, on_event
from starlette_realtime.codec import JsonCodec, MsgpackCodec
from starlette_realtime.presence import PresenceMixin
from starlette_realtime.testing import RealtimeTester
from starlette_realtime.validation import PydanticPayload, describe, enc_hook, needs_pydantic


class Message(BaseModel):
    room: str = Field(min_length=1, max_length=32)
    text: str
    sent_at: datetime | None = None


class Author(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    display_name: str = Field(alias="displayName")


class Post(BaseModel):
    author: Author
    tags: list[Annotated[str, Field(pattern=r"^[a-z]+$")]] = []

    @field_validator("tags")
    @classmethod
    def few_tags(cls, tags: list[str]) -> list[str]:
        if len(tags) > 3:
            raise ValueError("at most 3 tags")
        return tags


@pydantic_dataclass
class Point:
    x: int
    y: int = Field(ge=0)


@dataclasses.dataclass
class Plain:
    x: int


class PlainDict(TypedDict):
    x: int


@dataclasses.dataclass
class Holder:
    post: Post


class Receipt(BaseModel):
    ok: bool
    room: str


Positive = Annotated[int, Field(gt=0)]


class Board(RealtimeEndpoint):
    namespace = "/board"

    @on_event("post")
    async def post(self, conn: Connection, msg: Message) -> Receipt:
        await conn.join(msg.room)
        await self.to(msg.room).emit("posted", msg)
        return Receipt(ok=True, room=msg.room)

    @on_event("nested")
    async def nested(self, conn: Connection, post: Post) -> Post:
        return post

    @on_event("count")
    async def count(self, conn: Connection, n: Positive) -> list[Receipt]:
        return [Receipt(ok=True, room=str(i)) for i in range(n)]

    @on_event("point")
    async def point(self, conn: Connection, p: Point) -> Point:
        return p

    @on_event("maybe")
    async def maybe(self, conn: Connection, msg: Message | None) -> str:
        return "none" if msg is None else msg.text

    @on_event("kind")
    async def kind(self, conn: Connection, k: Literal["a", "b"]) -> str:
        return k

    @on_event("plain")
    async def plain(self, conn: Connection, p: Plain) -> int:
        return p.x

    @on_event("typed")
    async def typed(self, conn: Connection, p: PlainDict) -> int:
        return p["x"]

    @on_event("holder")
    async def holder(self, conn: Connection, h: Holder) -> str:
        return h.post.author.display_name


def test_what_goes_to_pydantic() -> None:
    assert needs_pydantic(Message)
    assert needs_pydantic(Message | None)
    assert needs_pydantic(list[Message])
    assert needs_pydantic(dict[str, Post])
    assert needs_pydantic(Positive)
    assert needs_pydantic(Point)
    assert needs_pydantic(Holder)  # a plain dataclass holding a model
    # msgspec keeps everything it already handles.
    for tp in (int, str, list[int], dict[str, int] | None, Plain, PlainDict, Literal["a"], Any, type(None)):
        assert not needs_pydantic(tp), tp
    assert not needs_pydantic(Annotated[int, msgspec.Meta(gt=0)])


def test_handlers_built_for_pydantic_at_class_definition() -> None:
    handlers = Board.handlers
    assert isinstance(handlers["post"]._pydantic, PydanticPayload)
    assert isinstance(handlers["count"]._pydantic, PydanticPayload)
    assert handlers["plain"]._pydantic is None
    assert handlers["typed"]._pydantic is None
    assert handlers["kind"]._pydantic is None


def test_one_adapter_per_handler_one_decoder_per_codec() -> None:
    handler = Board.handlers["post"]
    adapter = handler._pydantic.adapter  # type: ignore[union-attr]
    json, msgpack = JsonCodec(), MsgpackCodec()
    raw = msgspec.Raw(b'{"room": "lobby", "text": "hi"}')
    assert handler.decode(json, raw) == Message(room="lobby", text="hi")
    first = handler._decoders[json]
    for _ in range(3):
        handler.decode(json, raw)
    assert handler._decoders[json] is first
    packed = msgspec.Raw(msgspec.msgpack.encode({"room": "lobby", "text": "hi"}))
    assert handler.decode(msgpack, packed) == Message(room="lobby", text="hi")
    assert handler._pydantic.adapter is adapter  # type: ignore[union-attr]
    assert set(handler._decoders) == {json, msgpack}


def test_errors_name_the_field() -> None:
    handler = Board.handlers["nested"]
    codec = JsonCodec()
    with pytest.raises(msgspec.ValidationError) as err:
        handler.decode(codec, msgspec.Raw(b'{"author": {"displayName": "x"}, "tags": ["ok", "Not OK"]}'))
    assert str(err.value) == "String should match pattern '^[a-z]+$' - at `$.tags[1]`"
    with pytest.raises(msgspec.ValidationError) as err:
        handler.decode(codec, msgspec.Raw(b'{"author": {}, "tags": ["a", "b", "c", "d"]}'))
    assert str(err.value) == "Field required - at `$.author.displayName` (and 1 more error)"
    with pytest.raises(msgspec.ValidationError, match=r"^Input should be an object$"):
        handler.decode(codec, msgspec.Raw(b"[1]"))


def test_describe_keeps_the_input_out() -> None:
    try:
        Message.model_validate({"room": "", "text": "secret-token-123"})
    except ValidationError as exc:
        text = describe(exc)
    assert text == "String should have at least 1 character - at `$.room`"
    assert "secret" not in text


def test_enc_hook_dumps_models_by_alias_in_json_mode() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert enc_hook(Author(display_name="Ada")) == {"displayName": "Ada"}
    assert enc_hook(Message(room="r", text="t", sent_at=when)) == {
        "room": "r", "text": "t", "sent_at": "2026-01-02T03:04:05Z"
    }
    assert msgspec.json.decode(JsonCodec().encode_payload([Receipt(ok=True, room="a")])) == [{"ok": True, "room": "a"}]
    assert msgspec.msgpack.decode(MsgpackCodec().encode_payload(Receipt(ok=False, room="b"))) == {
        "ok": False, "room": "b"
    }
    with pytest.raises(TypeError, match="Encoding objects of type object is unsupported"):
        JsonCodec().encode_payload(object())


class Opaque:
    pass


def test_a_type_pydantic_cannot_handle_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match="Pydantic cannot validate"):

        class Bad(RealtimeEndpoint):
            namespace = "/bad"

            @on_event("x")
            async def x(self, conn: Connection, payload: list[Message] | dict[str, Opaque]) -> None: ...


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_payloads_acks_and_emits_end_to_end(encoding: str) -> None:
    with anyio.fail_after(10):
        async with RealtimeTester(RealtimeRouter([Board])) as tester:
            alice = await tester.connect("/board", encoding=encoding)
            bob = await tester.connect("/board", encoding=encoding)
            await bob.call("post", {"room": "lobby", "text": "first"})
            ack = await alice.call("post", {"room": "lobby", "text": "hi", "sent_at": "2026-01-02T03:04:05Z"})
            assert ack == {"ok": True, "room": "lobby"}
            await bob.assert_pushed(
                "posted", {"room": "lobby", "text": "hi", "sent_at": "2026-01-02T03:04:05Z"}
            )
            assert await alice.call("nested", {"author": {"displayName": "Ada"}, "tags": ["x"]}) == {
                "author": {"displayName": "Ada"}, "tags": ["x"]
            }
            assert await alice.call("count", 2) == [{"ok": True, "room": "0"}, {"ok": True, "room": "1"}]
            assert await alice.call("point", {"x": 1, "y": 2}) == {"x": 1, "y": 2}
            assert await alice.call("maybe", None) == "none"
            assert await alice.call("maybe", {"room": "r", "text": "t"}) == "t"
            assert await alice.call("holder", {"post": {"author": {"displayName": "Bo"}}}) == "Bo"
            # dataclasses and TypedDicts still go through msgspec.
            assert await alice.call("plain", {"x": 3}) == 3
            assert await alice.call("typed", {"x": 4}) == 4
            assert await alice.call("kind", "b") == "b"

            breaches = [
                ("post", {"room": "x" * 33, "text": "t"}, "String should have at most 32 characters - at `$.room`"),
                ("post", {"room": "r"}, "Field required - at `$.text`"),
                ("count", 0, "Input should be greater than 0"),
                ("point", {"x": 1, "y": -1}, "Input should be greater than or equal to 0 - at `$.y`"),
                ("nested", {"author": {"displayName": "A"}, "tags": list("abcd")}, "Value error, at most 3 tags"),
            ]
            for event, payload, message in breaches:
                with pytest.raises(AckError) as err:
                    await alice.call(event, payload)
                assert err.value.code == "invalid_payload", event
                assert message in str(err.value), (event, str(err.value))
            with pytest.raises(AckError) as err:
                await alice.call("plain", {"x": "no"})
            assert err.value.code == "invalid_payload"
            assert "Expected `int`, got `str` - at `$.x`" in str(err.value)


async def test_a_model_emitted_from_outside_reaches_the_room() -> None:
    with anyio.fail_after(10):
        router = RealtimeRouter([Board])
        async with RealtimeTester(router) as tester:
            bob = await tester.connect("/board")
            await bob.call("post", {"room": "lobby", "text": "join"})
            await router.to("lobby").emit("posted", Message(room="lobby", text="from a view"), namespace="/board")
            await bob.assert_pushed("posted", {"room": "lobby", "text": "from a view", "sent_at": None})


def test_importing_the_package_does_not_import_pydantic() -> None:
    code = (
        "import sys, starlette_realtime, starlette_realtime.client, starlette_realtime.testing;"
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


class Profile(BaseModel):
    name: str
    avatar: str | None = None


class Lobby(PresenceMixin, RealtimeEndpoint):
    namespace = "/lobby"

    async def authenticate(self, conn: Connection) -> Any:
        return {"id": conn.auth["id"], "name": conn.auth["id"].title()}

    def presence_meta(self, conn: Connection) -> Any:
        return Profile(name=conn.user["name"])  # a model as the whole metadata

    @on_event("enter")
    async def enter(self, conn: Connection, room: str) -> None:
        await conn.join(room)

    @on_event("who")
    async def who(self, conn: Connection, room: str) -> list[Any]:
        return [{"user": m.user, "meta": m.meta} for m in await self.presence(room)]


async def test_presence_metadata_may_be_a_model() -> None:
    with anyio.fail_after(10):
        async with RealtimeTester(RealtimeRouter([Lobby])) as tester:
            ada = await tester.connect("/lobby", auth={"id": "ada"})
            await ada.call("enter", "hall")
            assert await ada.call("who", "hall") == [{"user": "ada", "meta": {"name": "Ada", "avatar": None}}]
