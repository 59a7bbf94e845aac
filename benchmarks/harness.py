"""Benchmark harness for starlette-realtime and its peers.

    python -m benchmarks.harness {capacity,fanout,ack,cluster} [--servers raw,socketio,node,ours] [--repeats 3]
                                 [--smoke]

One server process at a time, pinned to CPU 0; load clients are asyncio+uvloop processes using picows, pinned to
CPU 1, each holding at most --conns-per-proc connections from its own source address 127.0.0.x. Servers are
interleaved (A B C A B C ...) over --repeats, and every run gets a fresh server process. Results (medians and every
raw run) go to benchmarks/results/<workload>.json and .png; --smoke runs tiny sizes, checks only correctness and
writes to benchmarks/results/tmp/.

See benchmarks/README.md for the commands and what each figure means.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import atexit
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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


# ----------------------------------------------------------------------------------------------------------------------
# Servers

#: --asgi-server / --ws: the Python servers' ASGI server and uvicorn's WebSocket implementation (the stack
#: comparison of docs/benchmarks.md); the defaults are the like-for-like settings above.
ASGI_SERVER = "uvicorn"
UVICORN_WS = "websockets-sansio"
#: --ws names that are not uvicorn's own: the library's pre-framed protocol (docs/deployment.md, "Fast path").
WS_IMPORT_PATHS = {"preframed": "starlette_realtime.fastpath.uvicorn:PreframedProtocol"}


def uvicorn_args() -> list[str]:
    args = list(UVICORN_ARGS)
    args[args.index("--ws") + 1] = WS_IMPORT_PATHS.get(UVICORN_WS, UVICORN_WS)
    return args


def stack_label() -> str:
    return "granian + uvloop" if ASGI_SERVER == "granian" else f"uvicorn {UVICORN_WS} + uvloop"


@dataclass(frozen=True)
class ServerSpec:
    key: str
    label: str
    dialect: str  # raw | sio | rt
    path: str
    kind: str  # uvicorn | node
    target: str  # "module:app" in benchmarks/servers, or a script there

    def command(self, port: int) -> list[str]:
        if self.kind == "node":
            return ["node", str(SERVERS_DIR / self.target), str(port), HOST]
        if ASGI_SERVER == "granian":
            # One worker process (granian always runs its workers in child processes: Server.pid finds it),
            # one runtime thread, uvloop; granian has no WebSocket ping of its own to turn off.
            return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
                    "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--log-level", "warning",
                    "--no-access-log", "--backlog", "2048", "--working-dir", str(SERVERS_DIR), self.target]
        return [sys.executable, "-m", "uvicorn", self.target, "--app-dir", str(SERVERS_DIR), "--port", str(port),
                *uvicorn_args()]

    def unavailable(self) -> str | None:
        """Why this server cannot run here, or None."""
        if self.kind == "node":
            if shutil.which("node") is None:
                return "node is not installed"
            if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
                return "run `npm ci` in benchmarks/node first"
        return None


SERVERS: dict[str, ServerSpec] = {
    s.key: s
    for s in [
        ServerSpec("raw", "raw Starlette", "raw", "/ws", "uvicorn", "raw_starlette:app"),
        ServerSpec("socketio", "python-socketio", "sio", "/socket.io/?EIO=4&transport=websocket", "uvicorn",
                   "socketio_server:app"),
        ServerSpec("node", "Node socket.io", "sio", "/socket.io/?EIO=4&transport=websocket", "node",
                   "node_socketio.js"),
        ServerSpec("ours", "starlette-realtime", "rt", "/ws/", "uvicorn", "ours:app"),  # Mount needs the slash
        # ours over its Socket.IO wire, spoken to by the same client as the two socket.io peers.
        ServerSpec("ours-sio", "starlette-realtime (Socket.IO)", "sio", "/socket.io/?EIO=4&transport=websocket",
                   "uvicorn", "ours_socketio:app"),
        # ours on the package of the checkout at BENCH_BASE_TREE: before/after comparisons in one run.
        ServerSpec("ours-base", "starlette-realtime (base)", "rt", "/ws/", "uvicorn", "ours:app"),
        # A few-line stand-in that speaks docs/protocol.md, to test the "rt" dialect before ours exists. Not a peer.
        ServerSpec("rtmock", "rt.v1 mock", "rt", "/ws", "uvicorn", "rt_mock:app"),
    ]
}
DEFAULT_SERVERS = "raw,socketio,node"


#: --profile DIR: run py-spy on every Python server (see Server._start_profiler); --profile-rate samples/s.
PROFILE_DIR: Path | None = None
PROFILE_RATE = 200


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


class Server:
    """One server process in its own process group, pinned to SERVER_CPU. Always stopped, also on errors."""

    live: ClassVar[set[Server]] = set()

    def __init__(self, spec: ServerSpec, env: dict[str, str] | None = None, cpus: set[int] | None = None):
        self.spec = spec
        self.env = env or {}
        # The CPUs it may run on: SERVER_CPU unless given (capacity_cluster spreads its nodes over every core).
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The process that serves (and is measured): the server itself, or granian's worker process."""
        assert self.proc is not None
        return getattr(self, "worker_pid", None) or self.proc.pid

    def _set_affinity(self) -> None:
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)
        else:
            _pin(SERVER_CPU)

    def own_pids(self) -> list[int]:
        """The server's processes (and its profiler's): not foreign load."""
        pids = [self.pid]
        if self.proc is not None:
            pids.append(self.proc.pid)
        if getattr(self, "profiler", None) is not None:
            pids.append(self.profiler.pid)
        return pids

    def _find_worker(self, timeout: float = 15.0) -> None:
        """granian serves from a child process of its supervisor: measure that one."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                kids = []
            if kids:
                self.worker_pid = int(kids[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.spec.key}: granian started no worker process")

    def url(self, host: str = HOST) -> str:
        return f"ws://{host}:{self.port}{self.spec.path}"

    def start(self, timeout: float = 30.0) -> None:
        TMP_DIR.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = TMP_DIR / f"server-{self.spec.key}-{self.port}.log"
        log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        if self.spec.key == "ours-base":
            # The same server file on the package of another checkout (BENCH_BASE_TREE), for before/after runs.
            base = os.environ.get("BENCH_BASE_TREE")
            if not base:
                raise RuntimeError("ours-base needs BENCH_BASE_TREE=<a checkout of the commit to compare with>")
            env["PYTHONPATH"] = os.pathsep.join([base, env["PYTHONPATH"]])
        # `python -m` puts the working directory first on sys.path: the base tree's, for ours-base.
        cwd = os.environ.get("BENCH_BASE_TREE", REPO) if self.spec.key == "ours-base" else REPO
        self.proc = subprocess.Popen(
            self.spec.command(self.port), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self._set_affinity,
        )
        log.close()
        Server.live.add(self)
        self.profiler: subprocess.Popen[bytes] | None = None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.spec.key} server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.spec.key} server did not listen within {timeout}s:\n{self.log_tail()}") from None
                time.sleep(0.05)
        if self.spec.kind == "uvicorn" and ASGI_SERVER == "granian":
            self._find_worker()
        if PROFILE_DIR is not None and self.spec.kind == "uvicorn":
            self._start_profiler()

    def _start_profiler(self) -> None:
        """py-spy on the server for its whole life (--profile DIR): collapsed stacks, CPU samples only (an idle
        event loop is not sampled), --nonblocking so that the server is never paused. Writes DIR/<key>-<port>.txt."""
        assert PROFILE_DIR is not None and self.proc is not None
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        self.profile_path = PROFILE_DIR / f"{self.spec.key}-{self.port}.txt"
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.profiler = subprocess.Popen(
            [pyspy, "record", "--pid", str(self.pid), "--nonblocking", "--rate", str(PROFILE_RATE), "--format",
             "raw", "--output", str(self.profile_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _pin(CLIENT_CPU),
        )

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        if getattr(self, "profiler", None) is not None:
            try:
                self.profiler.wait(20)  # py-spy writes its file when the server exits
            except subprocess.TimeoutExpired:
                self.profiler.kill()
            self.profiler = None
        Server.live.discard(self)


def _stop_all_servers() -> None:
    for srv in list(Server.live):
        try:
            srv.stop()
        except Exception:
            pass


atexit.register(_stop_all_servers)


# ----------------------------------------------------------------------------------------------------------------------
# Client side: dialects and connections (these run inside the worker processes)

try:
    from picows import WSListener, WSMsgType, ws_connect
except ImportError:  # the orchestrator can still print --help; workers need picows
    WSListener = object  # type: ignore[misc,assignment]
    WSMsgType = ws_connect = None  # type: ignore[assignment]

# picows's own default is to use aiofastnet's transports when installed; BENCH_AIOFASTNET=0/1 forces a choice.
USE_AIOFASTNET = None if os.environ.get("BENCH_AIOFASTNET", "") == "" else os.environ["BENCH_AIOFASTNET"] == "1"
_T_KEY = b'"t":'
_S_KEY = b'"s":'


def _json_frag(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


class Dialect:
    """How one kind of server is spoken to. on_text() is on the hot path: bytes prefix tests only."""

    name = ""
    headers: ClassVar[dict[str, str] | None] = None

    def on_connected(self, c: Conn) -> None:
        c.set_ready()

    def on_text(self, c: Conn, b: bytes) -> None:
        raise NotImplementedError

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        raise NotImplementedError

    # strict (smoke) decoding
    def msg_data(self, b: bytes) -> dict[str, Any]:
        raise NotImplementedError

    def ack_data(self, b: bytes) -> Any:
        raise NotImplementedError


class RawDialect(Dialect):
    """benchmarks/servers/raw_starlette.py: ["join"|"publish"|"echo", data, id], ["ack", id, data], ["msg", data]."""

    name = "raw"

    def on_text(self, c: Conn, b: bytes) -> None:
        if b.startswith(b'["msg"'):
            c.on_msg(b)
        elif b.startswith(b'["ack",'):
            c.on_ack(int(b[7:b.index(b",", 7)]), b)
        else:
            c.on_other(b)

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        return f'["{ev}",{data_json},{"null" if ack_id is None else ack_id}]'.encode()

    def msg_data(self, b: bytes) -> dict[str, Any]:
        f = json.loads(b)
        assert f[0] == "msg", f
        return f[1]

    def ack_data(self, b: bytes) -> Any:
        return json.loads(b)[2]


class SioDialect(Dialect):
    """engine.io 4 / socket.io 5 protocol over a plain WebSocket, default namespace "/"."""

    name = "sio"

    def on_connected(self, c: Conn) -> None:
        pass  # wait for the engine.io open packet "0{...}"

    def on_text(self, c: Conn, b: bytes) -> None:
        if b.startswith(b"42"):
            c.on_msg(b)  # the only event a server sends here is "msg"
        elif b.startswith(b"43"):
            c.on_ack(int(b[2:b.index(b"[")]), b)
        elif b == b"2":
            c.send_raw(b"3")  # engine.io ping -> pong
            c.pings += 1
        elif b.startswith(b"40"):
            c.set_ready()
        elif b.startswith(b"0"):
            c.send_raw(b"40")  # engine.io open -> socket.io CONNECT to "/"
        elif b.startswith(b"44"):
            c.fail(f"CONNECT_ERROR {b[:200]!r}")
        else:
            c.on_other(b)

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        return f'42{"" if ack_id is None else ack_id}["{ev}",{data_json}]'.encode()

    def msg_data(self, b: bytes) -> dict[str, Any]:
        f = json.loads(b[2:])
        assert f[0] == "msg", f
        return f[1]

    def ack_data(self, b: bytes) -> Any:
        return json.loads(b[b.index(b"["):])[0]


class RtDialect(Dialect):
    """starlette-realtime, docs/protocol.md, subprotocol rt.v1.json, namespace /bench."""

    name = "rt"
    headers: ClassVar[dict[str, str] | None] = {"Sec-WebSocket-Protocol": "rt.v1.json"}
    NS = "/bench"

    def on_connected(self, c: Conn) -> None:
        c.send_raw(b'[1,"/bench",null]')  # CONNECT; allowed before HELLO

    def on_text(self, c: Conn, b: bytes) -> None:
        if b.startswith(b"[5,"):
            c.on_msg(b)  # EVENT [5,ns,"msg",data,null,room,epoch,offset]
        elif b.startswith(b"[6,"):  # ACK [6,ns,id,data,error]
            i = b.index(b",", 3)
            j = b.find(b",", i + 1)
            if j < 0:
                j = b.index(b"]", i + 1)
            c.on_ack(int(b[i + 1:j]), b)
        elif b.startswith(b"[7"):
            c.send_raw(b"[8]")  # PING -> PONG
            c.pings += 1
        elif b.startswith(b"[2,"):
            c.set_ready()  # CONNECTED
        elif b.startswith(b"[0,"):
            version = json.loads(b)[1]  # HELLO
            if version != 1:
                c.fail(f"protocol version {version}")
        elif b.startswith(b"[3,"):
            c.fail(f"CONNECT_ERROR {b[:200]!r}")
        else:
            c.on_other(b)

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        return f'[5,"/bench","{ev}",{data_json},{"null" if ack_id is None else ack_id}]'.encode()

    def msg_data(self, b: bytes) -> dict[str, Any]:
        f = json.loads(b)
        assert f[0] == 5 and f[1] == self.NS and f[2] == "msg" and f[5] == ROOM, f
        assert isinstance(f[7], int), f
        return f[3] | {"_offset": f[7]}

    def ack_data(self, b: bytes) -> Any:
        f = json.loads(b)
        if len(f) > 4 and f[4]:
            raise AssertionError(f"ack error {f[4]}")
        return f[3] if len(f) > 3 else None


DIALECTS: dict[str, type[Dialect]] = {"raw": RawDialect, "sio": SioDialect, "rt": RtDialect}


class Conn(WSListener):  # type: ignore[misc,valid-type]
    """One client connection. Callbacks only: no task per connection."""

    def __init__(self, worker: Worker, dialect: Dialect):
        self.w = worker
        self.d = dialect
        self.transport: Any = None
        self.ready: asyncio.Future[bool] = worker.loop.create_future()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.ack_cb: Callable[[Conn, int, bytes], None] | None = None
        self.next_id = 1
        self.inflight_id = 0
        self.t_sent = 0.0
        self.next_seq = 0
        self.last_offset = -1
        self.n_msg = 0
        self.pings = 0
        self.paused = False
        self.closed = False
        self.close_code: int | None = None

    # picows callbacks
    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        self._send = transport.send
        self.d.on_connected(self)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        mt = frame.msg_type
        if mt == WSMsgType.TEXT:
            self.d.on_text(self, frame.get_payload_as_bytes())
        elif mt == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self.closed:
            self.closed = True
            self.w.on_closed(self)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed ({self.close_code})"))
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready ({self.close_code})"))

    # helpers for dialects
    def set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(True)

    def fail(self, why: str) -> None:
        if len(self.w.errors) < 20:
            self.w.errors.append(why)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))

    def send_raw(self, b: bytes) -> None:
        self._send(WSMsgType.TEXT, b)

    def send_event(self, ev: str, data_json: str, ack: bool) -> int | None:
        ack_id = None
        if ack:
            ack_id = self.next_id
            self.next_id += 1
        self._send(WSMsgType.TEXT, self.d.event(ev, data_json, ack_id))
        return ack_id

    async def request(self, ev: str, data_json: str, timeout: float) -> bytes:
        ack_id = self.send_event(ev, data_json, True)
        assert ack_id is not None
        fut = self.w.loop.create_future()
        self.pending[ack_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(ack_id, None)

    # inbound
    def on_msg(self, b: bytes) -> None:
        w = self.w
        if self.paused or not w.recording:
            return
        now = time.monotonic()
        i = b.find(_T_KEY)
        j = b.find(b",", i)
        k = b.find(_S_KEY, j)
        seq = int(b[k + 4:b.find(b",", k)])
        w.lat.append(now - float(b[i + 4:j]))
        if seq != self.next_seq:
            w.order_errors += 1
        self.next_seq = seq + 1
        if w.strict:
            w.check_msg(self, b, seq)
        self.n_msg += 1
        w.last_msg = now
        w.total += 1
        if w.total >= w.target and w.done is not None and not w.done.done():
            w.done.set_result(True)

    def on_ack(self, ack_id: int, b: bytes) -> None:
        cb = self.ack_cb
        if cb is not None:
            cb(self, ack_id, b)
            return
        fut = self.pending.get(ack_id)
        if fut is not None and not fut.done():
            fut.set_result(b)

    def on_other(self, b: bytes) -> None:
        self.w.others += 1
        if len(self.w.errors) < 20:
            self.w.errors.append(f"unexpected frame {b[:200]!r}")


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


class Worker:
    """A client process: runs commands from the orchestrator (over a pipe) on its own uvloop."""

    def __init__(self, pipe: Any, results: Any, index: int):
        self.pipe = pipe  # commands in (read from the event loop)
        self.results = results  # replies out (a separate, blocking pipe: replies can be megabytes)
        self.index = index
        self.loop = asyncio.get_running_loop()
        self.conns: list[Conn] = []
        self.dialect: Dialect = RawDialect()
        self.strict = False
        self.errors: list[str] = []
        self.others = 0
        self.closed_count = 0
        self.close_codes: dict[str, int] = {}
        self.recording = False
        self.reset_counters()

    def reset_counters(self) -> None:
        self.lat = array.array("d")
        self.order_errors = 0
        self.content_errors = 0
        self.total = 0
        self.target = 1 << 62
        self.last_msg = 0.0
        self.done: asyncio.Future[bool] | None = None

    def on_closed(self, c: Conn) -> None:
        self.closed_count += 1
        code = str(c.close_code)
        self.close_codes[code] = self.close_codes.get(code, 0) + 1

    def check_msg(self, c: Conn, b: bytes, seq: int) -> None:
        try:
            data = self.dialect.msg_data(b)
            assert data["s"] == seq and isinstance(data["t"], float) and len(data["p"]) == self.pad_len, data
            if "_offset" in data:
                assert data["_offset"] > c.last_offset, (data["_offset"], c.last_offset)
                c.last_offset = data["_offset"]
        except Exception as e:
            self.content_errors += 1
            if len(self.errors) < 20:
                self.errors.append(f"bad msg {b[:200]!r}: {e!r}")

    async def serve(self) -> None:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        ppid = os.getppid()

        def readable() -> None:
            try:
                q.put_nowait(self.pipe.recv())
            except (EOFError, OSError):
                self.loop.remove_reader(self.pipe.fileno())
                q.put_nowait({"op": "close"})

        def watchdog() -> None:  # the orchestrator died: do not linger
            if os.getppid() != ppid:
                q.put_nowait({"op": "close"})
            else:
                self.loop.call_later(1.0, watchdog)

        self.loop.add_reader(self.pipe.fileno(), readable)
        watchdog()
        while True:
            cmd = await q.get()
            op = cmd.pop("op")
            if op == "close":
                await self.close_all()
                try:
                    self.results.send({"ok": True})
                except OSError:
                    pass
                return
            try:
                res = await getattr(self, "op_" + op)(**cmd)
            except Exception as e:
                res = {"error": f"worker {self.index} {op}: {type(e).__name__}: {e}\n{traceback.format_exc()}"}
            self.results.send(res)

    async def close_all(self) -> None:
        for c in self.conns:
            if not c.closed and c.transport is not None:
                try:
                    c.transport.disconnect()
                except Exception:
                    pass
        await asyncio.sleep(0)

    # --- operations ---------------------------------------------------------------------------------------------------

    async def op_connect(self, url: str, dialect: str, n: int, src_ip: str, concurrency: int, join: str | None,
                         strict: bool, pad_len: int, timeout: float, retries: int = 0) -> dict[str, Any]:
        """Open n connections. ``retries``: how often one connection may try again after a retryable failure (a
        CONNECT_ERROR marked retryable, or a handshake time-out), with a jittered backoff, as a real client would;
        the retries are counted (0 by default: any failure is final)."""
        self.dialect = DIALECTS[dialect]()
        self.strict = strict
        self.pad_len = pad_len
        sem = asyncio.Semaphore(concurrency)
        ok = 0
        failed = 0
        retried = 0
        t_start = time.monotonic()
        t_end = t_start
        deadline = t_start + timeout

        async def attempt() -> Conn:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connect phase timed out")
            c: Conn | None = None

            def factory() -> Conn:
                nonlocal c
                c = Conn(self, self.dialect)
                return c

            try:
                await asyncio.wait_for(
                    ws_connect(factory, url, extra_headers=self.dialect.headers, local_addr=(src_ip, 0),
                               websocket_handshake_timeout=min(10.0, remaining), enable_auto_ping=False,
                               use_aiofastnet=USE_AIOFASTNET),
                    remaining)
                assert c is not None
                await asyncio.wait_for(c.ready, max(0.1, deadline - time.monotonic()))
            except BaseException:
                if c is not None and c.transport is not None and not c.closed:
                    c.closed = True  # a failed attempt, not a connection closed later: not counted as closed
                    c.transport.disconnect()  # do not leave a half-open connection behind
                raise
            return c

        async def one() -> None:
            nonlocal ok, failed, t_end, retried
            async with sem:
                try:
                    for k in range(retries + 1):
                        try:
                            c = await attempt()
                            break
                        except (ConnectionError, TimeoutError) as e:
                            text = str(e)
                            # retryable: a CONNECT_ERROR whose last field is true, or a handshake time-out
                            again = (("CONNECT_ERROR" in text and text.rstrip("'\"").endswith("true]"))
                                     or (isinstance(e, TimeoutError) and "connect phase" not in text))
                            if k == retries or not again or time.monotonic() > deadline - 1.0:
                                raise
                            retried += 1
                            await asyncio.sleep(min(2.0, 0.25 * 2 ** k) * (0.5 + random.random()))
                    if join is not None:
                        b = await c.request("join", _json_frag(join), max(0.1, deadline - time.monotonic()))
                        if strict:
                            self.dialect.ack_data(b)
                    self.conns.append(c)
                    ok += 1
                    t_end = time.monotonic()
                except Exception as e:
                    failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"connect: {type(e).__name__}: {e}")

        cpu0 = _cpu_self()
        await asyncio.gather(*(one() for _ in range(n)))
        return {"ok": ok, "failed": failed, "retried": retried, "t_start": t_start, "t_end": t_end,
                "cpu": _cpu_self() - cpu0, "errors": self.errors[:10]}

    async def op_pause(self, k: int) -> dict[str, Any]:
        """Make the last k connections stop reading (slow receivers); they are left out of every count."""
        for c in self.conns[-k:]:
            c.paused = True
            c.transport.underlying_transport.pause_reading()
        return {"ok": True}

    async def op_arm(self) -> dict[str, Any]:
        self.reset_counters()
        for c in self.conns:
            c.next_seq = 0
            c.n_msg = 0
        self.recording = True
        self.cpu0 = _cpu_self()
        return {"ok": True}

    async def op_wait(self, expect: int, timeout: float) -> dict[str, Any]:
        """Wait until each reading receiver got `expect` messages since arm, or timeout."""
        active = [c for c in self.conns if not c.paused]
        self.target = expect * len(active)
        if self.total < self.target:
            self.done = self.loop.create_future()
            try:
                await asyncio.wait_for(self.done, timeout)
            except TimeoutError:
                pass
        self.recording = False
        counts = [c.n_msg for c in active]
        return {
            "expected": self.target, "total": self.total, "min_per_conn": min(counts, default=0),
            "max_per_conn": max(counts, default=0), "short_conns": sum(1 for x in counts if x < expect),
            "order_errors": self.order_errors, "content_errors": self.content_errors,
            "last_msg": self.last_msg, "lat": self.lat.tobytes(), "cpu": _cpu_self() - self.cpu0,
            "closed": self.closed_count, "close_codes": self.close_codes, "errors": self.errors[:10],
        }

    async def op_publish(self, mode: str, count: int, duration: float, window: int, rate: float, pad_len: int,
                         stall_timeout: float, max_outstanding: int, drain: float = 0.0) -> dict[str, Any]:
        """The publisher: `burst` keeps `window` publishes awaiting their ack; `steady` publishes at `rate`/s."""
        c = self.conns[0]
        pad = "x" * pad_len
        loop = self.loop
        st = {"sent": 0, "acked": 0, "outstanding": 0, "last_ack": 0.0, "max_gap": 0.0, "stop": False,
              "stalled": False, "overloaded": False}
        finished: asyncio.Future[bool] = loop.create_future()
        t0 = time.monotonic()
        deadline = t0 + duration
        st["last_ack"] = t0

        def send_one() -> None:
            seq = st["sent"]
            c.send_event("publish", f'{{"t":{time.monotonic()!r},"s":{seq},"p":"{pad}"}}', True)
            st["sent"] = seq + 1
            st["outstanding"] += 1

        def more() -> bool:
            return not st["stop"] and st["sent"] < count and time.monotonic() < deadline

        def on_ack(_c: Conn, _id: int, _b: bytes) -> None:
            now = time.monotonic()
            gap = now - st["last_ack"]
            if gap > st["max_gap"]:
                st["max_gap"] = gap
            st["last_ack"] = now
            st["acked"] += 1
            st["outstanding"] -= 1
            if mode == "burst" and more():
                send_one()
            elif st["outstanding"] == 0 and not more() and not finished.done():
                finished.set_result(True)

        c.ack_cb = on_ack
        cpu0 = _cpu_self()
        try:
            if mode == "burst":
                for _ in range(min(window, count)):
                    send_one()
            else:
                interval = 1.0 / rate

                def tick(k: int) -> None:
                    if not more():
                        if st["outstanding"] == 0 and not finished.done():
                            finished.set_result(True)
                        return
                    if st["outstanding"] >= max_outstanding:
                        st["overloaded"] = True
                        st["stop"] = True
                        return
                    send_one()
                    loop.call_at(t_loop0 + (k + 1) * interval, tick, k + 1)

                t_loop0 = loop.time()
                tick(0)
            # watch for stalls: no ack for stall_timeout while acks are outstanding
            while not finished.done():
                await asyncio.wait({finished}, timeout=0.1)
                now = time.monotonic()
                if st["outstanding"] > 0 and now - st["last_ack"] > stall_timeout:
                    st["stalled"] = True
                    break
                if now > deadline + 4 * stall_timeout + 30:
                    break
        finally:
            st["stop"] = True
            c.ack_cb = None
        gap = time.monotonic() - st["last_ack"] if st["outstanding"] else 0.0
        return {"sent": st["sent"], "acked": st["acked"], "t_first": t0, "t_last_ack": st["last_ack"],
                "max_ack_gap": max(st["max_gap"], gap), "stalled": st["stalled"], "overloaded": st["overloaded"],
                "cpu": _cpu_self() - cpu0, "closed": self.closed_count, "errors": self.errors[:10]}

    async def op_ack_run(self, start: float, measure_start: float, deadline: float, pad_len: int,
                         timeout: float) -> dict[str, Any]:
        """Every connection keeps one echo in flight until `deadline`; acks completed in the window are counted."""
        pad = "x" * pad_len
        rtts = array.array("d")
        st = {"acks": 0, "bad": 0, "outstanding": 0}
        finished: asyncio.Future[bool] = self.loop.create_future()
        strict = self.strict
        dialect = self.dialect

        def send(c: Conn, now: float) -> None:
            c.inflight_id = c.next_id
            c.t_sent = now
            c.send_event("echo", f'{{"s":{c.inflight_id},"p":"{pad}"}}', True)

        def on_ack(c: Conn, ack_id: int, b: bytes) -> None:
            now = time.monotonic()
            if ack_id != c.inflight_id:
                st["bad"] += 1
            elif strict:
                try:
                    data = dialect.ack_data(b)
                    assert data == {"s": ack_id, "p": pad}, data
                except Exception as e:
                    st["bad"] += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"bad ack {b[:200]!r}: {e!r}")
            if measure_start <= now < deadline:
                st["acks"] += 1
                rtts.append(now - c.t_sent)
            if now < deadline:
                send(c, now)
            else:
                st["outstanding"] -= 1
                if st["outstanding"] == 0 and not finished.done():
                    finished.set_result(True)

        active = [c for c in self.conns if not c.closed]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu0 = _cpu_self()
        st["outstanding"] = len(active)
        now = time.monotonic()
        for c in active:
            c.ack_cb = on_ack
            send(c, now)
        try:
            await asyncio.wait_for(finished, max(0.1, deadline - time.monotonic()) + timeout)
        except TimeoutError:
            pass
        for c in active:
            c.ack_cb = None
        return {"acks": st["acks"], "bad": st["bad"], "unanswered": st["outstanding"], "rtt": rtts.tobytes(),
                "cpu": _cpu_self() - cpu0, "closed": self.closed_count, "close_codes": self.close_codes,
                "errors": self.errors[:10]}

    async def op_status(self) -> dict[str, Any]:
        return {"open": sum(1 for c in self.conns if not c.closed), "closed": self.closed_count,
                "close_codes": self.close_codes, "pings": sum(c.pings for c in self.conns), "cpu": _cpu_self(),
                "errors": self.errors[:10]}

    async def op_check(self, timeout: float, concurrency: int) -> dict[str, Any]:
        """Every open connection must answer an echo."""
        sem = asyncio.Semaphore(concurrency)
        answered = 0

        async def one(c: Conn) -> None:
            nonlocal answered
            async with sem:
                try:
                    await c.request("echo", '{"check":true}', timeout)
                    answered += 1
                except Exception as e:
                    if len(self.errors) < 20:
                        self.errors.append(f"check: {type(e).__name__}: {e}")

        await asyncio.gather(*(one(c) for c in self.conns if not c.closed))
        return {"answered": answered, "open": sum(1 for c in self.conns if not c.closed), "closed": self.closed_count,
                "close_codes": self.close_codes, "errors": self.errors[:10]}


def worker_main(pipe: Any, results: Any, index: int) -> None:
    _pin(CLIENT_CPU)
    gc.disable()  # few cycles are made; keeps the client's latency free of collector pauses
    import uvloop

    async def main() -> None:
        await Worker(pipe, results, index).serve()

    uvloop.run(main())


# ----------------------------------------------------------------------------------------------------------------------
# Orchestrator side


class WorkerError(RuntimeError):
    pass


class WorkerHandle:
    _ctx = mp.get_context("fork")

    def __init__(self, index: int):
        self.index = index
        cmd_r, self.cmd = self._ctx.Pipe(duplex=False)
        self.res, res_w = self._ctx.Pipe(duplex=False)
        self.proc = self._ctx.Process(target=worker_main, args=(cmd_r, res_w, index), daemon=True,
                                      name=f"bench-client-{index}")
        self.proc.start()
        cmd_r.close()
        res_w.close()

    def send(self, op: str, **kw: Any) -> None:
        self.cmd.send({"op": op, **kw})

    def recv(self, timeout: float) -> dict[str, Any]:
        if not self.res.poll(timeout):
            raise TimeoutError(f"client process {self.index} did not answer within {timeout:.0f}s")
        res = self.res.recv()
        if "error" in res:
            raise WorkerError(res["error"])
        return res

    def call(self, op: str, timeout: float, **kw: Any) -> dict[str, Any]:
        self.send(op, **kw)
        return self.recv(timeout)

    def close(self) -> None:
        try:
            self.send("close")
            self.res.poll(5)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.cmd.close()
        self.res.close()


class Clients:
    def __init__(self, n: int):
        self.workers = [WorkerHandle(i) for i in range(n)]

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.close()


def call_all(calls: list[tuple[WorkerHandle, str, dict[str, Any]]], timeout: float) -> list[dict[str, Any]]:
    for w, op, kw in calls:
        w.send(op, **kw)
    deadline = time.monotonic() + timeout
    return [w.recv(max(0.1, deadline - time.monotonic())) for w, _, _ in calls]


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


class Check:
    """Smoke assertions: collected, then raised together."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.failures: list[str] = []

    def __call__(self, cond: bool, what: str) -> None:
        if not cond:
            self.failures.append(what)

    def raise_if_failed(self, context: str) -> None:
        if self.enabled and self.failures:
            raise AssertionError(f"{context}: " + "; ".join(self.failures))


def server_env(args: argparse.Namespace) -> dict[str, str]:
    return {"BENCH_PING_INTERVAL": str(args.ping_interval), "BENCH_PING_TIMEOUT": str(args.ping_timeout)}


def pad_for(payload: int) -> int:
    return max(1, payload - 45)  # {"t":1234567.123456789,"s":123,"p":"..."} is ~45 bytes without the pad


def connect_all(workers: list[WorkerHandle], url: str, spec: ServerSpec, counts: list[int], join: str | None,
                args: argparse.Namespace, timeout: float, pad_len: int | None = None) -> dict[str, Any]:
    res = call_all(
        [(w, "connect", dict(url=url, dialect=spec.dialect, n=n, src_ip=next_src_ip(), concurrency=args.concurrency,
                             join=join, strict=args.smoke, pad_len=pad_len or pad_for(args.payload), timeout=timeout))
         for w, n in zip(workers, counts, strict=True)], timeout + 15)
    ok = sum(r["ok"] for r in res)
    t0 = min(r["t_start"] for r in res)
    t1 = max(r["t_end"] for r in res)
    return {"ok": ok, "failed": sum(r["failed"] for r in res), "seconds": t1 - t0,
            "per_s": ok / (t1 - t0) if t1 > t0 else None, "client_cpu": sum(r["cpu"] for r in res),
            "errors": [e for r in res for e in r["errors"]][:10]}


# --- fanout -----------------------------------------------------------------------------------------------------------


def fanout_phase(srv: Server | ServerGroup, pub: WorkerHandle, recv: list[WorkerHandle], pub_kw: dict[str, Any],
                 timeout: float, cross: list[bool] | None = None) -> dict[str, Any]:
    """One measured fan-out phase. ``cross`` (cluster workload): per receiver process, whether it is attached to
    another node than the publisher's; then the deliveries and latency of those receivers are reported apart."""
    call_all([(w, "arm", {}) for w in recv], 10)
    cpu0, c1_0, t0, rss0 = srv.cpu(), cpu_busy_seconds(CLIENT_CPU), time.monotonic(), srv.rss_kib()
    fl = ForeignLoad(*srv.own_pids(), pub.proc.pid or 0, *(w.proc.pid or 0 for w in recv)).start()
    p = pub.call("publish", timeout + 60, **pub_kw)
    rs = call_all([(w, "wait", dict(expect=p["sent"], timeout=pub_kw.get("drain", 10.0))) for w in recv],
                  pub_kw.get("drain", 10.0) + 30)
    cpu1, c1_1, t1 = srv.cpu(), cpu_busy_seconds(CLIENT_CPU), time.monotonic()
    foreign = fl.stop()
    deliveries = sum(r["total"] for r in rs)
    last = max((r["last_msg"] for r in rs), default=0.0)
    span = last - p["t_first"] if deliveries else 0.0
    lat = cat_bytes([r["lat"] for r in rs])
    p50, p99, p999 = pctl(lat, [50, 99, 99.9])
    wall = t1 - t0
    client_cpu = p["cpu"] + sum(r["cpu"] for r in rs)
    extra: dict[str, Any] = {}
    if cross is not None:
        xs = [r for r, x in zip(rs, cross, strict=True) if x]
        x_deliveries = sum(r["total"] for r in xs)
        x50, x99, x999 = pctl(cat_bytes([r["lat"] for r in xs]), [50, 99, 99.9])
        s50, s99, _ = pctl(cat_bytes([r["lat"] for r, x in zip(rs, cross, strict=True) if not x]), [50, 99, 99.9])
        extra = {"cross_deliveries": x_deliveries,
                 "cross_deliveries_per_s": x_deliveries / span if span > 0 else None,
                 "cross_lat_p50_ms": x50 and x50 * 1e3, "cross_lat_p99_ms": x99 and x99 * 1e3,
                 "cross_lat_p999_ms": x999 and x999 * 1e3,
                 "same_lat_p50_ms": s50 and s50 * 1e3, "same_lat_p99_ms": s99 and s99 * 1e3}
    return {
        **extra,
        "published": p["sent"], "acked": p["acked"], "stalled": p["stalled"], "overloaded": p["overloaded"],
        "max_ack_gap_s": p["max_ack_gap"],
        "deliveries": deliveries, "expected": sum(r["expected"] for r in rs),
        "short_conns": sum(r["short_conns"] for r in rs), "order_errors": sum(r["order_errors"] for r in rs),
        "content_errors": sum(r["content_errors"] for r in rs), "closed": sum(r["closed"] for r in rs),
        "deliveries_per_s": deliveries / span if span > 0 else None,
        "server_cpu_s": cpu1 - cpu0,
        "cpu_s_per_M": (cpu1 - cpu0) / deliveries * 1e6 if deliveries else None,
        "server_cpu_util": (cpu1 - cpu0) / wall, "client_cpu_util": client_cpu / wall,
        "client_core_busy": (c1_1 - c1_0) / wall if CLIENT_CPU is not None else None,
        # CPU used on our two cores by anything but the server and the client processes (other jobs on the box)
        "foreign_cpu": foreign,
        "rss_growth_kib": srv.rss_kib() - rss0,
        "lat_p50_ms": p50 and p50 * 1e3, "lat_p99_ms": p99 and p99 * 1e3, "lat_p999_ms": p999 and p999 * 1e3,
        "wall_s": wall, "errors": (p["errors"] + [e for r in rs for e in r["errors"]])[:10],
    }


def run_fanout(spec: ServerSpec, n: int, args: argparse.Namespace, check: Check, slow: bool = False) -> dict[str, Any]:
    per = args.conns_per_proc
    n_recv_procs = max(1, math.ceil((n + (1 if slow else 0)) / per), args.client_procs - 1)
    counts = split(n, n_recv_procs)
    if slow:
        counts[0] += 1  # the extra, slow receiver: the last connection of worker 0
    payload = args.slow_payload if slow else args.payload
    pad = pad_for(payload)
    out: dict[str, Any] = {"server": spec.key, "n": n, "slow_variant": slow}
    with Server(spec, server_env(args)) as srv, Clients(n_recv_procs + 1) as cl:
        pub, recv = cl.workers[0], cl.workers[1:]
        conn = connect_all(recv, srv.url(), spec, counts, ROOM, args, args.connect_timeout, pad)
        out["connect"] = conn
        check(conn["ok"] == sum(counts), f"receivers connected {conn['ok']}/{sum(counts)}: {conn['errors']}")
        pc = connect_all([pub], srv.url(), spec, [1], None, args, 30)
        check(pc["ok"] == 1, f"publisher did not connect: {pc['errors']}")
        if conn["ok"] == 0 or pc["ok"] == 0:
            raise RuntimeError(f"{spec.key}: clients could not connect: {conn['errors'] + pc['errors']}")
        base = dict(window=args.window, pad_len=pad, stall_timeout=args.stall_timeout, max_outstanding=10_000,
                    drain=args.drain)
        # warm-up (discarded)
        warm = fanout_phase(srv, pub, recv, dict(base, mode="burst", count=args.warmup_messages, duration=5.0,
                                                 rate=0.0), 30)
        check(warm["deliveries"] == warm["expected"], f"warm-up delivered {warm['deliveries']}/{warm['expected']}")
        if slow:
            recv[0].call("pause", 10, k=1)
            r = fanout_phase(srv, pub, recv, dict(base, pad_len=pad, mode="burst", count=args.count or 10**9,
                                                  duration=args.slow_duration, rate=0.0), args.slow_duration + 30)
            out["slow"] = r
            # Whatever the server acknowledged must have reached every receiver that reads.
            check(r["deliveries"] >= r["acked"] * n, f"slow variant: {r['deliveries']} deliveries < acked "
                                                     f"{r['acked']} x {n} receivers")
            check(r["content_errors"] == 0, f"slow variant content errors: {r['errors']}")
        else:
            for mode in args.modes:
                if mode == "burst":
                    kw = dict(base, mode="burst", count=args.count or 10**9, duration=args.duration, rate=0.0)
                else:
                    rate = max(1.0, args.steady_deliveries / n)
                    kw = dict(base, mode="steady", count=args.count or 10**9, duration=args.duration, rate=rate)
                r = fanout_phase(srv, pub, recv, kw, args.duration + 30)
                if mode == "steady":
                    r["rate_publishes_per_s"] = kw["rate"]
                out[mode] = r
                check(r["published"] > 0 and r["acked"] == r["published"],
                      f"{mode}: acked {r['acked']}/{r['published']}")
                check(r["deliveries"] == r["expected"] and r["short_conns"] == 0,
                      f"{mode}: delivered {r['deliveries']}/{r['expected']} ({r['short_conns']} receivers short)")
                check(r["order_errors"] == 0, f"{mode}: {r['order_errors']} out-of-order deliveries")
                check(r["content_errors"] == 0 and r["closed"] == 0,
                      f"{mode}: content errors {r['content_errors']}, closed {r['closed']}: {r['errors']}")
        out["server_rss_kib"] = srv.rss_kib()
    return out


# --- capacity ---------------------------------------------------------------------------------------------------------


def run_capacity(spec: ServerSpec, c: int, args: argparse.Namespace, check: Check) -> dict[str, Any]:
    procs = max(1, math.ceil(c / args.conns_per_proc), args.client_procs)
    counts = split(c, procs)
    out: dict[str, Any] = {"server": spec.key, "n": c}
    with Server(spec, server_env(args)) as srv, Clients(procs) as cl:
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        fl = ForeignLoad(*srv.own_pids(), *(w.proc.pid or 0 for w in cl.workers)).start()
        cpu0 = srv.cpu()
        conn = connect_all(cl.workers, srv.url(), spec, counts, None, args, args.connect_timeout)
        cpu1, foreign = srv.cpu(), fl.stop()
        out["connect"] = conn
        check(conn["ok"] == c, f"opened {conn['ok']}/{c}: {conn['errors']}")
        time.sleep(1.0)
        rss1 = srv.rss_kib()
        st0 = call_all([(w, "status", {}) for w in cl.workers], 30)
        hold_end = time.monotonic() + args.hold
        while time.monotonic() < hold_end:
            time.sleep(min(0.5, max(0.0, hold_end - time.monotonic())))
            if not srv.alive():
                break
        st1 = call_all([(w, "status", {}) for w in cl.workers], 30)
        rss2 = srv.rss_kib()
        chk = call_all([(w, "check", dict(timeout=args.check_timeout, concurrency=args.concurrency * 4))
                        for w in cl.workers], args.check_timeout * 4 + 60)
        pings = sum(s["pings"] for s in st1) - sum(s["pings"] for s in st0)
        answered = sum(r["answered"] for r in chk)
        closed = sum(r["closed"] for r in chk)
        out.update({
            "opened": conn["ok"], "handshakes_per_s": conn["per_s"], "connect_s": conn["seconds"],
            "server_cpu_ms_per_handshake": (cpu1 - cpu0) / conn["ok"] * 1e3 if conn["ok"] else None,
            "client_cpu_util_connect": conn["client_cpu"] / conn["seconds"] if conn["seconds"] else None,
            "foreign_cpu": foreign,
            "rss_base_kib": rss0, "rss_kib": rss1, "rss_after_hold_kib": rss2,
            "kib_per_conn": (rss1 - rss0) / conn["ok"] if conn["ok"] else None,
            "hold_s": args.hold, "heartbeats_per_conn": pings / conn["ok"] if conn["ok"] else 0,
            "closed": closed, "answered_after_hold": answered,
            "close_codes": sum_counts(r["close_codes"] for r in chk),
            "errors": [e for r in chk for e in r["errors"]][:10],
        })
        check(closed == 0, f"{closed} connections closed during the hold ({out['close_codes']})")
        check(answered == c, f"{answered}/{c} connections answered after the hold: {out['errors']}")
        if spec.dialect != "raw":
            expect_pings = max(1, int(args.hold / args.ping_interval / 2))
            check(out["heartbeats_per_conn"] >= expect_pings,
                  f"{out['heartbeats_per_conn']:.1f} heartbeats per connection in {args.hold}s, expected "
                  f">= {expect_pings}")
    return out


# --- ack --------------------------------------------------------------------------------------------------------------


def run_ack(spec: ServerSpec, n: int, args: argparse.Namespace, check: Check) -> dict[str, Any]:
    procs = max(1, math.ceil(n / args.conns_per_proc), args.client_procs)
    counts = split(n, procs)
    out: dict[str, Any] = {"server": spec.key, "n": n}
    with Server(spec, server_env(args)) as srv, Clients(procs) as cl:
        conn = connect_all(cl.workers, srv.url(), spec, counts, None, args, args.connect_timeout)
        check(conn["ok"] == n, f"opened {conn['ok']}/{n}: {conn['errors']}")
        start = time.monotonic() + 0.3
        measure_start = start + args.warmup
        deadline = measure_start + args.duration
        for w in cl.workers:
            w.send("ack_run", start=start, measure_start=measure_start, deadline=deadline,
                   pad_len=pad_for(args.payload), timeout=10.0)
        time.sleep(max(0.0, measure_start - time.monotonic()))
        fl = ForeignLoad(*srv.own_pids(), *(w.proc.pid or 0 for w in cl.workers)).start()
        cpu0, c1_0 = srv.cpu(), cpu_busy_seconds(CLIENT_CPU)
        time.sleep(max(0.0, deadline - time.monotonic()))
        cpu1, c1_1, foreign = srv.cpu(), cpu_busy_seconds(CLIENT_CPU), fl.stop()
        rs = [w.recv(args.duration + args.warmup + 30) for w in cl.workers]
        acks = sum(r["acks"] for r in rs)
        p50, p99, p999 = pctl(cat_bytes([r["rtt"] for r in rs]), [50, 99, 99.9])
        total_span = deadline - start
        out.update({
            "acks": acks, "acks_per_s": acks / args.duration, "rtt_p50_ms": p50 and p50 * 1e3,
            "rtt_p99_ms": p99 and p99 * 1e3, "rtt_p999_ms": p999 and p999 * 1e3,
            "server_cpu_util": (cpu1 - cpu0) / args.duration,
            "cpu_s_per_M": (cpu1 - cpu0) / acks * 1e6 if acks else None,
            "client_cpu_util": sum(r["cpu"] for r in rs) / total_span,
            "foreign_cpu": foreign,
            "client_core_busy": (c1_1 - c1_0) / args.duration if CLIENT_CPU is not None else None,
            "bad": sum(r["bad"] for r in rs), "unanswered": sum(r["unanswered"] for r in rs),
            "closed": sum(r["closed"] for r in rs), "errors": [e for r in rs for e in r["errors"]][:10],
        })
        check(acks > 0, "no acks in the window")
        check(out["bad"] == 0 and out["unanswered"] == 0 and out["closed"] == 0,
              f"bad acks {out['bad']}, unanswered {out['unanswered']}, closed {out['closed']}: {out['errors']}")
    return out


# --- cluster ----------------------------------------------------------------------------------------------------------


class RedisProc:
    """A redis-server of our own (free port, no persistence), pinned like the servers unless told otherwise."""

    def __init__(self, cpus: set[int] | None = None):
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _affinity(self) -> None:
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)
        else:
            _pin(SERVER_CPU)

    def __enter__(self) -> RedisProc:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = TMP_DIR / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir",
             str(self.dir), "--loglevel", "warning", "--maxclients", "20000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=self._affinity)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(getattr(self, "dir", TMP_DIR / "none"), ignore_errors=True)


class ServerGroup:
    """Several nodes and their Redis, measured as one server: CPU and RSS are sums, every pid is ours."""

    def __init__(self, nodes: list[Server], redis: RedisProc):
        self.nodes = nodes
        self.redis = redis

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    def own_pids(self) -> list[int]:
        return [p for n in self.nodes for p in n.own_pids()] + [self.redis.pid]

    def cpu(self) -> float:
        return sum(n.cpu() for n in self.nodes) + proc_cpu_seconds(self.redis.pid)

    def rss_kib(self) -> int:
        return sum(n.rss_kib() for n in self.nodes) + proc_rss_kib(self.redis.pid)

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes) and self.redis.proc is not None and self.redis.proc.poll() is None


def run_cluster(spec: ServerSpec, n: int, args: argparse.Namespace, check: Check) -> dict[str, Any]:
    """Fan-out across --nodes (2-4) processes of servers/ours.py on one redis-server (BENCH_BACKEND=redis://).

    The N receivers are spread over the nodes (one client process per node at least, each attached to one node);
    the publisher is attached to node 1, so the receivers of the other nodes are the cross-node ones. Every node and
    Redis run on the server core (the same one-core budget as the single-process fan-out, so the CPU-s per 1M
    deliveries, summed over the nodes and Redis, shows what the Redis hop costs); clients on the other core.
    Reports the fan-out metrics (burst and steady) plus cross-node deliveries/s and cross/same-node latency.
    Only ours takes part: the peers have no comparable Redis mode in this harness.
    """
    if spec.key != "ours":
        raise ValueError(f"cluster: only ours runs on Redis here, not {spec.key}")
    nodes_n = args.nodes
    per = args.conns_per_proc
    n_recv_procs = max(nodes_n, math.ceil(n / per), args.client_procs - 1)
    counts = split(n, n_recv_procs)
    attach = [i % nodes_n for i in range(n_recv_procs)]  # receiver process i -> node attach[i]
    pad = pad_for(args.payload)
    out: dict[str, Any] = {"server": spec.key, "n": n, "nodes": nodes_n}
    with RedisProc() as redis:
        env = dict(server_env(args), BENCH_BACKEND=redis.url)
        nodes = [Server(spec, env) for _ in range(nodes_n)]
        try:
            for node in nodes:
                node.start()
            group = ServerGroup(nodes, redis)
            with Clients(n_recv_procs + 1) as cl:
                pub, recv = cl.workers[0], cl.workers[1:]
                res = call_all(
                    [(w, "connect", dict(url=nodes[attach[i]].url(), dialect=spec.dialect, n=counts[i],
                                         src_ip=next_src_ip(), concurrency=args.concurrency, join=ROOM,
                                         strict=args.smoke, pad_len=pad, timeout=args.connect_timeout))
                     for i, w in enumerate(recv)], args.connect_timeout + 15)
                ok = sum(r["ok"] for r in res)
                out["connect"] = {"ok": ok, "per_node": [sum(r["ok"] for r, a in zip(res, attach, strict=True)
                                                            if a == k) for k in range(nodes_n)],
                                  "errors": [e for r in res for e in r["errors"]][:10]}
                check(ok == n, f"receivers connected {ok}/{n}: {out['connect']['errors']}")
                pc = connect_all([pub], nodes[0].url(), spec, [1], None, args, 30)
                check(pc["ok"] == 1, f"publisher did not connect: {pc['errors']}")
                if ok == 0 or pc["ok"] == 0:
                    raise RuntimeError(f"cluster: clients could not connect: {out['connect']['errors']}")
                cross = [a != 0 for a in attach]
                base = dict(window=args.window, pad_len=pad, stall_timeout=args.stall_timeout,
                            max_outstanding=10_000, drain=args.drain)
                warm = fanout_phase(group, pub, recv, dict(base, mode="burst", count=args.warmup_messages,
                                                           duration=5.0, rate=0.0), 30, cross)
                check(warm["deliveries"] == warm["expected"],
                      f"warm-up delivered {warm['deliveries']}/{warm['expected']}")
                for mode in args.modes:
                    if mode == "burst":
                        kw = dict(base, mode="burst", count=args.count or 10**9, duration=args.duration, rate=0.0)
                    else:
                        rate = max(1.0, args.steady_deliveries / n)
                        kw = dict(base, mode="steady", count=args.count or 10**9, duration=args.duration,
                                  rate=rate)
                    r = fanout_phase(group, pub, recv, kw, args.duration + 30, cross)
                    out[mode] = r
                    check(r["published"] > 0 and r["acked"] == r["published"],
                          f"{mode}: acked {r['acked']}/{r['published']}")
                    check(r["deliveries"] == r["expected"] and r["short_conns"] == 0,
                          f"{mode}: delivered {r['deliveries']}/{r['expected']} ({r['short_conns']} receivers short)")
                    check(r["order_errors"] == 0, f"{mode}: {r['order_errors']} out-of-order deliveries")
                    check(r["content_errors"] == 0 and r["closed"] == 0,
                          f"{mode}: content errors {r['content_errors']}, closed {r['closed']}: {r['errors']}")
                out["server_rss_kib"] = group.rss_kib()
                out["redis_rss_kib"] = proc_rss_kib(redis.pid)
        finally:
            for node in nodes:
                node.stop()
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Driver: interleaving, medians, tables, plots

WORKLOADS: dict[str, dict[str, Any]] = {
    "capacity": {"run": run_capacity, "sizes": [1000, 5000, 10000, 19500], "smoke_sizes": [20],
                 "metrics": [("handshakes_per_s", "handshakes/s", "{:,.0f}"), ("kib_per_conn", "KiB/conn", "{:.1f}"),
                             ("server_cpu_ms_per_handshake", "srv ms/handshake", "{:.3f}"),
                             ("heartbeats_per_conn", "heartbeats/conn", "{:.1f}"),
                             ("answered_after_hold", "answered after hold", "{:,.0f}"),
                             ("client_cpu_util_connect", "client CPU (connect)", "{:.2f}"),
                             ("foreign_cpu", "foreign CPU (connect)", "{:.2f}")]},
    "fanout": {"run": run_fanout, "sizes": [100, 1000, 10000], "smoke_sizes": [5],
               "metrics": [("burst.deliveries_per_s", "deliveries/s", "{:,.0f}"),
                           ("burst.cpu_s_per_M", "CPU-s/1M deliveries", "{:.1f}"),
                           ("burst.lat_p50_ms", "burst p50 ms", "{:.1f}"),
                           ("burst.lat_p99_ms", "burst p99 ms", "{:.1f}"),
                           ("burst.lat_p999_ms", "burst p999 ms", "{:.1f}"),
                           ("steady.cpu_s_per_M", "steady CPU-s/1M", "{:.1f}"),
                           ("steady.lat_p50_ms", "steady p50 ms", "{:.2f}"),
                           ("steady.lat_p99_ms", "steady p99 ms", "{:.2f}"),
                           ("steady.lat_p999_ms", "steady p999 ms", "{:.2f}"),
                           ("burst.server_cpu_util", "server CPU util", "{:.2f}"),
                           ("burst.client_core_busy", "client core busy", "{:.2f}"),
                           ("burst.client_cpu_util", "client procs CPU", "{:.2f}"),
                           ("burst.foreign_cpu", "foreign CPU", "{:.2f}")]},
    "ack": {"run": run_ack, "sizes": [100], "smoke_sizes": [5],
            "metrics": [("acks_per_s", "acks/s", "{:,.0f}"), ("rtt_p50_ms", "RTT p50 ms", "{:.2f}"),
                        ("rtt_p99_ms", "RTT p99 ms", "{:.2f}"), ("cpu_s_per_M", "CPU-s/1M acks", "{:.1f}"),
                        ("server_cpu_util", "server CPU util", "{:.2f}"),
                        ("client_core_busy", "client core busy", "{:.2f}"),
                        ("client_cpu_util", "client procs CPU", "{:.2f}"), ("foreign_cpu", "foreign CPU", "{:.2f}")]},
    "cluster": {"run": run_cluster, "sizes": [1000], "smoke_sizes": [6],
                "metrics": [("burst.deliveries_per_s", "deliveries/s", "{:,.0f}"),
                            ("burst.cross_deliveries_per_s", "cross-node deliveries/s", "{:,.0f}"),
                            ("burst.cpu_s_per_M", "CPU-s/1M (nodes+Redis)", "{:.1f}"),
                            ("burst.lat_p50_ms", "burst p50 ms", "{:.1f}"),
                            ("burst.lat_p99_ms", "burst p99 ms", "{:.1f}"),
                            ("burst.cross_lat_p99_ms", "burst cross-node p99 ms", "{:.1f}"),
                            ("steady.cpu_s_per_M", "steady CPU-s/1M", "{:.1f}"),
                            ("steady.cross_lat_p50_ms", "steady cross-node p50 ms", "{:.2f}"),
                            ("steady.cross_lat_p99_ms", "steady cross-node p99 ms", "{:.2f}"),
                            ("steady.same_lat_p99_ms", "steady same-node p99 ms", "{:.2f}"),
                            ("steady.lat_p999_ms", "steady p999 ms", "{:.2f}"),
                            ("burst.server_cpu_util", "server CPU util", "{:.2f}"),
                            ("burst.client_core_busy", "client core busy", "{:.2f}"),
                            ("burst.foreign_cpu", "foreign CPU", "{:.2f}")]},
}
SLOW_METRICS = [("slow.deliveries_per_s", "healthy deliveries/s", "{:,.0f}"),
                ("slow.acked", "publishes acked", "{:,.0f}"), ("slow.stalled", "stalled", "{}"),
                ("slow.max_ack_gap_s", "max ack gap s", "{:.2f}"), ("slow.rss_growth_kib", "RSS growth KiB", "{:,.0f}"),
                ("slow.lat_p99_ms", "healthy p99 ms", "{:.1f}"), ("slow.closed", "conns closed", "{}")]


def get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def median_of(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if all(isinstance(v, bool) for v in vals):
        return sum(vals) > len(vals) / 2 if len(vals) > 1 else vals[0]
    if all(isinstance(v, (int, float)) for v in vals):
        return statistics.median(vals)
    return vals[0]


def summarize(runs: list[dict[str, Any]], metrics: list[tuple[str, str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in runs:
        key = f"{r['n']}{'+slow' if r.get('slow_variant') else ''}"
        out.setdefault(key, {}).setdefault(r["server"], []).append(r)
    summary: dict[str, Any] = {}
    for key, by_server in out.items():
        summary[key] = {}
        for server, rs in by_server.items():
            summary[key][server] = {m: median_of([get(r, m) for r in rs]) for m, _, _ in metrics}
            summary[key][server]["runs"] = len(rs)
    return summary


def fmt(v: Any, f: str) -> str:
    if v is None:
        return "-"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def print_table(title: str, summary: dict[str, Any], metrics: list[tuple[str, str, str]], servers: list[str]) -> str:
    lines = [f"\n## {title}"]
    for key, by_server in summary.items():
        lines.append(f"\n### size {key}")
        present = [s for s in servers if s in by_server]
        header = ["metric"] + [SERVERS[s].label for s in present]
        rows = [header]
        for m, label, f in metrics:
            if all(by_server[s].get(m) is None for s in present):
                continue
            base = by_server.get("raw", {}).get(m)
            row = [label]
            for s in present:
                v = by_server[s].get(m)
                cell = fmt(v, f)
                if (s != "raw" and isinstance(base, (int, float)) and not isinstance(base, bool)
                        and isinstance(v, (int, float)) and not isinstance(v, bool) and base):
                    cell += f" ({v / base:.2f}x)"
                row.append(cell)
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for i, r in enumerate(rows):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
            if i == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def plot(workload: str, summary: dict[str, Any], metrics: list[tuple[str, str, str]], servers: list[str],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    skip = ("util", "busy", "stalled", "closed", "foreign", "p999", "answered")
    shown = [(m, label) for m, label, _ in metrics if not any(k in m for k in skip)][:12]
    if not shown:
        return
    cols = 2
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.0 * rows), squeeze=False)
    for ax, (m, label) in zip(axes.flat, shown, strict=False):
        # only the sizes where this metric exists (the slow-receiver variant has its own key, e.g. "100+slow")
        keys = [k for k in summary if any(isinstance(v.get(m), (int, float)) for v in summary[k].values())]
        width = 0.8 / max(1, len(servers))
        x = np.arange(len(keys))
        for i, s in enumerate(servers):
            vals = [summary[k].get(s, {}).get(m) for k in keys]
            vals = [float(v) if isinstance(v, (int, float)) else np.nan for v in vals]
            ax.bar(x + i * width, vals, width, label=SERVERS[s].label)
        panel = [v for k in keys for v in (summary[k].get(s, {}).get(m) for s in servers)
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
        if panel and max(panel) / min(panel) > 30:
            ax.set_yscale("log")  # one peer far off (python-socketio at 10,000): keep the others readable
            label = f"{label} (log scale)"
        ax.set_xticks(x + width * (len(servers) - 1) / 2,
                      [f"N={k.replace('+slow', ' + 1 slow')}" for k in keys])
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{workload} (medians; server on 1 core, Python servers on {stack_label()})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    v: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release(),
                         "cpus": os.cpu_count(), "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU}
    try:
        with open("/proc/cpuinfo") as f:
            v["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    for pkg in ["uvicorn", "starlette", "websockets", "wsproto", "uvloop", "python-socketio", "python-engineio",
                "picows", "msgspec", "anyio", "granian", "starlette-realtime"]:
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            v[pkg] = None
    try:
        v["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        v["socket.io"] = json.loads((NODE_DIR / "node_modules" / "socket.io" / "package.json").read_text())["version"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        pass
    return v


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=list(WORKLOADS))
    p.add_argument("--servers", default=None,
                   help=f"comma list of {','.join(SERVERS)} (default {DEFAULT_SERVERS}; cluster: ours)")
    p.add_argument("--sizes", help="comma list: connections (capacity), receivers (fanout), clients (ack)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, assert correctness only, results in tmp/")
    p.add_argument("--out", help="results file stem (default results/<workload>)")
    p.add_argument("--payload", type=int, default=100, help="approximate payload bytes")
    p.add_argument("--conns-per-proc", type=int, default=5000, help="client connections per client process")
    p.add_argument("--client-procs", type=int, default=1, help="minimum number of client processes")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per client process")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--ping-interval", type=float, default=5.0, help="server heartbeat interval (s) where it has one")
    p.add_argument("--ping-timeout", type=float, default=5.0)
    # capacity
    p.add_argument("--hold", type=float, default=16.0, help="capacity: seconds to hold the idle connections")
    p.add_argument("--check-timeout", type=float, default=30.0)
    # fanout / ack
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase")
    p.add_argument("--count", type=int, default=0, help="fanout: publishes per phase (0 = by --duration only)")
    p.add_argument("--modes", default="burst,steady", help="fanout phases: burst,steady")
    p.add_argument("--window", type=int, default=1, help="fanout burst: publishes awaiting their ack")
    p.add_argument("--steady-deliveries", type=float, default=5000.0,
                   help="fanout steady: target deliveries/s (publish rate = this / N)")
    p.add_argument("--warmup-messages", type=int, default=20)
    p.add_argument("--warmup", type=float, default=1.0, help="ack: warm-up seconds before the window")
    p.add_argument("--drain", type=float, default=15.0, help="fanout: seconds to wait for deliveries to arrive")
    p.add_argument("--stall-timeout", type=float, default=2.0)
    p.add_argument("--slow", choices=["no", "also", "only"], default="also",
                   help="fanout: also run the variant with one receiver that stops reading")
    p.add_argument("--slow-receivers", type=int, default=100)
    p.add_argument("--slow-payload", type=int, default=1024)
    p.add_argument("--slow-duration", type=float, default=10.0)
    p.add_argument("--nodes", type=int, default=3, help="cluster: nodes of ours on one redis-server (2-4)")
    p.add_argument("--asgi-server", choices=["uvicorn", "granian"], default="uvicorn",
                   help="ASGI server of the Python servers (granian: one worker, one runtime thread, uvloop)")
    p.add_argument("--ws", default="websockets-sansio",
                   choices=["websockets-sansio", "websockets", "wsproto", "preframed"],
                   help="uvicorn's WebSocket implementation for the Python servers (preframed: the library's "
                        "fast path, starlette_realtime.fastpath.uvicorn:PreframedProtocol)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG of a results file (next to it)")
    p.add_argument("--profile", metavar="DIR",
                   help="record each Python server with py-spy (collapsed stacks in DIR/<server>-<port>.txt; "
                        "summarize with python -m benchmarks.profile_summary DIR/*.txt)")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--max-foreign", type=float, default=0.25,
                   help="rerun a run during which other processes used more than this many cores of our two")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each run, wait up to this long for other processes to leave our cores idle")
    p.add_argument("--max-retries", type=int, default=3, help="reruns allowed per run (--max-foreign)")
    args = p.parse_args(argv)
    if args.servers is None:
        args.servers = "ours" if args.workload == "cluster" else DEFAULT_SERVERS
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.workload == "cluster":
        if args.servers != ["ours"]:
            p.error("cluster: only ours has a Redis mode here (--servers ours)")
        if not 1 <= args.nodes <= 8:
            p.error("--nodes: 1 to 8")
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    wl = WORKLOADS[args.workload]
    if args.sizes:
        args.sizes = [int(x) for x in args.sizes.split(",")]
    else:
        args.sizes = wl["smoke_sizes"] if args.smoke else wl["sizes"]
    if args.smoke:
        args.repeats = 1 if args.repeats == 3 else args.repeats
        args.duration = min(args.duration, 1.0)
        args.count = args.count or 30
        args.warmup = min(args.warmup, 0.2)
        args.warmup_messages = min(args.warmup_messages, 5)
        args.ping_interval = min(args.ping_interval, 0.5)
        args.ping_timeout = min(args.ping_timeout, 2.0)
        args.hold = min(args.hold, 2.0)
        args.steady_deliveries = min(args.steady_deliveries, 500.0)
        args.slow_receivers = min(args.slow_receivers, 3)
        args.slow_duration = min(args.slow_duration, 1.0)
        args.drain = min(args.drain, 5.0)
        args.check_timeout = min(args.check_timeout, 10.0)
        args.connect_timeout = min(args.connect_timeout, 20.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        res = json.loads(Path(args.replot).read_text())
        wl = WORKLOADS[res["workload"]]
        servers = [s for s in res["config"]["servers"] if any(s in by for by in res["summary"].values())]
        metrics = list(wl["metrics"]) + (SLOW_METRICS if any("slow" in k for k in res["summary"]) else [])
        global ASGI_SERVER, UVICORN_WS
        ASGI_SERVER, UVICORN_WS = res["config"].get("asgi_server", "uvicorn"), res["config"].get("ws", UVICORN_WS)
        plot(res["workload"], res["summary"], metrics, servers, Path(args.replot).with_suffix(".png"))
        return 0
    global PROFILE_DIR, PROFILE_RATE
    ASGI_SERVER, UVICORN_WS = args.asgi_server, args.ws
    if args.profile:
        PROFILE_DIR, PROFILE_RATE = Path(args.profile), args.profile_rate
    if ws_connect is None:
        print("picows is not installed: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2
    _pin(CLIENT_CPU)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    wl = WORKLOADS[args.workload]
    # A requested server that cannot run is an error, not a quiet omission from the results.
    unavailable = [f"{s}: {why}" for s in args.servers if (why := SERVERS[s].unavailable())]
    if unavailable:
        print("cannot run the requested servers (drop them from --servers or install them):\n  "
              + "\n  ".join(unavailable), file=sys.stderr)
        return 2
    servers = list(args.servers)
    plan: list[tuple[str, int, bool]] = []  # (server, size, slow)
    for _rep in range(args.repeats):
        if not (args.workload == "fanout" and args.slow == "only"):
            for n in args.sizes:
                plan.extend((s, n, False) for s in servers)  # interleaved: A B C A B C ...
        if args.workload == "fanout" and args.slow != "no":
            plan.extend((s, args.slow_receivers, True) for s in servers)
    metrics = list(wl["metrics"]) + (SLOW_METRICS if args.workload == "fanout" and args.slow != "no" else [])

    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: we fork client processes
    runs: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.time()
    bar = tqdm(total=len(plan), desc=args.workload, unit="run", dynamic_ncols=True)
    queue = list(plan)
    retries_left = args.max_retries
    while queue:
        server, n, slow = queue.pop(0)
        requeued = False
        bar.set_postfix_str(f"{server} n={n}{' slow' if slow else ''}")
        check = Check(args.smoke)
        spec = SERVERS[server]
        if not args.smoke and args.quiet_wait > 0:
            busy = wait_quiet(args.max_foreign, args.quiet_wait)
            if busy > args.max_foreign:
                tqdm.write(f"the machine is busy ({busy:.2f} cores) after waiting {args.quiet_wait:.0f}s; going on")
        try:
            if args.workload == "fanout":
                r = run_fanout(spec, n, args, check, slow=slow)
            else:
                r = wl["run"](spec, n, args, check)
            r["check_failures"] = check.failures
            foreign = max((v for v in (get(r, "foreign_cpu"), get(r, "burst.foreign_cpu"), get(r, "steady.foreign_cpu"),
                                       get(r, "slow.foreign_cpu")) if v is not None), default=0.0)
            r["foreign_cpu_max"] = foreign
            if not args.smoke and foreign > args.max_foreign and retries_left > 0:
                retries_left -= 1
                tqdm.write(f"{server} n={n}: {foreign:.2f} cores used by other processes during the run; "
                           f"running it again ({retries_left} retries left)")
                queue.insert(0, (server, n, slow))
                requeued = True
                r["discarded"] = True
                discarded.append(r)
                continue
            retries_left = args.max_retries  # the budget is per run
            runs.append(r)
            check.raise_if_failed(f"{server} n={n}{' slow' if slow else ''}")
            if check.failures:
                tqdm.write(f"WARNING {server} n={n}: {check.failures}")
        except NotImplementedError as e:
            print(str(e), file=sys.stderr)
            return 3
        except Exception as e:
            msg = f"{server} n={n}{' slow' if slow else ''}: {type(e).__name__}: {e}"
            failures.append(msg)
            tqdm.write("FAILED " + msg)
            if args.smoke:
                break
        finally:
            _stop_all_servers()
            if not requeued:
                bar.update(1)
    bar.close()
    summary = summarize(runs, metrics)
    table = print_table(f"{args.workload}{' (smoke)' if args.smoke else ''}", summary, metrics, servers)
    stem = Path(args.out) if args.out else (TMP_DIR / f"{args.workload}-smoke" if args.smoke
                                            else RESULTS_DIR / args.workload)
    stem.parent.mkdir(parents=True, exist_ok=True)
    result = {"workload": args.workload, "smoke": args.smoke, "started": started, "seconds": time.time() - started,
              "argv": sys.argv[1:] if argv is None else argv, "config": {k: v for k, v in vars(args).items()},
              "env": versions(), "uvicorn_args": uvicorn_args(), "stack": stack_label(), "summary": summary,
              "table": table,
              "failures": failures, "runs": runs, "discarded_runs": discarded}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    if not args.no_plot and not args.smoke and runs:
        plot(args.workload, summary, metrics, servers, stem.with_suffix(".png"))
    print(f"\nresults: {stem.with_suffix('.json')}", flush=True)
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
