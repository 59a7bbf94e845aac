"""The command line: plan the runs (servers interleaved over the repeats), run them with a progress bar, write the
JSON and the plot (see benchmarks/README.md)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .common import CLIENT_CPU, RESULTS_DIR, STACK, TMP_DIR, _pin, stack_label, uvicorn_args, wait_quiet
from .conn import ws_connect
from .peers import DEFAULT_SERVERS, SERVERS
from .process import _stop_all_servers
from .summary import get, plot, print_table, summarize, versions
from .workloads import SLOW_METRICS, WORKLOADS
from .workloads.base import Check
from .workloads.fanout import run_fanout


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=list(WORKLOADS))
    p.add_argument("--servers", default=None,
                   help=f"comma list of {','.join(SERVERS)} (default {DEFAULT_SERVERS}; cluster: ours)")
    p.add_argument("--sizes", help="comma list: connections (capacity), receivers (fanout), clients (ack)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, assert correctness only, results in tmp/")
    p.add_argument("--out", help="results file stem (default results/<workload>)")
    p.add_argument("--payload", type=int, default=100, help="approximate payload bytes")
    p.add_argument("--conns-per-proc", type=int, default=5000, help="client connections per client process")
    p.add_argument("--client-procs", type=int, default=1, help="minimum number of client processes")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per client process")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--ping-interval", type=float, default=5.0, help="server heartbeat interval (s) where it has one")
    p.add_argument("--ping-timeout", type=float, default=5.0)
    # capacity
    p.add_argument("--hold", type=float, default=16.0, help="capacity: seconds to hold the idle connections")
    p.add_argument("--check-timeout", type=float, default=30.0)
    # fanout / ack
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase")
    p.add_argument("--count", type=int, default=0, help="fanout: publishes per phase (0 = by --duration only)")
    p.add_argument("--modes", default="burst,steady", help="fanout phases: burst,steady")
    p.add_argument("--window", type=int, default=1, help="fanout burst: publishes awaiting their ack")
    p.add_argument("--steady-deliveries", type=float, default=5000.0,
                   help="fanout steady: target deliveries/s (publish rate = this / N)")
    p.add_argument("--warmup-messages", type=int, default=20)
    p.add_argument("--warmup", type=float, default=1.0, help="ack: warm-up seconds before the window")
    p.add_argument("--drain", type=float, default=15.0, help="fanout: seconds to wait for deliveries to arrive")
    p.add_argument("--stall-timeout", type=float, default=2.0)
    p.add_argument("--slow", choices=["no", "also", "only"], default="also",
                   help="fanout: also run the variant with one receiver that stops reading")
    p.add_argument("--slow-receivers", type=int, default=100)
    p.add_argument("--slow-payload", type=int, default=1024)
    p.add_argument("--slow-duration", type=float, default=10.0)
    p.add_argument("--nodes", type=int, default=3, help="cluster: nodes of ours on one redis-server (2-4)")
    p.add_argument("--asgi-server", choices=["uvicorn", "granian", "hypercorn"], default="uvicorn",
                   help="ASGI server of the Python servers (granian: one worker, one runtime thread, uvloop; "
                        "hypercorn: one worker, uvloop)")
    p.add_argument("--ws", default="websockets-sansio",
                   choices=["websockets-sansio", "websockets", "wsproto", "preframed"],
                   help="uvicorn's WebSocket implementation for the Python servers (preframed: the library's "
                        "fast path, starlette_realtime.fastpath.uvicorn:PreframedProtocol)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG of a results file (next to it)")
    p.add_argument("--profile", metavar="DIR",
                   help="record each Python server with py-spy (collapsed stacks in DIR/<server>-<port>.txt; "
                        "summarize with python -m benchmarks.profile_summary DIR/*.txt)")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--max-foreign", type=float, default=0.25,
                   help="rerun a run during which other processes used more than this many cores of our two")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each run, wait up to this long for other processes to leave our cores idle")
    p.add_argument("--max-retries", type=int, default=3, help="reruns allowed per run (--max-foreign)")
    args = p.parse_args(argv)
    if args.servers is None:
        args.servers = "ours" if args.workload == "cluster" else DEFAULT_SERVERS
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.workload == "cluster":
        if args.servers != ["ours"]:
            p.error("cluster: only ours has a Redis mode here (--servers ours)")
        if not 1 <= args.nodes <= 8:
            p.error("--nodes: 1 to 8")
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    wl = WORKLOADS[args.workload]
    if args.sizes:
        args.sizes = [int(x) for x in args.sizes.split(",")]
    else:
        args.sizes = wl["smoke_sizes"] if args.smoke else wl["sizes"]
    if args.smoke:
        args.repeats = 1 if args.repeats == 3 else args.repeats
        args.duration = min(args.duration, 1.0)
        args.count = args.count or 30
        args.warmup = min(args.warmup, 0.2)
        args.warmup_messages = min(args.warmup_messages, 5)
        args.ping_interval = min(args.ping_interval, 0.5)
        args.ping_timeout = min(args.ping_timeout, 2.0)
        args.hold = min(args.hold, 2.0)
        args.steady_deliveries = min(args.steady_deliveries, 500.0)
        args.slow_receivers = min(args.slow_receivers, 3)
        args.slow_duration = min(args.slow_duration, 1.0)
        args.drain = min(args.drain, 5.0)
        args.check_timeout = min(args.check_timeout, 10.0)
        args.connect_timeout = min(args.connect_timeout, 20.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        res = json.loads(Path(args.replot).read_text())
        wl = WORKLOADS[res["workload"]]
        servers = [s for s in res["config"]["servers"] if any(s in by for by in res["summary"].values())]
        metrics = list(wl["metrics"]) + (SLOW_METRICS if any("slow" in k for k in res["summary"]) else [])
        STACK.asgi_server, STACK.ws = res["config"].get("asgi_server", "uvicorn"), res["config"].get("ws", STACK.ws)
        plot(res["workload"], res["summary"], metrics, servers, Path(args.replot).with_suffix(".png"))
        return 0
    STACK.asgi_server, STACK.ws = args.asgi_server, args.ws
    if args.profile:
        STACK.profile_dir, STACK.profile_rate = Path(args.profile), args.profile_rate
    if ws_connect is None:
        print("picows is not installed: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2
    _pin(CLIENT_CPU)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    wl = WORKLOADS[args.workload]
    # A requested server that cannot run is an error, not a quiet omission from the results.
    unavailable = [f"{s}: {why}" for s in args.servers if (why := SERVERS[s].unavailable())]
    if unavailable:
        print("cannot run the requested servers (drop them from --servers or install them):\n  "
              + "\n  ".join(unavailable), file=sys.stderr)
        return 2
    servers = list(args.servers)
    plan: list[tuple[str, int, bool]] = []  # (server, size, slow)
    for _rep in range(args.repeats):
        if not (args.workload == "fanout" and args.slow == "only"):
            for n in args.sizes:
                plan.extend((s, n, False) for s in servers)  # interleaved: A B C A B C ...
        if args.workload == "fanout" and args.slow != "no":
            plan.extend((s, args.slow_receivers, True) for s in servers)
    metrics = list(wl["metrics"]) + (SLOW_METRICS if args.workload == "fanout" and args.slow != "no" else [])

    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: we fork client processes
    runs: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.time()
    bar = tqdm(total=len(plan), desc=args.workload, unit="run", dynamic_ncols=True)
    queue = list(plan)
    retries_left = args.max_retries
    while queue:
        server, n, slow = queue.pop(0)
        requeued = False
        bar.set_postfix_str(f"{server} n={n}{' slow' if slow else ''}")
        check = Check(args.smoke)
        spec = SERVERS[server]
        if not args.smoke and args.quiet_wait > 0:
            busy = wait_quiet(args.max_foreign, args.quiet_wait)
            if busy > args.max_foreign:
                tqdm.write(f"the machine is busy ({busy:.2f} cores) after waiting {args.quiet_wait:.0f}s; going on")
        try:
            if args.workload == "fanout":
                r = run_fanout(spec, n, args, check, slow=slow)
            else:
                r = wl["run"](spec, n, args, check)
            r["check_failures"] = check.failures
            foreign = max((v for v in (get(r, "foreign_cpu"), get(r, "burst.foreign_cpu"), get(r, "steady.foreign_cpu"),
                                       get(r, "slow.foreign_cpu")) if v is not None), default=0.0)
            r["foreign_cpu_max"] = foreign
            if not args.smoke and foreign > args.max_foreign and retries_left > 0:
                retries_left -= 1
                tqdm.write(f"{server} n={n}: {foreign:.2f} cores used by other processes during the run; "
                           f"running it again ({retries_left} retries left)")
                queue.insert(0, (server, n, slow))
                requeued = True
                r["discarded"] = True
                discarded.append(r)
                continue
            retries_left = args.max_retries  # the budget is per run
            runs.append(r)
            check.raise_if_failed(f"{server} n={n}{' slow' if slow else ''}")
            if check.failures:
                tqdm.write(f"WARNING {server} n={n}: {check.failures}")
        except NotImplementedError as e:
            print(str(e), file=sys.stderr)
            return 3
        except Exception as e:
            msg = f"{server} n={n}{' slow' if slow else ''}: {type(e).__name__}: {e}"
            failures.append(msg)
            tqdm.write("FAILED " + msg)
            if args.smoke:
                break
        finally:
            _stop_all_servers()
            if not requeued:
                bar.update(1)
    bar.close()
    summary = summarize(runs, metrics)
    table = print_table(f"{args.workload}{' (smoke)' if args.smoke else ''}", summary, metrics, servers)
    stem = Path(args.out) if args.out else (TMP_DIR / f"{args.workload}-smoke" if args.smoke
                                            else RESULTS_DIR / args.workload)
    stem.parent.mkdir(parents=True, exist_ok=True)
    result = {"workload": args.workload, "smoke": args.smoke, "started": started, "seconds": time.time() - started,
              "argv": sys.argv[1:] if argv is None else argv, "config": {k: v for k, v in vars(args).items()},
              "env": versions(), "uvicorn_args": uvicorn_args(), "stack": stack_label(), "summary": summary,
              "table": table,
              "failures": failures, "runs": runs, "discarded_runs": discarded}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    if not args.no_plot and not args.smoke and runs:
        plot(args.workload, summary, metrics, servers, stem.with_suffix(".png"))
    print(f"\nresults: {stem.with_suffix('.json')}", flush=True)
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


