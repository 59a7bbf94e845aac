"""What Prometheus metrics cost on the fan-out hot path.

    python -m benchmarks.metrics_overhead [--receivers 1000] [--publications 200] [--repeats 7]

Two uvicorn servers run the same app, one with ``metrics=PrometheusMetrics()`` and one with the default no-op
``Metrics``, both pinned to CPU 0; the client (picows + uvloop, pinned to CPU 1) holds ``--receivers`` connections
to each, all in room ``bench``. A run asks one server to publish ``--publications`` events to the room in a loop
and waits until every receiver has them all; the server's own process CPU time (``time.process_time()``, read
through an acknowledged event before and after) divided by the deliveries is the figure. Runs alternate between the
two servers (off, on, on, off, ...) after one warm-up run each; medians are reported. Needs the ``bench`` extra.

First, and much more precisely, it times ``Hub.deliver`` alone in this process (receivers whose outbox push returns
at once), interleaved the same way: that isolates what the metrics add to the fan-out loop from the cost of the
sockets, which dominates the end-to-end figure and its run-to-run noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

from starlette.applications import Starlette

from starlette_realtime import Connection, Metrics, RealtimeEndpoint, RealtimeRouter, on_event

NS = "/bench"


# The server ---------------------------------------------------------------------------------------------------


class Bench(RealtimeEndpoint):
    namespace = NS

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> None:
        await conn.join(room)

    @on_event("blast")
    async def blast(self, conn: Connection, n: int) -> int:
        pad = "x" * 64
        for i in range(n):
            await self.to("bench").emit("msg", {"i": i, "pad": pad})
        return n

    @on_event("cpu")
    async def cpu(self, conn: Connection) -> float:
        return time.process_time()


def make_app() -> Starlette:
    """The benchmark app (``uvicorn --factory``); ``BENCH_METRICS=on`` attaches PrometheusMetrics."""
    metrics: Metrics = Metrics()
    if os.environ.get("BENCH_METRICS") == "on":
        from starlette_realtime.prometheus import PrometheusMetrics

        metrics = PrometheusMetrics()
    realtime = RealtimeRouter([Bench], metrics=metrics, ping_interval=3600, ping_timeout=3600,
                              max_queue_messages=100_000, max_queue_bytes=1 << 30)
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/ws", realtime)
    return app


def start_server(metrics: str, cpu: int | None) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.metrics_overhead:make_app", "--host",
           "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--ws", "websockets-sansio", "--log-level",
           "warning", "--no-access-log", "--ws-ping-interval", "0", "--backlog", "4096"]
    proc = subprocess.Popen(cmd, env={**os.environ, "BENCH_METRICS": metrics},
                            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server ({metrics}) did not start")


# The client ---------------------------------------------------------------------------------------------------


class Node:
    """The client's view of one server: its connections and what they received."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.url = f"ws://127.0.0.1:{port}/ws/"
        self.conns: list[Any] = []
        self.received = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)

    async def connect(self, n: int) -> None:
        from picows import WSListener, WSMsgType, ws_connect

        node = self

        class Conn(WSListener):  # type: ignore[misc]
            def on_ws_connected(self, transport: Any) -> None:
                self.transport = transport
                transport.send(WSMsgType.TEXT, json.dumps([1, NS, None]).encode())

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                data = frame.get_payload_as_bytes()
                if data.startswith(b'[5,"/bench","msg"'):
                    node.received += 1
                    if node.received >= node.target and node.done is not None and not node.done.done():
                        node.done.set_result(None)
                elif data.startswith(b"[6,"):
                    ack = json.loads(data)
                    fut = node.acks.pop(ack[2], None)
                    if fut is not None and not fut.done():
                        fut.set_result(ack[3])

            def send(self, event: str, data: Any, ack_id: int) -> None:
                self.transport.send(WSMsgType.TEXT, json.dumps([5, NS, event, data, ack_id]).encode())

        headers = {"Sec-WebSocket-Protocol": "rt.v1.json"}
        sem = asyncio.Semaphore(100)

        async def one() -> None:
            async with sem:
                _, conn = await ws_connect(Conn, self.url, extra_headers=headers)
                self.conns.append(conn)
                await self.call(conn, "join", "bench")

        await asyncio.gather(*(one() for _ in range(n)))

    async def call(self, conn: Any, event: str, data: Any = None, timeout: float = 60.0) -> Any:
        ack_id = next(self.ids)
        fut = self.acks[ack_id] = asyncio.get_running_loop().create_future()
        conn.send(event, data, ack_id)
        return await asyncio.wait_for(fut, timeout)

    async def run(self, publications: int) -> float:
        """One measured burst; returns server CPU seconds per delivery."""
        driver = self.conns[0]
        self.received = 0
        self.target = publications * len(self.conns)
        self.done = asyncio.get_running_loop().create_future()
        before = await self.call(driver, "cpu")
        await self.call(driver, "blast", publications, timeout=300)
        await asyncio.wait_for(self.done, 300)
        after = await self.call(driver, "cpu")
        return float(after - before) / self.target


async def measure(args: argparse.Namespace, ports: dict[str, int]) -> dict[str, list[float]]:
    nodes = {name: Node(name, port) for name, port in ports.items()}
    for node in nodes.values():
        await node.connect(args.receivers)
        await asyncio.sleep(0.5)
    for node in nodes.values():  # warm-up
        await node.run(args.publications)
    runs: dict[str, list[float]] = {name: [] for name in nodes}
    order = list(nodes)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else reversed(order):
            runs[name].append(await nodes[name].run(args.publications))
            print(f"  run {r + 1} {name:>3}: {runs[name][-1] * 1e6:.3f} us/delivery", flush=True)
    for node in nodes.values():
        for conn in node.conns:
            conn.transport.disconnect()
    return runs


class _Outbox:
    __slots__ = ()

    def push(self, message: Any, size: int, volatile: bool = False) -> bool:
        return True


class _Receiver:
    """What ``Hub.deliver`` reads of a connection; its outbox takes a message and returns."""

    __slots__ = ("buffer", "codec", "outbox", "rooms", "sid")

    def __init__(self, sid: str, codec: Any) -> None:
        self.sid, self.codec, self.outbox, self.rooms, self.buffer = sid, codec, _Outbox(), {"bench"}, None


def micro(receivers: int, publications: int, repeats: int) -> dict[str, list[float]]:
    """``Hub.deliver`` alone, in this process: CPU seconds per delivery with metrics off and on."""
    from starlette_realtime.backends.base import Publication
    from starlette_realtime.codec import codecs
    from starlette_realtime.hub import Hub
    from starlette_realtime.prometheus import PrometheusMetrics

    codec = codecs()["rt.v1.json"]
    hubs = {"off": Hub(Metrics()), "on": Hub(PrometheusMetrics())}
    for hub in hubs.values():
        for i in range(receivers):
            hub.rooms.add((NS, "bench"), str(i), _Receiver(str(i), codec))
    pub = Publication(NS, "bench", "msg", b'{"i":1,"pad":"' + b"x" * 64 + b'"}', ts=time.time())
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(repeats + 1):
        for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
            deliver = hubs[name].deliver
            start = time.process_time()
            for _ in range(publications):
                deliver(pub)
            if r:  # the first round warms up
                runs[name].append((time.process_time() - start) / (publications * receivers))
    return runs


def per_call(repeats: int) -> dict[str, dict[str, float]]:
    """Nanoseconds per call of each hook on the hot paths, no-op Metrics vs PrometheusMetrics (best of repeats).

    Timed in this process, after the fan-out loop and before the servers start.
    """
    import timeit

    from starlette_realtime.prometheus import PrometheusMetrics

    ts = time.time()
    result: dict[str, dict[str, float]] = {}
    for name, metrics in (("off", Metrics()), ("on", PrometheusMetrics())):
        calls = {
            "broadcast": lambda m=metrics: m.broadcast(NS, "msg", 1000, 100_000, ts),
            "handler_started+finished": lambda m=metrics: m.handler_finished(NS, "echo", m.handler_started(), None),
            "message_in": lambda m=metrics: m.message_in(120),
        }
        # Many short repeats, best of them: on a shared machine a long repeat is likely to be preempted.
        result[name] = {
            hook: round(min(timeit.repeat(call, number=2_000, repeat=repeats)) / 2_000 * 1e9, 1)
            for hook, call in calls.items()
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--micro-only", action="store_true", help="only Hub.deliver in this process, no server")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    if server_cpu is not None:
        os.sched_setaffinity(0, {server_cpu})
    hub_runs = micro(args.receivers, max(args.publications, 2000), max(args.repeats, 15))
    hub_off, hub_on = statistics.median(hub_runs["off"]), statistics.median(hub_runs["on"])
    print(f"Hub.deliver alone: {hub_off * 1e9:.1f} ns/delivery off, {hub_on * 1e9:.1f} ns/delivery on", flush=True)
    calls = per_call(max(args.repeats * 10, 100))
    print(f"ns per call: {calls}", flush=True)
    runs: dict[str, list[float]] = {"off": [float("nan")], "on": [float("nan")]}
    if not args.micro_only:
        servers = {name: start_server(name, server_cpu) for name in ("off", "on")}
        try:
            if client_cpu is not None:
                os.sched_setaffinity(0, {client_cpu})
            import uvloop

            runs = uvloop.run(measure(args, {name: port for name, (_, port) in servers.items()}))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     platform.processor())
    result = {
        "command": "python -m benchmarks.metrics_overhead " + " ".join(sys.argv[1:]),
        "machine": {"cpu": cpu_model, "cpus": len(cpus), "python": platform.python_version(),
                    "platform": platform.platform()},
        "versions": {p: metadata.version(p) for p in ("starlette-realtime", "prometheus-client", "uvicorn", "picows")},
        "receivers": args.receivers,
        "publications": args.publications,
        "ns_per_call": calls,
        "hub_deliver_ns_per_delivery": {"off": round(hub_off * 1e9, 2), "on": round(hub_on * 1e9, 2)},
        "hub_deliver_overhead_ns_per_publication": round((hub_on - hub_off) * args.receivers * 1e9),
        "server_us_per_delivery": {"off": round(off * 1e6, 4), "on": round(on * 1e6, 4)},
        "server_overhead_percent": round((on - off) / off * 100, 2),
        "server_spread_percent": {k: round((max(v) - min(v)) / statistics.median(v) * 100, 1) for k, v in runs.items()},
        "server_runs_us": {k: [round(v * 1e6, 4) for v in vs] for k, vs in runs.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
