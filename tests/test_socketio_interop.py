"""The official Socket.IO clients against our endpoints over real uvicorn.

- ``socket.io-client`` 4.8 in Node (tests/socketio/interop.mjs), in its default configuration (HTTP long-polling,
  then the upgrade to WebSocket) and WebSocket-only;
- python-socketio's ``AsyncClient``, next to our own ``RealtimeClient`` in the same room.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from starlette_realtime.client import RealtimeClient
from starlette_realtime.socketio import SocketIOOptions
from tests.conftest import ROOT, ServerThread, need, serve
from tests.socketio.app import make_app

NODE_DIR = ROOT / "tests" / "socketio"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app, _ = make_app(ping_interval=2.0, ping_timeout=2.0)
    with serve(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def preframed_server() -> Iterator[ServerThread]:
    """Our uvicorn protocol that takes pre-framed broadcasts (room emits bypass the wire's send)."""
    from starlette_realtime.fastpath.uvicorn import PreframedProtocol

    app, _ = make_app(ping_interval=2.0, ping_timeout=2.0)
    with serve(app, ws=PreframedProtocol) as srv:
        yield srv


@pytest.mark.parametrize("mode", ["polling", "websocket"])
def test_socketio_client_in_node(server: ServerThread, mode: str) -> None:
    run_node(server, mode)


@pytest.mark.parametrize("mode", ["polling", "websocket"])
def test_socketio_client_in_node_with_preframed_broadcasts(preframed_server: ServerThread, mode: str) -> None:
    run_node(preframed_server, mode)


def run_node(server: ServerThread, mode: str) -> None:
    need("node", "socket.io-client")
    node = shutil.which("node")
    assert node is not None
    run = subprocess.run(
        [node, "interop.mjs", server.http, mode], cwd=NODE_DIR, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("done")
    checks = [line for line in run.stdout.splitlines() if line.startswith("ok ")]
    assert len(checks) == (12 if mode == "polling" else 11), run.stdout


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["websocket"]])
async def test_python_socketio_client(server: ServerThread, transports: list[str]) -> None:
    import socketio  # type: ignore[import-untyped]

    sio = socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []
    sio.on("question", lambda text, n: (text.upper(), n * 2))
    with anyio.fail_after(20):
        await sio.connect(server.http, auth={"token": "abc", "user": "py"}, transports=transports, wait_timeout=5)
        try:
            assert await sio.call("handshake", timeout=5) == {"token": "abc", "user": "py"}
            assert await sio.call("echo", {"a": [1, 2]}, timeout=5) == {"a": [1, 2]}
            assert await sio.call("sum", (6, 7), timeout=5) == (13, 42)
            assert await sio.call("refuse", timeout=5) == {"error": {"code": "nope", "message": "refused on purpose"}}
            name, size, back = await sio.call("upload", ("f.bin", b"\x01\x02\xff"), timeout=5)
            assert (name, size, back) == ("f.bin", 3, b"\xff\x02\x01")
            assert await sio.call("ask", "hi", timeout=5) == ["HI", 4]
        finally:
            await sio.disconnect()

        admin = socketio.AsyncClient(reconnection=False)
        admin.on("connect_error", refused.append, namespace="/admin")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await admin.connect(
                server.http, namespaces=["/admin"], auth={"token": "no"}, transports=transports, wait_timeout=5
            )
        assert refused and refused[0]["message"] == "admin only"
        await admin.disconnect()

        ok = socketio.AsyncClient(reconnection=False)
        await ok.connect(
            server.http, namespaces=["/admin"], auth={"token": "admin"}, transports=transports, wait_timeout=5
        )
        assert await ok.call("whoami", namespace="/admin", timeout=5) == "admin"
        await ok.disconnect()


async def test_a_room_spans_both_wires(server: ServerThread) -> None:
    import socketio

    sio = socketio.AsyncClient(reconnection=False)
    sio_got: list[Any] = []
    sio.on("said", lambda data: sio_got.append(data))
    ours_got: list[Any] = []
    with anyio.fail_after(20):
        await sio.connect(server.http, auth={"user": "sio"}, wait_timeout=5)
        async with RealtimeClient(server.url + "/", auth={"user": "ours"}) as ours:
            ours.on("said", ours_got.append)
            assert await sio.call("join", "mixed", timeout=5) == ["mixed"]
            assert await ours.call("join", "mixed", timeout=5) == ["mixed"]
            await sio.call("say", ("mixed", "from socket.io"), timeout=5)
            await ours.call("say", ["mixed", "from ours"], timeout=5)
            while len(sio_got) < 2 or len(ours_got) < 2:
                await anyio.sleep(0.02)
        await sio.disconnect()
    expected = [{"text": "from socket.io"}, {"text": "from ours"}]
    assert sio_got == expected
    assert ours_got == expected


@pytest.fixture(scope="module")
def recovering_server() -> Iterator[ServerThread]:
    app, _ = make_app(socketio=SocketIOOptions(recovery=True), ping_interval=2.0, ping_timeout=2.0)
    with serve(app) as srv:
        yield srv


@pytest.mark.parametrize("mode", ["polling", "websocket"])
def test_an_abrupt_drop_is_recovered_with_nothing_lost(recovering_server: ServerThread, mode: str) -> None:
    need("node", "socket.io-client")
    node = shutil.which("node")
    assert node is not None
    run = subprocess.run(
        [node, "recovery.mjs", recovering_server.http, mode, "200"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"connects":[false,true]' in run.stdout


async def test_under_a_mount_prefix_clients_use_the_prefixed_path() -> None:
    import socketio
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from starlette_realtime import RealtimeRouter
    from tests.socketio.app import Main

    realtime = RealtimeRouter([Main], socketio=True)
    app = Starlette(routes=[Mount("/rt", realtime)], lifespan=realtime.lifespan)
    with serve(app) as srv:
        for transports in (["polling", "websocket"], ["websocket"]):
            sio = socketio.AsyncClient(reconnection=False)
            with anyio.fail_after(15):
                await sio.connect(srv.http, socketio_path="rt/socket.io", transports=transports, wait_timeout=5)
                assert await sio.call("echo", "prefixed", timeout=5) == "prefixed"
                await sio.disconnect()
