"""Server processes: one server (pinned, in its own process group, always stopped), a group of nodes, a redis-server.

``Server`` starts a ServerSpec's command on a free port, waits until it listens, measures its CPU and RSS from /proc,
and runs py-spy on it with --profile. Every server still running when the harness exits is stopped (atexit).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from .common import CLIENT_CPU, HOST, REPO, SERVER_CPU, STACK, TMP_DIR, _pin, free_port, proc_cpu_seconds, proc_rss_kib
from .peers import ServerSpec


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
        """The process that serves (and is measured): the server itself, or granian's or hypercorn's worker."""
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
        """granian and hypercorn serve from a child process of their supervisor: measure that one."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                kids = []
            # Not multiprocessing's resource tracker (hypercorn starts one beside its worker).
            workers = [k for k in kids if "resource_tracker" not in _cmdline(int(k))]
            if workers:
                self.worker_pid = int(workers[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.spec.key}: {STACK.asgi_server} started no worker process")

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
        if self.spec.kind == "uvicorn" and STACK.asgi_server in ("granian", "hypercorn"):
            self._find_worker()
        if STACK.profile_dir is not None and self.spec.kind == "uvicorn":
            self._start_profiler()

    def _start_profiler(self) -> None:
        """py-spy on the server for its whole life (--profile DIR): collapsed stacks, CPU samples only (an idle
        event loop is not sampled), --nonblocking so that the server is never paused. Writes DIR/<key>-<port>.txt."""
        assert STACK.profile_dir is not None and self.proc is not None
        STACK.profile_dir.mkdir(parents=True, exist_ok=True)
        self.profile_path = STACK.profile_dir / f"{self.spec.key}-{self.port}.txt"
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.profiler = subprocess.Popen(
            [pyspy, "record", "--pid", str(self.pid), "--nonblocking", "--rate", str(STACK.profile_rate), "--format",
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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _stop_all_servers() -> None:
    for srv in list(Server.live):
        try:
            srv.stop()
        except Exception:
            pass


atexit.register(_stop_all_servers)




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


