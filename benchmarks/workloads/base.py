"""What the workloads share: correctness checks, connecting receivers, one measured fan-out phase."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..clients import WorkerHandle, call_all
from ..common import CLIENT_CPU, ForeignLoad, cat_bytes, cpu_busy_seconds, next_src_ip, pctl
from ..peers import ServerSpec
from ..process import Server, ServerGroup


class Check:
    """Smoke assertions: collected, then raised together."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.failures: list[str] = []

    def __call__(self, cond: bool, what: str) -> None:
        if not cond:
            self.failures.append(what)

    def raise_if_failed(self, context: str) -> None:
        if self.enabled and self.failures:
            raise AssertionError(f"{context}: " + "; ".join(self.failures))


def server_env(args: argparse.Namespace) -> dict[str, str]:
    return {"BENCH_PING_INTERVAL": str(args.ping_interval), "BENCH_PING_TIMEOUT": str(args.ping_timeout)}


def pad_for(payload: int) -> int:
    return max(1, payload - 45)  # {"t":1234567.123456789,"s":123,"p":"..."} is ~45 bytes without the pad


def connect_all(workers: list[WorkerHandle], url: str, spec: ServerSpec, counts: list[int], join: str | None,
                args: argparse.Namespace, timeout: float, pad_len: int | None = None) -> dict[str, Any]:
    res = call_all(
        [(w, "connect", dict(url=url, dialect=spec.dialect, n=n, src_ip=next_src_ip(), concurrency=args.concurrency,
                             join=join, strict=args.smoke, pad_len=pad_len or pad_for(args.payload), timeout=timeout))
         for w, n in zip(workers, counts, strict=True)], timeout + 15)
    ok = sum(r["ok"] for r in res)
    t0 = min(r["t_start"] for r in res)
    t1 = max(r["t_end"] for r in res)
    return {"ok": ok, "failed": sum(r["failed"] for r in res), "seconds": t1 - t0,
            "per_s": ok / (t1 - t0) if t1 > t0 else None, "client_cpu": sum(r["cpu"] for r in res),
            "errors": [e for r in res for e in r["errors"]][:10]}


def fanout_phase(srv: Server | ServerGroup, pub: WorkerHandle, recv: list[WorkerHandle], pub_kw: dict[str, Any],
                 timeout: float, cross: list[bool] | None = None) -> dict[str, Any]:
    """One measured fan-out phase. ``cross`` (cluster workload): per receiver process, whether it is attached to
    another node than the publisher's; then the deliveries and latency of those receivers are reported apart."""
    call_all([(w, "arm", {}) for w in recv], 10)
    cpu0, c1_0, t0, rss0 = srv.cpu(), cpu_busy_seconds(CLIENT_CPU), time.monotonic(), srv.rss_kib()
    fl = ForeignLoad(*srv.own_pids(), pub.proc.pid or 0, *(w.proc.pid or 0 for w in recv)).start()
    p = pub.call("publish", timeout + 60, **pub_kw)
    rs = call_all([(w, "wait", dict(expect=p["sent"], timeout=pub_kw.get("drain", 10.0))) for w in recv],
                  pub_kw.get("drain", 10.0) + 30)
    cpu1, c1_1, t1 = srv.cpu(), cpu_busy_seconds(CLIENT_CPU), time.monotonic()
    foreign = fl.stop()
    deliveries = sum(r["total"] for r in rs)
    last = max((r["last_msg"] for r in rs), default=0.0)
    span = last - p["t_first"] if deliveries else 0.0
    lat = cat_bytes([r["lat"] for r in rs])
    p50, p99, p999 = pctl(lat, [50, 99, 99.9])
    wall = t1 - t0
    client_cpu = p["cpu"] + sum(r["cpu"] for r in rs)
    extra: dict[str, Any] = {}
    if cross is not None:
        xs = [r for r, x in zip(rs, cross, strict=True) if x]
        x_deliveries = sum(r["total"] for r in xs)
        x50, x99, x999 = pctl(cat_bytes([r["lat"] for r in xs]), [50, 99, 99.9])
        s50, s99, _ = pctl(cat_bytes([r["lat"] for r, x in zip(rs, cross, strict=True) if not x]), [50, 99, 99.9])
        extra = {"cross_deliveries": x_deliveries,
                 "cross_deliveries_per_s": x_deliveries / span if span > 0 else None,
                 "cross_lat_p50_ms": x50 and x50 * 1e3, "cross_lat_p99_ms": x99 and x99 * 1e3,
                 "cross_lat_p999_ms": x999 and x999 * 1e3,
                 "same_lat_p50_ms": s50 and s50 * 1e3, "same_lat_p99_ms": s99 and s99 * 1e3}
    return {
        **extra,
        "published": p["sent"], "acked": p["acked"], "stalled": p["stalled"], "overloaded": p["overloaded"],
        "max_ack_gap_s": p["max_ack_gap"],
        "deliveries": deliveries, "expected": sum(r["expected"] for r in rs),
        "short_conns": sum(r["short_conns"] for r in rs), "order_errors": sum(r["order_errors"] for r in rs),
        "content_errors": sum(r["content_errors"] for r in rs), "closed": sum(r["closed"] for r in rs),
        "deliveries_per_s": deliveries / span if span > 0 else None,
        "server_cpu_s": cpu1 - cpu0,
        "cpu_s_per_M": (cpu1 - cpu0) / deliveries * 1e6 if deliveries else None,
        "server_cpu_util": (cpu1 - cpu0) / wall, "client_cpu_util": client_cpu / wall,
        "client_core_busy": (c1_1 - c1_0) / wall if CLIENT_CPU is not None else None,
        # CPU used on our two cores by anything but the server and the client processes (other jobs on the box)
        "foreign_cpu": foreign,
        "rss_growth_kib": srv.rss_kib() - rss0,
        "lat_p50_ms": p50 and p50 * 1e3, "lat_p99_ms": p99 and p99 * 1e3, "lat_p999_ms": p999 and p999 * 1e3,
        "wall_s": wall, "errors": (p["errors"] + [e for r in rs for e in r["errors"]])[:10],
    }


