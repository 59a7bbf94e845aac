"""What recovery history costs: bytes per retained message on memory:// and redis://.

    python benchmarks/history_cost.py                  # memory:// only
    python benchmarks/history_cost.py --redis          # also redis:// (starts its own redis-server)

Publishes N messages with a payload of a given size into R rooms through the
backend's own publish path, then reports the memory that the retained history
takes per message (tracemalloc for memory://, Redis `used_memory` for redis://),
and the publish cost per message in CPU microseconds.  Results go to
benchmarks/results/history_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec

from starlette_realtime.backends import MemoryBackend
from starlette_realtime.backends.base import Publication

RESULTS = Path(__file__).parent / "results"


def publications(n: int, rooms: int, size: int) -> list[Publication]:
    payload = msgspec.json.encode({"text": "x" * max(0, size - 11)})
    return [Publication("/bench", f"room-{i % rooms}", "msg", payload, ts=time.time()) for i in range(n)]


async def memory_cost(n: int, rooms: int, size: int) -> dict[str, Any]:
    backend = MemoryBackend(history_size=n, history_ttl=3600)
    await backend.start(lambda pub: None)
    pubs = publications(n, rooms, size)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cpu = time.process_time()
    for pub in pubs:
        await backend.publish(pub)
    cpu = time.process_time() - cpu
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    retained = backend.stats()["messages"]
    await backend.stop()
    return {
        "backend": "memory://",
        "messages": retained,
        "payload_bytes": size,
        "bytes_per_message": round((after - before) / retained, 1),
        "publish_cpu_us": round(cpu / n * 1e6, 2),
    }


def redis_cost(n: int, rooms: int, size: int) -> dict[str, Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = 26000 + os.getpid() % 1000
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        return asyncio.run(_redis_cost(port, n, rooms, size))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def _redis_cost(port: int, n: int, rooms: int, size: int) -> dict[str, Any]:
    from starlette_realtime.backends.redis import RedisBackend

    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", history_size=n, history_ttl=3600)
    await backend.start(lambda pub: None)
    info = await backend.redis.info("memory")
    before = int(info["used_memory"])
    pubs = publications(n, rooms, size)
    wall = time.perf_counter()
    cpu = time.process_time()
    for pub in pubs:
        await backend.publish(pub)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    info = await backend.redis.info("memory")
    after = int(info["used_memory"])
    await backend.stop()
    return {
        "backend": "redis://",
        "messages": n,
        "payload_bytes": size,
        "bytes_per_message": round((after - before) / n, 1),
        "publish_cpu_us": round(cpu / n * 1e6, 2),
        "publishes_per_s": round(n / wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    rows = [asyncio.run(memory_cost(args.messages, args.rooms, args.size))]
    if args.redis:
        rows.append(redis_cost(args.messages, args.rooms, args.size))
    print(f"{'backend':<10} {'messages':>9} {'payload B':>9} {'B/message':>10} {'publish CPU us':>15}")
    for r in rows:
        print(f"{r['backend']:<10} {r['messages']:>9} {r['payload_bytes']:>9} {r['bytes_per_message']:>10} "
              f"{r['publish_cpu_us']:>15}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "command": " ".join(["python", *sys.argv]),
        "rows": rows,
    }
    (RESULTS / "history_cost.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
