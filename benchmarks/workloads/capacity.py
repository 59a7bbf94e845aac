"""capacity: C idle connections; KiB of server RSS per connection, handshakes/s, all still answering after --hold."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from ..clients import Clients, call_all
from ..common import ForeignLoad, split, sum_counts
from ..peers import ServerSpec
from ..process import Server
from .base import Check, connect_all, server_env


def run_capacity(spec: ServerSpec, c: int, args: argparse.Namespace, check: Check) -> dict[str, Any]:
    procs = max(1, math.ceil(c / args.conns_per_proc), args.client_procs)
    counts = split(c, procs)
    out: dict[str, Any] = {"server": spec.key, "n": c}
    with Server(spec, server_env(args)) as srv, Clients(procs) as cl:
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        fl = ForeignLoad(*srv.own_pids(), *(w.proc.pid or 0 for w in cl.workers)).start()
        cpu0 = srv.cpu()
        conn = connect_all(cl.workers, srv.url(), spec, counts, None, args, args.connect_timeout)
        cpu1, foreign = srv.cpu(), fl.stop()
        out["connect"] = conn
        check(conn["ok"] == c, f"opened {conn['ok']}/{c}: {conn['errors']}")
        time.sleep(1.0)
        rss1 = srv.rss_kib()
        st0 = call_all([(w, "status", {}) for w in cl.workers], 30)
        hold_end = time.monotonic() + args.hold
        while time.monotonic() < hold_end:
            time.sleep(min(0.5, max(0.0, hold_end - time.monotonic())))
            if not srv.alive():
                break
        st1 = call_all([(w, "status", {}) for w in cl.workers], 30)
        rss2 = srv.rss_kib()
        chk = call_all([(w, "check", dict(timeout=args.check_timeout, concurrency=args.concurrency * 4))
                        for w in cl.workers], args.check_timeout * 4 + 60)
        pings = sum(s["pings"] for s in st1) - sum(s["pings"] for s in st0)
        answered = sum(r["answered"] for r in chk)
        closed = sum(r["closed"] for r in chk)
        out.update({
            "opened": conn["ok"], "handshakes_per_s": conn["per_s"], "connect_s": conn["seconds"],
            "server_cpu_ms_per_handshake": (cpu1 - cpu0) / conn["ok"] * 1e3 if conn["ok"] else None,
            "client_cpu_util_connect": conn["client_cpu"] / conn["seconds"] if conn["seconds"] else None,
            "foreign_cpu": foreign,
            "rss_base_kib": rss0, "rss_kib": rss1, "rss_after_hold_kib": rss2,
            "kib_per_conn": (rss1 - rss0) / conn["ok"] if conn["ok"] else None,
            "hold_s": args.hold, "heartbeats_per_conn": pings / conn["ok"] if conn["ok"] else 0,
            "closed": closed, "answered_after_hold": answered,
            "close_codes": sum_counts(r["close_codes"] for r in chk),
            "errors": [e for r in chk for e in r["errors"]][:10],
        })
        check(closed == 0, f"{closed} connections closed during the hold ({out['close_codes']})")
        check(answered == c, f"{answered}/{c} connections answered after the hold: {out['errors']}")
        if spec.dialect != "raw":
            # A socket is visited again at its PING's deadline when that is later than the next PING is due
            # (ours since its heartbeat wheel; smoke runs 0.5 s / 2 s): one PING per max(interval, timeout).
            expect_pings = max(1, int(args.hold / max(args.ping_interval, args.ping_timeout) / 2))
            check(out["heartbeats_per_conn"] >= expect_pings,
                  f"{out['heartbeats_per_conn']:.1f} heartbeats per connection in {args.hold}s, expected "
                  f">= {expect_pings}")
    return out


