"""ack: K clients, each with one echo request in flight; acks/s, RTT percentiles, server CPU per ack."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from ..clients import Clients
from ..common import CLIENT_CPU, ForeignLoad, cat_bytes, cpu_busy_seconds, pctl, split
from ..peers import ServerSpec
from ..process import Server
from .base import Check, connect_all, pad_for, server_env


def run_ack(spec: ServerSpec, n: int, args: argparse.Namespace, check: Check) -> dict[str, Any]:
    procs = max(1, math.ceil(n / args.conns_per_proc), args.client_procs)
    counts = split(n, procs)
    out: dict[str, Any] = {"server": spec.key, "n": n}
    with Server(spec, server_env(args)) as srv, Clients(procs) as cl:
        conn = connect_all(cl.workers, srv.url(), spec, counts, None, args, args.connect_timeout)
        check(conn["ok"] == n, f"opened {conn['ok']}/{n}: {conn['errors']}")
        start = time.monotonic() + 0.3
        measure_start = start + args.warmup
        deadline = measure_start + args.duration
        for w in cl.workers:
            w.send("ack_run", start=start, measure_start=measure_start, deadline=deadline,
                   pad_len=pad_for(args.payload), timeout=10.0)
        time.sleep(max(0.0, measure_start - time.monotonic()))
        fl = ForeignLoad(*srv.own_pids(), *(w.proc.pid or 0 for w in cl.workers)).start()
        cpu0, c1_0 = srv.cpu(), cpu_busy_seconds(CLIENT_CPU)
        time.sleep(max(0.0, deadline - time.monotonic()))
        cpu1, c1_1, foreign = srv.cpu(), cpu_busy_seconds(CLIENT_CPU), fl.stop()
        rs = [w.recv(args.duration + args.warmup + 30) for w in cl.workers]
        acks = sum(r["acks"] for r in rs)
        p50, p99, p999 = pctl(cat_bytes([r["rtt"] for r in rs]), [50, 99, 99.9])
        total_span = deadline - start
        out.update({
            "acks": acks, "acks_per_s": acks / args.duration, "rtt_p50_ms": p50 and p50 * 1e3,
            "rtt_p99_ms": p99 and p99 * 1e3, "rtt_p999_ms": p999 and p999 * 1e3,
            "server_cpu_util": (cpu1 - cpu0) / args.duration,
            "cpu_s_per_M": (cpu1 - cpu0) / acks * 1e6 if acks else None,
            "client_cpu_util": sum(r["cpu"] for r in rs) / total_span,
            "foreign_cpu": foreign,
            "client_core_busy": (c1_1 - c1_0) / args.duration if CLIENT_CPU is not None else None,
            "bad": sum(r["bad"] for r in rs), "unanswered": sum(r["unanswered"] for r in rs),
            "closed": sum(r["closed"] for r in rs), "errors": [e for r in rs for e in r["errors"]][:10],
        })
        check(acks > 0, "no acks in the window")
        check(out["bad"] == 0 and out["unanswered"] == 0 and out["closed"] == 0,
              f"bad acks {out['bad']}, unanswered {out['unanswered']}, closed {out['closed']}: {out['errors']}")
    return out


