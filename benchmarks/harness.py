"""Benchmark harness for starlette-realtime and its peers: the entry point.

    python -m benchmarks.harness {capacity,fanout,ack,cluster} [--servers raw,socketio,node,ours] [--repeats 3]
                                 [--smoke]

One server process at a time, pinned to CPU 0; load clients are asyncio+uvloop processes using picows, pinned to
CPU 1, each holding at most --conns-per-proc connections from its own source address 127.0.0.x. Servers are
interleaved (A B C A B C ...) over --repeats, and every run gets a fresh server process. Results (medians and every
raw run) go to benchmarks/results/<workload>.json and .png; --smoke runs tiny sizes, checks only correctness and
writes to benchmarks/results/tmp/.

The package, from the bottom up (each module one concept; see benchmarks/README.md, "The package"):

- ``common``: paths, CPU pinning, the server stack (STACK), /proc readings, foreign load;
- ``peers/``: one module per server (how to start it: ServerSpec; how to speak to it: Dialect);
- ``process``: server processes (Server, ServerGroup, RedisProc);
- ``conn``, ``worker``, ``clients``: the load clients (a picows connection, a client process, the orchestrator's
  handles on them);
- ``workloads/``: one module per workload (capacity, fanout, ack, cluster) and the registry with their metrics;
- ``summary``: medians, tables, plots, versions; ``cli``: the command line and the run loop.

This module keeps the command and the names other benchmark scripts use (``from benchmarks import harness as h``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import main, parse_args
from .clients import Clients, WorkerHandle, call_all
from .common import (
    CLIENT_CPU,
    RESULTS_DIR,
    SERVER_CPU,
    STACK,
    TMP_DIR,
    ForeignLoad,
    _pin,
    next_src_ip,
    proc_cpu_seconds,
    proc_rss_kib,
    split,
    sum_counts,
    uvicorn_args,
    wait_quiet,
)
from .conn import ws_connect
from .peers import DEFAULT_SERVERS, SERVERS, ServerSpec
from .process import RedisProc, Server, ServerGroup
from .summary import fmt, versions
from .workloads import WORKLOADS

__all__ = [
    "CLIENT_CPU", "DEFAULT_SERVERS", "RESULTS_DIR", "SERVERS", "SERVER_CPU", "STACK", "TMP_DIR", "WORKLOADS", "Clients",
    "ForeignLoad", "Path", "RedisProc", "Server", "ServerGroup", "ServerSpec", "WorkerHandle", "_pin", "call_all",
    "fmt", "main", "next_src_ip", "parse_args", "proc_cpu_seconds", "proc_rss_kib", "split", "sum_counts",
    "uvicorn_args", "versions", "wait_quiet", "ws_connect",
]

if __name__ == "__main__":
    sys.exit(main())
