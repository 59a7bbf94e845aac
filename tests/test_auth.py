"""Authentication: signed tokens, Starlette users and cookie sessions, expiry and refresh, kicking users.

Unit tests of :mod:`starlette_realtime.auth` first, then everything end to end over a real uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import websockets
from conftest import ServerThread, eventually, serve
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from websockets.exceptions import ConnectionClosed

from starlette_realtime import (
    AckError,
    Connection,
    Identity,
    RealtimeEndpoint,
    RealtimeRouter,
    Rejected,
    SessionAuth,
    SignedTokenAuth,
    StarletteAuth,
    on_event,
)
from starlette_realtime.auth import MAX_TOKEN_LENGTH, Authenticator
from starlette_realtime.client import ClientClosed, ConnectRefused, RealtimeClient
from starlette_realtime.routing import user_key

KEYS = ["key-2026-new", "key-2025-old"]
SECRET = "the-router-session-secret"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeConn:
    """Just what an authenticator reads."""

    def __init__(self, auth: Any = None, scope: dict[str, Any] | None = None) -> None:
        self.auth = auth
        self.scope = scope or {}


# Unit tests ------------------------------------------------------------------------------------------


async def test_a_token_names_its_user_and_claims_and_its_repr_hides_it() -> None:
    clock = FakeClock()
    auth = SignedTokenAuth(KEYS, max_age=60, clock=clock)
    token = auth.issue("ada", rooms=["ops"], admin=True)
    user = await auth.authenticate(FakeConn({"token": token}))  # type: ignore[arg-type]
    assert (user.id, user.claims) == ("ada", {"rooms": ["ops"], "admin": True})
    assert user.identity == user.display_name == "ada" and user.is_authenticated
    assert user.expires_at == int(clock.now) + 60
    assert token not in repr(user) and "ops" not in repr(user)
    assert repr(user) == "Identity(id='ada', claims=['admin', 'rooms'])"
    assert "key-2026" not in repr(auth)
    assert isinstance(auth, Authenticator)
    assert isinstance(StarletteAuth(), Authenticator) and isinstance(SessionAuth(), Authenticator)


async def test_key_rotation_signs_with_the_newest_and_accepts_every_listed_key() -> None:
    clock = FakeClock()
    before = SignedTokenAuth(["key-2025-old"], max_age=60, clock=clock)
    during = SignedTokenAuth(KEYS, max_age=60, clock=clock)
    after = SignedTokenAuth(["key-2026-new"], max_age=60, clock=clock)
    old_token = before.issue("ada")
    assert during.verify(old_token).id == "ada"  # still valid while both keys are listed
    new_token = during.issue("bob")
    assert after.verify(new_token).id == "bob"  # signed with the newest key
    with pytest.raises(Rejected) as err:
        after.verify(old_token)  # the old key was dropped
    assert (err.value.code, err.value.retryable) == ("INVALID_TOKEN", True)


def test_expiry_skew_and_leeway() -> None:
    clock = FakeClock(1_800_000_000.0)
    auth = SignedTokenAuth(KEYS, max_age=10, clock=clock)
    token = auth.issue("ada")
    clock.now += 9.9
    assert auth.verify(token).expires_at == 1_800_000_010
    clock.now += 0.1
    with pytest.raises(Rejected, match="expired") as err:
        auth.verify(token)
    assert err.value.code == "INVALID_TOKEN" and err.value.retryable
    # A token signed by a machine whose clock runs 2 s ahead: refused, unless leeway allows it.
    ahead = SignedTokenAuth(KEYS, max_age=10, clock=FakeClock(clock.now + 2))
    future = ahead.issue("ada")
    with pytest.raises(Rejected, match="future"):
        auth.verify(future)
    assert SignedTokenAuth(KEYS, max_age=10, leeway=5, clock=clock).verify(future).id == "ada"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "x" * (MAX_TOKEN_LENGTH + 1),
        42,
        None,
    ],
)
async def test_bad_tokens_are_refused(token: Any) -> None:
    auth = SignedTokenAuth(KEYS, max_age=60)
    with pytest.raises(Rejected) as err:
        await auth.authenticate(FakeConn({"token": token}))  # type: ignore[arg-type]
    expected = "AUTHENTICATION_REQUIRED" if token is None else "INVALID_TOKEN"
    assert err.value.code == expected


async def test_tampered_other_salt_and_other_payloads_are_invalid() -> None:
    auth = SignedTokenAuth(KEYS, max_age=60)
    token = auth.issue("ada")
    payload, ts, sig = token.rsplit(".", 2)
    forged = SignedTokenAuth(KEYS, max_age=60).issue("root")
    candidates = [
        f"{forged.rsplit('.', 2)[0]}.{ts}.{sig}",  # someone else's payload, ada's signature
        f"{payload}.{ts}.{sig[:-2]}AA",
        SignedTokenAuth(KEYS, max_age=60, salt="another-app").issue("ada"),
        SignedTokenAuth(["unknown"], max_age=60).issue("ada"),
    ]
    from itsdangerous import URLSafeTimedSerializer

    # Correctly signed, but not [user, claims].
    candidates.append(URLSafeTimedSerializer(list(reversed(KEYS)), salt="starlette_realtime.auth").dumps({"u": 1}))
    for bad in candidates:
        with pytest.raises(Rejected) as err:
            auth.verify(bad)
        assert err.value.code == "INVALID_TOKEN"
        assert bad not in str(err.value)
    for payload_ in (None, "just-a-string", {"tok": token}, [token]):
        with pytest.raises(Rejected) as err:
            await auth.authenticate(FakeConn(payload_))  # type: ignore[arg-type]
        assert err.value.code == "AUTHENTICATION_REQUIRED"


def test_configuration_errors() -> None:
    with pytest.raises(ValueError):
        SignedTokenAuth([], max_age=60)
    with pytest.raises(ValueError):
        SignedTokenAuth([""], max_age=60)
    with pytest.raises(ValueError):
        SignedTokenAuth("k", max_age=0)
    assert SignedTokenAuth(b"bytes-key", max_age=1).verify(SignedTokenAuth("bytes-key", max_age=1).issue("a")).id == "a"


async def test_starlette_and_session_auth_units() -> None:
    anon = type("Anon", (), {"is_authenticated": False})()
    with pytest.raises(Rejected) as err:
        await StarletteAuth().authenticate(FakeConn(scope={"user": anon}))  # type: ignore[arg-type]
    assert err.value.code == "AUTHENTICATION_REQUIRED"
    assert await StarletteAuth(required=False).authenticate(FakeConn(scope={"user": anon})) is None  # type: ignore[arg-type]
    user = SimpleUser("ada")
    scope = {"user": user, "auth": AuthCredentials(["read"])}
    assert await StarletteAuth(scopes=["read"]).authenticate(FakeConn(scope=scope)) is user  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="write"):
        await StarletteAuth(scopes=["read", "write"]).authenticate(FakeConn(scope=scope))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="AuthenticationMiddleware"):
        await StarletteAuth().authenticate(FakeConn(scope={}))  # type: ignore[arg-type]
    ident = await SessionAuth(key="uid").authenticate(FakeConn(scope={"session": {"uid": 7}}))  # type: ignore[arg-type]
    assert ident == Identity("7")
    with pytest.raises(Rejected):
        await SessionAuth().authenticate(FakeConn(scope={"session": {}}))  # type: ignore[arg-type]
    assert await SessionAuth(required=False).authenticate(FakeConn(scope={"session": {}})) is None  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await SessionAuth().authenticate(FakeConn(scope={}))  # type: ignore[arg-type]


# End to end ----------------------------------------------------------------------------------------


class Public(RealtimeEndpoint):
    namespace = "/public"

    @on_event("whoami")
    async def whoami(self, conn: Connection) -> Any:
        return user_key(conn.user)


class PrivateBase(RealtimeEndpoint):
    namespace = "/private"
    connects = 0

    async def on_connect(self, conn: Connection) -> None:
        type(self).connects += 1

    @on_event("whoami")
    async def whoami(self, conn: Connection) -> Any:
        user = conn.user
        return {"id": getattr(user, "id", None) or getattr(user, "username", None), "expires_at": conn.expires_at}

    @on_event("kick")
    async def kick(self, conn: Connection, user: str) -> int:
        return await self.router.disconnect_user(user)


def private(auth: Any) -> type[RealtimeEndpoint]:
    return type("Private", (PrivateBase,), {"auth": auth, "connects": 0})


def token_app(auth: SignedTokenAuth, **options: Any) -> tuple[Starlette, RealtimeRouter, type[RealtimeEndpoint]]:
    ep = private(auth)
    realtime = RealtimeRouter([Public, ep], secret_key=SECRET, **options)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app, realtime, ep


@pytest.fixture
def token_server() -> Iterator[tuple[ServerThread, RealtimeRouter, SignedTokenAuth, type[RealtimeEndpoint]]]:
    auth = SignedTokenAuth(KEYS, max_age=300)
    app, realtime, ep = token_app(auth)
    with serve(app) as srv:
        yield srv, realtime, auth, ep


def client(srv: ServerThread, namespaces: list[str], **kw: Any) -> RealtimeClient:
    kw.setdefault("reconnection_delay", 0.05)
    kw.setdefault("reconnection_delay_max", 0.2)
    kw.setdefault("connect_timeout", 5)
    return RealtimeClient(srv.url + "/realtime", namespaces=namespaces, **kw)


until = eventually  # polls what the real server does, and fails saying what it waited for


async def test_one_namespace_anonymous_another_authenticated(token_server: Any) -> None:
    srv, _, auth, ep = token_server
    async with client(srv, ["/public"]) as anon:
        assert await anon.call("whoami", namespace="/public", timeout=5) is None
    with pytest.raises(ConnectRefused) as refused:
        async with client(srv, ["/private"]):
            pass
    assert refused.value.code == "AUTHENTICATION_REQUIRED"
    assert ep.connects == 0  # on_connect never ran for the refused one
    token = auth.issue("ada", team="blue")
    async with client(srv, ["/public", "/private"], namespace_auth={"/private": token}) as ada:
        me = await ada.call("whoami", namespace="/private", timeout=5)
        assert me["id"] == "ada" and me["expires_at"] > time.time() + 200
        assert await ada.call("whoami", namespace="/public", timeout=5) is None
    assert ep.connects == 1


async def test_a_fixed_invalid_token_is_refused_for_good(token_server: Any) -> None:
    srv, _, _, ep = token_server
    forged = SignedTokenAuth(["not-our-key"], max_age=300).issue("ada")
    with pytest.raises(ConnectRefused) as refused:
        async with client(srv, ["/private"], auth=forged):
            pass
    assert refused.value.code == "INVALID_TOKEN"
    assert ep.connects == 0


async def test_an_expired_token_is_replaced_by_the_provider_transparently(token_server: Any) -> None:
    srv, _, auth, _ = token_server
    stale = SignedTokenAuth(KEYS, max_age=300, clock=lambda: time.time() - 3600).issue("ada")
    asked: list[str] = []

    async def provider() -> str:
        token = stale if not asked else auth.issue("ada")
        asked.append(token)
        return token

    async with client(srv, ["/private"], auth=provider) as ada:
        assert (await ada.call("whoami", namespace="/private", timeout=5))["id"] == "ada"
        assert len(asked) == 2 and ada.reconnects == 0  # retried on the same WebSocket


async def test_token_expiry_closes_with_4003_and_the_client_reconnects_with_a_fresh_token() -> None:
    auth = SignedTokenAuth(KEYS, max_age=2)
    app, realtime, _ = token_app(auth, ping_interval=0.4, ping_timeout=5)
    asked = 0
    connects: list[Any] = []

    def provider() -> str:
        nonlocal asked
        asked += 1
        return auth.issue("ada")

    with serve(app) as srv:
        async with client(srv, ["/private"], auth=provider) as ada:
            ada.on("connect", connects.append, namespace="/private")
            first = (await ada.call("whoami", namespace="/private", timeout=5))["expires_at"]
            await until(lambda: ada.reconnects >= 1 and ada.state.value == "connected", timeout=6)
            assert ada.last_close_code == 4003
            assert time.time() >= first  # not closed before the token expired
            assert asked >= 2
            second = (await ada.call("whoami", namespace="/private", timeout=5))["expires_at"]
            assert second > first
            # The session survived the 4003 (it is retryable): the client was recovered.
            assert connects and connects[-1]["recovered"] is True


async def test_refresh_auth_keeps_a_long_session_open() -> None:
    auth = SignedTokenAuth(KEYS, max_age=2)
    app, _, _ = token_app(auth, ping_interval=0.4, ping_timeout=5)
    with serve(app) as srv:
        async with client(srv, ["/private"], auth=lambda: auth.issue("ada")) as ada:
            started = time.monotonic()
            with anyio.fail_after(20):
                while time.monotonic() - started < 3.5:  # real time: the server's expiry runs on its wall clock
                    assert await ada.refresh_auth("/private", timeout=5) is True
                    await asyncio.sleep(0.4)
            assert ada.reconnects == 0 and ada.last_close_code is None
            assert (await ada.call("whoami", namespace="/private", timeout=5))["expires_at"] > time.time()


async def test_auth_event_refuses_bad_tokens_and_other_users(token_server: Any) -> None:
    srv, _, auth, _ = token_server
    async with client(srv, ["/private", "/public"], namespace_auth={"/private": auth.issue("ada")}) as ada:
        before = (await ada.call("whoami", namespace="/private", timeout=5))["expires_at"]
        with pytest.raises(AckError) as err:
            await ada.call("$auth", {"token": "forged"}, namespace="/private", timeout=5)
        assert err.value.code == "INVALID_TOKEN"
        with pytest.raises(AckError) as err:
            await ada.call("$auth", {"token": auth.issue("bob")}, namespace="/private", timeout=5)
        assert err.value.code == "forbidden"
        with pytest.raises(AckError) as err:
            await ada.call("$auth", None, namespace="/private", timeout=5)
        assert err.value.code == "AUTHENTICATION_REQUIRED"
        me = await ada.call("whoami", namespace="/private", timeout=5)
        assert me == {"id": "ada", "expires_at": before}  # nothing changed
        # An anonymous namespace takes $auth as a no-op.
        assert await ada.call("$auth", None, namespace="/public", timeout=5) is None
        assert await ada.refresh_auth("/public", timeout=5) is True
    assert await client(srv, ["/public"]).refresh_auth("/public") is False  # not connected


async def test_disconnect_user_closes_every_websocket_of_the_user_with_4503(token_server: Any) -> None:
    srv, realtime, auth, _ = token_server
    async with (
        client(srv, ["/private"], auth=auth.issue("ada")) as ada1,
        client(srv, ["/private", "/public"], namespace_auth={"/private": auth.issue("ada")}) as ada2,
        client(srv, ["/private"], auth=auth.issue("bob")) as bob,
    ):
        assert realtime.stats()["links"] == 3
        assert await bob.call("kick", "ada", namespace="/private", timeout=5) == 2
        for ada in (ada1, ada2):
            await until(lambda ada=ada: ada.state.value == "closed")  # type: ignore[misc]
            with pytest.raises(ClientClosed) as closed:
                await ada.wait_connected(5)
            assert closed.value.code == 4503
            assert ada.reconnects == 0  # 4503 is terminal
        await until(lambda: realtime.stats()["links"] == 1)
        assert (await bob.call("whoami", namespace="/private", timeout=5))["id"] == "bob"
        assert await bob.call("kick", "nobody", namespace="/private", timeout=5) == 0


# Starlette authentication and cookie sessions ------------------------------------------------------------


class HeaderBackend(AuthenticationBackend):
    """Authenticates ``x-user: name[,scope...]``; browsers cannot set it, tests can."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        value = conn.headers.get("x-user")
        if not value:
            return None
        name, *scopes = value.split(",")
        return AuthCredentials(scopes), SimpleUser(name)


class Staff(RealtimeEndpoint):
    namespace = "/staff"
    auth = StarletteAuth(scopes=["staff"])

    @on_event("whoami")
    async def whoami(self, conn: Connection) -> str:
        return str(conn.user.username)


class Members(RealtimeEndpoint):
    namespace = "/members"
    auth = SessionAuth(key="user_id")

    @on_event("whoami")
    async def whoami(self, conn: Connection) -> str:
        return str(conn.user.id)


async def login(request: Request) -> PlainTextResponse:
    request.session["user_id"] = request.query_params["user"]
    return PlainTextResponse("ok")


class RawClient:
    """A bare JSON WebSocket client: full control over headers and frames."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def frame(self, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            return json.loads(await self.ws.recv())

    async def connect(self, ns: str, auth: Any = None) -> Any:
        await self.ws.send(json.dumps([1, ns, auth]))
        while True:
            reply = await self.frame()
            if reply[0] in (2, 3) and reply[1] == ns:
                return reply


async def open_raw(url: str, **kw: Any) -> RawClient:
    async with asyncio.timeout(5):
        ws = await websockets.connect(url, subprotocols=["rt.v1.json"], **kw)  # type: ignore[list-item]
    raw = RawClient(ws)
    assert (await raw.frame())[0] == 0  # HELLO
    return raw


async def test_starlette_authentication_backend_over_a_real_server() -> None:
    realtime = RealtimeRouter([Staff, Public], secret_key=SECRET)
    app = Starlette(
        lifespan=realtime.lifespan,
        routes=[Mount("/realtime", realtime)],  # type: ignore[arg-type]
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderBackend())],
    )
    with serve(app) as srv:
        url = srv.url + "/realtime/"
        staff = await open_raw(url, additional_headers={"x-user": "ada,staff"})
        assert (await staff.connect("/staff"))[0] == 2
        await staff.ws.send(json.dumps([5, "/staff", "whoami", None, 1]))
        assert await staff.frame() == [6, "/staff", 1, "ada", None]
        await staff.ws.close()
        guest = await open_raw(url, additional_headers={"x-user": "bob"})
        assert (await guest.connect("/staff"))[:3] == [3, "/staff", "REJECTED"]  # no "staff" scope
        assert (await guest.connect("/public"))[0] == 2  # the public namespace does not care
        await guest.ws.close()
        anon = await open_raw(url)
        assert (await anon.connect("/staff"))[:3] == [3, "/staff", "AUTHENTICATION_REQUIRED"]
        await anon.ws.close()


async def test_middleware_in_front_makes_the_default_same_origin() -> None:
    """No ``auth`` on the endpoint, but an AuthenticationMiddleware wraps the router: cookies may be in play."""
    realtime = RealtimeRouter([Public], secret_key=SECRET)
    app = Starlette(
        lifespan=realtime.lifespan,
        routes=[Mount("/realtime", realtime)],  # type: ignore[arg-type]
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderBackend())],
    )
    with serve(app) as srv:
        url = srv.url + "/realtime/"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_raw(url, origin="https://evil.example")
        assert refused.value.response.status_code == 403
        own = await open_raw(url, origin=f"http://127.0.0.1:{srv.port}", additional_headers={"x-user": "ada"})
        assert (await own.connect("/public"))[0] == 2
        await own.ws.send(json.dumps([5, "/public", "whoami", None, 1]))
        assert (await own.frame())[3] == "ada"  # the middleware's user, without StarletteAuth
        await own.ws.close()
    # Without any middleware or cookie auth, a token app accepts every origin.
    app, _, _ = token_app(SignedTokenAuth(KEYS, max_age=60))
    with serve(app) as srv:
        anywhere = await open_raw(srv.url + "/realtime/", origin="https://elsewhere.example")
        await anywhere.ws.close()


async def test_cookie_sessions_need_the_same_origin_by_default() -> None:
    realtime = RealtimeRouter([Members], secret_key=SECRET)
    app = Starlette(
        lifespan=realtime.lifespan,
        routes=[Route("/login", login), Mount("/realtime", realtime)],  # type: ignore[arg-type]
        middleware=[Middleware(SessionMiddleware, secret_key="cookie-secret", same_site="lax")],
    )
    with serve(app) as srv:
        async with httpx.AsyncClient(base_url=srv.http, timeout=5) as http:
            assert (await http.get("/login", params={"user": "ada"})).status_code == 200
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        url = srv.url + "/realtime/"
        own = f"http://127.0.0.1:{srv.port}"
        member = await open_raw(url, origin=own, additional_headers={"cookie": cookie})
        assert (await member.connect("/members"))[0] == 2
        await member.ws.send(json.dumps([5, "/members", "whoami", None, 1]))
        assert await member.frame() == [6, "/members", 1, "ada", None]
        await member.ws.close()
        # The same cookie, sent by a page of another site: refused at the handshake.
        for evil in ("https://evil.example", f"http://127.0.0.1:{srv.port + 1}", "null"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await open_raw(url, origin=evil, additional_headers={"cookie": cookie})
            assert refused.value.response.status_code == 403
        # No cookie: not logged in.
        anon = await open_raw(url, origin=own)
        assert (await anon.connect("/members"))[:3] == [3, "/members", "AUTHENTICATION_REQUIRED"]
        await anon.ws.close()


# Logs never carry a token or a secret ----------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("websockets."):
            # The websockets package's own DEBUG output quotes frame excerpts (docs/security.md).
            return
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        text += " " + " ".join(f"{k}={v!r}" for k, v in vars(record).items() if k not in ("msg", "args"))
        self.lines.append(text)


async def test_no_token_or_secret_in_any_log_line() -> None:
    auth = SignedTokenAuth(KEYS, max_age=2)
    app, _, _ = token_app(auth, ping_interval=0.4, ping_timeout=5)
    capture = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    issued: list[str] = []

    def provider() -> str:
        issued.append(auth.issue("ada", email="ada@example.org"))
        return issued[-1]

    stale = SignedTokenAuth(KEYS, max_age=2, clock=lambda: time.time() - 100).issue("ada")
    forged = SignedTokenAuth(["wrong-key"], max_age=2).issue("ada")
    try:
        with serve(app) as srv:
            async with client(srv, ["/private"], auth=provider) as ada:
                await ada.refresh_auth("/private", timeout=5)
                with pytest.raises(AckError):
                    await ada.call("$auth", {"token": forged}, namespace="/private", timeout=5)
                await until(lambda: ada.last_close_code == 4003, timeout=6)  # expiry
                await ada.wait_connected(5)
            for bad in (stale, forged, "x" * 5000):
                with pytest.raises(ConnectRefused):
                    async with client(srv, ["/private"], auth=bad, reconnection=False):
                        pass
            raw = await open_raw(srv.url + "/realtime/")
            await raw.ws.send(json.dumps([1, "/private", {"token": issued[0]}, "not-a-session"]))
            await raw.frame()
            await raw.ws.send(json.dumps([5, "/private", {"token": issued[0]}, None]))  # a bad frame
            with pytest.raises(ConnectionClosed):
                while True:
                    await raw.frame()
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    assert capture.lines, "nothing was logged: the test would prove nothing"
    assert any("4003" in line for line in capture.lines)
    secrets = [*issued, stale, forged, *KEYS, SECRET]
    for token in (*issued, stale, forged):
        # The signature part alone must not leak either.
        secrets.append(token.rsplit(".", 1)[1])
    for line in capture.lines:
        for secret in secrets:
            assert secret not in line, f"a secret leaked into the log: {line[:200]}"
