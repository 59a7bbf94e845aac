"""Idle connections beyond one process: ours as several uvicorn processes on one Redis backend.

    python -m benchmarks.capacity_cluster [--conns 60000] [--nodes 4] [--hold 35] [--ping-interval 10] [--smoke]

One process here may hold at most 20,000 open files, so one server process tops out near 19,900 connections (the
harness's capacity workload goes to 19,500). This runs ``--nodes`` separate uvicorn processes of servers/ours.py, each
on its own port (the same settings as the harness: one worker, uvloop, websockets-sansio), all on one redis-server
of our own (``BENCH_BACKEND=redis://...``, no persistence). Separate ports rather than ``uvicorn --workers N``: the
kernel balances accepts of one shared socket unevenly, and a worker that got more than its share would hit the file
cap; with one port per process every node gets exactly conns / nodes.

The clients are the harness's (picows on uvloop, callbacks only): ceil(conns / --conns-per-proc) processes, each from
its own source address 127.0.0.x and attached to one node (round-robin). The servers and Redis may use every core
(this measures capacity, not throughput); the clients keep to the client core.

Reports, per node and in all: connections opened, handshakes/s, server RSS per connection in KiB
((RSS 1 s after the last connection - RSS before the first) / connections; Redis's own RSS growth apart and added in
the "with Redis" figure), heartbeats answered per connection during ``--hold``, connections closed during the hold,
and how many answered an echo afterwards. Every connection must stay open and answer. Results:
benchmarks/results/capacity_cluster.json (``--smoke``: a few connections on 2 nodes, results/tmp/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

from . import harness as h


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = h.SERVERS["ours"]
    procs = max(args.nodes, math.ceil(args.conns / args.conns_per_proc))
    procs = math.ceil(procs / args.nodes) * args.nodes  # the same number of client processes per node
    counts = h.split(args.conns, procs)
    attach = [i % args.nodes for i in range(procs)]
    every_cpu = set(os.sched_getaffinity(0))
    env = {"BENCH_PING_INTERVAL": str(args.ping_interval), "BENCH_PING_TIMEOUT": str(args.ping_timeout)}
    out: dict[str, Any] = {"conns": args.conns, "nodes": args.nodes, "client_procs": procs,
                           "ping_interval": args.ping_interval, "hold_s": args.hold}
    with h.RedisProc(cpus=every_cpu) as redis:
        env["BENCH_BACKEND"] = redis.url
        nodes = [h.Server(spec, env, cpus=every_cpu) for _ in range(args.nodes)]
        try:
            for node in nodes:
                node.start()
            time.sleep(0.5)
            with h.Clients(procs) as cl:
                rss0 = [n.rss_kib() for n in nodes]
                redis0 = h.proc_rss_kib(redis.pid)
                cpu0 = [n.cpu() for n in nodes]
                t0 = time.monotonic()
                res = h.call_all(
                    [(w, "connect", dict(url=nodes[attach[i]].url(), dialect=spec.dialect, n=counts[i],
                                         src_ip=h.next_src_ip(), concurrency=args.concurrency, join=None,
                                         strict=args.smoke, pad_len=10, timeout=args.connect_timeout,
                                         retries=args.retries))
                     for i, w in enumerate(cl.workers)], args.connect_timeout + 30)
                connect_wall = time.monotonic() - t0
                cpu1 = [n.cpu() for n in nodes]
                opened = [sum(r["ok"] for r, a in zip(res, attach, strict=True) if a == k)
                          for k in range(args.nodes)]
                first = min(r["t_start"] for r in res)
                last = max(r["t_end"] for r in res)
                time.sleep(1.0)
                rss1 = [n.rss_kib() for n in nodes]
                redis1 = h.proc_rss_kib(redis.pid)
                st0 = h.call_all([(w, "status", {}) for w in cl.workers], 60)
                hold_end = time.monotonic() + args.hold
                while time.monotonic() < hold_end and all(n.alive() for n in nodes):
                    time.sleep(min(0.5, max(0.0, hold_end - time.monotonic())))
                st1 = h.call_all([(w, "status", {}) for w in cl.workers], 60)
                rss2 = [n.rss_kib() for n in nodes]
                chk = h.call_all([(w, "check", dict(timeout=args.check_timeout, concurrency=args.concurrency * 4))
                                  for w in cl.workers], args.check_timeout * 4 + 120)
                total = sum(opened)
                # Connections that were opened and are no longer open (closed by either side since).
                lost = total - sum(r["open"] for r in chk)
                pings = sum(s["pings"] for s in st1) - sum(s["pings"] for s in st0)
                per_node = []
                for k in range(args.nodes):
                    per_node.append({
                        "opened": opened[k], "rss_base_kib": rss0[k], "rss_kib": rss1[k], "rss_after_hold_kib": rss2[k],
                        "kib_per_conn": (rss1[k] - rss0[k]) / opened[k] if opened[k] else None,
                        "cpu_ms_per_handshake": (cpu1[k] - cpu0[k]) / opened[k] * 1e3 if opened[k] else None,
                        "answered": sum(r["answered"] for r, a in zip(chk, attach, strict=True) if a == k),
                    })
                server_growth = sum(rss1) - sum(rss0)
                out.update({
                    "opened": total, "failed": sum(r["failed"] for r in res),
                    "connect_s": last - first, "connect_wall_s": connect_wall,
                    "handshakes_per_s": total / (last - first) if last > first else None,
                    "kib_per_conn": server_growth / total if total else None,
                    "kib_per_conn_with_redis": (server_growth + redis1 - redis0) / total if total else None,
                    "redis_rss_growth_kib": redis1 - redis0,
                    "server_rss_total_kib": sum(rss1),
                    "heartbeats_per_conn": pings / total if total else 0.0,
                    "retried": sum(r["retried"] for r in res),
                    "closed": lost,
                    "close_codes": h.sum_counts(r["close_codes"] for r in chk),
                    "answered_after_hold": sum(r["answered"] for r in chk),
                    "per_node": per_node,
                    "errors": ([e for r in res for e in r["errors"]] + [e for r in chk for e in r["errors"]])[:10],
                })
        finally:
            for node in nodes:
                node.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", type=int, default=60000)
    p.add_argument("--nodes", type=int, default=4, help="uvicorn processes of ours (each at most ~19,900 conns)")
    p.add_argument("--hold", type=float, default=35.0, help="seconds to hold the idle connections")
    p.add_argument("--ping-interval", type=float, default=10.0)
    p.add_argument("--ping-timeout", type=float, default=20.0)
    p.add_argument("--retries", type=int, default=5,
                   help="attempts again after a retryable CONNECT_ERROR or a handshake time-out (as the clients do)")
    p.add_argument("--conns-per-proc", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=16, help="handshakes in flight per client process")
    p.add_argument("--connect-timeout", type=float, default=600.0)
    p.add_argument("--check-timeout", type=float, default=60.0)
    p.add_argument("--profile", metavar="DIR", help="record every node with py-spy (see harness --profile)")
    p.add_argument("--smoke", action="store_true", help="40 connections on 2 nodes, short hold; results in tmp/")
    p.add_argument("--out", help="results file (default results/capacity_cluster.json)")
    args = p.parse_args(argv)
    if args.smoke:
        args.conns, args.nodes, args.hold = min(args.conns, 40), min(args.nodes, 2), min(args.hold, 2.0)
        args.ping_interval, args.ping_timeout = min(args.ping_interval, 0.5), min(args.ping_timeout, 2.0)
        args.connect_timeout, args.check_timeout = min(args.connect_timeout, 30.0), min(args.check_timeout, 10.0)
    if h.ws_connect is None:
        print("picows is not installed: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2
    if args.profile:
        h.STACK.profile_dir = h.Path(args.profile)
    h._pin(h.CLIENT_CPU)  # the orchestrator and the client processes it forks keep to the client core
    started = time.time()
    r = run(args)
    expect_pings = max(1, int(args.hold / max(args.ping_interval, args.ping_timeout) / 2))  # see workloads/capacity
    failures = []
    if r["opened"] != args.conns:
        failures.append(f"opened {r['opened']}/{args.conns}: {r['errors']}")
    if r["closed"]:
        failures.append(f"{r['closed']} connections closed after opening ({r['close_codes']})")
    if r["answered_after_hold"] != args.conns:
        failures.append(f"{r['answered_after_hold']}/{args.conns} answered after the hold: {r['errors']}")
    if r["heartbeats_per_conn"] < expect_pings:
        failures.append(f"{r['heartbeats_per_conn']:.1f} heartbeats per connection, expected >= {expect_pings}")
    lines = [f"\n## capacity_cluster: {args.conns:,} idle connections over {args.nodes} uvicorn processes of ours "
             f"on Redis", "",
             "| node | opened | KiB/conn | srv ms/handshake | answered after hold |", "|---|---|---|---|---|"]
    for k, n in enumerate(r["per_node"]):
        lines.append(f"| {k + 1} | {n['opened']:,} | {h.fmt(n['kib_per_conn'], '{:.1f}')} | "
                     f"{h.fmt(n['cpu_ms_per_handshake'], '{:.3f}')} | {n['answered']:,} |")
    lines.append(f"| all | {r['opened']:,} | {h.fmt(r['kib_per_conn'], '{:.1f}')} "
                 f"({h.fmt(r['kib_per_conn_with_redis'], '{:.1f}')} with Redis) | - | {r['answered_after_hold']:,} |")
    lines.append("")
    lines.append(f"handshakes/s {h.fmt(r['handshakes_per_s'], '{:,.0f}')}, heartbeats per connection during the "
                 f"{args.hold:g} s hold {r['heartbeats_per_conn']:.1f} (ping every {args.ping_interval:g} s), "
                 f"closed after opening {r['closed']} ({r['close_codes']}), connection attempts retried "
                 f"{r['retried']:,}, Redis RSS growth {r['redis_rss_growth_kib'] / 1024:.1f} MiB")
    table = "\n".join(lines)
    print(table, flush=True)
    return write_results("capacity_cluster", args, argv, started, r, table, failures)


def write_results(
    workload: str, args: argparse.Namespace, argv: list[str] | None, started: float, result: dict[str, Any],
    table: str, failures: list[str],
) -> int:
    """Write a run's JSON (machine, versions, command, result) and report its failures; the exit status."""
    path = h.TMP_DIR / f"{workload}-smoke.json" if args.smoke else h.RESULTS_DIR / f"{workload}.json"
    if args.out:
        path = h.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"workload": workload, "smoke": args.smoke, "started": started,
                                "seconds": time.time() - started, "argv": sys.argv[1:] if argv is None else argv,
                                "config": vars(args), "env": h.versions(), "uvicorn_args": h.uvicorn_args(),
                                "result": result, "table": table, "failures": failures}, indent=1, default=str))
    print(f"\nresults: {path}")
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
