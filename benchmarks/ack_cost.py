"""CPU per acknowledged event inside the library, without a socket, before and after a change.

The harness's ``ack`` workload measures the whole server (uvicorn, websockets' framing, the kernel) on a shared
machine, where CPU per ack moves 10-20 % between runs. This one drives the benchmark server's ASGI app
(``benchmarks/servers/ours.py``, the same ``echo`` handler) in-process through a fake ASGI WebSocket: each of
``--conns`` connections sends an EVENT with an id and waits for its ACK before the next, as the harness's clients do,
so the reader, the session core, dispatch, the handler, the answer and the outbox all run, and only the socket and
the server's frame parsing are left out. CPU time of the process over the measured acks, divided by the acks.

With ``--base TREE`` it alternates fresh processes on this checkout's package and on the package in TREE (a checkout
of an earlier commit), ``--repeats`` each, and prints both medians and their ratio:

    python -m benchmarks.ack_cost --base /path/to/checkout-of-cec3225 --repeats 7

Each measurement runs in its own process (``python benchmarks/ack_cost.py --child``, with TREE first on
PYTHONPATH for the base), so the two packages never share an interpreter.

CPU time moves with the machine's other load; instruction counts do not. ``--instructions`` runs each child under
valgrind's callgrind (``apt install valgrind``) twice, with ``--acks`` and with three times as many, and reports
(instructions of the long run - of the short one) / (the acks between them): the interpreter's start-up and the
connects cancel out, and the figure repeats to within a few hundred instructions on a busy machine:

    python -m benchmarks.ack_cost --base /path/to/checkout-of-cec3225 --instructions --conns 10 --acks 1000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER = HERE / "servers" / "ours.py"

CONNECT = '[1,"/bench",null]'


def _scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": "/ws/",
        "raw_path": b"/ws/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"sec-websocket-protocol", b"rt.v1.json")],
        "subprotocols": ["rt.v1.json"],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "extensions": {},
    }


class FakeSocket:
    """One ASGI WebSocket: frames in through a queue, ACKs out through an event."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.connected = asyncio.Event()
        self.acked = asyncio.Event()
        self.acks = 0

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "websocket.send":
            return
        text = message.get("text")
        if text is None:
            text = message["bytes"].decode()
        if text.startswith("[6,"):
            self.acks += 1
            self.acked.set()
        elif text.startswith("[2,"):
            self.connected.set()

    def event(self, ack_id: int) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": f'[5,"/bench","echo",{{"n":{ack_id}}},{ack_id}]'})


async def _run(conns: int, acks: int, warmup: int) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("bench_ours_server", SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app

    sockets = [FakeSocket() for _ in range(conns)]
    tasks = [asyncio.create_task(app(_scope(), s.receive, s.send)) for s in sockets]
    for s in sockets:
        s.inbox.put_nowait({"type": "websocket.receive", "text": CONNECT})
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in sockets)), 30)

    async def drive(s: FakeSocket, first: int, count: int) -> None:
        for i in range(first, first + count):
            s.acked.clear()
            s.event(i)
            await s.acked.wait()

    await asyncio.gather(*(drive(s, 1, warmup) for s in sockets))
    per_conn = max(1, acks // conns)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(drive(s, 1 + warmup, per_conn) for s in sockets))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = per_conn * conns
    assert sum(s.acks for s in sockets) == done + warmup * conns, "an ACK went missing"
    for s in sockets:
        s.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    return {"acks": done, "cpu_us_per_ack": cpu / done * 1e6, "wall_us_per_ack": wall / done * 1e6}


def _child(args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the bench extra installs it
        result = asyncio.run(_run(args.conns, args.acks, args.warmup))
    else:
        result = uvloop.run(_run(args.conns, args.acks, args.warmup))
    print(json.dumps(result))


def _child_cmd(args: argparse.Namespace, acks: int) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--conns",
        str(args.conns),
        "--acks",
        str(acks),
        "--warmup",
        str(args.warmup),
    ]


def _env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ, BENCH_PING_INTERVAL="25", BENCH_PING_TIMEOUT="20")
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in ([tree] if tree else []) + [REPO])
    return env


def _measure(tree: Path | None, args: argparse.Namespace) -> float:
    cmd = _child_cmd(args, args.acks)
    out = subprocess.run(cmd, env=_env(tree), cwd=tree or REPO, check=True, capture_output=True, text=True, timeout=300)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu_us_per_ack"])


def _instructions(tree: Path | None, args: argparse.Namespace, acks: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt install valgrind)")
    cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *_child_cmd(args, acks)]
    run = subprocess.run
    out = run(cmd, env=_env(tree), cwd=tree or REPO, check=True, capture_output=True, text=True, timeout=1800)
    return callgrind_total(out.stderr)


def callgrind_total(stderr: str) -> int:
    """The instruction count callgrind printed at the end of a run (``Collected : N``)."""
    found = re.search(r"Collected : (\d+)", stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no total:\n{stderr[-2000:]}")
    return int(found.group(1))


def _instructions_per_ack(tree: Path | None, args: argparse.Namespace) -> float:
    short = _instructions(tree, args, args.acks)
    long = _instructions(tree, args, 3 * args.acks)
    acks = (3 * args.acks // args.conns - args.acks // args.conns) * args.conns
    return (long - short) / acks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=100, help="connections, each with one event in flight")
    p.add_argument("--acks", type=int, default=20_000, help="acks measured (spread over the connections)")
    p.add_argument("--warmup", type=int, default=20, help="acks per connection before measuring")
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per package")
    p.add_argument("--base", type=Path, help="a checkout of another commit to compare with")
    p.add_argument("--out", type=Path, help="write the figures as JSON")
    p.add_argument("--instructions", action="store_true", help="count instructions per ack under callgrind, once")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    measure, unit = (_instructions_per_ack, "instructions") if args.instructions else (_measure, "us CPU")
    repeats = 1 if args.instructions else args.repeats
    runs: dict[str, list[float]] = {"ours": []}
    if args.base:
        runs["base"] = []
    for _ in range(repeats):  # interleaved, so that a noisy minute touches both
        runs["ours"].append(measure(None, args))
        if args.base:
            runs["base"].append(measure(args.base.resolve(), args))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"{k:5} {unit} per ack: median {medians[k]:.2f}  (runs: {', '.join(f'{x:.2f}' for x in v)})")
    if args.base:
        print(f"ours / base: {medians['ours'] / medians['base']:.3f}x")
    if args.out:
        args.out.write_text(json.dumps({"argv": sys.argv[1:], "runs": runs, "medians": medians}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
