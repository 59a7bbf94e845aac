"""What every part of the benchmarks shares: paths, the CPU pinning, the server stack, /proc readings, foreign load.

The method (benchmarks/README.md): one server process pinned to the first CPU, the load clients pinned to the second,
a fresh server process for every run, servers interleaved over the repeats, medians reported.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVERS_DIR = BENCH_DIR / "servers"
NODE_DIR = BENCH_DIR / "node"
RESULTS_DIR = BENCH_DIR / "results"
TMP_DIR = RESULTS_DIR / "tmp"
HOST = "127.0.0.1"
ROOM = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

_AVAILABLE_CPUS = sorted(os.sched_getaffinity(0))
if len(_AVAILABLE_CPUS) >= 2:
    SERVER_CPU, CLIENT_CPU = _AVAILABLE_CPUS[0], _AVAILABLE_CPUS[1]
else:  # a one-core box: no pinning (figures are then meaningless, smoke still works)
    SERVER_CPU = CLIENT_CPU = None

# Identical uvicorn settings for every Python server (performance.md: compare like with like).
UVICORN_ARGS = [
    "--host", HOST, "--workers", "1", "--loop", "uvloop", "--ws", "websockets-sansio",
    "--log-level", "warning", "--no-access-log", "--ws-ping-interval", "0", "--ws-max-size", "1048576",
    "--backlog", "2048", "--timeout-graceful-shutdown", "2",
]



#: --asgi-server / --ws: the Python servers' ASGI server and uvicorn's WebSocket implementation (the stack
#: comparison of docs/benchmarks.md); the defaults are the like-for-like settings above.
@dataclass
class Stack:
    """The Python servers' stack and profiling, set once from the command line (--asgi-server, --ws, --profile)."""

    asgi_server: str = "uvicorn"
    #: uvicorn's WebSocket implementation, or a key of WS_IMPORT_PATHS.
    ws: str = "websockets-sansio"
    #: --profile DIR: py-spy on every Python server (process.Server._start_profiler); --profile-rate samples/s.
    profile_dir: Path | None = None
    profile_rate: int = 200


STACK = Stack()
#: --ws names that are not uvicorn's own: the library's pre-framed protocol (docs/deployment.md, "Fast path").
WS_IMPORT_PATHS = {"preframed": "starlette_realtime.fastpath.uvicorn:PreframedProtocol"}


def uvicorn_args(ws: str | None = None) -> list[str]:
    """UVICORN_ARGS with the WebSocket implementation of the stack, or ``ws`` (a server that fixes its own)."""
    args = list(UVICORN_ARGS)
    ws = ws or STACK.ws
    args[args.index("--ws") + 1] = WS_IMPORT_PATHS.get(ws, ws)
    return args


def stack_label() -> str:
    if STACK.asgi_server == "uvicorn":
        return f"uvicorn {STACK.ws} + uvloop"
    return f"{STACK.asgi_server} + uvloop"


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_busy_seconds(cpu: int | None) -> float:
    """Busy (non-idle) seconds of one CPU since boot, from /proc/stat."""
    if cpu is None:
        return 0.0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return 0.0


def machine_busy_seconds() -> float:
    """Busy seconds of the server's and the clients' CPUs together."""
    if SERVER_CPU is None or CLIENT_CPU is None:
        return 0.0
    return cpu_busy_seconds(SERVER_CPU) + cpu_busy_seconds(CLIENT_CPU)


def other_cpu_snapshot(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (own + reaped children) of every process on the machine except ours, by pid."""
    out: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (int(v[11]) + int(v[12]) + int(v[13]) + int(v[14])) / CLK_TCK
    return out


class ForeignLoad:
    """How much CPU other processes (other jobs on a shared machine) used between start() and stop(), in cores.
    Counted per process rather than from /proc/stat, where interrupt time caused by our own traffic on an idle core
    would look foreign."""

    def __init__(self, *pids: int):
        self.exclude = {os.getpid(), *pids}

    def start(self) -> ForeignLoad:
        self.t0 = time.monotonic()
        self.s0 = other_cpu_snapshot(self.exclude)
        return self

    def stop(self) -> float:
        s1 = other_cpu_snapshot(self.exclude)
        used = sum(max(0.0, v - self.s0.get(pid, 0.0)) for pid, v in s1.items())
        return used / max(1e-6, time.monotonic() - self.t0)


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until our two cores are nearly idle for a 1 s sample; returns the last busy level."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_busy_seconds() - b0) / (time.monotonic() - t0)
        if busy <= threshold or time.monotonic() >= deadline:
            return busy


_ip_counter = int(time.time()) % 200


def next_src_ip() -> str:
    """Rotate source addresses over 127.0.0.2-254 so that TIME_WAIT sockets of earlier runs never exhaust ports."""
    global _ip_counter
    _ip_counter = (_ip_counter + 1) % 253
    return f"127.0.0.{_ip_counter + 2}"


def sum_counts(dicts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def pctl(values: Any, qs: list[float]) -> list[float | None]:
    import numpy as np

    a = np.frombuffer(values, dtype=np.float64) if isinstance(values, (bytes, bytearray)) else np.asarray(values)
    if a.size == 0:
        return [None for _ in qs]
    return [float(x) for x in np.percentile(a, qs)]


def cat_bytes(chunks: list[bytes]) -> bytes:
    return b"".join(chunks)


