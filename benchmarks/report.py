"""Markdown tables for docs/benchmarks.md from the JSON results in benchmarks/results/.

    python -m benchmarks.report [--results benchmarks/results] > /tmp/tables.md

Prints, from one run of each workload: the issue's targets with their ratios against raw Starlette, then one table
per workload (medians over the repeats, ratio against raw Starlette in brackets), the cluster and capacity_cluster
figures, and the stack comparison (results/stacks/*.json). Missing files are skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LABELS = {"raw": "raw Starlette", "socketio": "python-socketio", "node": "Node socket.io", "ours": "starlette-realtime"}
ORDER = ["raw", "socketio", "node", "ours"]


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def cell(v: Any, fmt: str, base: Any = None, ratio: bool = True) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    s = fmt.format(v)
    if ratio and isinstance(base, (int, float)) and not isinstance(base, bool) and base and v is not base:
        s += f" ({v / base:.2f}x)"
    return s


def table(summary: dict[str, Any], key: str, cols: list[tuple[str, str, str]], servers: list[str]) -> str:
    by = summary.get(key, {})
    rows = ["| server | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s in servers:
        if s not in by:
            continue
        cells = []
        for metric, _, fmt in cols:
            base = by.get("raw", {}).get(metric) if s != "raw" else None
            cells.append(cell(by[s].get(metric), fmt, base))
        rows.append(f"| {LABELS.get(s, s)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


FANOUT = [("burst.deliveries_per_s", "deliveries/s", "{:,.0f}"), ("burst.cpu_s_per_M", "CPU-s / 1M", "{:.1f}"),
          ("burst.lat_p50_ms", "burst p50 ms", "{:.1f}"), ("burst.lat_p99_ms", "burst p99 ms", "{:.1f}"),
          ("burst.lat_p999_ms", "burst p999 ms", "{:.1f}"), ("steady.lat_p50_ms", "steady p50 ms", "{:.2f}"),
          ("steady.lat_p99_ms", "steady p99 ms", "{:.2f}"), ("steady.cpu_s_per_M", "steady CPU-s / 1M", "{:.1f}")]
SLOW = [("slow.deliveries_per_s", "healthy deliveries/s", "{:,.0f}"), ("slow.acked", "publishes acked", "{:,.0f}"),
        ("slow.stalled", "publisher stalled", "{}"), ("slow.max_ack_gap_s", "longest ack gap s", "{:.2f}"),
        ("slow.lat_p99_ms", "healthy p99 ms", "{:.1f}"), ("slow.rss_growth_kib", "RSS growth KiB", "{:,.0f}"),
        ("slow.closed", "connections closed", "{}")]
ACK = [("acks_per_s", "acks/s", "{:,.0f}"), ("rtt_p50_ms", "RTT p50 ms", "{:.2f}"),
       ("rtt_p99_ms", "RTT p99 ms", "{:.2f}"), ("cpu_s_per_M", "CPU-s / 1M acks", "{:.1f}")]
CAPACITY = [("kib_per_conn", "KiB / conn", "{:.1f}"), ("handshakes_per_s", "handshakes/s", "{:,.0f}"),
            ("server_cpu_ms_per_handshake", "server ms / handshake", "{:.3f}"),
            ("heartbeats_per_conn", "heartbeats / conn", "{:.1f}"), ("answered_after_hold", "answered after hold",
                                                                     "{:,.0f}")]


def targets(fan: dict[str, Any] | None, ack: dict[str, Any] | None, cap: dict[str, Any] | None,
            cc: dict[str, Any] | None) -> str:
    rows = ["| target | measured | met |", "|---|---|---|"]

    def ratio(summary: dict[str, Any], key: str, metric: str) -> float | None:
        by = summary.get(key, {})
        a, b = by.get("ours", {}).get(metric), by.get("raw", {}).get(metric)
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    if fan:
        for key in [k for k in fan["summary"] if "slow" not in k]:
            d = ratio(fan["summary"], key, "burst.deliveries_per_s")
            p = ratio(fan["summary"], key, "burst.lat_p99_ms")
            if d is not None and p is not None:
                rows.append(f"| fan-out to {int(key):,}: deliveries/s >= 0.9x raw, p99 no worse | "
                            f"{d:.2f}x, p99 {p:.2f}x | {'yes' if d >= 0.9 and p <= 1.0 else 'no'} |")
    if cap:
        for key in cap["summary"]:
            r = ratio(cap["summary"], key, "kib_per_conn")
            if r is not None:
                rows.append(f"| KiB per idle connection ({int(key):,}) <= 1.2x raw | {r:.2f}x | "
                            f"{'yes' if r <= 1.2 else 'no'} |")
        big = cap["summary"].get("19500", {}).get("ours")
        if big:
            ok = big.get("answered_after_hold") == 19500
            rows.append(f"| 19,500 idle connections on one process, all answering after the hold | "
                        f"{cell(big.get('answered_after_hold'), '{:,.0f}')} answered, "
                        f"{cell(big.get('heartbeats_per_conn'), '{:.1f}')} heartbeats each | {'yes' if ok else 'no'} |")
    if ack:
        for key in ack["summary"]:
            r = ratio(ack["summary"], key, "acks_per_s")
            if r is not None:
                rows.append(f"| acks/s ({int(key)} clients) >= 0.9x raw | {r:.2f}x | {'yes' if r >= 0.9 else 'no'} |")
    if cc:
        r = cc["result"]
        ok = not cc["failures"] and r["opened"] >= 60000
        rows.append(f"| 60,000+ idle connections over several processes on Redis, all answering after several "
                    f"heartbeats | {r['opened']:,} opened on {cc['config']['nodes']} processes, "
                    f"{r['answered_after_hold']:,} answered, {r['heartbeats_per_conn']:.1f} heartbeats each, "
                    f"{r['closed']} closed | {'yes' if ok else 'no'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    res = args.results
    fan, ack, cap = load(res / "fanout.json"), load(res / "ack.json"), load(res / "capacity.json")
    cc, cl = load(res / "capacity_cluster.json"), load(res / "cluster.json")
    out = ["## Targets", "", targets(fan, ack, cap, cc), ""]
    if fan:
        servers = [s for s in ORDER if s in fan["config"]["servers"]]
        for key in fan["summary"]:
            if "slow" in key:
                n = key.split("+")[0]
                out += [f"### Slow receiver: {n} healthy receivers + 1 that stops reading", "",
                        table(fan["summary"], key, SLOW, servers), ""]
            else:
                out += [f"### Fan-out to {int(key):,} receivers", "", table(fan["summary"], key, FANOUT, servers), ""]
    if ack:
        servers = [s for s in ORDER if s in ack["config"]["servers"]]
        for key in ack["summary"]:
            out += [f"### Ack: {key} clients", "", table(ack["summary"], key, ACK, servers), ""]
    if cap:
        servers = [s for s in ORDER if s in cap["config"]["servers"]]
        for key in cap["summary"]:
            out += [f"### Capacity: {int(key):,} idle connections", "", table(cap["summary"], key, CAPACITY, servers),
                    ""]
    if cc:
        out += [cc["table"], ""]
    if cl:
        out += ["### Cluster", "", cl["table"], ""]
    stacks = sorted((res / "stacks").glob("*.json")) if (res / "stacks").is_dir() else []
    if stacks:
        rows = ["| stack | raw: deliveries/s | raw: CPU-s / 1M | raw: burst p99 ms | ours: deliveries/s | "
                "ours: CPU-s / 1M | ours: burst p99 ms | ours / raw CPU |", "|---" * 8 + "|"]
        for f in stacks:
            d = load(f)
            if not d:
                continue
            by = d["summary"].get("1000", {})
            r, o = by.get("raw", {}), by.get("ours", {})
            rc, oc = r.get("burst.cpu_s_per_M"), o.get("burst.cpu_s_per_M")
            rows.append(f"| {d.get('stack', f.stem)} | {cell(r.get('burst.deliveries_per_s'), '{:,.0f}')} | "
                        f"{cell(rc, '{:.1f}')} | {cell(r.get('burst.lat_p99_ms'), '{:.1f}')} | "
                        f"{cell(o.get('burst.deliveries_per_s'), '{:,.0f}')} | {cell(oc, '{:.1f}')} | "
                        f"{cell(o.get('burst.lat_p99_ms'), '{:.1f}')} | "
                        f"{cell(oc / rc if oc and rc else None, '{:.2f}x')} |")
        out += ["### Stacks: fan-out to 1,000", "", "\n".join(rows), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
