"""Soak: connections churning for a long time, on memory and on Redis; every curve must stay flat.

    python -m benchmarks.soak [--backends memory,redis] [--minutes 20] [--slots 2000] [--churn 50] [--plot PATH]
    python -m benchmarks.soak --smoke          # about 25 s per backend, correctness only (benchmarks/test_smoke.py)
    python -m benchmarks.soak --parallel       # the backends side by side, one child process each

Not part of CI, and not for a shared machine: the full run takes 2 x 20 minutes and two cores (``--parallel``: 20
minutes, the two servers and their loads sharing the cores).

One uvicorn process of benchmarks/servers/soak_app.py (ours) per backend; ``--slots`` clients in this process over
raw WebSockets (the rt.v1.json protocol of docs/protocol.md, so the load does not depend on our client library).
A tenth of the slots stay connected the whole time ("stayers", each in a few rooms); the others churn: connect, join
a room, send acked emits, and leave after a random lifetime, so that about ``--churn`` connections per second come
and go. A third of the departures are drops without a close frame: those connections go through a fault proxy that
stops forwarding both ways and keeps the server's side of the TCP connection open and silent, so only the server's
heartbeat (``--ping-interval`` + ``--ping-timeout``) can end it. Meanwhile one stayer broadcasts to every room in
turn (``--shouts`` per second) and the stayers join and leave rooms of their own.

Every ``--sample`` seconds: the server's RSS and open files (psutil), its asyncio tasks, the router's counts (links,
connections, rooms), the memory backend's structures (streams, sessions), and Redis's keys and memory. After the
warm-up (the first quarter) each curve gets a least-squares slope, reported per hour.

Checked at the end (and in ``--smoke``, where only these count): every acked emit was handled exactly once (the
server counts per slot: no duplicate, no gap, handled = acked, give or take the emits cut off by a close, which are
never resent); every broadcast reached every stayer of its room,
once and in order; no client saw an error; and after the churn stops the server is back to the stayers' links.
Results: benchmarks/results/soak.json and, with ``--plot``, a figure (``--smoke``: results/tmp/soak-smoke.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from .soak_clients import FaultProxy, Tally, broadcaster, churner, stayers_run

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
WATCHED = ("rss_mib", "fds", "tasks", "links", "connections", "rooms", "streams", "sessions", "redis_keys",
           "redis_mib")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout} s")


# The fault proxy -------------------------------------------------------------------------------------------


class Services:
    def __init__(self, args: argparse.Namespace, backend: str) -> None:
        self.args = args
        self.backend = backend
        self.tmp = Path(tempfile.mkdtemp(prefix="soak-"))
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        self.server: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def __enter__(self) -> Services:
        env = {**os.environ, "PYTHONPATH": str(REPO), "SOAK_PING_INTERVAL": str(self.args.ping_interval),
               "SOAK_PING_TIMEOUT": str(self.args.ping_timeout)}
        if self.backend == "redis":
            binary = shutil.which("redis-server")
            if binary is None:
                raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
            self.redis_port = free_port()
            self.redis = subprocess.Popen(
                [binary, "--port", str(self.redis_port), "--bind", HOST, "--save", "", "--appendonly", "no",
                 "--dir", str(self.tmp), "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(self.redis_port, self.redis)
            env["SOAK_BACKEND"] = f"redis://{HOST}:{self.redis_port}/0"
        self.log = (self.tmp / "server.log").open("wb")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "soak_app:app", "--app-dir", str(BENCH / "servers"), "--host", HOST,
             "--port", str(self.port), "--ws", "websockets-sansio", "--log-level", "warning", "--lifespan", "on",
             "--ws-ping-interval", "0", "--no-access-log"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.server)
        return self

    def __exit__(self, *exc: object) -> None:
        # The server's log outlives the run (it is what explains a failed one).
        if (self.tmp / "server.log").exists():
            kept = RESULTS / "tmp" / f"soak-{self.backend}-server.log"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.tmp / "server.log", kept)
        for proc in (self.server, self.redis):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def server_log(self) -> str:
        return (self.tmp / "server.log").read_text(errors="replace")

    def stats(self, collect: bool = False) -> dict[str, Any]:
        url = f"http://{HOST}:{self.port}/soak/stats" + ("?gc=1" if collect else "")
        with urllib.request.urlopen(url, timeout=10) as reply:  # loopback only
            return json.loads(reply.read())  # type: ignore[no-any-return]

    def sample(self, t: float) -> dict[str, Any]:
        assert self.server is not None
        proc = psutil.Process(self.server.pid)
        st = self.stats()
        row = {"t": round(t, 2), "rss_mib": proc.memory_info().rss / 2**20, "fds": proc.num_fds(),
               "tasks": st["tasks"], **st["router"], **st["backend"], "handled": st["handled"]}
        if self.redis is not None:
            import redis

            client = redis.Redis(host=HOST, port=self.redis_port)
            try:
                row["redis_keys"] = client.dbsize()
                row["redis_mib"] = client.info("memory")["used_memory"] / 2**20
            finally:
                client.close()
        return row


def slope_per_hour(rows: list[dict[str, Any]], key: str) -> float | None:
    points = [(r["t"], r[key]) for r in rows if r.get(key) is not None]
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600


async def soak(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    with Services(args, backend) as services:
        proxy = FaultProxy(services.port)
        await proxy.start()
        urls = (f"ws://{HOST}:{services.port}/ws/", f"ws://{HOST}:{proxy.port}/ws/")
        tally = Tally()
        stop = asyncio.Event()
        ready = asyncio.Event()
        sent: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        t0 = time.monotonic()
        stayer_task = asyncio.create_task(stayers_run(args, urls[0], tally, stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        tasks = [asyncio.create_task(broadcaster(args, urls[0], tally, stop, sent, ready))]
        tasks += [asyncio.create_task(churner(slot, args, urls, proxy, tally, stop)) for slot in range(args.slots)]
        duration = args.minutes * 60
        next_sample = t0
        while (now := time.monotonic()) < t0 + duration:
            if now >= next_sample:
                try:
                    row = await asyncio.to_thread(services.sample, now - t0)
                except OSError as exc:  # urllib's time-out included: a server that stalls is a finding
                    tally.problems.append(f"t={now - t0:.0f}s: the server did not answer its stats: {exc!r}")
                    next_sample += args.sample
                    continue
                rows.append(row)
                print(f"{backend} t={row['t']:7.1f}s links={row['links']:5d} rss={row['rss_mib']:7.1f} MiB "
                      f"fds={row['fds']:5d} tasks={row['tasks']:5d} acked={tally.acked} sessions={tally.sessions}",
                      flush=True)
                next_sample += args.sample
            await asyncio.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        stop.set()
        await asyncio.gather(*tasks)
        stayers = await stayer_task
        # Every departure has reached the server: the dropped ones through its heartbeat.
        settle = args.ping_interval + args.ping_timeout + 10
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            left = (await asyncio.to_thread(services.stats))["router"]["links"]
            if left == len(stayers):
                break
            await asyncio.sleep(0.5)
        final = await asyncio.to_thread(services.stats, True)
        end_row = await asyncio.to_thread(services.sample, time.monotonic() - t0)
        # Broadcasts: every stayer got every shout of its rooms, once and in order.
        missing = 0
        for stayer in stayers:
            for room in stayer.rooms:
                got = stayer.session.shouts.get(room, [])
                want = list(range(1, sent.get(room, 0) + 1))
                if got != want:
                    missing += 1
                    first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                                 min(len(got), len(want)))
                    tally.problems.append(f"stayer {stayer.slot} in {room}: got {len(got)} of {len(want)} shouts, "
                                          f"first difference at {first}")
            await stayer.session.close()
        await proxy.stop()
        warm = [r for r in rows if r["t"] >= duration * args.warmup]
        slopes = {k: slope_per_hour(warm, k) for k in WATCHED}
        means = {}
        for k in WATCHED:
            values = [r[k] for r in warm if r.get(k) is not None]
            if values:
                means[k] = sum(values) / len(values)
        checks = {
            "acked": tally.acked,
            "handled": final["handled"],
            "duplicates": final["duplicates"],
            "gaps": final["gaps"],
            "uncertain": tally.uncertain,
            # Every acked emit handled once; an emit cut off by a close was handled at most once.
            "exactly_once": (tally.acked <= final["handled"] <= tally.acked + tally.uncertain
                             and final["duplicates"] == 0 and final["gaps"] <= tally.uncertain),
            "broadcasts_sent": sum(sent.values()),
            "stayer_rooms_incomplete": missing,
            "links_after": final["router"]["links"],
            "stayers": len(stayers),
            "problems": tally.problems[:50],
            "problem_count": len(tally.problems),
        }
        errors = [line for line in services.server_log().splitlines() if "ERROR" in line or "Traceback" in line]
        checks["server_errors"] = errors[:20]
        ok = (checks["exactly_once"] and not missing and not tally.problems and not errors
              and checks["links_after"] == len(stayers) + 0)
        return {"backend": backend, "ok": ok, "sessions": tally.sessions, "drops": tally.drops,
                "closes": tally.closes, "connect_failures": tally.connect_failures,
                "heartbeat_closes": tally.heartbeat_closes, "checks": checks,
                "slopes_per_hour": slopes, "means_after_warmup": means, "samples": rows, "end": end_row}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("rss_mib", "server RSS (MiB)"), ("fds", "open files"), ("tasks", "asyncio tasks"),
            ("links", "WebSockets"), ("rooms", "rooms (hub)"), ("redis_keys", "Redis keys")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, keys, strict=True):
        for res in results:
            pts = [(r["t"] / 60, r[key]) for r in res["samples"] if r.get(key) is not None]
            if pts:
                slope = res["slopes_per_hour"].get(key)
                label = res["backend"] + (f" ({slope:+.1f}/h)" if slope is not None else "")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle("Soak: churning connections, drops without close frames, acked emits, broadcasts")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="memory,redis")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--slots", type=int, default=2000, help="client slots (connections at any time)")
    p.add_argument("--stayers", type=int, default=None, help="slots connected all along (default: a tenth)")
    p.add_argument("--churn", type=float, default=50, help="connections that come and go per second")
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--emit-every", type=float, default=2.0, help="mean seconds between acked emits per connection")
    p.add_argument("--shouts", type=float, default=20, help="broadcasts per second")
    p.add_argument("--sample", type=float, default=10, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=0.25, help="share of the run left out of the slopes")
    p.add_argument("--ping-interval", type=float, default=5)
    p.add_argument("--ping-timeout", type=float, default=5)
    p.add_argument("--timeout", type=float, default=30, help="seconds for a connect or an ack")
    p.add_argument("--max-connect-failures", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--plot", default=None, help="write the figure here (e.g. docs/img/soak.png)")
    p.add_argument("--smoke", action="store_true", help="a short run that checks correctness only")
    p.add_argument("--parallel", action="store_true",
                   help="run the backends side by side, each in a process of its own (2 x 20 minutes in 20)")
    args = p.parse_args(argv)
    if args.smoke:
        args.minutes, args.slots, args.churn, args.rooms = 0.25, 40, 8, 5
        args.emit_every, args.shouts, args.sample = 0.3, 10, 3
        args.ping_interval, args.ping_timeout = 1, 4  # a loaded CI machine may keep a client from answering
    if args.stayers is None:
        args.stayers = max(2, args.slots // 10)
    args.slots -= args.stayers
    return args


def run_parallel(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """Each backend's soak in a child process of its own, started together; their results in order."""
    # Only the options a child must not inherit are dropped; the rest pass through as given.
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--parallel",):
            pass
        elif arg in ("--backends", "--out", "--plot"):
            skip = True
        elif not arg.startswith(("--backends=", "--out=", "--plot=")):
            rest.append(arg)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    children = []
    for backend in [b for b in args.backends.split(",") if b]:
        out = tmp / f"{backend}.json"
        cmd = [sys.executable, "-m", "benchmarks.soak", *rest, "--backends", backend, "--out", str(out)]
        children.append((out, subprocess.Popen(cmd, cwd=REPO)))
    results = []
    for out, child in children:
        child.wait()
        if out.exists():
            results.extend(json.loads(out.read_text())["results"])
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    if args.parallel:
        results = run_parallel(args, sys.argv[1:] if argv is None else argv)
    else:
        results = [asyncio.run(soak(args, backend)) for backend in args.backends.split(",") if backend]
    out = Path(args.out) if args.out else (RESULTS / "tmp" / "soak-smoke.json" if args.smoke else RESULTS / "soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"argv": sys.argv[1:] if argv is None else argv, "config": vars(args), "started": started,
              "machine": {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count()},
              "results": results}
    out.write_text(json.dumps(record, indent=1, default=str))
    if args.plot:
        plot(results, Path(args.plot))
    for res in results:
        c = res["checks"]
        print(f"\n{res['backend']}: {'OK' if res['ok'] else 'FAILED'}: {res['sessions']} sessions "
              f"({res['drops']} dropped without a close frame), {c['acked']} acked emits, {c['handled']} handled, "
              f"{c['duplicates']} duplicates, {c['gaps']} gaps, {c['broadcasts_sent']} broadcasts, "
              f"{c['stayer_rooms_incomplete']} stayer rooms incomplete, {c['links_after']} links after "
              f"({c['stayers']} stayers), {res['heartbeat_closes']} live clients closed by the heartbeat, "
              f"{c['uncertain']} emits cut off by a close")
        for key, slope in res["slopes_per_hour"].items():
            if slope is not None:
                print(f"  {key:12s} mean {res['means_after_warmup'].get(key, 0):10.1f}  slope {slope:+10.2f}/h")
        for line in c["problems"][:10] + c["server_errors"][:10]:
            print("  " + line)
    print(f"results: {out}")
    wanted = [b for b in args.backends.split(",") if b]
    if [res["backend"] for res in results] != wanted:
        print(f"results for {[res['backend'] for res in results]}, expected {wanted}", file=sys.stderr)
        return 1
    return 0 if all(res["ok"] for res in results) else 1


if __name__ == "__main__":
    sys.exit(main())
