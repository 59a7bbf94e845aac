"""Smoke test of the benchmark harness: tiny sizes, correctness only (every connection opened and kept, every
message delivered in order, every ack answered), never timings.

Runs each workload's --smoke mode against raw Starlette, python-socketio, the rt.v1 protocol mock, ours and Node
socket.io (`npm ci` in benchmarks/node), then the cluster workload (ours on 2-4 nodes on Redis) and capacity_cluster
(ours as several processes on Redis) and the soak (benchmarks/soak.py --smoke).  A part that is missing (picows,
node, the npm packages, redis-server) fails its test in CI (``CI=true``) and skips it elsewhere, with what to install
(``conftest.need``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import need  # noqa: E402  (the suite's one guard for missing parts)

#: Every Python server runs in every smoke test: a server that cannot start fails the harness, and so the test.
PYTHON_SERVERS = "raw,socketio,rtmock,ours,ours-fast"


@pytest.fixture(autouse=True)
def _picows() -> None:
    need("picows")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )


@pytest.mark.parametrize("workload", ["capacity", "fanout", "ack"])
def test_smoke(workload: str) -> None:
    _run([sys.executable, "-m", "benchmarks.harness", workload, "--smoke", "--servers", PYTHON_SERVERS])


@pytest.mark.parametrize("workload", ["capacity", "fanout", "ack"])
def test_smoke_node(workload: str) -> None:
    """Node socket.io, the JavaScript peer (``npm ci`` in benchmarks/node)."""
    need("node", "npm packages")
    _run([sys.executable, "-m", "benchmarks.harness", workload, "--smoke", "--servers", "node"])


def test_smoke_hypercorn() -> None:
    """The stack comparison's other ASGI server: raw Starlette and ours on hypercorn (its worker is measured)."""
    out = BENCH / "results" / "tmp" / "fanout-smoke-hypercorn"
    _run([sys.executable, "-m", "benchmarks.harness", "fanout", "--smoke", "--servers", "raw,ours",
          "--asgi-server", "hypercorn", "--out", str(out)])
    # The worker process is the one measured (hypercorn also starts multiprocessing's resource tracker).
    # The tracker is a bare interpreter (~10 MB); the worker has the app, uvloop and Starlette loaded.
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert runs and all(run["server_rss_kib"] > 20_000 for run in runs), [r["server_rss_kib"] for r in runs]


def test_smoke_cluster() -> None:
    """Fan-out over 3 nodes of ours on one redis-server: every message reaches every receiver, in order."""
    need("redis-server")
    _run([sys.executable, "-m", "benchmarks.harness", "cluster", "--smoke", "--servers", "ours"])


def test_smoke_capacity_cluster() -> None:
    """Idle connections over 2 processes of ours on Redis: all open, heartbeats answered, all answer afterwards."""
    need("redis-server")
    _run([sys.executable, "-m", "benchmarks.capacity_cluster", "--smoke"])


def test_smoke_soak() -> None:
    """The soak benchmark for a few seconds on memory and on Redis: churn, drops without a close frame through the
    fault proxy, acked emits handled exactly once, every broadcast at every stayer, links back to the stayers."""
    need("redis-server")
    _run([sys.executable, "-m", "benchmarks.soak", "--smoke"])


def test_smoke_reconnect_storm() -> None:
    """A node on Redis restarted under 20 followers: every one resumes, recovered (the script exits non-zero if not)."""
    need("redis-server")
    out = BENCH / "results" / "tmp" / "reconnect_storm-smoke.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "benchmarks.reconnect_storm", "--clients", "20", "--procs", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["recovered"] == 20 and result["errors"] == 0, result
