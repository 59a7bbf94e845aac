"""A real local Redis Cluster for tests: three masters, three replicas, on free loopback ports.

Each node is a ``redis-server --cluster-enabled yes`` process in its own
temporary directory (no persistence but the cluster's ``nodes.conf``, so a
killed node restarts into the cluster as a replica); ``redis-cli --cluster
create`` assigns the slots.  Tests can fail a master over politely (``CLUSTER
FAILOVER`` on its replica) or by SIGKILL, and restart the killed node.

Without redis-server or redis-cli the fixture fails in CI (``CI=true``) with
what to install, and skips elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
INSTALL = "apt-get install -y redis-server redis-tools (Redis >= 7.0, for sharded pub/sub)"


def require_cluster_tools() -> None:
    """Fail in CI, skip elsewhere, when redis-server or redis-cli (>= 7.0) is missing."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    problem = f"missing {', '.join(missing)}" if missing else None
    if problem is None:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
        version = out.split("v=", 1)[-1].split()[0] if "v=" in out else "0"
        if int(version.split(".")[0]) < 7:
            problem = f"redis-server {version} has no sharded pub/sub"
    if problem is None:
        return
    message = f"Redis Cluster tests need {INSTALL}: {problem}"
    if IN_CI:
        pytest.fail(message + " -- CI must install it", pytrace=False)
    pytest.skip(message)


def _free_pair() -> tuple[int, int]:
    # A port for clients and one for the cluster bus.
    socks = [socket.socket() for _ in range(2)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return socks[0].getsockname()[1], socks[1].getsockname()[1]
    finally:
        for s in socks:
            s.close()


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    return done.stdout + done.stderr


class ClusterNode:
    """One redis-server process of the cluster."""

    def __init__(self, root: str, node_timeout_ms: int) -> None:
        self.port, self.bus_port = _free_pair()
        self.dir = os.path.join(root, str(self.port))
        os.makedirs(self.dir)
        self.node_timeout_ms = node_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--cluster-port", str(self.bus_port),
             "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--loglevel", "warning", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while "PONG" not in _cli(self.port, "ping", timeout=2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args)

    def __repr__(self) -> str:
        return f"ClusterNode(port={self.port}, alive={self.alive})"


class LocalRedisCluster:
    """Three masters and three replicas (by default) on loopback.

    Args:
        masters: how many masters.
        replicas: replicas per master.
        node_timeout_ms: ``cluster-node-timeout``: how long a master may be silent before its replica takes over.
    """

    def __init__(self, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.root = tempfile.mkdtemp(prefix="rt-cluster-")
        self.nodes = [ClusterNode(self.root, node_timeout_ms) for _ in range(masters * (1 + replicas))]
        self.replicas = replicas

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> LocalRedisCluster:
        for node in self.nodes:
            node.start()
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if "[OK] All 16384 slots covered" not in out.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
        self.wait_healthy(30)
        return self

    def topology(self, via: ClusterNode | None = None) -> dict[int, dict[str, Any]]:
        """``port -> {id, role, master (port or None), slots}`` as a live node sees it."""
        node = via or next(n for n in self.nodes if n.alive)
        rows = [line.split() for line in node.cli("cluster", "nodes").splitlines() if line.strip()]
        by_id = {row[0]: int(row[1].split("@")[0].rsplit(":", 1)[1]) for row in rows}
        out: dict[int, dict[str, Any]] = {}
        for row in rows:
            port = by_id[row[0]]
            flags = row[2].split(",")
            out[port] = {
                "id": row[0],
                "role": "master" if "master" in flags else "replica",
                "failed": "fail" in flags or "fail?" in flags,
                "master": by_id.get(row[3]),
                "slots": row[8:],
            }
        return out

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> ClusterNode:
        """The master that serves ``key``'s slot now."""
        live = next(n for n in self.nodes if n.alive)
        slot = int(live.cli("cluster", "keyslot", key).strip())
        for port, info in self.topology(live).items():
            if info["role"] != "master" or info["failed"]:
                continue
            for span in info["slots"]:
                if span.startswith("["):
                    continue
                lo, _, hi = span.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return self.node(port)
        raise LookupError(f"no master serves slot {slot}")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        for port, info in self.topology().items():
            if info["master"] == master.port and not info["failed"] and self.node(port).alive:
                return self.node(port)
        raise LookupError(f"no live replica of {master.port}")

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and every slot has a live master."""
        live = [n for n in self.nodes if n.alive]
        if not all("cluster_state:ok" in n.cli("cluster", "info") for n in live):
            return False
        topo = self.topology(live[0])
        return all(not info["failed"] or not self.node(port).alive for port, info in topo.items()) and all(
            self.node(port).alive for port, info in topo.items() if info["role"] == "master" and info["slots"]
        )

    def wait_healthy(self, timeout: float) -> float:
        start = time.monotonic()
        while not self.healthy():
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"the cluster is not healthy after {timeout} s: {self.topology()}")
            time.sleep(0.1)
        return time.monotonic() - start

    def failover(self, master: ClusterNode) -> ClusterNode:
        """``CLUSTER FAILOVER`` on the master's replica (no write lost); returns the new master."""
        replica = self.replica_of(master)
        out = replica.cli("cluster", "failover")
        if "OK" not in out:
            raise RuntimeError(f"CLUSTER FAILOVER refused: {out}")
        return replica

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again: it rejoins from its nodes.conf (as a replica once it was failed over)."""
        node.kill()
        node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalRedisCluster(ports={[n.port for n in self.nodes]})"


def redis_cluster_fixture() -> Iterator[LocalRedisCluster]:
    """The body of the session-scoped ``redis_cluster`` fixture (registered in conftest)."""
    require_cluster_tools()
    cluster = LocalRedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def migrate_slot(cluster: LocalRedisCluster, slot: int, source: ClusterNode, target: ClusterNode) -> int:
    """Move one slot, keys included, from ``source`` to ``target`` (what ``redis-cli --cluster reshard`` does).

    Returns:
        How many keys moved.
    """
    topo = cluster.topology()
    source_id, target_id = topo[source.port]["id"], topo[target.port]["id"]
    target.cli("cluster", "setslot", str(slot), "importing", source_id)
    source.cli("cluster", "setslot", str(slot), "migrating", target_id)
    moved = 0
    while True:
        keys = source.cli("cluster", "getkeysinslot", str(slot), "100").split()
        if not keys:
            break
        out = source.cli("migrate", "127.0.0.1", str(target.port), "", "0", "5000", "keys", *keys)
        if "OK" not in out and "NOKEY" not in out:
            raise RuntimeError(f"MIGRATE failed: {out}")
        moved += len(keys)
    for port, info in topo.items():
        if info["role"] == "master" and cluster.node(port).alive:
            cluster.node(port).cli("cluster", "setslot", str(slot), "node", target_id)
    return moved
