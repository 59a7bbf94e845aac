"""Cross-node delivery over the Redis backend: N of our nodes on one redis-server.

    python -m benchmarks.redis_cluster [--nodes 3] [--receivers 5] [--rate 200] [--seconds 5] [--burst 3000]

One redis-server (no persistence) and ``--nodes`` uvicorn processes running
``tests/cluster_app.py`` (``backend=RedisBackend(...)``).  ``--receivers``
WebSocket clients per node join room ``bench``; one publisher client on node 1
sends ``shout`` events (the server emits them to the room through Redis, so
every node, node 1 included, receives them over pub/sub).  Each payload carries
the publisher's wall-clock time, so every receiver measures publish-to-receive
latency (one host, one clock).

Two phases:

* **latency**: ``--rate`` messages/s for ``--seconds`` s; p50/p90/p99/max of
  publish-to-receive latency, split into same-node and cross-node receivers;
* **throughput**: ``--burst`` messages as fast as the publisher can send them;
  deliveries/s counted at the receivers of the other nodes (cross-node) and
  in total, from the first send to the last delivery.

The clients are raw ``websockets`` connections speaking ``rt.v1.json`` (lighter
than the full client, so that the load generator is not the bottleneck), all
in this process.  Results: a table on stdout and benchmarks/results/redis_cluster.json
(machine, versions, command, figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from procs import Node, RedisServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "redis_cluster.json"
NS = "/chat"
ROOM = "bench"
_decode = msgspec.json.decode


class Receiver:
    def __init__(self, node: int) -> None:
        self.node = node
        self.latencies: list[float] = []
        self.count = 0
        self.last = 0.0
        self.ws: Any = None

    async def open(self, url: str) -> None:
        self.ws = await websockets.connect(url, subprotocols=["rt.v1.json"], compression=None, max_size=None)  # type: ignore[list-item]
        await self.ws.send('[1,"/chat",null]')
        await _until(self.ws, 2)
        await self.ws.send(f'[5,"/chat","join","{ROOM}",1]')
        await _until(self.ws, 6)

    async def run(self) -> None:
        async for raw in self.ws:
            now = time.time()
            frame = _decode(raw)
            if frame[0] == 5 and frame[2] == "said":
                text = frame[3]["text"]
                if text.startswith("t:"):
                    self.latencies.append(now - float(text[2:].split(":", 1)[0]))
                self.count += 1
                self.last = now
            elif frame[0] == 7:
                await self.ws.send("[8]")


async def _until(ws: Any, frame_type: int) -> list[Any]:
    while True:
        frame = _decode(await asyncio.wait_for(ws.recv(), 10))
        if frame[0] == frame_type:
            return frame  # type: ignore[no-any-return]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as redis:
        nodes = [Node("cluster_app:app", {"REDIS_URL": redis.url, "NODE_ID": f"n{i}", "SECRET": "bench"})
                 for i in range(args.nodes)]
        try:
            for node in nodes:
                node.start()
            receivers = [Receiver(i) for i in range(args.nodes) for _ in range(args.receivers)]
            for r in receivers:
                await r.open(nodes[r.node].url + "/realtime/")
            tasks = [asyncio.create_task(r.run()) for r in receivers]
            pub = await websockets.connect(nodes[0].url + "/realtime/", subprotocols=["rt.v1.json"],  # type: ignore[list-item]
                                           compression=None)
            await pub.send('[1,"/chat",null]')
            await _until(pub, 2)
            drain = asyncio.create_task(_drain(pub))

            async def send(text: str) -> None:
                await pub.send(json.dumps([5, NS, "shout", {"room": ROOM, "text": text}]))

            # Warm-up (connections, scripts, JIT-free but caches warm).
            for i in range(200):
                await send(f"w:{i}")
            await _settle(receivers, 200, 10)

            # Latency at a fixed rate.
            for r in receivers:
                r.latencies.clear()
                r.count = 0
            total = int(args.rate * args.seconds)
            start = time.monotonic()
            for i in range(total):
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await send(f"t:{time.time()}:{i}")
            await _settle(receivers, total, 20)
            same = [x for r in receivers if r.node == 0 for x in r.latencies]
            cross = [x for r in receivers if r.node != 0 for x in r.latencies]
            lost = sum(total - r.count for r in receivers)

            # Throughput: as fast as one publisher can send.
            for r in receivers:
                r.count = 0
                r.latencies.clear()
            t0 = time.time()
            for i in range(args.burst):
                await send(f"b:{i}")
            await _settle(receivers, args.burst, 60)
            end = max(r.last for r in receivers)
            elapsed = end - t0
            cross_deliveries = sum(r.count for r in receivers if r.node != 0)
            all_deliveries = sum(r.count for r in receivers)
            drain.cancel()
            for t in tasks:
                t.cancel()
            await pub.close()
            for r in receivers:
                await r.ws.close()
        finally:
            for node in nodes:
                node.terminate(5)
    return {
        "latency": {
            "rate": args.rate,
            "messages": total,
            "lost": lost,
            "same_node_ms": {q: round(_pct(same, v), 3) for q, v in (("p50", .5), ("p90", .9), ("p99", .99))},
            "cross_node_ms": {q: round(_pct(cross, v), 3) for q, v in (("p50", .5), ("p90", .9), ("p99", .99))},
            "cross_node_max_ms": round(max(cross) * 1000, 3) if cross else None,
            "samples": len(same) + len(cross),
        },
        "throughput": {
            "messages": args.burst,
            "seconds": round(elapsed, 3),
            "publications_per_s": round(args.burst / elapsed, 1),
            "cross_node_deliveries_per_s": round(cross_deliveries / elapsed, 1),
            "all_deliveries_per_s": round(all_deliveries / elapsed, 1),
        },
    }


async def _drain(ws: Any) -> None:
    async for raw in ws:
        if _decode(raw)[0] == 7:
            await ws.send("[8]")


async def _settle(receivers: list[Receiver], expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(r.count < expected for r in receivers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)


def _versions() -> dict[str, str]:
    import redis
    import starlette
    import uvicorn

    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "python": platform.python_version(),
        "redis-py": redis.__version__,
        "redis-server": next((w.split("=")[1] for w in server if w.startswith("v=")), "?"),
        "starlette": starlette.__version__,
        "uvicorn": uvicorn.__version__,
        "websockets": websockets.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--receivers", type=int, default=5, help="receivers per node")
    parser.add_argument("--rate", type=float, default=200, help="messages/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--burst", type=int, default=3000, help="messages in the throughput phase")
    args = parser.parse_args()
    load_before = os.getloadavg()
    figures = asyncio.run(bench(args))
    result = {
        "command": "python -m benchmarks.redis_cluster " + " ".join(sys.argv[1:]),
        "config": vars(args),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "processor": platform.machine(),
            # Everything (Redis, the nodes, the clients) shares these CPUs; a high load
            # average before the run means other work disturbed the figures.
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "versions": _versions(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **figures,
    }
    lat, thr = figures["latency"], figures["throughput"]
    print(f"\n{args.nodes} nodes x {args.receivers} receivers on one redis-server; publisher on node 1\n")
    print(f"{'phase':<28}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}")
    for label, key in (("latency, same node", "same_node_ms"), ("latency, cross node", "cross_node_ms")):
        row = lat[key]
        print(f"{label + f' @{args.rate:g}/s':<28}{row['p50']:>10.2f}{row['p90']:>10.2f}{row['p99']:>10.2f}")
    print(f"\nlost in the latency phase: {lat['lost']}")
    print(f"throughput: {thr['publications_per_s']:.0f} publications/s, "
          f"{thr['cross_node_deliveries_per_s']:.0f} cross-node deliveries/s, "
          f"{thr['all_deliveries_per_s']:.0f} deliveries/s in all")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
