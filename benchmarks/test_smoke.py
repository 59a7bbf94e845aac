"""Smoke test of the benchmark harness: tiny sizes, correctness only (every connection opened and kept, every
message delivered in order, every ack answered), never timings.

Runs each workload's --smoke mode against raw Starlette, python-socketio, the rt.v1 protocol mock, Node socket.io
when benchmarks/node/node_modules is installed (`npm ci` in benchmarks/node), and ours; with a redis-server on the
PATH also the cluster workload (ours on 2-4 nodes on Redis) and capacity_cluster (ours as several processes on Redis).
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("picows", reason="benchmark client needs picows: pip install -r benchmarks/requirements.txt")

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _servers() -> list[str]:
    servers = ["raw", "socketio", "rtmock"]
    if shutil.which("node") and (BENCH / "node" / "node_modules" / "socket.io").is_dir():
        servers.append("node")
    if "STUB" not in (BENCH / "servers" / "ours.py").read_text():
        try:
            mod = importlib.import_module("starlette_realtime")
            if all(hasattr(mod, n) for n in ("RealtimeRouter", "RealtimeEndpoint", "on_event", "Connection")):
                servers.append("ours")
        except ImportError:
            pass
    return servers


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )


@pytest.mark.parametrize("workload", ["capacity", "fanout", "ack"])
def test_smoke(workload: str) -> None:
    _run([sys.executable, "-m", "benchmarks.harness", workload, "--smoke", "--servers", ",".join(_servers())])


needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on the PATH")


@needs_redis
def test_smoke_cluster() -> None:
    """Fan-out over 3 nodes of ours on one redis-server: every message reaches every receiver, in order."""
    _run([sys.executable, "-m", "benchmarks.harness", "cluster", "--smoke", "--servers", "ours"])


@needs_redis
def test_smoke_capacity_cluster() -> None:
    """Idle connections over 2 processes of ours on Redis: all open, heartbeats answered, all answer afterwards."""
    _run([sys.executable, "-m", "benchmarks.capacity_cluster", "--smoke"])

