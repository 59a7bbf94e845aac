"""Every fenced Python block of README.md and docs/*.md runs as a reader would run it.

A block without a marker is compiled and executed in a fresh module (top-level
``await`` allowed, as in ``python -m asyncio``).  Markers (``tests/docblocks.py``,
documented in docs/testing.md) say when a block continues the previous one, is a
server to start, is a client script to run against it, or is not meant to run.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import linecache
import logging
import os
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docblocks import ROOT, Block, blocks, pages, parse_marker
from procs import Node

#: Seconds one block may run (a client block without ``stop=``, an in-process block).
BLOCK_TIMEOUT = 60.0
#: Addresses the docs use for "your server"; client blocks get the test server's instead.
LOCAL_ADDRESSES = ("127.0.0.1:8000", "localhost:8000")
#: What each page ran, for the count at the end: page -> (blocks run, blocks skipped).
COUNTS: dict[str, tuple[int, int]] = {}


@contextlib.contextmanager
def time_limit(seconds: float, where: str) -> Iterator[None]:
    """Interrupt a synchronous block that runs too long (the tests run in the main thread)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{where}: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Undo what a block does to logging (the observability page configures handlers)."""
    loggers = [logging.getLogger(), logging.getLogger("starlette_realtime")]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


class PageRunner:
    """Runs the blocks of one page in order; owns the page's server and temporary modules."""

    def __init__(self, page: Path, tmp: Path) -> None:
        self.page = page
        self.tmp = tmp
        self.namespace: dict[str, Any] | None = None
        #: Namespaces of blocks that name their file (``# chat.py``), for ``continue in=chat.py``.
        self.files: dict[str, dict[str, Any]] = {}
        self.server: Node | None = None
        self.modules: list[str] = []
        self.ran = 0
        self.skipped = 0

    def run(self) -> None:
        for block in blocks(self.page):
            if block.mode == "skip":
                self.skipped += 1
                continue
            try:
                if block.mode == "client":
                    self.run_client(block)
                else:
                    if block.mode == "server":
                        self.start_server(block)
                    self.run_here(block, fresh=block.mode != "continue")
            except Exception as exc:
                raise AssertionError(
                    f"{block.where}: {type(exc).__name__}: {exc}\n"
                    "Fix the snippet so that it runs as pasted, or mark it: see 'Code blocks in the docs' in "
                    "docs/testing.md"
                ) from exc
            self.ran += 1

    # In this process ---------------------------------------------------------

    def run_here(self, block: Block, *, fresh: bool) -> None:
        target = block.options.get("in")
        if target is not None:
            assert target in self.files, f"{block.where}: no block named {target} before it on the page"
            self.namespace = self.files[target]
        elif fresh or self.namespace is None:
            # A real module, so that annotations resolve as they would in the reader's file.
            name = f"docs_block_{len(self.modules)}"
            module = types.ModuleType(name)
            module.__file__ = str(self.tmp / f"{name}.py")
            sys.modules[name] = module
            self.modules.append(name)
            self.namespace = module.__dict__
        if block.file_name is not None and target is None:
            self.files[block.file_name] = self.namespace
        # Tracebacks show the block's lines.
        linecache.cache[block.where] = (len(block.source), None, block.source.splitlines(True), block.where)
        code = compile(block.source, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        with time_limit(BLOCK_TIMEOUT, block.where):
            result = eval(code, self.namespace)
            if inspect.iscoroutine(result):
                asyncio.run(asyncio.wait_for(result, BLOCK_TIMEOUT))

    # Servers and clients -------------------------------------------------------

    def start_server(self, block: Block) -> None:
        self.stop_server()
        name = block.module_name
        (self.tmp / f"{name}.py").write_text(block.source)
        node = Node(f"{name}:app", env={"PYTHONPATH": os.pathsep.join([str(self.tmp), str(ROOT)])})
        self.server = node
        try:
            node.start()
        except RuntimeError as exc:
            raise AssertionError(f"{block.where}: the server did not start: {exc}\n{node.output()}") from None
        path = block.options.get("get")
        if path is not None:
            want = int(block.options.get("status", "200"))
            try:
                with urllib.request.urlopen(node.http + path, timeout=10) as response:
                    got = response.status
            except urllib.error.HTTPError as exc:
                got = exc.code
            assert got == want, f"{block.where}: GET {path} answered {got}, not {want}\n{node.output()}"

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.terminate(10)
            self.server = None

    def run_client(self, block: Block) -> None:
        assert self.server is not None, f"{block.where}: a client block needs a server block before it"
        source = block.source
        for address in LOCAL_ADDRESSES:
            source = source.replace(address, f"127.0.0.1:{self.server.port}")
        script = self.tmp / f"client_{block.line}.py"
        script.write_text(source)
        copies = int(block.options.get("copies", "1"))
        stop = float(block.options["stop"]) if "stop" in block.options else None
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.tmp), str(ROOT)]), "PYTHONUNBUFFERED": "1"}
        procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        try:
            for i in range(copies):
                if i:
                    time.sleep(1.0)  # a deterministic order: the later copy joins after the earlier one
                out = self.tmp / f"client_{block.line}_{i}.out"
                with out.open("wb") as sink:
                    proc = subprocess.Popen(
                        [sys.executable, str(script)], cwd=self.tmp, env=env, stdout=sink, stderr=subprocess.STDOUT
                    )
                procs.append((proc, out))
            if stop is not None:
                time.sleep(stop)
            for proc, _ in procs:
                if stop is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # what the reader's Ctrl-C does
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    continue
                try:
                    proc.wait(BLOCK_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise AssertionError(f"{block.where}: still running after {BLOCK_TIMEOUT} s") from None
                if proc.returncode != 0:
                    raise AssertionError(
                        f"{block.where}: exited with {proc.returncode}:\n{self.outputs(procs)}\n"
                        f"server log:\n{self.server.output()}"
                    )
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        expect = block.options.get("expect")
        if expect is not None:
            assert expect in self.outputs(procs), (
                f"{block.where}: {expect!r} not in what it printed:\n{self.outputs(procs)}\n"
                f"server log:\n{self.server.output()}"
            )

    @staticmethod
    def outputs(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> str:
        return "\n".join(f"--- copy {i}:\n{out.read_text(errors='replace')}" for i, (_, out) in enumerate(procs))

    def close(self) -> None:
        self.stop_server()
        for name in self.modules:
            sys.modules.pop(name, None)


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_page_blocks_run(page: Path, tmp_path: Path) -> None:
    runner = PageRunner(page, tmp_path)
    with logging_restored():
        try:
            runner.run()
        finally:
            runner.close()
    COUNTS[page_id(page)] = (runner.ran, runner.skipped)


def test_markers() -> None:
    assert parse_marker("skip (needs a GPU)", "x") == ("skip", "needs a GPU", {})
    assert parse_marker('client copies=2 stop=3 expect="said: hi"', "x") == (
        "client", "", {"copies": "2", "stop": "3", "expect": "said: hi"}
    )
    with pytest.raises(ValueError, match="says why"):
        parse_marker("skip", "x")
    with pytest.raises(ValueError, match="unknown docs-test marker"):
        parse_marker("skipp (typo)", "x")
    with pytest.raises(ValueError, match="unknown docs-test marker"):
        parse_marker("sever", "x")


def test_count_of_blocks_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many blocks ran (after the page tests, when the whole file runs)."""
    every = {page_id(p): blocks(p) for p in pages()}
    if set(COUNTS) != set(every):
        pytest.skip("counts blocks only when every page ran (run the whole file)")
    ran = sum(r for r, _ in COUNTS.values())
    skipped = sum(s for _, s in COUNTS.values())
    with capsys.disabled():
        print(f"\ndocs: {ran} Python blocks run, {skipped} skipped with a reason, from {len(every)} pages")
        for page, (r, s) in sorted(COUNTS.items()):
            print(f"  {page}: {r} run, {s} skipped")
    assert ran + skipped == sum(len(b) for b in every.values())
    assert ran > skipped
