"""The dedup contract over a real socket: a call whose reply is lost in an abrupt drop resolves, after the
client's resend on a new WebSocket, with the handler's real value or real error -- and the handler ran once.

Also over real uvicorn: a WebSocket that never opens a namespace is closed with 4007, and the mount path
without a trailing slash opens.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
import websockets
from conftest import need, serve
from starlette.applications import Starlette

from starlette_realtime import Connection, HandlerError, RealtimeEndpoint, RealtimeRouter, on_event, status
from starlette_realtime.client import RealtimeClient
from starlette_realtime.exceptions import AckError

ROOT = Path(__file__).resolve().parent.parent


class Ledger:
    """What the server's handlers did, read by the test from another thread."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.runs: dict[str, int] = {}
        self.lock = threading.Lock()

    def ran(self, name: str) -> None:
        with self.lock:
            self.runs[name] = self.runs.get(name, 0) + 1


def make_app(ledger: Ledger, **options: Any) -> tuple[Starlette, RealtimeRouter]:
    class Pay(RealtimeEndpoint):
        namespace = "/pay"

        @on_event("value")
        async def value(self, conn: Connection, delay: float) -> int:
            ledger.started.set()
            await anyio.sleep(delay)
            ledger.ran("value")
            return 42

        @on_event("fail")
        async def fail(self, conn: Connection, delay: float) -> int:
            ledger.started.set()
            await anyio.sleep(delay)
            ledger.ran("fail")
            raise HandlerError("nope", "declined")

        @on_event("slow_concurrent", concurrent=True)
        async def slow_concurrent(self, conn: Connection, delay: float) -> dict[str, int]:
            ledger.started.set()
            await anyio.sleep(delay)
            ledger.ran("slow_concurrent")
            return {"paid": 7}

    realtime = RealtimeRouter([Pay], **options)
    app = Starlette(lifespan=realtime.lifespan)
    realtime.mount(app, "/realtime")
    return app, realtime


async def wait_started(ledger: Ledger) -> None:
    with anyio.fail_after(10, shield=False):
        while not ledger.started.is_set():
            await asyncio.sleep(0.005)


CASES = [
    ("value", 0.05, 42),
    ("value", 0.6, 42),
    ("fail", 0.05, "nope"),
    ("fail", 0.6, "nope"),
    ("slow_concurrent", 0.6, {"paid": 7}),
]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize(("event", "delay", "expected"), CASES)
async def test_python_client_lost_reply_resolves_with_the_real_answer(
    encoding: str, event: str, delay: float, expected: Any
) -> None:
    ledger = Ledger()
    app, _ = make_app(ledger)
    with serve(app) as srv:
        client = RealtimeClient(
            srv.url + "/realtime", namespaces=["/pay"], encoding=encoding, reconnection_delay=0.05,
            reconnection_delay_max=0.2,
        )
        async with client:
            task = asyncio.ensure_future(client.call(event, delay, namespace="/pay", timeout=20))
            await wait_started(ledger)
            client.kill_transport()  # the reply, if any, goes to a dead socket
            with anyio.fail_after(20):
                if isinstance(expected, str):
                    with pytest.raises(AckError) as info:
                        await task
                    assert info.value.code == expected
                else:
                    assert await task == expected
            assert client.recovered("/pay")
        assert ledger.runs == {event: 1}, "the handler must run once, whatever the drop"


async def test_a_socket_that_never_connects_is_closed_with_4007() -> None:
    ledger = Ledger()
    app, _ = make_app(ledger, connect_timeout=0.6, ping_interval=0.2, ping_timeout=5.0)
    with serve(app) as srv:
        async with websockets.connect(srv.url + "/realtime", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            hello = json.loads(await ws.recv())
            assert hello[0] == 0
            pings = 0
            with anyio.fail_after(10):
                try:
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame == [7]:  # answered pings do not keep it open
                            pings += 1
                            await ws.send("[8]")
                except websockets.ConnectionClosed as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == status.WS_4007_CONNECT_TIMEOUT
            assert pings >= 1


@pytest.mark.parametrize("path", ["/realtime", "/realtime/"])
async def test_the_mount_path_opens_with_and_without_a_slash(path: str) -> None:
    app, _ = make_app(Ledger())
    with serve(app) as srv:
        async with websockets.connect(srv.url + path, subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            with anyio.fail_after(5):
                assert json.loads(await ws.recv())[0] == 0  # HELLO
                await ws.send(json.dumps([1, "/pay", None]))
                assert json.loads(await ws.recv())[0] == 2  # CONNECTED


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_browser_client_in_node_lost_reply_resolves_with_the_real_answer(encoding: str) -> None:
    need("node", "socket.io-client")  # its install brings the `ws` package the script uses as WebSocket
    ledger = Ledger()
    app, _ = make_app(ledger)
    node = shutil.which("node")
    assert node is not None
    with serve(app) as srv:
        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [node, str(ROOT / "tests" / "e2e_js" / "lost_reply.mjs"), srv.url + "/realtime", encoding],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )

        proc = await anyio.to_thread.run_sync(run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {"value": 42, "fail": "nope", "slow_concurrent": {"paid": 7}}
    assert ledger.runs == {"value": 1, "fail": 1, "slow_concurrent": 1}
