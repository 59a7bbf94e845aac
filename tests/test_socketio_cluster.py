"""Socket.IO clients on two uvicorn nodes sharing one redis-server: a room spans nodes and wires."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from starlette_realtime.client import RealtimeClient
from tests.conftest import ROOT, need
from tests.procs import Node, RedisServer

pytestmark = [pytest.mark.redis]


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    with RedisServer() as redis:
        secret = secrets.token_hex(16)
        env = {"REDIS_URL": redis.url, "SECRET": secret}
        started = [Node("tests.socketio.app:node", {**env, "NODE_ID": f"sio{i}"}) for i in range(2)]
        try:
            for node in started:
                node.start()
            yield started
        finally:
            for node in started:
                node.terminate(5)


async def test_a_room_spans_two_nodes_and_both_wires(nodes: list[Node]) -> None:
    import socketio  # type: ignore[import-untyped]

    a = socketio.AsyncClient(reconnection=False)  # WebSocket-only, on node 0
    b = socketio.AsyncClient(reconnection=False)  # polling then upgrade, on node 1
    got: dict[str, list[Any]] = {"a": [], "b": [], "ours": []}
    a.on("said", got["a"].append)
    b.on("said", got["b"].append)
    with anyio.fail_after(30):
        await a.connect(nodes[0].http, transports=["websocket"], wait_timeout=10)
        await b.connect(nodes[1].http, wait_timeout=10)
        async with RealtimeClient(nodes[1].url + "/") as ours:
            ours.on("said", got["ours"].append)
            for client in (a, b):
                assert await client.call("join", "across", timeout=5) == ["across"]
            assert await ours.call("join", "across", timeout=5) == ["across"]
            await a.call("say", ("across", "from node 0"), timeout=5)
            await ours.call("say", ["across", "from node 1"], timeout=5)
            while any(len(v) < 2 for v in got.values()):
                await anyio.sleep(0.02)
        await a.disconnect()
        await b.disconnect()
    expected = [{"text": "from node 0"}, {"text": "from node 1"}]
    assert got == {"a": expected, "b": expected, "ours": expected}


def test_socketio_client_in_node_across_two_nodes(nodes: list[Node]) -> None:
    need("node", "socket.io-client")
    node = shutil.which("node")
    assert node is not None
    run = subprocess.run(
        [node, "cluster.mjs", nodes[0].http, nodes[1].http],
        cwd=ROOT / "tests" / "socketio",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def recovering_nodes() -> Iterator[list[Node]]:
    with RedisServer() as redis:
        env = {"REDIS_URL": redis.url, "SECRET": secrets.token_hex(16), "SOCKETIO_RECOVERY": "1"}
        started = [Node("tests.socketio.app:node", {**env, "NODE_ID": f"rec{i}"}) for i in range(2)]
        try:
            for node in started:
                node.start()
            yield started
        finally:
            for node in started:
                node.terminate(5)


@pytest.fixture
def recovering_pair(recovering_nodes: list[Node]) -> Iterator[list[Node]]:
    """The two recovering nodes; one a test killed is started again afterwards (same port)."""
    yield recovering_nodes
    for node in recovering_nodes:
        if node.proc is None or node.proc.poll() is not None:
            node.start()


@pytest.mark.parametrize("how", ["cut", "kill"])
@pytest.mark.parametrize("mode", ["websocket", "polling"])
def test_socketio_client_reconnects_to_the_other_node_by_itself_and_is_recovered(
    recovering_pair: list[Node], mode: str, how: str
) -> None:
    """socket.io-client behind one address (a TCP proxy in the script) that moves from node 0 to node 1.

    The client's transport is dropped while its room streams: every proxied connection closed (``cut``, node 0 up)
    or node 0 SIGKILLed (``kill``).  socket.io-client reconnects by itself through the same address, now leading to
    node 1, presents its pid and offset, and must see ``socket.recovered === true``, its socket id kept, node 1
    serving it, and every message once, in order.
    """
    need("node", "socket.io-client")
    node = shutil.which("node")
    assert node is not None
    first, second = recovering_pair
    assert first.proc is not None
    run = subprocess.run(
        [node, "recovery_cluster.mjs", first.http, second.http, mode, how, str(first.proc.pid), "200"],
        cwd=ROOT / "tests" / "socketio",
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"connects":[false,true]' in run.stdout
