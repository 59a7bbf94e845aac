"""Connection: events emitted from ``on_connect`` reach the client right after CONNECTED, over a real socket,
on both wires (our client, and python-socketio's ``AsyncClient`` over the Socket.IO wire)."""

from __future__ import annotations

from typing import Any

import anyio
from conftest import serve
from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, Rejected
from starlette_realtime.client import ConnectRefused, RealtimeClient


class Greeter(RealtimeEndpoint):
    namespace = "/greet"

    async def on_connect(self, conn: Connection) -> None:
        await conn.emit("welcome", {"n": 1})
        await conn.emit("welcome", {"n": 2})
        if isinstance(conn.auth, dict) and conn.auth.get("refuse"):
            raise Rejected("NO", "refused after emitting")


def _app() -> Starlette:
    realtime = RealtimeRouter([Greeter], secret_key="k", socketio=True)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    return app


async def test_events_emitted_in_on_connect_arrive_after_connected_in_order() -> None:
    with serve(_app()) as srv:
        seen: list[Any] = []
        client = RealtimeClient(srv.url + "/realtime", namespaces=["/greet"])
        client.on("connect", lambda info: seen.append(("connect", info["sid"])), namespace="/greet")
        client.on("welcome", lambda data: seen.append(("welcome", data["n"])), namespace="/greet")
        async with client:
            with anyio.fail_after(5):
                while len(seen) < 3:
                    await anyio.sleep(0.01)
            assert seen == [("connect", client.sid("/greet")), ("welcome", 1), ("welcome", 2)]


async def test_events_emitted_by_a_refused_connection_are_dropped() -> None:
    with serve(_app()) as srv:
        seen: list[Any] = []
        client = RealtimeClient(srv.url + "/realtime", namespaces=["/greet"], auth={"refuse": True})
        client.on("welcome", seen.append, namespace="/greet")
        with anyio.fail_after(5):
            try:
                async with client:
                    raise AssertionError("the connection was not refused")
            except ConnectRefused as exc:
                assert "NO" in str(exc)
        assert seen == []


async def test_a_socketio_client_gets_the_events_emitted_in_on_connect() -> None:
    import socketio  # type: ignore[import-untyped]

    with serve(_app()) as srv:
        seen: list[Any] = []
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("welcome", lambda data: seen.append(data["n"]), namespace="/greet")
        with anyio.fail_after(10):
            await sio.connect(srv.http, namespaces=["/greet"], transports=["websocket"], wait_timeout=5,
                              socketio_path="/realtime/socket.io")
            try:
                while len(seen) < 2:
                    await anyio.sleep(0.01)
            finally:
                await sio.disconnect()
        assert seen == [1, 2]
