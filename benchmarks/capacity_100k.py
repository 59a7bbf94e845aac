"""100,000 idle connections on this machine: several processes of ours on Redis (issue 15, item 5).

    python -m benchmarks.capacity_100k [--conns 100000] [--nodes 6] [--hold 100] [--ping-interval 25]
                                       [--redis redis|cluster|none] [--smoke]

One process here may hold at most 20,000 open files, so ``--nodes`` uvicorn processes of servers/ours.py share the
connections (100,000 over 6: 16,667 each), each on its own port, all on one redis-server of our own
(``--redis cluster``: on a local Redis Cluster of three masters and three replicas, through ``redis+cluster://``;
``--redis none --nodes 1``: one process on ``memory://``, the idle heartbeat's own cost).
The load comes from client processes of the harness (picows on uvloop), each from its own 127.0.0.x address, 16
handshakes in flight each, retrying a retryable CONNECT_ERROR (up to ``--retries`` times, with backoff) as the real
clients do.

Once every connection is open the cluster idles for ``--hold`` seconds (heartbeat every ``--ping-interval``): every
connection must answer its heartbeats during the hold (at least three per connection: the default 100 s holds four
of the library's default 25 s intervals) and an echo afterwards. Reported: connections opened and answering,
handshakes per second, the server processes' RSS per connection (and with Redis's growth), and the **idle CPU** of
the cluster: CPU seconds of every node and of Redis during the hold, divided by the hold (1.0 = one core busy). Results:
benchmarks/results/capacity_100k.json with the machine, versions and command (``--smoke``: 200 connections on 2
nodes, results/tmp/).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

from . import harness as h
from .capacity_cluster import write_results


def _redis_pids(redis: Any) -> list[int]:
    if redis is None:
        return []
    return [n.proc.pid for n in redis.nodes if n.alive] if hasattr(redis, "nodes") else [redis.pid]


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = h.SERVERS[args.server]
    procs = max(args.nodes, math.ceil(args.conns / args.conns_per_proc))
    procs = math.ceil(procs / args.nodes) * args.nodes  # the same number of client processes per node
    counts = h.split(args.conns, procs)
    attach = [i % args.nodes for i in range(procs)]
    every_cpu = set(os.sched_getaffinity(0))
    env = {"BENCH_PING_INTERVAL": str(args.ping_interval), "BENCH_PING_TIMEOUT": str(args.ping_timeout)}
    out: dict[str, Any] = {"conns": args.conns, "nodes": args.nodes, "client_procs": procs, "redis": args.redis,
                           "ping_interval": args.ping_interval, "hold_s": args.hold, "ws": args.ws,
                           "server": args.server}
    if args.redis == "cluster":
        sys.path.insert(0, str(h.Path(__file__).resolve().parent.parent / "tests"))
        from redis_cluster import LocalRedisCluster

        redis: Any = LocalRedisCluster(node_timeout_ms=5000).start()
        env["BENCH_BACKEND"] = redis.url
    elif args.redis == "none":
        redis = None  # memory:// on one node: the heartbeat's own cost, nothing written to Redis
    else:
        redis = h.RedisProc(cpus=every_cpu).__enter__()
        env["BENCH_BACKEND"] = redis.url
    nodes = [h.Server(spec, env, cpus=every_cpu) for _ in range(args.nodes)]
    try:
        for node in nodes:
            node.start()
        time.sleep(0.5)
        with h.Clients(procs) as cl:
            rss0 = [n.rss_kib() for n in nodes]
            redis_rss0 = sum(h.proc_rss_kib(pid) for pid in _redis_pids(redis))
            res = h.call_all(
                [(w, "connect", dict(url=nodes[attach[i]].url(), dialect=spec.dialect, n=counts[i],
                                     src_ip=h.next_src_ip(), concurrency=args.concurrency, join=None,
                                     strict=args.smoke, pad_len=10, timeout=args.connect_timeout,
                                     retries=args.retries))
                 for i, w in enumerate(cl.workers)], args.connect_timeout + 30)
            opened = [sum(r["ok"] for r, a in zip(res, attach, strict=True) if a == k) for k in range(args.nodes)]
            first = min(r["t_start"] for r in res)
            last = max(r["t_end"] for r in res)
            time.sleep(1.0)
            rss1 = [n.rss_kib() for n in nodes]
            redis_rss1 = sum(h.proc_rss_kib(pid) for pid in _redis_pids(redis))
            st0 = h.call_all([(w, "status", {}) for w in cl.workers], 60)
            # The idle cluster: CPU of every node and of Redis over the hold.
            cpu0 = sum(n.cpu() for n in nodes) + sum(h.proc_cpu_seconds(p) for p in _redis_pids(redis))
            t0 = time.monotonic()
            hold_end = t0 + args.hold
            while time.monotonic() < hold_end and all(n.alive() for n in nodes):
                time.sleep(min(0.5, max(0.0, hold_end - time.monotonic())))
            held = time.monotonic() - t0
            cpu1 = sum(n.cpu() for n in nodes) + sum(h.proc_cpu_seconds(p) for p in _redis_pids(redis))
            st1 = h.call_all([(w, "status", {}) for w in cl.workers], 60)
            chk = h.call_all([(w, "check", dict(timeout=args.check_timeout, concurrency=args.concurrency * 4))
                              for w in cl.workers], args.check_timeout * 4 + 120)
            total = sum(opened)
            pings = sum(s["pings"] for s in st1) - sum(s["pings"] for s in st0)
            growth = sum(rss1) - sum(rss0)
            out.update({
                "opened": total, "per_node": opened, "failed": sum(r["failed"] for r in res),
                "connect_s": last - first,
                "handshakes_per_s": total / (last - first) if last > first else None,
                "kib_per_conn": growth / total if total else None,
                "kib_per_conn_with_redis": (growth + redis_rss1 - redis_rss0) / total if total else None,
                "server_rss_total_mib": sum(rss1) / 1024, "redis_rss_growth_mib": (redis_rss1 - redis_rss0) / 1024,
                "idle_cpu_cores": (cpu1 - cpu0) / held if held else None,
                "idle_cpu_ms_per_1000_conns_s": (cpu1 - cpu0) / held / total * 1e6 if held and total else None,
                "heartbeats_per_conn": pings / total if total else 0.0,
                "retried": sum(r["retried"] for r in res),
                "closed": total - sum(r["open"] for r in chk),
                "close_codes": h.sum_counts(r["close_codes"] for r in chk),
                "answered_after_hold": sum(r["answered"] for r in chk),
                "errors": ([e for r in res for e in r["errors"]] + [e for r in chk for e in r["errors"]])[:10],
            })
    finally:
        for node in nodes:
            node.stop()
        if args.redis == "cluster":
            redis.stop()
        elif redis is not None:
            redis.__exit__(None, None, None)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity_100k", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", type=int, default=100_000)
    p.add_argument("--nodes", type=int, default=6, help="uvicorn processes of ours (each at most ~19,900 conns)")
    p.add_argument("--redis", choices=["redis", "cluster", "none"], default="redis",
                   help="one redis-server, a local cluster, or none (memory://, one node)")
    p.add_argument("--hold", type=float, default=100.0, help="seconds the connections idle (>= 4 ping intervals)")
    p.add_argument("--ping-interval", type=float, default=25.0, help="the heartbeat (the library's default)")
    p.add_argument("--ping-timeout", type=float, default=20.0)
    p.add_argument("--retries", type=int, default=10,
                   help="attempts again after a retryable refusal (real clients retry without limit)")
    p.add_argument("--conns-per-proc", type=int, default=8334)
    p.add_argument("--concurrency", type=int, default=16, help="handshakes in flight per client process")
    p.add_argument("--connect-timeout", type=float, default=900.0)
    p.add_argument("--check-timeout", type=float, default=90.0)
    p.add_argument("--server", default="ours", choices=["ours", "ours-base"],
                   help="ours-base: the same server on the package in BENCH_BASE_TREE (a before/after run)")
    p.add_argument("--ws", default="websockets-sansio", choices=["websockets-sansio", "preframed"],
                   help="uvicorn's WebSocket protocol (preframed: the library's fast path, docs/deployment.md)")
    p.add_argument("--smoke", action="store_true", help="200 connections on 2 nodes, short hold; results in tmp/")
    p.add_argument("--out", help="results file (default results/capacity_100k.json)")
    args = p.parse_args(argv)
    if args.smoke:
        args.conns, args.nodes, args.hold = min(args.conns, 200), min(args.nodes, 2), min(args.hold, 2.0)
        args.ping_interval, args.ping_timeout = min(args.ping_interval, 0.5), min(args.ping_timeout, 2.0)
        args.connect_timeout, args.check_timeout = min(args.connect_timeout, 30.0), min(args.check_timeout, 10.0)
    if h.ws_connect is None:
        print("picows is not installed: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2
    if args.redis == "none" and args.nodes != 1:
        print("--redis none is one node on memory:// (such nodes share nothing): use --nodes 1", file=sys.stderr)
        return 2
    if args.conns / args.nodes > 19_500:
        print(f"{args.conns / args.nodes:,.0f} connections per node: over the 20,000 open files of a process",
              file=sys.stderr)
        return 2
    h.STACK.ws = args.ws
    h._pin(h.CLIENT_CPU)  # the orchestrator and the client processes it forks keep to the client core
    started = time.time()
    r = run(args)
    # Each connection's pings run on its own phase: over four intervals every one gets at least three.
    expect_pings = max(1, math.floor(args.hold / args.ping_interval) - 1) if not args.smoke else 1
    failures = []
    if r["opened"] != args.conns:
        failures.append(f"opened {r['opened']}/{args.conns}: {r['errors']}")
    if r["closed"]:
        failures.append(f"{r['closed']} connections closed after opening ({r['close_codes']})")
    if r["answered_after_hold"] != args.conns:
        failures.append(f"{r['answered_after_hold']}/{args.conns} answered after the hold: {r['errors']}")
    if r["heartbeats_per_conn"] < expect_pings:
        failures.append(f"{r['heartbeats_per_conn']:.1f} heartbeats per connection, expected >= {expect_pings}")
    table = "\n".join([
        f"\n## capacity_100k: {args.conns:,} idle connections over {args.nodes} processes of ours on "
        f"{ {'cluster': 'a local Redis Cluster', 'none': 'memory://'}.get(args.redis, 'one redis-server')}", "",
        "| opened | per node | handshakes/s | KiB/conn (with Redis) | heartbeats/conn in the hold | "
        "answered after | closed | idle CPU (cores) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['opened']:,} | {min(r['per_node']):,}-{max(r['per_node']):,} "
        f"| {h.fmt(r['handshakes_per_s'], '{:,.0f}')} "
        f"| {h.fmt(r['kib_per_conn'], '{:.1f}')} ({h.fmt(r['kib_per_conn_with_redis'], '{:.1f}')}) "
        f"| {r['heartbeats_per_conn']:.1f} | {r['answered_after_hold']:,} | {r['closed']} "
        f"| {h.fmt(r['idle_cpu_cores'], '{:.2f}')} |",
        "",
        f"connect phase {r['connect_s']:.0f} s, attempts retried {r['retried']:,}, server RSS "
        f"{r['server_rss_total_mib']:,.0f} MiB, Redis RSS growth {r['redis_rss_growth_mib']:.1f} MiB, idle CPU "
        f"{h.fmt(r['idle_cpu_ms_per_1000_conns_s'], '{:.2f}')} ms per second per 1,000 connections "
        f"(ping every {args.ping_interval:g} s, hold {args.hold:g} s)",
    ])
    print(table, flush=True)
    return write_results("capacity_100k", args, argv, started, r, table, failures)


if __name__ == "__main__":
    sys.exit(main())
