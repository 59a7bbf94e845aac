"""The workloads, one module each: how to run one size on one server (``run``), the sizes, and the table's metrics.

A new workload is a module with a ``run_<name>(spec, n, args, check) -> dict`` and an entry here.
"""

from __future__ import annotations

from typing import Any

from .ack import run_ack
from .capacity import run_capacity
from .cluster import run_cluster
from .fanout import run_fanout

WORKLOADS: dict[str, dict[str, Any]] = {
    "capacity": {"run": run_capacity, "sizes": [1000, 5000, 10000, 19500], "smoke_sizes": [20],
                 "metrics": [("handshakes_per_s", "handshakes/s", "{:,.0f}"), ("kib_per_conn", "KiB/conn", "{:.1f}"),
                             ("server_cpu_ms_per_handshake", "srv ms/handshake", "{:.3f}"),
                             ("heartbeats_per_conn", "heartbeats/conn", "{:.1f}"),
                             ("answered_after_hold", "answered after hold", "{:,.0f}"),
                             ("client_cpu_util_connect", "client CPU (connect)", "{:.2f}"),
                             ("foreign_cpu", "foreign CPU (connect)", "{:.2f}")]},
    "fanout": {"run": run_fanout, "sizes": [100, 1000, 10000], "smoke_sizes": [5],
               "metrics": [("burst.deliveries_per_s", "deliveries/s", "{:,.0f}"),
                           ("burst.cpu_s_per_M", "CPU-s/1M deliveries", "{:.1f}"),
                           ("burst.lat_p50_ms", "burst p50 ms", "{:.1f}"),
                           ("burst.lat_p99_ms", "burst p99 ms", "{:.1f}"),
                           ("burst.lat_p999_ms", "burst p999 ms", "{:.1f}"),
                           ("steady.cpu_s_per_M", "steady CPU-s/1M", "{:.1f}"),
                           ("steady.lat_p50_ms", "steady p50 ms", "{:.2f}"),
                           ("steady.lat_p99_ms", "steady p99 ms", "{:.2f}"),
                           ("steady.lat_p999_ms", "steady p999 ms", "{:.2f}"),
                           ("burst.server_cpu_util", "server CPU util", "{:.2f}"),
                           ("burst.client_core_busy", "client core busy", "{:.2f}"),
                           ("burst.client_cpu_util", "client procs CPU", "{:.2f}"),
                           ("burst.foreign_cpu", "foreign CPU", "{:.2f}")]},
    "ack": {"run": run_ack, "sizes": [100], "smoke_sizes": [5],
            "metrics": [("acks_per_s", "acks/s", "{:,.0f}"), ("rtt_p50_ms", "RTT p50 ms", "{:.2f}"),
                        ("rtt_p99_ms", "RTT p99 ms", "{:.2f}"), ("cpu_s_per_M", "CPU-s/1M acks", "{:.1f}"),
                        ("server_cpu_util", "server CPU util", "{:.2f}"),
                        ("client_core_busy", "client core busy", "{:.2f}"),
                        ("client_cpu_util", "client procs CPU", "{:.2f}"), ("foreign_cpu", "foreign CPU", "{:.2f}")]},
    "cluster": {"run": run_cluster, "sizes": [1000], "smoke_sizes": [6],
                "metrics": [("burst.deliveries_per_s", "deliveries/s", "{:,.0f}"),
                            ("burst.cross_deliveries_per_s", "cross-node deliveries/s", "{:,.0f}"),
                            ("burst.cpu_s_per_M", "CPU-s/1M (nodes+Redis)", "{:.1f}"),
                            ("burst.lat_p50_ms", "burst p50 ms", "{:.1f}"),
                            ("burst.lat_p99_ms", "burst p99 ms", "{:.1f}"),
                            ("burst.cross_lat_p99_ms", "burst cross-node p99 ms", "{:.1f}"),
                            ("steady.cpu_s_per_M", "steady CPU-s/1M", "{:.1f}"),
                            ("steady.cross_lat_p50_ms", "steady cross-node p50 ms", "{:.2f}"),
                            ("steady.cross_lat_p99_ms", "steady cross-node p99 ms", "{:.2f}"),
                            ("steady.same_lat_p99_ms", "steady same-node p99 ms", "{:.2f}"),
                            ("steady.lat_p999_ms", "steady p999 ms", "{:.2f}"),
                            ("burst.server_cpu_util", "server CPU util", "{:.2f}"),
                            ("burst.client_core_busy", "client core busy", "{:.2f}"),
                            ("burst.foreign_cpu", "foreign CPU", "{:.2f}")]},
}
SLOW_METRICS = [("slow.deliveries_per_s", "healthy deliveries/s", "{:,.0f}"),
                ("slow.acked", "publishes acked", "{:,.0f}"), ("slow.stalled", "stalled", "{}"),
                ("slow.max_ack_gap_s", "max ack gap s", "{:.2f}"), ("slow.rss_growth_kib", "RSS growth KiB", "{:,.0f}"),
                ("slow.lat_p99_ms", "healthy p99 ms", "{:.1f}"), ("slow.closed", "conns closed", "{}")]


