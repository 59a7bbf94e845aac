"""A real nginx in front of three nodes, with the configuration docs/deployment.md shows (taken from the page itself):
clients connect through nginx, a node is SIGKILLed, its clients land on the other nodes and recover, nothing lost."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, need
from procs import Node, RedisServer, _wait_port

from starlette_realtime.client import RealtimeClient
from starlette_realtime.frames import Frame, Hello

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NS = "/feed"
ROOM = "news"
CLIENTS = 12
TOTAL = 900


def nginx_config_from_docs(port: int, upstreams: list[int], prefix: Path) -> str:
    """The ``nginx`` block of docs/deployment.md, pointed at loopback ports, inside a minimal main config."""
    page = (ROOT / "docs" / "deployment.md").read_text()
    match = re.search(r"```nginx\n(.*?)```", page, re.S)
    assert match, "docs/deployment.md has no nginx block"
    block = match.group(1)
    servers = iter(upstreams)
    block = re.sub(r"server \d+\.\d+\.\d+\.\d+:\d+", lambda _: f"server 127.0.0.1:{next(servers)}", block)
    assert next(servers, None) is None, "the docs' upstream has fewer servers than the test's nodes"
    block = re.sub(r"listen 443 ssl;", f"listen 127.0.0.1:{port};", block)
    block = "\n".join(line for line in block.splitlines() if "ssl_" not in line)
    return f"""
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{block}
}}
"""


class Nginx:
    def __init__(self, upstreams: list[int]) -> None:
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="rt-nginx-"))
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(nginx_config_from_docs(self.port, upstreams, self.prefix))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        check = subprocess.run([binary, "-t", "-c", str(self.conf), "-p", str(self.prefix)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([binary, "-c", str(self.conf), "-p", str(self.prefix)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, timeout=10, proc=self.proc)  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.prefix, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/"


@pytest.fixture
def behind_nginx() -> Iterator[tuple[Nginx, list[Node]]]:
    need("nginx")
    with RedisServer() as redis:
        secret = secrets.token_hex(16)
        nodes = [Node("cluster_app:app", {"REDIS_URL": redis.url, "NODE_ID": name, "SECRET": secret})
                 for name in ("a", "b", "c")]
        try:
            for node in nodes:
                node.start()
            with Nginx([n.port for n in nodes]) as nginx:
                yield nginx, nodes
        finally:
            for node in nodes:
                node.terminate(5)


async def test_a_node_killed_behind_nginx_loses_nothing(behind_nginx: tuple[Nginx, list[Node]]) -> None:
    nginx, (a, b, c) = behind_nginx
    got: list[list[int]] = [[] for _ in range(CLIENTS)]
    nodes: list[str] = ["" for _ in range(CLIENTS)]  # the node each client's socket reached (its HELLO)
    subs: list[RealtimeClient] = []

    def track(i: int) -> Any:
        def on_frame(frame: Frame) -> None:
            if type(frame) is Hello:
                nodes[i] = frame.node
        return on_frame

    # The publisher talks to node C directly, so that killing A never interrupts a publish.
    pub = RealtimeClient(c.url + "/realtime", namespaces=[NS])
    try:
        async with asyncio.timeout(30):
            for i in range(CLIENTS):
                sub = RealtimeClient(nginx.url, namespaces=[NS], reconnection_delay=0.05, reconnection_delay_max=0.3)
                sub.on("n", got[i].append, namespace=NS)
                sub.on_frame(track(i))
                await sub.connect()
                await sub.call("follow", ROOM, namespace=NS, timeout=10)
                subs.append(sub)
            await pub.connect()
        on_a = [i for i in range(CLIENTS) if nodes[i] == "a"]
        assert on_a, "nginx put no client on node A (least_conn spreads them over the three)"
        for n in range(TOTAL):
            await pub.call("publish", [ROOM, n], namespace=NS, timeout=10)
            if n == TOTAL // 3:
                a.kill()
                killed = time.monotonic()
        deadline = time.monotonic() + 60
        while not all(len(g) >= TOTAL for g in got):
            assert time.monotonic() < deadline, [len(g) for g in got]
            await asyncio.sleep(0.01)
        for i, sub in enumerate(subs):
            assert got[i] == list(range(TOTAL)), f"client {i}: lost or out of order"
            wire = sub.wire_stats.stream(ROOM, NS)
            assert wire.duplicates == 0 and wire.gaps == 0, f"client {i}: {wire}"
            assert nodes[i] in ("b", "c"), f"client {i} is still on {nodes[i]!r}"
            if i in on_a:  # it moved: its session was resumed on another node
                assert sub.recovered(NS), f"client {i} moved off A without recovering"
        print(f"\n[nginx] {len(on_a)} of {CLIENTS} clients moved off the killed node; all delivered "
              f"{time.monotonic() - killed:.1f} s after the kill")
    finally:
        for sub in subs:
            async with asyncio.timeout(10):
                await sub.close()
        async with asyncio.timeout(10):
            await pub.close()
