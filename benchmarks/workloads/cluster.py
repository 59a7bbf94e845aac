"""cluster (ours only): --nodes processes of ours on one redis-server of the harness's own; fan-out across them."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..clients import Clients, call_all
from ..common import ROOM, next_src_ip, proc_rss_kib, split
from ..peers import ServerSpec
from ..process import RedisProc, Server, ServerGroup
from .base import Check, connect_all, fanout_phase, pad_for, server_env


def run_cluster(spec: ServerSpec, n: int, args: argparse.Namespace, check: Check) -> dict[str, Any]:
    """Fan-out across --nodes (2-4) processes of servers/ours.py on one redis-server (BENCH_BACKEND=redis://).

    The N receivers are spread over the nodes (one client process per node at least, each attached to one node);
    the publisher is attached to node 1, so the receivers of the other nodes are the cross-node ones. Every node and
    Redis run on the server core (the same one-core budget as the single-process fan-out, so the CPU-s per 1M
    deliveries, summed over the nodes and Redis, shows what the Redis hop costs); clients on the other core.
    Reports the fan-out metrics (burst and steady) plus cross-node deliveries/s and cross/same-node latency.
    Only ours takes part: the peers have no comparable Redis mode in this harness.
    """
    if spec.key != "ours":
        raise ValueError(f"cluster: only ours runs on Redis here, not {spec.key}")
    nodes_n = args.nodes
    per = args.conns_per_proc
    n_recv_procs = max(nodes_n, math.ceil(n / per), args.client_procs - 1)
    counts = split(n, n_recv_procs)
    attach = [i % nodes_n for i in range(n_recv_procs)]  # receiver process i -> node attach[i]
    pad = pad_for(args.payload)
    out: dict[str, Any] = {"server": spec.key, "n": n, "nodes": nodes_n}
    with RedisProc() as redis:
        env = dict(server_env(args), BENCH_BACKEND=redis.url)
        nodes = [Server(spec, env) for _ in range(nodes_n)]
        try:
            for node in nodes:
                node.start()
            group = ServerGroup(nodes, redis)
            with Clients(n_recv_procs + 1) as cl:
                pub, recv = cl.workers[0], cl.workers[1:]
                res = call_all(
                    [(w, "connect", dict(url=nodes[attach[i]].url(), dialect=spec.dialect, n=counts[i],
                                         src_ip=next_src_ip(), concurrency=args.concurrency, join=ROOM,
                                         strict=args.smoke, pad_len=pad, timeout=args.connect_timeout))
                     for i, w in enumerate(recv)], args.connect_timeout + 15)
                ok = sum(r["ok"] for r in res)
                out["connect"] = {"ok": ok, "per_node": [sum(r["ok"] for r, a in zip(res, attach, strict=True)
                                                            if a == k) for k in range(nodes_n)],
                                  "errors": [e for r in res for e in r["errors"]][:10]}
                check(ok == n, f"receivers connected {ok}/{n}: {out['connect']['errors']}")
                pc = connect_all([pub], nodes[0].url(), spec, [1], None, args, 30)
                check(pc["ok"] == 1, f"publisher did not connect: {pc['errors']}")
                if ok == 0 or pc["ok"] == 0:
                    raise RuntimeError(f"cluster: clients could not connect: {out['connect']['errors']}")
                cross = [a != 0 for a in attach]
                base = dict(window=args.window, pad_len=pad, stall_timeout=args.stall_timeout,
                            max_outstanding=10_000, drain=args.drain)
                warm = fanout_phase(group, pub, recv, dict(base, mode="burst", count=args.warmup_messages,
                                                           duration=5.0, rate=0.0), 30, cross)
                check(warm["deliveries"] == warm["expected"],
                      f"warm-up delivered {warm['deliveries']}/{warm['expected']}")
                for mode in args.modes:
                    if mode == "burst":
                        kw = dict(base, mode="burst", count=args.count or 10**9, duration=args.duration, rate=0.0)
                    else:
                        rate = max(1.0, args.steady_deliveries / n)
                        kw = dict(base, mode="steady", count=args.count or 10**9, duration=args.duration,
                                  rate=rate)
                    r = fanout_phase(group, pub, recv, kw, args.duration + 30, cross)
                    out[mode] = r
                    check(r["published"] > 0 and r["acked"] == r["published"],
                          f"{mode}: acked {r['acked']}/{r['published']}")
                    check(r["deliveries"] == r["expected"] and r["short_conns"] == 0,
                          f"{mode}: delivered {r['deliveries']}/{r['expected']} ({r['short_conns']} receivers short)")
                    check(r["order_errors"] == 0, f"{mode}: {r['order_errors']} out-of-order deliveries")
                    check(r["content_errors"] == 0 and r["closed"] == 0,
                          f"{mode}: content errors {r['content_errors']}, closed {r['closed']}: {r['errors']}")
                out["server_rss_kib"] = group.rss_kib()
                out["redis_rss_kib"] = proc_rss_kib(redis.pid)
        finally:
            for node in nodes:
                node.stop()
    return out

