"""Results: medians over the runs, the table printed at the end, the plot, the versions recorded with them."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .common import CLIENT_CPU, NODE_DIR, SERVER_CPU, stack_label
from .peers import SERVERS


def get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def median_of(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if all(isinstance(v, bool) for v in vals):
        return sum(vals) > len(vals) / 2 if len(vals) > 1 else vals[0]
    if all(isinstance(v, (int, float)) for v in vals):
        return statistics.median(vals)
    return vals[0]


def summarize(runs: list[dict[str, Any]], metrics: list[tuple[str, str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in runs:
        key = f"{r['n']}{'+slow' if r.get('slow_variant') else ''}"
        out.setdefault(key, {}).setdefault(r["server"], []).append(r)
    summary: dict[str, Any] = {}
    for key, by_server in out.items():
        summary[key] = {}
        for server, rs in by_server.items():
            summary[key][server] = {m: median_of([get(r, m) for r in rs]) for m, _, _ in metrics}
            summary[key][server]["runs"] = len(rs)
    return summary


def fmt(v: Any, f: str) -> str:
    if v is None:
        return "-"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def print_table(title: str, summary: dict[str, Any], metrics: list[tuple[str, str, str]], servers: list[str]) -> str:
    lines = [f"\n## {title}"]
    for key, by_server in summary.items():
        lines.append(f"\n### size {key}")
        present = [s for s in servers if s in by_server]
        header = ["metric"] + [SERVERS[s].label for s in present]
        rows = [header]
        for m, label, f in metrics:
            if all(by_server[s].get(m) is None for s in present):
                continue
            base = by_server.get("raw", {}).get(m)
            row = [label]
            for s in present:
                v = by_server[s].get(m)
                cell = fmt(v, f)
                if (s != "raw" and isinstance(base, (int, float)) and not isinstance(base, bool)
                        and isinstance(v, (int, float)) and not isinstance(v, bool) and base):
                    cell += f" ({v / base:.2f}x)"
                row.append(cell)
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for i, r in enumerate(rows):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
            if i == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def plot(workload: str, summary: dict[str, Any], metrics: list[tuple[str, str, str]], servers: list[str],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    skip = ("util", "busy", "stalled", "closed", "foreign", "p999", "answered")
    shown = [(m, label) for m, label, _ in metrics if not any(k in m for k in skip)][:12]
    if not shown:
        return
    cols = 2
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.0 * rows), squeeze=False)
    for ax, (m, label) in zip(axes.flat, shown, strict=False):
        # only the sizes where this metric exists (the slow-receiver variant has its own key, e.g. "100+slow")
        keys = [k for k in summary if any(isinstance(v.get(m), (int, float)) for v in summary[k].values())]
        width = 0.8 / max(1, len(servers))
        x = np.arange(len(keys))
        for i, s in enumerate(servers):
            vals = [summary[k].get(s, {}).get(m) for k in keys]
            vals = [float(v) if isinstance(v, (int, float)) else np.nan for v in vals]
            ax.bar(x + i * width, vals, width, label=SERVERS[s].label)
        panel = [v for k in keys for v in (summary[k].get(s, {}).get(m) for s in servers)
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
        if panel and max(panel) / min(panel) > 30:
            ax.set_yscale("log")  # one peer far off (python-socketio at 10,000): keep the others readable
            label = f"{label} (log scale)"
        ax.set_xticks(x + width * (len(servers) - 1) / 2,
                      [f"N={k.replace('+slow', ' + 1 slow')}" for k in keys])
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{workload} (medians; server on 1 core, Python servers on {stack_label()})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    v: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release(),
                         "cpus": os.cpu_count(), "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU}
    try:
        with open("/proc/cpuinfo") as f:
            v["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    for pkg in ["uvicorn", "starlette", "websockets", "wsproto", "uvloop", "python-socketio", "python-engineio",
                "picows", "msgspec", "anyio", "granian", "hypercorn", "starlette-realtime"]:
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            v[pkg] = None
    try:
        v["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        v["socket.io"] = json.loads((NODE_DIR / "node_modules" / "socket.io" / "package.json").read_text())["version"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        pass
    return v


