"""Flood isolation: how much one flooding client slows everyone else's acknowledgements.

    python -m benchmarks.flood_isolation [--clients 50] [--hz 20] [--duration 10] [--window 500] [--repeats 3]

Each scenario starts a fresh uvicorn process (pinned to CPU 0) serving the app below.  ``--clients``
well-behaved clients (one asyncio process pinned to CPU 1) each send an ``echo`` event with an ack id
``--hz`` times a second and time the acknowledgement.  The flooder is a separate process on CPU 1, at
``nice 19`` so that it takes CPU only from the server and not from the clients that measure: it keeps
``--window`` acknowledged ``echo`` events in flight, as many as the server will take, reads every answer
(so it is never cut off as a slow consumer), and reconnects whenever the server closes it.

Scenarios (interleaved over ``--repeats``):

* ``baseline``: no flooder, no rate limit;
* ``flood``: the flooder, no rate limit;
* ``flood+limit``: the flooder with ``Limits(rate=100, burst=200)`` (default ``abuse_threshold=50``):
  the flooder is closed with 4006 as soon as it floods, and reconnects (handshake and CONNECT each time);
* ``flood+limit-open``: the same limit with ``abuse_threshold`` so high that the flooder is never closed:
  the cost of answering ``rate_limited`` to every flood event;
* ``flood-unfair`` (only with ``--scenarios``): the flood against a server whose links never yield between
  frames, as before they did every 16 (an ablation).

The well-behaved clients send 20 events/s each, under the 100/s limit.  Before each run the script waits for
our two cores to be quiet, and it runs a scenario again when other jobs used more than ``--max-foreign`` cores
during it (a shared machine).  Results (medians over the repeats, and every run) go to
``benchmarks/results/flood_isolation.json`` with the machine, the versions and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from benchmarks.harness import ForeignLoad, wait_quiet
from starlette_realtime import Connection, Limits, RealtimeEndpoint, RealtimeRouter, on_event

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"
NS = "/bench"

_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU, CLIENT_CPU = (_CPUS[0], _CPUS[1]) if len(_CPUS) >= 2 else (None, None)


# The server (uvicorn --factory benchmarks.flood_isolation:create_app) ----------------------------------------


class Bench(RealtimeEndpoint):
    namespace = NS

    @on_event("echo")
    async def echo(self, conn: Connection, data: Any) -> Any:
        return data


def create_app() -> Starlette:
    """The benchmark app; ``FLOOD_LIMITS`` is ``none`` or ``rate,burst,abuse_threshold``."""
    fair_share = os.environ.get("FLOOD_FAIR_SHARE")
    if fair_share:  # the ablation: how many frames a link handles before it yields
        import starlette_realtime.link

        starlette_realtime.link._FAIR_SHARE = int(fair_share)
    spec = os.environ.get("FLOOD_LIMITS", "none")
    if spec == "none":
        limits = Limits()
    else:
        rate, burst, abuse = spec.split(",")
        limits = Limits(rate=float(rate), burst=int(burst), abuse_threshold=int(abuse))
    realtime = RealtimeRouter([Bench], limits=limits, ping_interval=25, ping_timeout=20)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/ws", realtime)
    return app


def start_server(port: int, limits: str, fair_share: str = "") -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "benchmarks.flood_isolation:create_app", "--factory",
        "--host", HOST, "--port", str(port), "--workers", "1", "--loop", "uvloop", "--ws", "websockets-sansio",
        "--log-level", "error", "--no-access-log", "--ws-ping-interval", "0", "--ws-per-message-deflate", "false",
    ]
    # The library's warnings (one per WebSocket closed with 4006) go to a file, not the terminal.
    log_dir = BENCH_DIR / "results" / "tmp"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "flood_server.log", "ab") as log:
        env = {**os.environ, "FLOOD_LIMITS": limits, "FLOOD_FAIR_SHARE": fair_share}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    if SERVER_CPU is not None:
        os.sched_setaffinity(proc.pid, {SERVER_CPU})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Clients ------------------------------------------------------------------------------------------------------


async def _open(url: str) -> Any:
    import websockets

    ws = await websockets.connect(url, subprotocols=["rt.v1.json"], compression=None, ping_interval=None,
                                  max_size=None)  # type: ignore[list-item]
    await ws.recv()  # HELLO
    await ws.send(json.dumps([1, NS, None]))
    while True:
        frame = json.loads(await ws.recv())
        if frame[0] == 2:
            return ws
        if frame[0] == 3:
            raise RuntimeError(f"CONNECT refused: {frame}")


async def _polite(url: str, hz: float, stop_at: float, start_at: float, lat: list[float], errors: list[str]) -> None:
    ws = await _open(url)
    ack_id = 0
    try:
        await asyncio.sleep(random.random() / hz)
        while time.monotonic() < stop_at:
            ack_id += 1
            sent = time.perf_counter()
            await ws.send(json.dumps([5, NS, "echo", {"n": ack_id}, ack_id]))
            while True:
                frame = json.loads(await ws.recv())
                if frame[0] == 6 and frame[2] == ack_id:
                    break
            took = time.perf_counter() - sent
            if len(frame) > 4 and frame[4] is not None:
                errors.append(frame[4][0])
            elif time.monotonic() >= start_at:
                lat.append(took)
            await asyncio.sleep(max(0.0, 1 / hz - took))
    finally:
        await ws.close()


def run_polite(url: str, clients: int, hz: float, warmup: float, duration: float) -> dict[str, Any]:
    import uvloop

    async def main() -> dict[str, Any]:
        lat: list[float] = []
        errors: list[str] = []
        now = time.monotonic()
        start_at, stop_at = now + warmup, now + warmup + duration
        await asyncio.gather(*(_polite(url, hz, stop_at, start_at, lat, errors) for _ in range(clients)))
        lat.sort()
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
        return {"samples": len(lat), "errors": len(errors), "p50_ms": pct(0.50), "p90_ms": pct(0.90),
                "p99_ms": pct(0.99), "max_ms": lat[-1] * 1000}

    return uvloop.run(main())


COUNTERS = ("connects", "sent", "acked", "limited", "closed_4006")


def flooder(url: str, window: int, stop: Any, shared: Any) -> None:
    """The flooding client (its own process): ``window`` events in flight, reconnecting when closed."""
    import uvloop
    from websockets.exceptions import ConnectionClosed

    if CLIENT_CPU is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})
    os.nice(19)
    payload = {"flood": "x" * 32}
    counts = dict.fromkeys(COUNTERS, 0)

    def publish() -> None:
        for i, key in enumerate(COUNTERS):
            shared[i] = counts[key]

    async def session() -> None:
        ws = await _open(url)
        counts["connects"] += 1
        credit = asyncio.Semaphore(window)
        ack_id = 0

        async def reader() -> None:
            try:
                async for message in ws:
                    frame = json.loads(message)
                    if frame[0] == 6:
                        credit.release()
                        if len(frame) > 4 and frame[4] is not None:
                            counts["limited"] += 1
                        else:
                            counts["acked"] += 1
            except ConnectionClosed:
                pass
            finally:
                for _ in range(window):  # wake the sender: it sees the reader is done
                    credit.release()

        task = asyncio.ensure_future(reader())
        try:
            while not stop.is_set() and not task.done():
                await credit.acquire()
                ack_id = ack_id % (2**31 - 2) + 1
                await ws.send(json.dumps([5, NS, "echo", payload, ack_id]))
                counts["sent"] += 1
                if counts["sent"] % 1000 == 0:
                    publish()
        except ConnectionClosed:
            pass
        finally:
            await ws.close()
            await task
            if ws.close_code == 4006:
                counts["closed_4006"] += 1

    async def main() -> None:
        while not stop.is_set():
            try:
                await session()
            except (OSError, RuntimeError, ConnectionClosed):
                await asyncio.sleep(0.01)
        publish()

    uvloop.run(main())


# Scenarios ----------------------------------------------------------------------------------------------------

SCENARIOS = {
    "baseline": ("none", False),
    "flood": ("none", True),
    "flood+limit": ("100,200,50", True),
    "flood+limit-open": ("100,200,1000000000", True),
}
#: Not run by default: the flood with a link that never yields between frames (as before it did).
ABLATIONS = {"flood-unfair": ("none", True, "1000000000")}


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    limits, flood, fair_share = (*SCENARIOS[name], "") if name in SCENARIOS else ABLATIONS[name]
    result_quiet = wait_quiet(args.quiet, args.max_wait)
    port = free_port()
    server = start_server(port, limits, fair_share)
    url = f"ws://{HOST}:{port}/ws/"
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    shared = ctx.Array("q", len(COUNTERS), lock=False)
    proc = None
    try:
        if flood:
            proc = ctx.Process(target=flooder, args=(url, args.window, stop, shared), daemon=True)
            proc.start()
            time.sleep(0.5)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        foreign = ForeignLoad(server.pid, *([proc.pid] if proc is not None and proc.pid else [])).start()
        result = run_polite(url, args.clients, args.hz, args.warmup, args.duration)
        result["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
        result["foreign_load"] = foreign.stop()
    finally:
        stop.set()
        if proc is not None:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    result["busy_before"] = result_quiet
    if flood:
        counts = dict(zip(COUNTERS, shared, strict=True))
        counts["events_per_s"] = counts["sent"] / (args.warmup + args.duration + 0.5)
        result["flooder"] = counts
    else:
        result["flooder"] = None
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("starlette-realtime", "starlette", "uvicorn", "websockets", "msgspec", "uvloop"):
        out[pkg] = version(pkg)
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["commit"] = "?"
    return out


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": model, "cpus": os.cpu_count(), "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--hz", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quiet", type=float, default=0.15,
                        help="wait until our two cores are at most this busy before each run")
    parser.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for quiet cores at most")
    parser.add_argument("--max-foreign", type=float, default=0.1,
                        help="CPU cores other jobs may use during a run before it is run again")
    parser.add_argument("--attempts", type=int, default=4, help="runs of a scenario at most, when disturbed")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "flood_isolation.json"))
    args = parser.parse_args()
    if CLIENT_CPU is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})
    names = args.scenarios.split(",")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names:
            # A run disturbed by other jobs on the machine is run again (and marked if it stays so).
            for attempt in range(1, args.attempts + 1):
                res = run_scenario(name, args)
                res["attempt"] = attempt
                res["disturbed"] = res["foreign_load"] > args.max_foreign
                if not res["disturbed"]:
                    break
                print(f"[{r + 1}/{args.repeats}] {name:17} disturbed ({res['foreign_load']:.2f} cores of other jobs): "
                      "again", flush=True)
            runs[name].append(res)
            fl = res["flooder"]
            extra = (f"  flooder {fl['events_per_s']:.0f} ev/s, {fl['limited']} limited, {fl['closed_4006']} x 4006"
                     if fl else "")
            print(f"[{r + 1}/{args.repeats}] {name:17} p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:7.2f} ms  "
                  f"max {res['max_ms']:7.1f} ms  n={res['samples']}  server cpu {res['server_cpu']:.0%}  "
                  f"foreign {res['foreign_load']:.2f} cores{extra}",
                  flush=True)
    summary = {
        name: {key: statistics.median(r[key] for r in rs) for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms",
                                                                        "server_cpu")}
        for name, rs in runs.items()
    }
    print("\nmedians over the repeats (well-behaved clients' ack latency):")
    for name, s in summary.items():
        print(f"  {name:17} p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:7.2f} ms  max {s['max_ms']:7.1f} ms  "
              f"server cpu {s['server_cpu']:.0%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python -m benchmarks.flood_isolation " + " ".join(sys.argv[1:]),
        "config": vars(args), "machine": machine(), "versions": versions(), "summary": summary, "runs": runs,
    }, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
