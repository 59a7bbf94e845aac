"""Security over a real uvicorn: origins, per-room authorization, outgoing filters, a leak test, limits, compression."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec
import pytest
import websockets
from conftest import ManualClock, ServerThread, eventually, serve
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from starlette_realtime import (
    AckError,
    Connection,
    Forbidden,
    Limits,
    RealtimeEndpoint,
    RealtimeRouter,
    SignedTokenAuth,
    on_event,
    outgoing,
)
from starlette_realtime.client import RealtimeClient
from starlette_realtime.limits import nesting_exceeds
from starlette_realtime.routing import same_origin

TOKENS = SignedTokenAuth(["security-tests-key"], max_age=600)
ROOMS = [f"r{i}" for i in range(8)]


class Say(msgspec.Struct):
    room: str
    text: str


class Revoke(msgspec.Struct):
    user: str
    room: str


class Rooms(RealtimeEndpoint):
    """Users may join the rooms their token lists; admins see the secret part of memos."""

    namespace = "/rooms"
    auth = TOKENS
    connects = 0

    def __init__(self) -> None:
        super().__init__()
        self.revoked: set[tuple[str, str]] = set()

    async def on_connect(self, conn: Connection) -> None:
        type(self).connects += 1

    async def authorize_join(self, conn: Connection, room: str) -> bool:
        return room in conn.user.claims.get("rooms", ()) and (conn.user.id, room) not in self.revoked

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> list[str]:
        await conn.join(room)
        return sorted(conn.rooms)

    @on_event("leave")
    async def leave(self, conn: Connection, room: str) -> list[str]:
        await conn.leave(room)
        return sorted(conn.rooms)

    @on_event("rooms")
    async def rooms(self, conn: Connection) -> list[str]:
        return sorted(conn.rooms)

    @on_event("say")
    async def say(self, conn: Connection, msg: Say) -> None:
        if msg.room not in conn.rooms:
            raise Forbidden("only members may speak in a room")
        await conn.to(msg.room).emit("said", {"room": msg.room, "text": msg.text, "from": conn.user.id})

    @on_event("memo")
    async def memo(self, conn: Connection, msg: Say) -> None:
        if msg.room not in conn.rooms:
            raise Forbidden("only members may post memos")
        await self.to(msg.room).emit("memo", {"room": msg.room, "public": msg.text, "secret": f"s3cret:{msg.room}"})

    @outgoing("memo")
    def redact(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any] | None:
        if data.get("public") == "drop":
            return None
        if conn.user.claims.get("admin"):
            return data
        return {k: v for k, v in data.items() if k != "secret"}

    @on_event("revoke")
    async def revoke(self, conn: Connection, what: Revoke) -> None:
        if not conn.user.claims.get("admin"):
            raise Forbidden("admins only")
        self.revoked.add((what.user, what.room))

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data

    @on_event("ping", rate=1, burst=2)
    async def ping(self, conn: Connection) -> str:
        return "pong"


class Lobby(RealtimeEndpoint):
    """An anonymous namespace beside the authenticated one."""

    namespace = "/lobby"

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data


def make_app(**options: Any) -> tuple[Starlette, RealtimeRouter]:
    realtime = RealtimeRouter([Rooms, Lobby], secret_key="security-tests-session", **options)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app, realtime


@pytest.fixture
def server() -> Iterator[tuple[ServerThread, RealtimeRouter]]:
    app, realtime = make_app()
    with serve(app) as srv:
        yield srv, realtime


def client(srv: ServerThread, user: str, rooms: list[str] = ROOMS, admin: bool = False, **kw: Any) -> RealtimeClient:
    kw.setdefault("reconnection_delay", 0.05)
    kw.setdefault("connect_timeout", 10)
    token = TOKENS.issue(user, rooms=rooms, admin=admin)
    return RealtimeClient(srv.url + "/realtime", namespaces=["/rooms"], auth=token, **kw)


until = eventually


class Raw:
    """A bare WebSocket client, JSON or MessagePack, for frames no real client would send."""

    def __init__(self, ws: Any, binary: bool) -> None:
        self.ws = ws
        self.binary = binary

    @classmethod
    async def open(cls, url: str, encoding: str = "json", **kw: Any) -> Raw:
        kw.setdefault("compression", None)
        async with asyncio.timeout(5):
            ws = await websockets.connect(url, subprotocols=[f"rt.v1.{encoding}"], **kw)  # type: ignore[list-item]
        raw = cls(ws, encoding == "msgpack")
        assert (await raw.recv())[0] == 0  # HELLO
        return raw

    async def send(self, frame: Any) -> None:
        await self.ws.send(msgspec.msgpack.encode(frame) if self.binary else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            data = await self.ws.recv()
        return msgspec.msgpack.decode(data) if isinstance(data, bytes) else json.loads(data)

    async def connect(self, ns: str = "/rooms", auth: Any = None) -> Any:
        await self.send([1, ns, auth])
        while True:
            reply = await self.recv()
            if reply[0] in (2, 3) and reply[1] == ns:
                return reply

    async def call(self, ns: str, event: str, data: Any, ack_id: int) -> Any:
        await self.send([5, ns, event, data, ack_id])
        while True:
            reply = await self.recv()
            if reply[0] == 6 and reply[2] == ack_id:
                return reply

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; return its close code."""
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        return closed.value.rcvd.code if closed.value.rcvd is not None else None

    async def close(self) -> None:
        async with asyncio.timeout(5):
            await self.ws.close()


def token(user: str, **claims: Any) -> dict[str, str]:
    return {"token": TOKENS.issue(user, **claims)}


# Origins ---------------------------------------------------------------------------------------------


async def test_a_foreign_origin_is_refused_with_403_before_on_connect() -> None:
    Rooms.connects = 0
    app, _ = make_app(allowed_origins=["https://app.example"])
    with serve(app) as srv:
        url = srv.url + "/realtime/"
        for evil in (
            "https://evil.example",
            "https://app.example.evil.example",  # no substring matching
            "http://app.example",  # another scheme
            "https://app.example:8443",  # another port
            "null",
        ):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with asyncio.timeout(5):
                    await websockets.connect(url, origin=evil, subprotocols=["rt.v1.json"])  # type: ignore[arg-type,list-item]
            assert refused.value.response.status_code == 403
        good = await Raw.open(url, origin="https://app.example")
        assert (await good.connect(auth=token("ada")))[0] == 2
        await good.close()
        no_origin = await Raw.open(url)  # not a browser: allowed by default (allow_missing_origin)
        await no_origin.close()
    assert Rooms.connects == 1


async def test_allow_missing_origin_false_and_star() -> None:
    app, _ = make_app(allowed_origins=["https://app.example"], allow_missing_origin=False)
    with serve(app) as srv:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with asyncio.timeout(5):
                await websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"])  # type: ignore[list-item]
        assert refused.value.response.status_code == 403
    app, _ = make_app(allowed_origins=["*"])
    with serve(app) as srv:
        raw = await Raw.open(srv.url + "/realtime/", origin="https://anything.example")
        await raw.close()


def test_same_origin_rule() -> None:
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_origin("https://app.example", "app.example")
    assert same_origin("https://app.example", "app.example:443")
    assert same_origin("https://APP.example", "app.EXAMPLE")
    assert same_origin("http://[::1]:8000", "[::1]:8000")
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_origin("https://evil.example", "app.example")
    assert not same_origin("https://app.example.evil.example", "app.example")
    assert not same_origin("null", "app.example")
    assert not same_origin("file:///etc/passwd", "app.example")
    assert not same_origin("http://[bad", "app.example")
    assert not same_origin("https://app.example", None)


# Per-room authorization, recovery, outgoing filters -----------------------------------------------------


async def test_join_is_authorized_and_a_refused_room_sends_nothing(server: Any) -> None:
    srv, _ = server
    heard: list[Any] = []
    async with client(srv, "eve", rooms=["lobby"]) as eve, client(srv, "ada", rooms=["lobby", "vip"]) as ada:
        eve.on("said", heard.append, namespace="/rooms")
        eve.on("memo", heard.append, namespace="/rooms")
        assert await eve.call("join", "lobby", namespace="/rooms", timeout=5) == ["lobby"]
        with pytest.raises(AckError) as err:
            await eve.call("join", "vip", namespace="/rooms", timeout=5)
        assert err.value.code == "forbidden"
        with pytest.raises(AckError) as err:
            await eve.call("say", {"room": "vip", "text": "let me in"}, namespace="/rooms", timeout=5)
        assert err.value.code == "forbidden"
        await ada.call("join", "vip", namespace="/rooms", timeout=5)
        await ada.call("join", "lobby", namespace="/rooms", timeout=5)
        await ada.call("say", {"room": "vip", "text": "secret plans"}, namespace="/rooms", timeout=5)
        await ada.call("memo", {"room": "vip", "text": "vip memo"}, namespace="/rooms", timeout=5)
        await ada.call("say", {"room": "lobby", "text": "hello"}, namespace="/rooms", timeout=5)
        await until(lambda: len(heard) == 1)
        # eve's outbox is one queue: anything sent to her before this ack has arrived by now.
        await eve.call("rooms", namespace="/rooms", timeout=5)
        assert heard == [{"room": "lobby", "text": "hello", "from": "ada"}]


async def test_outgoing_filter_redacts_per_receiver_and_can_drop(server: Any) -> None:
    srv, _ = server
    got: dict[str, list[Any]] = {"admin": [], "user": []}
    async with (
        client(srv, "root", admin=True) as admin,
        client(srv, "joe", encoding="msgpack") as user,
    ):
        admin.on("memo", got["admin"].append, namespace="/rooms")
        user.on("memo", got["user"].append, namespace="/rooms")
        for cl in (admin, user):
            await cl.call("join", "r1", namespace="/rooms", timeout=5)
        await user.call("memo", {"room": "r1", "text": "drop"}, namespace="/rooms", timeout=5)
        await user.call("memo", {"room": "r1", "text": "hi"}, namespace="/rooms", timeout=5)
        await until(lambda: len(got["admin"]) == 1 and len(got["user"]) == 1)
        assert got["admin"] == [{"room": "r1", "public": "hi", "secret": "s3cret:r1"}]
        assert got["user"] == [{"room": "r1", "public": "hi"}]


async def test_a_revoked_room_is_not_restored_by_recovery(server: Any) -> None:
    srv, realtime = server
    heard: list[Any] = []
    connects: list[Any] = []
    ada = client(srv, "ada", rooms=["vip", "lobby"], reconnection_delay=1.0, randomization_factor=0)
    async with ada, client(srv, "root", admin=True, rooms=["vip", "lobby"]) as root:
        ada.on("said", heard.append, namespace="/rooms")
        ada.on("memo", heard.append, namespace="/rooms")
        ada.on("connect", connects.append, namespace="/rooms")
        for room in ("vip", "lobby"):
            await ada.call("join", room, namespace="/rooms", timeout=5)
            await root.call("join", room, namespace="/rooms", timeout=5)
        await root.call("say", {"room": "vip", "text": "v1"}, namespace="/rooms", timeout=5)
        await until(lambda: len(heard) == 1)
        await root.call("revoke", {"user": "ada", "room": "vip"}, namespace="/rooms", timeout=5)
        ada.kill_transport()
        await until(lambda: realtime.stats()["links"] == 1)
        # While ada is away: one message in each room (vip's must never reach her, lobby's must).
        await root.call("say", {"room": "vip", "text": "v2"}, namespace="/rooms", timeout=5)
        await root.call("memo", {"room": "vip", "text": "v2 memo"}, namespace="/rooms", timeout=5)
        await root.call("say", {"room": "lobby", "text": "l2"}, namespace="/rooms", timeout=5)
        await root.call("memo", {"room": "lobby", "text": "l2 memo"}, namespace="/rooms", timeout=5)
        await until(lambda: ada.reconnects == 1 and ada.state.value == "connected", timeout=10)
        assert connects[-1]["recovered"] is True  # the session came back ...
        assert await ada.call("rooms", namespace="/rooms", timeout=5) == ["lobby"]  # ... without vip
        await root.call("say", {"room": "vip", "text": "v3"}, namespace="/rooms", timeout=5)
        await root.call("say", {"room": "lobby", "text": "l3"}, namespace="/rooms", timeout=5)
        await until(lambda: len(heard) == 4)
        await ada.call("rooms", namespace="/rooms", timeout=5)  # anything sent to ada before has arrived
        assert [m.get("text") or m.get("public") for m in heard] == ["v1", "l2", "l2 memo", "l3"]
        # The memo was replayed through the outgoing filter: ada is no admin.
        assert heard[2] == {"room": "lobby", "public": "l2 memo"}
        with pytest.raises(AckError):
            await ada.call("join", "vip", namespace="/rooms", timeout=5)


async def test_leak_test_200_clients_with_random_permissions(server: Any) -> None:
    """Random joins and emits by 200 users; every message anyone got is checked against their rights."""
    srv, _ = server
    rng = random.Random(20261125)
    n = 200
    users: list[dict[str, Any]] = []
    for i in range(n):
        allowed = sorted(r for r in ROOMS if rng.random() < 0.5)
        users.append({"name": f"u{i}", "allowed": allowed, "admin": rng.random() < 0.25, "joined": set(), "got": []})
    clients = [client(srv, u["name"], rooms=u["allowed"], admin=u["admin"]) for u in users]
    for u, cl in zip(users, clients, strict=True):
        cl.on("said", lambda d, *, u=u: u["got"].append(("said", d)), namespace="/rooms")
        cl.on("memo", lambda d, *, u=u: u["got"].append(("memo", d)), namespace="/rooms")
    refused = 0

    async def act(u: dict[str, Any], cl: RealtimeClient, seed: int) -> None:
        nonlocal refused
        r = random.Random(seed)
        for _ in range(16):
            room = r.choice(ROOMS)
            choice = r.random()
            if choice < 0.45:
                try:
                    rooms = await cl.call("join", room, namespace="/rooms", timeout=20)
                except AckError as exc:
                    assert exc.code == "forbidden" and room not in u["allowed"]
                    refused += 1
                else:
                    assert room in u["allowed"] and room in rooms
                    u["joined"].add(room)
            elif choice < 0.55 and u["joined"]:
                await cl.call("leave", r.choice(sorted(u["joined"])), namespace="/rooms", timeout=20)
            else:
                event = "say" if choice < 0.85 else "memo"
                try:
                    await cl.call(event, {"room": room, "text": u["name"]}, namespace="/rooms", timeout=20)
                except AckError as exc:
                    assert exc.code == "forbidden"

    async with asyncio.timeout(60):
        sem = asyncio.Semaphore(50)

        async def start(cl: RealtimeClient) -> None:
            async with sem:
                await cl.connect()

        await asyncio.gather(*(start(cl) for cl in clients))
        try:
            await asyncio.gather(*(act(u, cl, i) for i, (u, cl) in enumerate(zip(users, clients, strict=True))))
            # The memory backend fans out before the publisher's ack: one more round trip of each
            # client comes back after every broadcast queued for it.
            await asyncio.gather(*(cl.call("rooms", namespace="/rooms", timeout=20) for cl in clients))
        finally:
            await asyncio.gather(*(cl.close() for cl in clients))
    total = 0
    for u in users:
        assert u["joined"] <= set(u["allowed"])
        for event, data in u["got"]:
            total += 1
            assert data["room"] in u["joined"], f"{u['name']} got a message of {data['room']}: a leak"
            if event == "memo":
                assert ("secret" in data) == u["admin"], f"{u['name']} got a memo with the wrong redaction"
    assert refused > 50 and total > 1000, (refused, total)


def test_outgoing_decorator_checks() -> None:
    with pytest.raises(TypeError, match="plain function"):

        class Bad(RealtimeEndpoint):
            namespace = "/bad"

            @outgoing("x")
            async def filt(self, conn: Connection, data: Any) -> Any:
                return data

    with pytest.raises(ValueError):
        outgoing("no spaces allowed")
    assert Rooms.filters == {"memo": Rooms.redact}
    router = RealtimeRouter([Rooms])
    assert ("/rooms", "memo") in router.hub._filters


async def test_a_failing_filter_drops_the_event_for_that_receiver(caplog: pytest.LogCaptureFixture) -> None:
    class Fragile(Rooms):
        namespace = "/fragile"

        @outgoing("memo")
        def redact(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any] | None:
            if conn.user.id == "victim":
                raise KeyError("bug")
            return data

    realtime = RealtimeRouter([Fragile])
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    got: dict[str, list[Any]] = {"victim": [], "other": []}
    with serve(app) as srv:
        clients = {
            name: RealtimeClient(srv.url + "/realtime", namespaces=["/fragile"], auth=TOKENS.issue(name, rooms=ROOMS))
            for name in got
        }
        async with clients["victim"] as victim, clients["other"] as other:
            for name, cl in (("victim", victim), ("other", other)):
                cl.on("memo", got[name].append, namespace="/fragile")
                await cl.call("join", "r1", namespace="/fragile", timeout=5)
            await other.call("memo", {"room": "r1", "text": "hi"}, namespace="/fragile", timeout=5)
            await until(lambda: len(got["other"]) == 1)
            assert await victim.call("echo", 1, namespace="/fragile", timeout=5) == 1  # after the memo, if sent
            assert got["victim"] == []  # dropped, never sent unfiltered
    assert any("outgoing filter" in r.getMessage() for r in caplog.records)


class Marks(RealtimeEndpoint):
    namespace = "/marks"
    order: ClassVar[list[tuple[str, int]]] = []

    @on_event("mark")
    async def mark(self, conn: Connection, n: int) -> None:
        self.order.append((conn.auth["who"], n))


async def test_a_flooding_link_lets_others_run() -> None:
    """uvicorn hands a link every frame of a TCP read without suspending: the reader must yield now and then."""
    Marks.order = []
    router = RealtimeRouter([Marks])
    scope = {"type": "websocket", "subprotocols": ["rt.v1.json"], "headers": [], "path": "/", "query_string": b""}

    def client(who: str, marks: int) -> tuple[Any, Any]:
        frames = [json.dumps([1, "/marks", {"who": who}])]
        frames += [json.dumps([5, "/marks", "mark", i]) for i in range(marks)]
        inbox = [{"type": "websocket.receive", "text": f} for f in frames]
        forever = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if inbox:
                return inbox.pop(0)  # never suspends while there is something to read, like uvicorn
            await forever.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            pass

        return receive, send

    async with router:
        flood = asyncio.ensure_future(router(scope, *client("flood", 500)))
        polite = asyncio.ensure_future(router(scope, *client("polite", 1)))
        await until(lambda: len(Marks.order) >= 501, message="all 501 marks")
        for task in (flood, polite):
            task.cancel()
        await asyncio.gather(flood, polite, return_exceptions=True)
    where = Marks.order.index(("polite", 0))
    assert where < 50, f"the polite client's event waited for {where} flood events"


# Rate limits --------------------------------------------------------------------------------------------


async def test_rate_limit_answers_rate_limited_then_closes_sustained_abuse_with_4006() -> None:
    clock = ManualClock()  # no token comes back until the test moves it, however slow the machine
    app, _ = make_app(limits=Limits(rate=5, burst=5, abuse_threshold=10, clock=clock))
    with serve(app) as srv:
        raw = await Raw.open(srv.url + "/realtime/")
        assert (await raw.connect(auth=token("ada")))[0] == 2
        for i in range(1, 5):  # the CONNECT took the fifth token of the burst
            assert await raw.call("/rooms", "echo", i, i) == [6, "/rooms", i, i, None]
        limited = await raw.call("/rooms", "echo", 6, 6)
        assert limited[4][0] == "rate_limited"
        clock.advance(0.5)  # 2.5 tokens come back
        assert (await raw.call("/rooms", "echo", 7, 7))[4] is None
        # Unknown events pay too, and abuse_threshold refusals in a row close the WebSocket.
        for i in range(8, 40):
            await raw.send([5, "/rooms", "no-such-event", None, i])
        assert await raw.closed() == 4006


async def test_per_event_rate_limit() -> None:
    app, _ = make_app(limits=Limits(abuse_threshold=100, clock=ManualClock()))
    with serve(app) as srv:
        raw = await Raw.open(srv.url + "/realtime/")
        await raw.connect(auth=token("ada"))
        answers = [(await raw.call("/rooms", "ping", None, i))[3:] for i in range(1, 5)]
        assert answers[:2] == [["pong", None], ["pong", None]]
        assert answers[2][1][0] == "rate_limited" and answers[3][1][0] == "rate_limited"
        # Other events are not limited by ping's bucket.
        assert (await raw.call("/rooms", "echo", 1, 10))[4] is None
        await raw.close()


async def test_connect_floods_are_rate_limited() -> None:
    app, _ = make_app(limits=Limits(rate=2, burst=3, abuse_threshold=50, clock=ManualClock()))
    with serve(app) as srv:
        raw = await Raw.open(srv.url + "/realtime/")
        codes = [(await raw.connect("/nope"))[2] for _ in range(5)]
        assert codes[:3] == ["UNKNOWN_NAMESPACE"] * 3 and codes[3:] == ["rate_limited"] * 2
        await raw.close()


# Connection, room, namespace and payload limits ----------------------------------------------------------


async def test_max_connections_closes_with_1013_after_accept() -> None:
    app, realtime = make_app(limits=Limits(max_connections=2))
    with serve(app) as srv:
        url = srv.url + "/realtime/"
        a, b = await Raw.open(url), await Raw.open(url)
        async with asyncio.timeout(5):
            ws = await websockets.connect(url, subprotocols=["rt.v1.json"])  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await a.close()
        await until(lambda: realtime.stats()["links"] == 1)
        c = await Raw.open(url)  # room again
        await b.close()
        await c.close()


async def test_max_connections_per_user() -> None:
    app, _ = make_app(limits=Limits(max_connections_per_user=2))
    with serve(app) as srv:
        url = srv.url + "/realtime/"
        first, second, third = await Raw.open(url), await Raw.open(url), await Raw.open(url)
        assert (await first.connect(auth=token("ada")))[0] == 2
        assert (await second.connect(auth=token("ada")))[0] == 2
        refused = await third.connect(auth=token("ada"))
        assert refused[:3] == [3, "/rooms", "TOO_MANY_CONNECTIONS"] and refused[4] is True
        assert (await third.connect(auth=token("bob")))[0] == 2  # another user is not affected
        await first.close()
        fourth = await Raw.open(url)
        try:
            async with asyncio.timeout(5):
                while (await fourth.connect(auth=token("ada")))[0] != 2:
                    await asyncio.sleep(0.02)  # until the server saw the first one go
        except TimeoutError:
            raise AssertionError("ada's slot was not freed within 5 s of closing her first WebSocket") from None
        for raw in (second, third, fourth):
            await raw.close()


async def test_rooms_and_namespaces_per_connection() -> None:
    app, _ = make_app(limits=Limits(max_rooms=3, max_namespaces=1))
    with serve(app) as srv:
        raw = await Raw.open(srv.url + "/realtime/")
        await raw.connect(auth=token("ada", rooms=ROOMS))
        for i in range(3):
            assert (await raw.call("/rooms", "join", ROOMS[i], i + 1))[4] is None
        assert (await raw.call("/rooms", "join", ROOMS[3], 4))[4][0] == "limit_exceeded"
        assert (await raw.connect("/lobby"))[2] == "TOO_MANY_NAMESPACES"
        await raw.close()


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_payload_size_and_depth_limits(encoding: str) -> None:
    app, _ = make_app(limits=Limits(max_payload_bytes=1000, max_depth=8))
    with serve(app) as srv:
        raw = await Raw.open(srv.url + "/realtime/", encoding)
        await raw.connect(auth=token("ada"))
        assert (await raw.call("/rooms", "echo", "x" * 900, 1))[4] is None
        big = await raw.call("/rooms", "echo", "x" * 1001, 2)
        assert big[4][0] == "limit_exceeded" and "max_payload_bytes" in big[4][1]
        nested: Any = 1
        for _ in range(8):
            nested = [nested]
        assert (await raw.call("/rooms", "echo", nested, 3))[3] == nested
        deep = await raw.call("/rooms", "echo", [nested], 4)
        assert deep[4][0] == "limit_exceeded" and "max_depth" in deep[4][1]
        assert (await raw.call("/rooms", "echo", "still open", 5))[3] == "still open"
        await raw.close()


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(
    alphabet=st.sampled_from('ab[]{}"\\\x90\x91é'), max_size=40
) | st.binary(max_size=40)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=_values, limit=st.integers(0, 12))
def test_nesting_check_agrees_with_the_real_depth(value: Any, limit: int) -> None:
    expected = _depth(value) > limit
    assert nesting_exceeds(msgspec.msgpack.encode(value), limit, binary=True) is expected
    as_json = value if not isinstance(value, bytes) else value.hex()
    try:
        encoded = msgspec.json.encode(as_json)
    except TypeError:  # bytes nested inside: JSON has no such type
        return
    assert nesting_exceeds(encoded, limit, binary=False) is (_depth(as_json) > limit)


# Compression ------------------------------------------------------------------------------------------


async def test_permessage_deflate_depends_on_the_server_and_our_client_never_asks() -> None:
    app, _ = make_app()
    with serve(app) as srv:  # uvicorn's default: the extension is accepted when offered
        async with asyncio.timeout(5):
            ws = await websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"])  # type: ignore[list-item]
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        await ws.close()
        async with client(srv, "ada") as ada:
            assert ada._ws is not None and ada._ws.response is not None
            assert ada._ws.response.headers.get("Sec-WebSocket-Extensions") is None
            assert await ada.call("echo", "x" * 1000, namespace="/rooms", timeout=5) == "x" * 1000
        async with client(srv, "bob", compression=True) as bob:  # on purpose
            assert bob._ws is not None and bob._ws.response is not None
            assert "permessage-deflate" in (bob._ws.response.headers.get("Sec-WebSocket-Extensions") or "")
            assert await bob.call("echo", "x" * 1000, namespace="/rooms", timeout=5) == "x" * 1000
    with serve(app, ws_per_message_deflate=False) as srv:  # --ws-per-message-deflate false
        async with asyncio.timeout(5):
            ws = await websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"])  # type: ignore[list-item]
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await ws.close()
