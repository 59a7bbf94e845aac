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

LABELS = {"raw": "raw Starlette", "socketio": "python-socketio", "node": "Node socket.io",
          "ours": "starlette-realtime (plain ASGI)", "ours-fast": "starlette-realtime (fast path)"}
ORDER = ["raw", "socketio", "node", "ours", "ours-fast"]


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
    """Issue 14's targets, for ours on the fast path (what ``starlette_realtime.server.run`` serves with) and, in
    brackets, on plain ASGI (uvicorn's own protocol), against raw Starlette and Node in the same run."""
    rows = ["| target | fast path | plain ASGI | met (fast path) |", "|---|---|---|---|"]

    def ratio(summary: dict[str, Any], key: str, metric: str, ours: str, other: str = "raw") -> float | None:
        by = summary.get(key, {})
        a, b = by.get(ours, {}).get(metric), by.get(other, {}).get(metric)
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    def row(what: str, fast: float | None, plain: float | None, ok: bool | None) -> None:
        rows.append(f"| {what} | {fmt(fast)} | {fmt(plain)} | {'-' if ok is None else 'yes' if ok else 'no'} |")

    def both(summary: dict[str, Any], key: str, metric: str, other: str = "raw") -> tuple[float | None, ...]:
        return (ratio(summary, key, metric, "ours-fast", other), ratio(summary, key, metric, "ours", other))

    if fan:
        sm = fan["summary"]
        for key in [k for k in sm if "slow" not in k]:
            n = f"{int(key):,}"
            f, p = both(sm, key, "burst.cpu_s_per_M", "node")
            row(f"fan-out to {n}: CPU per delivery <= Node's", f, p, None if f is None else f <= 1.0)
            f, p = both(sm, key, "burst.cpu_s_per_M")
            row(f"fan-out to {n}: CPU per delivery <= 0.8x raw", f, p, None if f is None else f <= 0.8)
            f, p = both(sm, key, "burst.lat_p99_ms")
            row(f"fan-out to {n}: burst p99 <= raw's", f, p, None if f is None else f <= 1.0)
        for key in [k for k in sm if "slow" in k]:
            f, p = both(sm, key, "slow.deliveries_per_s")
            stalled = sm[key].get("ours-fast", {}).get("slow.stalled")
            row("a receiver stops reading: healthy deliveries/s (vs raw, which stalls), publisher never stalled", f, p,
                None if stalled is None else not stalled)
    if ack:
        for key in ack["summary"]:
            f, p = both(ack["summary"], key, "acks_per_s")
            row(f"acks/s ({key} clients) >= raw's", f, p, None if f is None else f >= 1.0)
            f, p = both(ack["summary"], key, "acks_per_s", "node")
            row(f"acks/s ({key} clients) >= Node's", f, p, None if f is None else f >= 1.0)
    if cap:
        for key in cap["summary"]:
            n = f"{int(key):,}"
            f, p = both(cap["summary"], key, "kib_per_conn")
            row(f"KiB per idle connection ({n}) <= raw's", f, p, None if f is None else f <= 1.0)
            f, p = both(cap["summary"], key, "server_cpu_ms_per_handshake")
            row(f"CPU per handshake ({n}) <= raw's", f, p, None if f is None else f <= 1.0)
            f, p = both(cap["summary"], key, "server_cpu_ms_per_handshake", "node")
            row(f"CPU per handshake ({n}) <= Node's", f, p, None if f is None else f <= 1.0)
    if cc:
        r = cc["result"]
        ok = not cc["failures"] and r["opened"] >= 60000
        rows.append(f"| 60,000+ idle connections over several processes on Redis, all answering after several "
                    f"heartbeats | {r['opened']:,} opened on {cc['config']['nodes']} processes, "
                    f"{r['answered_after_hold']:,} answered | (plain ASGI) | {'yes' if ok else 'no'} |")
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
        rows = ["| stack | server | deliveries/s | CPU-s / 1M | burst p99 ms | CPU / raw's on the stack |",
                "|---" * 6 + "|"]
        for f in stacks:
            d = load(f)
            if not d:
                continue
            by = d["summary"].get("1000", {})
            rc = by.get("raw", {}).get("burst.cpu_s_per_M")
            for server in [x for x in ORDER if x in by]:
                m = by[server]
                c = m.get("burst.cpu_s_per_M")
                rows.append(f"| {d.get('stack', f.stem)} | {LABELS.get(server, server)} | "
                            f"{cell(m.get('burst.deliveries_per_s'), '{:,.0f}')} | {cell(c, '{:.1f}')} | "
                            f"{cell(m.get('burst.lat_p99_ms'), '{:.1f}')} | "
                            f"{cell(c / rc if c and rc and server != 'raw' else None, '{:.2f}x')} |")
        out += ["### Stacks: fan-out to 1,000", "", "\n".join(rows), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
