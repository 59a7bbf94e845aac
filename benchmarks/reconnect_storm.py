"""A reconnect storm: N clients reconnect at once after a node restart, and all of them must recover.

One uvicorn node of ours on a redis-server of its own (sessions must outlive the process), N idle clients
(raw protocol v1 over ``websockets``, spread over ``--procs`` client processes) connected and following one room.
The node is stopped (SIGTERM: it closes every WebSocket with 1001 in batches and saves the sessions) and started
again on the same port; every client reconnects at once with its session and positions. Reported: the time from
the new node's first accepted handshake to the last CONNECTED, how many came back ``recovered``, handshakes per
second, and the node's CPU during the storm.

    python -m benchmarks.reconnect_storm --clients 10000 --procs 4 --out benchmarks/results/reconnect_storm.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from procs import Node, RedisServer  # noqa: E402

NS = "/feed"
ROOM = "storm"


#: Seconds a client waits for the answer to its CONNECT (or follow) before it counts it unanswered and starts over.
ANSWER_TIMEOUT = 30.0


async def _client(url: str, ready: asyncio.Event, go: asyncio.Event, out: dict[str, Any]) -> None:
    import websockets

    session = None
    positions: dict[str, Any] = {}
    # First life: connect (retrying a retryable CONNECT_ERROR with backoff, as the clients do: under the
    # connect storm the backend may answer "unavailable"), follow the room, remember the session.
    for _ in range(600):
        try:
            async with websockets.connect(url, subprotocols=["rt.v1.json"], open_timeout=60) as ws:  # type: ignore[list-item]
                try:
                    # A CONNECT or follow left unanswered is counted, and the client starts over.
                    async with asyncio.timeout(ANSWER_TIMEOUT):
                        await ws.recv()  # HELLO
                        await ws.send(json.dumps([1, NS, None]))
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame[0] in (2, 3):
                                break
                        if frame[0] == 2:
                            session = frame[3]
                            await ws.send(json.dumps([5, NS, "follow", ROOM, 1]))
                            while json.loads(await ws.recv())[0] != 6:
                                pass
                except TimeoutError:
                    out["unanswered"] = out.get("unanswered", 0) + 1
                    continue
                if frame[0] == 3:
                    out["first_retries"] = out.get("first_retries", 0) + 1
                    await asyncio.sleep(0.1 + random.random() * 0.4)
                    continue
                ready.set()
                try:
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame[0] == 7:
                            await ws.send("[8]")
                        elif frame[0] == 5 and len(frame) > 7 and frame[6]:
                            positions[frame[5]] = [frame[6], frame[7]]
                except websockets.ConnectionClosed:
                    pass
                break
        except (OSError, websockets.WebSocketException, TimeoutError, EOFError):  # any failed handshake: retry
            if ready.is_set():
                break
            out["first_retries"] = out.get("first_retries", 0) + 1
            await asyncio.sleep(0.1 + random.random() * 0.4)
    if not ready.is_set():
        out["error"] = "never connected"
        ready.set()
        return
    await go.wait()
    # Second life: reconnect at once, resume.
    for _ in range(600):
        try:
            async with websockets.connect(url, subprotocols=["rt.v1.json"], open_timeout=60) as ws:  # type: ignore[list-item]
                await ws.recv()
                await ws.send(json.dumps([1, NS, None, session, positions or None]))
                while True:
                    try:
                        async with asyncio.timeout(ANSWER_TIMEOUT):
                            frame = json.loads(await ws.recv())
                    except TimeoutError:
                        out["unanswered"] = out.get("unanswered", 0) + 1
                        break
                    if frame[0] == 2:
                        out["recovered"] = bool(len(frame) > 4 and frame[4])
                        out["at"] = time.time()
                        return
                    if frame[0] == 3:
                        if len(frame) > 4 and frame[4]:  # retryable (the backend is busy): back off, as clients do
                            out["retries"] = out.get("retries", 0) + 1
                            break
                        out["error"] = frame[2]
                        return
            await asyncio.sleep(0.1 + random.random() * 0.4)
            continue
        except (OSError, websockets.WebSocketException, TimeoutError, EOFError):  # any failed handshake: retry
            await asyncio.sleep(0.05)
    out["error"] = "gave up"


def _worker(url: str, n: int, conn: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        go = asyncio.Event()
        outs: list[dict[str, Any]] = [{} for _ in range(n)]
        readies = [asyncio.Event() for _ in range(n)]
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(_client(url, readies[i], go, outs[i])))
            if i % 50 == 49:
                await asyncio.sleep(0.01)  # do not open a thousand handshakes in one go
        await asyncio.gather(*(r.wait() for r in readies))
        conn.send("ready")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # "go": the node was restarted
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 600)
        conn.send(outs)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--out", type=Path, help="also write the result (JSON) here")
    args = parser.parse_args()
    with RedisServer() as redis:
        env = {"REDIS_URL": redis.url, "NODE_ID": "storm", "SECRET": "storm-secret"}
        node = Node("cluster_app:app", env).start()
        url = node.url + "/realtime/"
        ctx = mp.get_context("spawn")
        pipes, workers = [], []
        per = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0) for i in range(args.procs)]
        for n in per:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(url, n, child), daemon=True)
            proc.start()
            pipes.append(parent)
            workers.append(proc)
        for p in pipes:
            assert p.recv() == "ready"
        print(f"{args.clients} clients connected and following; restarting the node", flush=True)
        node.terminate(30)  # 1001 in batches, sessions saved
        restarted = Node("cluster_app:app", env, port=node.port)
        t0 = time.time()
        restarted.start()
        assert restarted.proc is not None
        ps = psutil.Process(restarted.proc.pid)
        cpu0 = ps.cpu_times()
        up = time.time()
        for p in pipes:
            p.send("go")
        outs: list[dict[str, Any]] = []
        for p in pipes:
            outs.extend(p.recv())
        cpu1 = ps.cpu_times()
        done = max(o.get("at", 0.0) for o in outs)
        recovered = sum(1 for o in outs if o.get("recovered"))
        errors = [o["error"] for o in outs if "error" in o]
        result = {
            "clients": args.clients,
            "node_start_s": round(up - t0, 2),
            "storm_s": round(done - up, 2),
            "recovered": recovered,
            "errors": len(errors),
            "retried_connects": sum(o.get("retries", 0) for o in outs),
            "retried_first_connects": sum(o.get("first_retries", 0) for o in outs),
            "unanswered_connects": sum(o.get("unanswered", 0) for o in outs),
            "handshakes_per_s": round(args.clients / max(done - up, 1e-9)),
            "node_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
            "node_cpu_ms_per_handshake": round(
                ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / args.clients * 1000, 3
            ),
        }
        print(json.dumps(result, indent=2))
        if args.out is not None:
            args.out.write_text(json.dumps(result | {"argv": sys.argv[1:], "started": t0}, indent=1) + "\n")
        restarted.terminate(30)
        for proc in workers:
            proc.join(5)
        if errors or recovered != args.clients:
            sys.exit(f"not every client recovered: {recovered}/{args.clients}, errors {errors[:5]}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
