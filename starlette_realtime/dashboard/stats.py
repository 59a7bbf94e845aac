"""The dashboard's figures: one snapshot of a node per second, and the arithmetic behind it.

:class:`StatsSampler` reads the router (connections, rooms, users, hub
deliveries) and, when the router's metrics are a
:class:`~starlette_realtime.prometheus.PrometheusMetrics`, its running totals;
rates and latency quantiles come from the difference between two readings.
Reading costs O(rooms) once a second while a dashboard is open, and nothing
otherwise.

:class:`ClusterSampler` asks every node for its figures through the cluster
control channel (``RealtimeRouter.node_stats``, a ``stats`` request) and turns
two successive answers of a node into its rates: one :class:`NodeRow` per node.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import msgspec

from ..cluster import NodeStats
from ..rooms import ALL_ROOM

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..prometheus import MetricsSample, PrometheusMetrics
    from ..routing import RealtimeRouter

#: Samples kept for a page that opens (10 minutes at one per second).
HISTORY = 600
#: A gap longer than this many intervals (no page was open) is not averaged over.
MAX_GAP = 3.0


class Snapshot(msgspec.Struct, kw_only=True):
    """What a dashboard page receives each second.

    Attributes:
        t: the node's wall-clock time, seconds.
        node: the node id.
        connections: open namespace connections, the dashboard's own excluded.
        links: open WebSockets (dashboards included).
        users: distinct authenticated users.
        rooms: application rooms with a member on this node.
        namespaces: open connections per namespace.
        top_rooms: the largest rooms: ``[namespace, room, local members]``.
        events_in: events received per second (``None`` without Prometheus metrics).
        events_out: events delivered per second.
        bytes_in: bytes received per second (``None`` without Prometheus metrics).
        bytes_out: bytes delivered per second (``None`` without Prometheus metrics).
        errors: events answered with an error, per second (``None`` without Prometheus metrics).
        handler_p50: median handler time over the interval, milliseconds (``None``: no handler ran).
        handler_p95: 95th percentile, milliseconds.
        handler_p99: 99th percentile, milliseconds.
        lag_p50: median publish-to-receive lag over the interval, milliseconds.
        lag_p95: 95th percentile lag, milliseconds.
    """

    t: float
    node: str
    connections: int
    links: int
    users: int
    rooms: int
    namespaces: dict[str, int]
    top_rooms: list[tuple[str, str, int]]
    events_in: float | None = None
    events_out: float | None = None
    bytes_in: float | None = None
    bytes_out: float | None = None
    errors: float | None = None
    handler_p50: float | None = None
    handler_p95: float | None = None
    handler_p99: float | None = None
    lag_p50: float | None = None
    lag_p95: float | None = None


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """Estimate a quantile from cumulative bucket counts, as Prometheus' ``histogram_quantile`` does.

    Args:
        q: the quantile, 0 to 1.
        bounds: the finite upper bounds, ascending.
        cumulative: the cumulative counts for each bound, then for ``+Inf``.

    Returns:
        The estimate (linear within the bucket; the highest finite bound when it
        falls in ``+Inf``), or ``None`` when there are no observations.
    """
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return None
    rank = q * total
    below = 0.0
    for i, count in enumerate(cumulative):
        if count >= rank and count > below:
            if i >= len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / (count - below)
        below = count
    return bounds[-1] if bounds else None


def _delta(now: Sequence[float], before: Sequence[float]) -> list[float]:
    return [a - b for a, b in zip(now, before, strict=True)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def _prometheus(metrics: Metrics) -> PrometheusMetrics | None:
    try:
        from ..prometheus import PrometheusMetrics
    except ImportError:  # the prometheus extra is not installed
        return None
    return metrics if isinstance(metrics, PrometheusMetrics) else None


class StatsSampler:
    """Takes a :class:`Snapshot` of a router at most once per interval and keeps the recent ones.

    Args:
        router: the router to read.
        exclude: namespaces left out of the ``connections`` headline (the dashboard's own).
        interval: seconds between samples.
        history: samples kept.
    """

    def __init__(
        self, router: RealtimeRouter, *, exclude: Sequence[str] = (), interval: float = 1.0, history: int = HISTORY
    ) -> None:
        self.router = router
        self.exclude = frozenset(exclude)
        self.interval = interval
        self.history: deque[Snapshot] = deque(maxlen=history)
        self._taken: float | None = None
        self._deliveries = 0
        self._prometheus = _prometheus(router.metrics)
        self._totals: MetricsSample | None = None

    def latest(self) -> Snapshot:
        """The newest snapshot, taking a new one first when the last is an interval old.

        Returns:
            A snapshot at most one interval old; several pages share it.
        """
        now = time.monotonic()
        if self._taken is None or now - self._taken >= self.interval * 0.9 or not self.history:
            self.history.append(self._sample(now))
        return self.history[-1]

    def _sample(self, now: float) -> Snapshot:
        router = self.router
        hub = router.hub
        namespaces = {ns: hub.rooms.count((ns, ALL_ROOM)) for ns in router.endpoints}
        keys = hub.rooms.keys()
        app_rooms = [(key, hub.rooms.count(key)) for key in keys if not key[1].startswith("#")]
        top = heapq.nlargest(5, app_rooms, key=lambda item: item[1])
        snap = Snapshot(
            t=round(time.time(), 3),
            node=router.node_id,
            connections=sum(n for ns, n in namespaces.items() if ns not in self.exclude),
            links=len(router.links),
            users=len(router.users),
            rooms=len(app_rooms),
            namespaces=namespaces,
            top_rooms=[(ns, room, n) for (ns, room), n in top],
        )
        elapsed = None if self._taken is None else now - self._taken
        fresh = elapsed is not None and 0 < elapsed <= self.interval * MAX_GAP
        deliveries = hub.deliveries
        if fresh and elapsed is not None:
            snap.events_out = round((deliveries - self._deliveries) / elapsed, 2)
        self._deliveries = deliveries
        metrics = self._prometheus
        totals = metrics.sample() if metrics is not None else None
        before = self._totals
        if metrics is not None and totals is not None and before is not None and elapsed is not None and fresh:
            snap.events_in = round((totals.events_received - before.events_received) / elapsed, 2)
            snap.bytes_in = round((totals.received_bytes - before.received_bytes) / elapsed, 1)
            snap.bytes_out = round((totals.sent_bytes - before.sent_bytes) / elapsed, 1)
            snap.errors = round((totals.errors - before.errors) / elapsed, 2)
            handler = _delta(totals.handler_buckets, before.handler_buckets)
            snap.handler_p50 = _ms(histogram_quantile(0.50, metrics.handler_buckets, handler))
            snap.handler_p95 = _ms(histogram_quantile(0.95, metrics.handler_buckets, handler))
            snap.handler_p99 = _ms(histogram_quantile(0.99, metrics.handler_buckets, handler))
            lag = _delta(totals.lag_buckets, before.lag_buckets)
            snap.lag_p50 = _ms(histogram_quantile(0.50, metrics.lag_buckets, lag))
            snap.lag_p95 = _ms(histogram_quantile(0.95, metrics.lag_buckets, lag))
        self._totals = totals
        self._taken = now
        return snap

    def __repr__(self) -> str:
        return f"StatsSampler(interval={self.interval}, samples={len(self.history)})"


class NodeRow(msgspec.Struct, kw_only=True):
    """One node of the cluster view, as a page receives it (event ``cluster``).

    Attributes:
        node: the node id.
        t: the node's wall-clock time when it answered, seconds.
        connections: open namespace connections, the dashboard's own excluded.
        links: open WebSockets (dashboards included).
        users: distinct authenticated users.
        rooms: application rooms with a member on the node.
        events_in: events received per second (``None`` for a first answer, or without Prometheus metrics).
        events_out: events delivered per second (``None`` for a first answer).
        bytes_in: bytes received per second (``None`` likewise).
        bytes_out: bytes delivered per second (``None`` likewise).
        errors: events answered with an error, per second (``None`` likewise).
    """

    node: str
    t: float
    connections: int
    links: int
    users: int
    rooms: int
    events_in: float | None = None
    events_out: float | None = None
    bytes_in: float | None = None
    bytes_out: float | None = None
    errors: float | None = None


def _rate(now: float | None, before: float | None, elapsed: float, digits: int = 2) -> float | None:
    if now is None or before is None or now < before:  # no totals, or the node restarted
        return None
    return round((now - before) / elapsed, digits)


def node_rows(stats: Sequence[NodeStats], previous: dict[str, NodeStats], *, exclude: frozenset[str]) -> list[NodeRow]:
    """Turn the nodes' answers into rows, with rates from each node's previous answer.

    Args:
        stats: the answers, one per node.
        previous: each node's previous answer (read, not changed).
        exclude: namespaces left out of ``connections``.

    Returns:
        One row per answer, in the same order.
    """
    rows = []
    for s in stats:
        row = NodeRow(
            node=s.node, t=s.t, links=s.links, users=s.users, rooms=s.rooms,
            connections=sum(n for ns, n in s.connections.items() if ns not in exclude),
        )
        before = previous.get(s.node)
        elapsed = None if before is None else s.uptime - before.uptime
        if before is not None and elapsed is not None and elapsed > 0:
            row.events_out = _rate(s.deliveries, before.deliveries, elapsed)
            row.events_in = _rate(s.events_in, before.events_in, elapsed)
            row.bytes_in = _rate(s.bytes_in, before.bytes_in, elapsed, 1)
            row.bytes_out = _rate(s.bytes_out, before.bytes_out, elapsed, 1)
            row.errors = _rate(s.errors, before.errors, elapsed)
        rows.append(row)
    return rows


class ClusterSampler:
    """Gathers every node's :class:`~starlette_realtime.cluster.NodeStats` at most once per interval.

    All pages of a node share one sampler: one ``stats`` request per interval while a
    page is open, none otherwise.  Nodes that do not answer within the router's
    ``control_timeout`` are missing from that round.

    Args:
        router: the router whose cluster to ask.
        exclude: namespaces left out of ``connections`` (the dashboard's own).
        interval: seconds between two requests.
    """

    def __init__(self, router: RealtimeRouter, *, exclude: Sequence[str] = (), interval: float = 1.0) -> None:
        self.router = router
        self.exclude = frozenset(exclude)
        self.interval = interval
        self.rows: list[NodeRow] = []
        self._previous: dict[str, NodeStats] = {}
        self._taken: float | None = None
        self._lock: anyio.Lock | None = None

    async def latest(self) -> list[NodeRow]:
        """The newest rows, asking the nodes first when the last answers are an interval old.

        Returns:
            One row per node that answered, sorted by node id.

        Raises:
            BackendUnavailable: the backend is down.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # pages asking at once share one request
            now = time.monotonic()
            if self._taken is None or now - self._taken >= self.interval * 0.9:
                stats = await self.router.node_stats()
                self.rows = node_rows(stats, self._previous, exclude=self.exclude)
                self._previous = {s.node: s for s in stats}
                self._taken = now
            return self.rows

    def __repr__(self) -> str:
        return f"ClusterSampler(interval={self.interval}, nodes={len(self.rows)})"
