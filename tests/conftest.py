"""Shared fixtures: real uvicorn servers on free loopback ports, and :func:`need` for the real parts tests use."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
#: ``.ci/run`` exports ``CI=true``: there a missing part is a broken setup, and its tests fail instead of skipping.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"
# A documented time bound (link timeout + one heartbeat, reconnect cap + connect, ...) is asserted with this much
# room: a loaded 2-core CI machine stretches every timer, and a broken mechanism misses its bound by far more
# (it never fires, or waits for a fixed time-out several times as long).
LOAD_MARGIN = 2.0


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


#: Every real part a test may need: how to tell it is here, and how to install it.
PARTS: dict[str, tuple[Callable[[], bool], str]] = {
    "redis-server": (lambda: shutil.which("redis-server") is not None, "apt-get install -y redis-server"),
    "chromium": (lambda: os.path.exists(CHROMIUM), "apt-get install -y chromium"),
    "node": (lambda: shutil.which("node") is not None, "apt-get install -y nodejs"),
    "nginx": (lambda: shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"),
              "apt-get install -y nginx"),
    "npm packages": (lambda: (ROOT / "benchmarks" / "node" / "node_modules" / "socket.io").is_dir(),
                     "cd benchmarks/node && npm ci"),
    "socket.io-client": (lambda: (ROOT / "tests" / "socketio" / "node_modules" / "socket.io-client").is_dir(),
                         "cd tests/socketio && npm ci"),
    "contract npm packages": (lambda: all((ROOT / "tests" / "contract" / "node_modules" / p / "package.json").is_file()
                                           for p in ("@asyncapi/parser", "typescript", "socket.io-client")),
                              "cd tests/contract && npm ci --ignore-scripts"),
    "playwright": (_module("playwright"), "pip install -e '.[dev]'"),
    "picows": (_module("picows"), "pip install -e '.[bench]'"),
}


def need(*parts: str) -> None:
    """Stop the calling test (or fixture) when a real part it needs is missing.

    In CI (``CI=true``) the test fails with what to install; elsewhere it is skipped, and
    pytest's summary (``-ra``) lists why.  Call it before importing the part.
    """
    missing = [f"{name} ({PARTS[name][1]})" for name in parts if not PARTS[name][0]()]
    if not missing:
        return
    message = "missing " + ", ".join(missing)
    if IN_CI:
        pytest.fail(message + " -- CI must install it", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server in a background thread (its own event loop)."""

    def __init__(self, app: Any, *, ws: str = "websockets-sansio", **options: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ws=ws, log_level="warning", lifespan="on", **options
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        asyncio.run(main())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A real local Redis Cluster, three masters and three replicas (``tests/redis_cluster.py``)."""
    from redis_cluster import redis_cluster_fixture

    yield from redis_cluster_fixture()


#: What a test's marker says it needs (``pytest.mark.redis``, ``pytest.mark.browser``).
MARKED_PARTS = {"redis": ("redis-server",), "browser": ("chromium", "playwright")}


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: a marked test whose part is missing fails in CI, else is skipped.
    for marker, parts in MARKED_PARTS.items():
        if item.get_closest_marker(marker) is not None:
            need(*parts)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: Any) -> None:
    # Every async test runs on anyio's asyncio backend without a marker of its own.
    if inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


class ManualClock:
    """A clock that moves only when a test says so: ``Limits(clock=...)``, ``MemoryBackend(clock=...)``.

    Reading it from another thread (a ServerThread's loop) is safe: it is one float.
    """

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __repr__(self) -> str:
        return f"ManualClock({self.now})"


async def eventually(predicate: Callable[[], object], timeout: float = 5.0, message: str | None = None) -> None:
    """Wait until ``predicate()`` holds (checked every 10 ms); fail saying what was awaited after ``timeout``.

    For what a real process (a server, a peer) does in its own time; ``message`` defaults to
    where the predicate was written.
    """
    try:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.01)
    except TimeoutError:
        if message is None:
            code = getattr(predicate, "__code__", None)
            where = f"{Path(code.co_filename).name}:{code.co_firstlineno}" if code is not None else repr(predicate)
            message = f"the condition at {where}"
        raise AssertionError(f"timed out after {timeout} s waiting for {message}") from None


def wait_until(predicate: Any, timeout: float = 5.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.01)
