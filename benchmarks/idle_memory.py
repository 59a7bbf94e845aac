"""What each idle connection holds: tracemalloc and the collector's object counts in a real uvicorn server.

The server (``benchmarks/servers/ours.py`` or ``raw_starlette.py``, same uvicorn settings as the harness) runs in a
child process with tracemalloc on; the driver takes a snapshot there, opens ``--conns`` idle connections from a client
process (``websockets``; ours: CONNECT ``/bench`` and wait for CONNECTED), waits ``--settle`` s, takes a second
snapshot and prints, per connection, the bytes and blocks allocated in between grouped by package, by allocation site
and by object type (``gc.get_objects()`` counts and ``sys.getsizeof``). Python-level figures only, so they are exact
and repeatable (RSS also holds the kernel's socket buffers and allocator slack: see the capacity workload).

    python -m benchmarks.idle_memory --server ours --conns 3000
    python -m benchmarks.idle_memory --server raw --conns 3000
    python -m benchmarks.idle_memory --server ours --conns 3000 --json benchmarks/results/idle_memory-ours.json
    python -m benchmarks.idle_memory --server ours --conns 5000 --frames 0     # the collector only, full speed
    python -m benchmarks.idle_memory --server ours --conns 5000 --frames 0 --gc-threshold 50000,20,100
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from .common import WS_IMPORT_PATHS

BENCH_DIR = Path(__file__).resolve().parent
SERVERS = {"ours": "ours", "raw": "raw_starlette"}
URL_PATH = {"ours": "/ws/", "raw": "/ws"}
LIBRARY = f"{os.sep}starlette_realtime{os.sep}"
CLIENT = f"{LIBRARY}client{os.sep}"


def _types() -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        counts[type(obj).__qualname__] += 1
    return counts


def _type_sizes() -> dict[str, int]:
    sizes: dict[str, int] = collections.defaultdict(int)
    for obj in gc.get_objects():
        try:
            sizes[type(obj).__qualname__] += sys.getsizeof(obj)
        except TypeError:
            pass
    return sizes


#: --ws: uvicorn's default protocol (the harness's setting) or the library's pre-framed one (the fast path).
WS = {"websockets-sansio": "websockets-sansio", "preframed": WS_IMPORT_PATHS["preframed"]}


def serve(module: str, port: int, out: Path, frames: int, gc_threshold: str | None = None,
          ws: str = "websockets-sansio") -> None:
    """The server process: uvicorn with tracemalloc; SIGUSR1 takes the baseline, SIGUSR2 writes the difference.

    ``frames`` 0: no tracemalloc (the collector's figures alone, at full speed).
    """
    if gc_threshold:
        gc.set_threshold(*(int(x) for x in gc_threshold.split(",")))
    sys.path.insert(0, str(BENCH_DIR / "servers"))
    import uvicorn

    app = __import__(module).app
    if frames:
        tracemalloc.start(frames)  # after the imports: only the difference between two snapshots is reported
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop", ws=WS[ws],
                            ws_ping_interval=None, log_level="warning", access_log=False, backlog=4096,
                            ws_max_size=1048576, lifespan="on")
    server = uvicorn.Server(config)
    state: dict[str, Any] = {"gc": [[0, 0.0], [0, 0.0], [0, 0.0]], "t0": 0.0}

    def on_gc(phase: str, info: dict[str, int]) -> None:  # the time each generation's collections take
        if phase == "start":
            state["t0"] = time.perf_counter()
        else:
            entry = state["gc"][info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - state["t0"]

    def baseline() -> None:
        gc.collect()
        state["snap"] = tracemalloc.take_snapshot() if frames else None
        state["gc"] = [[0, 0.0], [0, 0.0], [0, 0.0]]
        state["tracked0"] = len(gc.get_objects())
        gc.callbacks.append(on_gc)
        state["types"] = _types()
        state["sizes"] = _type_sizes()
        out.with_suffix(".base").write_text("ok")

    def diff() -> None:
        gc.callbacks.remove(on_gc)
        collections_while_opening = state["gc"]
        timings = []
        for _ in range(3):
            t = time.perf_counter()
            gc.collect()
            timings.append(time.perf_counter() - t)
        tracked = len(gc.get_objects())
        gc.freeze()  # what an application would do after start-up (or after its connections opened)
        frozen = []
        for _ in range(3):
            t = time.perf_counter()
            gc.collect()
            frozen.append(time.perf_counter() - t)
        gc.unfreeze()
        collector = {"while_opening": collections_while_opening, "tracked_objects": tracked,
                     "tracked_at_start": state["tracked0"],
                     "full_collection_s": min(timings), "full_collection_frozen_s": min(frozen),
                     "threshold": gc.get_threshold()}
        if not frames:
            out.write_text(json.dumps({"gc": collector, "own": [], "lines": [], "files": [], "types": {}}))
            return
        snap = tracemalloc.take_snapshot()
        types = _types()
        sizes = _type_sizes()
        by_line = snap.compare_to(state["snap"], "lineno")
        by_file = snap.compare_to(state["snap"], "filename")
        own: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for stat in snap.compare_to(state["snap"], "traceback"):
            for frame in reversed(stat.traceback):  # the most recent first
                if LIBRARY in frame.filename and CLIENT not in frame.filename:
                    own[f"{frame.filename}:{frame.lineno}"][0] += stat.size_diff
                    own[f"{frame.filename}:{frame.lineno}"][1] += stat.count_diff
                    break
        result = {
            "gc": collector,
            "own": [(site, size, count) for site, (size, count) in own.items()],
            "lines": [(str(s.traceback[0]), s.size_diff, s.count_diff) for s in by_line if s.size_diff > 0],
            "files": [(s.traceback[0].filename, s.size_diff, s.count_diff) for s in by_file if s.size_diff > 0],
            "types": {k: (types[k] - state["types"].get(k, 0), sizes.get(k, 0) - state["sizes"].get(k, 0))
                      for k in types if types[k] - state["types"].get(k, 0) > 0},
        }
        out.write_text(json.dumps(result))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, baseline)
        loop.add_signal_handler(signal.SIGUSR2, diff)
        await server.serve()

    import uvloop

    uvloop.run(main())


async def _answer_pings(ws: Any) -> None:
    """Ours PINGs every 25 s and closes a socket that does not answer: answer as a client does."""
    try:
        async for message in ws:
            if message == "[7]":
                await ws.send("[8]")
    except Exception:
        pass


async def _clients(server: str, port: int, conns: int, concurrency: int, readers: set[Any]) -> list[Any]:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}{URL_PATH[server]}"
    opened: list[Any] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            if server == "ours":
                ws = await connect(url, subprotocols=["rt.v1.json"], ping_interval=None, compression=None)  # type: ignore[list-item]
                await ws.send('[1,"/bench",null]')
                while not str(await ws.recv()).startswith("[2,"):
                    pass
                task = asyncio.get_running_loop().create_task(_answer_pings(ws))
                readers.add(task)
            else:
                ws = await connect(url, ping_interval=None, compression=None)
            opened.append(ws)

    await asyncio.gather(*(one() for _ in range(conns)))
    return opened


def _wait_file(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path}")
        time.sleep(0.05)


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(server: str, conns: int, *, concurrency: int = 50, settle: float = 2.0, frames: int = 30,
            gc_threshold: str | None = None, ws: str = "websockets-sansio") -> dict[str, Any]:
    """Start the server, open ``conns`` idle connections, return the per-connection allocation figures."""
    import tempfile

    port = _port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "diff.json"
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.idle_memory", "--serve", SERVERS[server],
                                 "--port", str(port), "--out", str(out), "--frames", str(frames), "--ws", ws,
                                 *(["--gc-threshold", gc_threshold] if gc_threshold else [])],
                                cwd=BENCH_DIR.parent)
        try:
            import socket

            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.1)

            async def drive() -> None:
                # A few connections first, so that lazy imports and first-use caches are not counted per connection.
                readers: set[Any] = set()
                for ws in await _clients(server, port, 20, concurrency, readers):
                    await ws.close()
                await asyncio.sleep(1.0)
                os.kill(proc.pid, signal.SIGUSR1)
                await asyncio.to_thread(_wait_file, out.with_suffix(".base"))
                opened = await _clients(server, port, conns, concurrency, readers)
                await asyncio.sleep(settle)
                still_open[0] = sum(1 for ws in opened if ws.state.name == "OPEN")
                os.kill(proc.pid, signal.SIGUSR2)
                await asyncio.to_thread(_wait_file, out, 120.0)
                for ws in opened:
                    ws.transport.abort()

            still_open = [0]
            asyncio.run(drive())
            if still_open[0] != conns:
                raise RuntimeError(f"only {still_open[0]} of {conns} connections were open at the snapshot")
            raw = json.loads(out.read_text())
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    total = sum(size for _, size, _ in raw["files"])
    own = sum(size for _, size, _ in raw["own"])
    return {"server": server, "conns": conns, "gc": raw["gc"], "bytes_per_conn": total / conns,
            "own_bytes_per_conn": own / conns,
            "own": sorted(raw["own"], key=lambda r: -r[1]),
            "files": sorted(raw["files"], key=lambda r: -r[1]), "lines": sorted(raw["lines"], key=lambda r: -r[1]),
            "types": raw["types"]}


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def report(result: dict[str, Any], top: int) -> str:
    n = result["conns"]
    lines = [f"{result['server']}: {n} idle connections, {result['bytes_per_conn']:,.0f} B traced per connection, "
             f"{result['own_bytes_per_conn']:,.0f} B of them allocated by starlette_realtime's code (with --frames "
             "deep enough, what it asked the standard library for too)"]
    g = result["gc"]
    (n0, t0), (n1, t1), (n2, t2) = g["while_opening"]
    lines.append(f"collector (threshold {tuple(g['threshold'])}): while opening, {n0} / {n1} / {n2} collections of "
                 f"generations 0 / 1 / 2 taking {t0 * 1e3:.0f} / {t1 * 1e3:.0f} / {t2 * 1e3:.0f} ms; "
                 f"{g['tracked_objects']:,} objects tracked ({g['tracked_at_start']:,} before the connections, "
                 f"{(g['tracked_objects'] - g['tracked_at_start']) / n:.0f} per connection); a full "
                 f"collection {g['full_collection_s'] * 1e3:.1f} ms, after gc.freeze() "
                 f"{g['full_collection_frozen_s'] * 1e3:.1f} ms")
    if result["own"]:
        lines.append("\nstarlette_realtime's own, by its innermost line (B / blocks per connection):")
        for site, size, count in result["own"][:top]:
            lines.append(f"  {size / n:9,.0f} {count / n:6.2f}  {_short(site)}")
    packages: dict[str, int] = collections.defaultdict(int)
    for path, size, _ in result["files"]:
        short = _short(path)
        packages[short.split("/", 1)[0] if "/" in short else short] += size
    lines.append("\nby package (B per connection):")
    for pkg, size in sorted(packages.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {size / n:9,.0f}  {pkg}")
    lines.append("\nby allocation site (B / blocks per connection):")
    for site, size, count in result["lines"][:top]:
        lines.append(f"  {size / n:9,.0f} {count / n:6.2f}  {_short(site)}")
    lines.append("\nby object type, objects the collector tracks (count / getsizeof B per connection):")
    for name, (count, size) in sorted(result["types"].items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {count / n:6.2f} {size / n:9,.0f}  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", choices=sorted(SERVERS), default="ours")
    p.add_argument("--conns", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the last CONNECTED and the snapshot")
    p.add_argument("--frames", type=int, default=30,
                   help="traceback depth of tracemalloc; 0: no tracemalloc (the collector's figures only)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--ws", choices=sorted(WS), default="websockets-sansio",
                   help="uvicorn's WebSocket protocol (preframed: the library's fast path)")
    p.add_argument("--gc-threshold", help="gc.set_threshold() in the server, e.g. 50000,20,100")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.out, args.frames, args.gc_threshold, args.ws)
        return 0
    result = measure(args.server, args.conns, concurrency=args.concurrency, settle=args.settle, frames=args.frames,
                     gc_threshold=args.gc_threshold, ws=args.ws)
    print(report(result, args.top))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
