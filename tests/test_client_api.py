"""The Python client's conventions (issue 16), over a real uvicorn: each trap a newcomer fell into."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import serve
from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, Rejected, on_event
from starlette_realtime.client import ConnectRefused, EventMeta, NamespaceNotOpen, RealtimeClient


class Seen:
    """What the server saw, for the tests to look at."""

    def __init__(self) -> None:
        self.auth: dict[str, list[Any]] = {}
        self.reasons: list[tuple[str, str]] = []


def make_app(seen: Seen) -> Starlette:
    class Base(RealtimeEndpoint):
        async def on_connect(self, conn: Connection) -> None:
            seen.auth.setdefault(conn.namespace, []).append(conn.auth)
            if conn.auth and conn.auth.get("banned"):
                raise Rejected("BANNED", "go away")

        async def on_disconnect(self, conn: Connection, reason: str) -> None:
            seen.reasons.append((conn.namespace, reason))

        @on_event("join")
        async def join(self, conn: Connection, room: str) -> list[str]:
            await conn.join(room)
            return sorted(conn.rooms)

        @on_event("shout")
        async def shout(self, conn: Connection, room: str) -> None:
            await self.to(room).emit("said", {"room": room})

        @on_event("bye")
        async def bye(self, conn: Connection) -> None:
            await conn.disconnect("you asked")

    class Root(Base):
        namespace = "/"

    class Chat(Base):
        namespace = "/chat"

    class Admin(Base):
        namespace = "/admin"

    realtime = RealtimeRouter([Root, Chat, Admin], secret_key="k")
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app


async def until(predicate: Any, message: str) -> None:
    with anyio.fail_after(5, shield=False):
        while not predicate():
            await anyio.sleep(0.01)


async def test_auth_is_the_connect_payload_and_namespace_auth_sets_one_per_namespace() -> None:
    seen = Seen()
    with serve(make_app(seen)) as srv:
        url = srv.url + "/realtime"
        with anyio.fail_after(10):
            with pytest.raises(ConnectRefused) as refused:
                async with RealtimeClient(url, auth={"banned": True}):
                    pass
            assert refused.value.code == "BANNED"  # the payload reached on_connect, as python-socketio users expect
            async with RealtimeClient(
                url, namespaces=["/chat", "/admin"], auth="t-all", namespace_auth={"/admin": {"key": "k-admin"}}
            ):
                pass
    assert seen.auth["/"] == [{"banned": True}]
    assert seen.auth["/chat"] == [{"token": "t-all"}]  # a string is sent as {"token": ...}
    assert seen.auth["/admin"] == [{"key": "k-admin"}]


def test_auth_by_namespace_in_auth_is_refused_with_a_pointer_to_namespace_auth() -> None:
    with pytest.raises(TypeError, match="namespace_auth"):
        RealtimeClient("ws://example/realtime", namespaces=["/chat"], auth={"/chat": "token"})
    with pytest.raises(ValueError, match="not opened"):
        RealtimeClient("ws://example/realtime", namespaces=["/chat"], namespace_auth={"/admin": "token"})


async def test_only_the_listed_namespaces_open_and_others_raise_a_named_error() -> None:
    seen = Seen()
    with serve(make_app(seen)) as srv:
        with anyio.fail_after(10):
            async with RealtimeClient(srv.url + "/realtime", namespaces=["/chat"]) as client:
                assert client.namespaces == ["/chat"]
                with pytest.raises(NamespaceNotOpen, match="'/' is not open on this client") as err:
                    await client.call("join", "lobby")
                assert err.value.namespace == "/"
                with pytest.raises(NamespaceNotOpen):
                    await client.emit("join", "lobby", namespace="/admin")
                assert await client.call("join", "lobby", namespace="/chat") == ["lobby"]
            async with RealtimeClient(srv.url + "/realtime") as default:  # none given: "/" only
                assert default.namespaces == ["/"]
                assert await default.call("join", "lobby") == ["lobby"]
    assert sorted(seen.auth) == ["/", "/chat"]  # "/" opened once, by the client that did not list namespaces


async def test_handlers_stack_take_metadata_and_a_catch_all_gets_the_rest() -> None:
    seen = Seen()
    with serve(make_app(seen)) as srv:
        got: list[Any] = []
        with anyio.fail_after(10):
            async with RealtimeClient(srv.url + "/realtime", namespaces=["/chat"]) as client:

                @client.on("said", namespace="/chat")
                async def with_meta(data: dict[str, str], meta: EventMeta) -> None:
                    got.append(("meta", meta.namespace, meta.room, meta.offset is not None))

                client.on("said", lambda data: got.append(("plain", data)), namespace="/chat")
                client.on("*", lambda event, data: got.append(("any", event)), namespace="/chat")
                await client.call("join", "lobby", namespace="/chat")
                await client.call("shout", "lobby", namespace="/chat")
                await until(lambda: len(got) == 2, "both handlers")
    assert sorted(got, key=str) == [("meta", "/chat", "lobby", True), ("plain", {"room": "lobby"})]


async def test_a_clean_close_tells_the_server_it_was_the_client() -> None:
    seen = Seen()
    with serve(make_app(seen)) as srv:
        url = srv.url + "/realtime"
        with anyio.fail_after(10):
            async with RealtimeClient(url, namespaces=["/chat", "/admin"]) as client:
                local: list[Any] = []
                client.on("disconnect", local.append, namespace="/chat")
            assert local == [{"reason": "client disconnect", "code": None}]
            await until(lambda: len(seen.reasons) == 2, "both namespaces closed")
            assert sorted(seen.reasons) == [("/admin", "client disconnect"), ("/chat", "client disconnect")]
            seen.reasons.clear()
            dropped = RealtimeClient(url, namespaces=["/chat"], reconnection=False)
            await dropped.connect()
            dropped.kill_transport()  # a network failure: no DISCONNECT, no close frame
            await until(lambda: len(seen.reasons) == 1, "the drop noticed")
            await dropped.close()
    assert seen.reasons == [("/chat", "transport closed")]


async def test_a_namespace_the_server_closed_stays_closed() -> None:
    seen = Seen()
    with serve(make_app(seen)) as srv:
        with anyio.fail_after(10):
            async with RealtimeClient(srv.url + "/realtime", namespaces=["/chat", "/admin"]) as client:
                reasons: list[Any] = []
                client.on("disconnect", reasons.append, namespace="/admin")
                with pytest.raises(NamespaceNotOpen):  # the DISCONNECT came before any answer
                    await client.call("bye", namespace="/admin")
                await until(lambda: client.namespaces == ["/chat"], "the DISCONNECT")
                assert reasons == [{"reason": "you asked", "code": None}]
                with pytest.raises(NamespaceNotOpen, match="closed"):
                    await client.call("join", "x", namespace="/admin")
                client.kill_transport()
                await client.wait_connected(5)  # the reconnect opens /chat only
                assert await client.call("join", "x", namespace="/chat") == ["x"]
    assert seen.auth["/admin"] == [None]  # opened once, never again


async def test_an_auth_provider_that_fails_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    seen = Seen()
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("token service down")
        return "fresh"

    with serve(make_app(seen)) as srv, anyio.fail_after(10):
        async with RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], auth=provider,
                                  reconnection_delay=0.05, randomization_factor=0) as client:
            assert client.reconnects == 2
    assert seen.auth["/chat"] == [{"token": "fresh"}]
    assert sum("auth provider of /chat failed" in r.getMessage() for r in caplog.records) == 2
