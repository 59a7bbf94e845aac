"""fanout: N receivers in room ``bench``, one publisher outside it; burst and steady phases, and the slow-receiver
variant (benchmarks/README.md, "What each workload measures")."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..clients import Clients
from ..common import ROOM, split
from ..peers import ServerSpec
from ..process import Server
from .base import Check, connect_all, fanout_phase, pad_for, server_env


def run_fanout(spec: ServerSpec, n: int, args: argparse.Namespace, check: Check, slow: bool = False) -> dict[str, Any]:
    per = args.conns_per_proc
    n_recv_procs = max(1, math.ceil((n + (1 if slow else 0)) / per), args.client_procs - 1)
    counts = split(n, n_recv_procs)
    if slow:
        counts[0] += 1  # the extra, slow receiver: the last connection of worker 0
    payload = args.slow_payload if slow else args.payload
    pad = pad_for(payload)
    out: dict[str, Any] = {"server": spec.key, "n": n, "slow_variant": slow}
    with Server(spec, server_env(args)) as srv, Clients(n_recv_procs + 1) as cl:
        pub, recv = cl.workers[0], cl.workers[1:]
        conn = connect_all(recv, srv.url(), spec, counts, ROOM, args, args.connect_timeout, pad)
        out["connect"] = conn
        check(conn["ok"] == sum(counts), f"receivers connected {conn['ok']}/{sum(counts)}: {conn['errors']}")
        pc = connect_all([pub], srv.url(), spec, [1], None, args, 30)
        check(pc["ok"] == 1, f"publisher did not connect: {pc['errors']}")
        if conn["ok"] == 0 or pc["ok"] == 0:
            raise RuntimeError(f"{spec.key}: clients could not connect: {conn['errors'] + pc['errors']}")
        base = dict(window=args.window, pad_len=pad, stall_timeout=args.stall_timeout, max_outstanding=10_000,
                    drain=args.drain)
        # warm-up (discarded)
        warm = fanout_phase(srv, pub, recv, dict(base, mode="burst", count=args.warmup_messages, duration=5.0,
                                                 rate=0.0), 30)
        check(warm["deliveries"] == warm["expected"], f"warm-up delivered {warm['deliveries']}/{warm['expected']}")
        if slow:
            recv[0].call("pause", 10, k=1)
            r = fanout_phase(srv, pub, recv, dict(base, pad_len=pad, mode="burst", count=args.count or 10**9,
                                                  duration=args.slow_duration, rate=0.0), args.slow_duration + 30)
            out["slow"] = r
            # Whatever the server acknowledged must have reached every receiver that reads.
            check(r["deliveries"] >= r["acked"] * n, f"slow variant: {r['deliveries']} deliveries < acked "
                                                     f"{r['acked']} x {n} receivers")
            check(r["content_errors"] == 0, f"slow variant content errors: {r['errors']}")
        else:
            for mode in args.modes:
                if mode == "burst":
                    kw = dict(base, mode="burst", count=args.count or 10**9, duration=args.duration, rate=0.0)
                else:
                    rate = max(1.0, args.steady_deliveries / n)
                    kw = dict(base, mode="steady", count=args.count or 10**9, duration=args.duration, rate=rate)
                r = fanout_phase(srv, pub, recv, kw, args.duration + 30)
                if mode == "steady":
                    r["rate_publishes_per_s"] = kw["rate"]
                out[mode] = r
                check(r["published"] > 0 and r["acked"] == r["published"],
                      f"{mode}: acked {r['acked']}/{r['published']}")
                check(r["deliveries"] == r["expected"] and r["short_conns"] == 0,
                      f"{mode}: delivered {r['deliveries']}/{r['expected']} ({r['short_conns']} receivers short)")
                check(r["order_errors"] == 0, f"{mode}: {r['order_errors']} out-of-order deliveries")
                check(r["content_errors"] == 0 and r["closed"] == 0,
                      f"{mode}: content errors {r['content_errors']}, closed {r['closed']}: {r['errors']}")
        out["server_rss_kib"] = srv.rss_kib()
    return out


