"""Instructions per acknowledged event in the whole server process, before and after a change.

``benchmarks/ack_cost.py`` counts the library's own code in-process; this counts everything the server process runs
in user space for an ack: uvicorn, websockets' parsing and framing, uvloop, the ASGI layers and the library (the
kernel's part, the same for both, is left out). The benchmark server (``benchmarks/servers/ours.py``, the harness's
``echo`` handler, uvicorn with the harness's settings) runs under valgrind's callgrind (``apt install valgrind``);
``--conns`` WebSocket clients here each keep one EVENT with an id in flight until ``--acks`` ACKs came back, then the
server is stopped and callgrind's total read. Each package runs twice, with ``--acks`` and with three times as many:
(the long run's total - the short run's) / (the acks between them) removes start-up and shutdown.

    python -m benchmarks.ack_server_instructions --base /path/to/checkout-of-cec3225
    python -m benchmarks.ack_server_instructions --ws preframed --base /path/to/checkout   # the fast path

With ``--base TREE`` the same is done on the package in TREE (a checkout of an earlier commit), and the ratio printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

from .ack_cost import callgrind_total
from .common import HOST, STACK, free_port, uvicorn_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited while starting:\n{proc.communicate()[1][-2000:]}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not listen on port {port} within {timeout:.0f} s")


async def _client(url: str, first: int, count: int) -> None:
    # No keepalive pings of the client's own (they would add work that depends on time), and a server under
    # valgrind may take a while to answer its first handshakes.
    async with connect(
        url, subprotocols=["rt.v1.json"], max_size=None, ping_interval=None, open_timeout=300  # type: ignore[list-item]
    ) as ws:
        await ws.recv()  # HELLO
        await ws.send('[1,"/bench",null]')
        while json.loads(await ws.recv())[0] != 2:  # CONNECTED
            pass
        for i in range(first, first + count):
            await ws.send(f'[5,"/bench","echo",{{"n":{i}}},{i}]')
            while True:
                frame = json.loads(await ws.recv())
                if frame[0] == 6:
                    break
                if frame[0] == 7:
                    await ws.send("[8]")


def _run(tree: Path | None, conns: int, acks: int, start_timeout: float) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("this needs valgrind (apt install valgrind)")
    port = free_port()
    env = dict(os.environ, BENCH_PING_INTERVAL="25", BENCH_PING_TIMEOUT="20")
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in ([tree] if tree else []) + [REPO])
    cmd = [
        valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "uvicorn", "ours:app", "--app-dir", str(HERE / "servers"), "--port", str(port),
        *uvicorn_args(),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=tree or REPO, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, proc, start_timeout)
        url = f"ws://{HOST}:{port}/ws/"
        per_conn = acks // conns

        async def drive() -> None:
            await asyncio.gather(*(_client(url, 1, per_conn) for _ in range(conns)))

        asyncio.run(drive())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=start_timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return callgrind_total(err)


def _per_ack(tree: Path | None, args: argparse.Namespace) -> float:
    short = _run(tree, args.conns, args.acks, args.start_timeout)
    long = _run(tree, args.conns, 3 * args.acks, args.start_timeout)
    between = (3 * args.acks // args.conns - args.acks // args.conns) * args.conns
    return (long - short) / between


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=10, help="clients, each with one event in flight")
    p.add_argument("--acks", type=int, default=1000, help="acks of the short run (the long run has 3x)")
    p.add_argument("--base", type=Path, help="a checkout of another commit to compare with")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds to start (and to stop) under valgrind")
    p.add_argument("--out", type=Path, help="write the figures as JSON")
    p.add_argument("--ws", choices=["websockets-sansio", "preframed"], default="websockets-sansio",
                   help="uvicorn's WebSocket protocol (preframed: the library's fast path), for both packages")
    args = p.parse_args(argv)
    STACK.ws = args.ws
    figures = {"ours": _per_ack(None, args)}
    if args.base:
        figures["base"] = _per_ack(args.base.resolve(), args)
    for name, value in figures.items():
        print(f"{name:5} server instructions per ack: {value:,.0f}")
    if args.base:
        print(f"ours / base: {figures['ours'] / figures['base']:.3f}x")
    if args.out:
        args.out.write_text(json.dumps({"argv": sys.argv[1:], "ws": args.ws, "instructions_per_ack": figures}, indent=1)
                            + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
