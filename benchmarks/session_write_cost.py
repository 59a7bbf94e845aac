"""What writing sessions through to Redis costs, per join and per acknowledged event (issue: crash recovery).

One uvicorn node on a redis-server of its own, one client: N calls of ``echo`` (each answered after the session
is written through) and N join-and-leave pairs, with ``write_through`` on and off, interleaved, ``--repeats``
times each.  Reports the median wall time and server CPU per operation and the difference, which is the write's
cost.  The fan-out path is untouched by the writes (they happen at join, leave and answer time only).

    python -m benchmarks.session_write_cost --ops 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from procs import Node, RedisServer  # noqa: E402

from starlette_realtime.client import RealtimeClient  # noqa: E402

NS = "/bench"
APP = '''
import os
from starlette.applications import Starlette
from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, on_event

class Bench(RealtimeEndpoint):
    namespace = "/bench"

    @on_event("echo")
    async def echo(self, conn: Connection, data: int) -> int:
        return data

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> None:
        await conn.join(room)
        await conn.leave(room)  # a join and a leave per call: both are written through

realtime = RealtimeRouter([Bench], backend=os.environ["REDIS_URL"], secret_key="k",
                          write_through=os.environ["WRITE_THROUGH"] == "1")
app = Starlette(lifespan=realtime.lifespan)
realtime.mount(app, "/realtime")
'''


async def one_run(redis_url: str, write_through: bool, ops: int, app_dir: Path) -> dict[str, float]:
    node = Node("wt_app:app", {"REDIS_URL": redis_url, "WRITE_THROUGH": "1" if write_through else "0",
                               "PYTHONPATH": f"{app_dir}:{ROOT}"})
    node.start()
    try:
        assert node.proc is not None
        proc = psutil.Process(node.proc.pid)
        result: dict[str, float] = {}
        async with RealtimeClient(node.url + "/realtime", namespaces=[NS]) as client:
            await client.call("echo", 0, namespace=NS, timeout=10)  # warm up
            for name, op in (("ack", lambda i: client.call("echo", i, namespace=NS, timeout=10)),
                             ("join", lambda i: client.call("join", f"r{i}", namespace=NS, timeout=10))):
                cpu0, t0 = proc.cpu_times(), time.perf_counter()
                for i in range(ops):
                    await op(i)
                wall = time.perf_counter() - t0
                cpu1 = proc.cpu_times()
                result[f"{name}_wall_us"] = wall / ops * 1e6
                result[f"{name}_cpu_us"] = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / ops * 1e6
        return result
    finally:
        node.terminate(5)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    app_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"wt-bench-{os.getpid()}"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "wt_app.py").write_text(APP)
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with RedisServer() as redis:
        for _ in range(args.repeats):
            for wt in (False, True):  # interleaved
                runs[wt].append(await one_run(redis.url, wt, args.ops, app_dir))
    table = {}
    for key in runs[True][0]:
        on = statistics.median(r[key] for r in runs[True])
        off = statistics.median(r[key] for r in runs[False])
        table[key] = {"write_through": round(on, 1), "off": round(off, 1), "cost": round(on - off, 1)}
    print(json.dumps({"ops": args.ops, "repeats": args.repeats, "median_per_op": table}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
