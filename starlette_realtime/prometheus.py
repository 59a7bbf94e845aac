"""Prometheus metrics: :class:`PrometheusMetrics` and the ``/metrics`` app serving them.

Requires the ``prometheus`` extra (``prometheus-client``)::

    from starlette_realtime.prometheus import PrometheusMetrics, metrics_app

    metrics = PrometheusMetrics()
    realtime = RealtimeRouter([Chat], metrics=metrics)
    app.mount("/metrics", metrics_app(metrics))

Each :class:`PrometheusMetrics` registers its metrics in a registry of its own
(nothing goes to prometheus-client's global ``REGISTRY``).  Under several
worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` before Python starts: every
process then writes its values to files there and :func:`metrics_app` serves
the sum over all of them (see docs/observability.md).

The hot paths are cheap: a broadcast costs a fixed handful of counter updates
once per publication, whatever the number of receivers, and the labelled
children are looked up once per label set and cached.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .metrics import Metrics
from .prometheus_export import MetricsApp, metrics_app, multiprocess_dir
from .prometheus_labels import HANDLER_BUCKETS, KNOWN_REASONS, LAG_BUCKETS, code_label, reason_label


class MetricsSample(msgspec.Struct, frozen=True):
    """This process's running totals at one moment (what the dashboard diffs each second).

    Attributes:
        events_received: events addressed to open namespaces.
        events_sent: events delivered to local receivers.
        received_bytes: WebSocket message bytes received.
        sent_bytes: event bytes delivered to local receivers.
        errors: events answered with an error (handler errors and rejections).
        handler_buckets: cumulative handler-duration bucket counts, one per
            :attr:`PrometheusMetrics.handler_buckets` bound, then ``+Inf``.
        lag_buckets: cumulative publish-to-receive lag bucket counts, likewise.
    """

    events_received: float
    events_sent: float
    received_bytes: float
    sent_bytes: float
    errors: float
    handler_buckets: tuple[float, ...]
    lag_buckets: tuple[float, ...]


class PrometheusMetrics(Metrics):
    """The core's counts as Prometheus metrics (names in docs/observability.md).

    Args:
        registry: where to register the metrics; a new :class:`CollectorRegistry` by default.
        prefix: the metric name prefix.
        handler_buckets: the bucket bounds (seconds) of the handler-duration histogram.
        lag_buckets: the bucket bounds (seconds) of the backend-lag histogram.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        prefix: str = "starlette_realtime",
        handler_buckets: Sequence[float] = HANDLER_BUCKETS,
        lag_buckets: Sequence[float] = LAG_BUCKETS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # Registered before the metrics, so that a scrape of the registry reads them after the flush.
        self.registry.register(_Flusher(self))
        self.prefix = prefix
        self.handler_buckets = tuple(handler_buckets)
        self.lag_buckets = tuple(lag_buckets)
        p, reg = prefix, self.registry
        self.connections = Gauge(
            f"{p}_connections", "Open namespace connections.", ["namespace"], registry=reg, multiprocess_mode="livesum"
        )
        self.connects = Counter(f"{p}_connects", "Namespace connections opened.", ["namespace"], registry=reg)
        self.connect_errors = Counter(
            f"{p}_connect_errors", "Namespace connections refused, by error code.", ["namespace", "code"], registry=reg
        )
        self.disconnects = Counter(
            f"{p}_disconnects",
            "Namespace connections closed, by reason and WebSocket close code.",
            ["namespace", "reason", "code"],
            registry=reg,
        )
        self.reconnections = Counter(
            f"{p}_reconnections", "Connects that presented an earlier session.", ["namespace"], registry=reg
        )
        self.recovered_sessions = Counter(
            f"{p}_recovered_sessions", "Reconnections that resumed their session with nothing lost.", ["namespace"],
            registry=reg,
        )
        self.messages_received = Counter(f"{p}_messages_received", "WebSocket messages received.", registry=reg)
        self.received_bytes = Counter(f"{p}_received_bytes", "WebSocket message bytes received.", registry=reg)
        self.events_received = Counter(
            f"{p}_events_received", "Events received for an open namespace.", ["namespace", "event"], registry=reg
        )
        self.events_sent = Counter(
            f"{p}_events_sent", "Events delivered to local receivers.", ["namespace", "event"], registry=reg
        )
        self.sent_bytes = Counter(
            f"{p}_sent_bytes", "Event bytes delivered to local receivers.", ["namespace"], registry=reg
        )
        self.handler_duration = Histogram(
            f"{p}_handler_duration_seconds",
            "Event handler run time.",
            ["namespace", "event"],
            buckets=self.handler_buckets,
            registry=reg,
        )
        self.event_errors = Counter(
            f"{p}_event_errors",
            "Events answered with an error: handler errors and rejected events, by error code.",
            ["namespace", "event", "code"],
            registry=reg,
        )
        self.dropped_messages = Counter(
            f"{p}_dropped_messages", "Outgoing messages dropped, by reason.", ["reason"], registry=reg
        )
        self.server_closes = Counter(
            f"{p}_server_closes",
            "WebSockets closed by the server: slow_consumer, heartbeat_timeout, rate_limited.",
            ["reason"],
            registry=reg,
        )
        self.backend_lag = Histogram(
            f"{p}_backend_lag_seconds",
            "Publish-to-receive lag: publisher's wall clock to fan-out on this node.",
            buckets=self.lag_buckets,
            registry=reg,
        )
        self.backend_reconnections = Counter(
            f"{p}_backend_reconnections", "Times the backend link came back after an outage.", registry=reg
        )
        # Labelled children, looked up once per label set: labels() takes a lock and
        # builds a tuple, a dict lookup does not.
        self._by_ns: dict[str, tuple[Any, ...]] = {}
        self._errors: dict[tuple[str, str, str], Any] = {}
        # The hot paths (each message, handler run and publication) only add to these
        # plain buffers; flush() moves them into the Prometheus metrics on each scrape,
        # each dashboard sample and each tick of the router's scheduler (about once a
        # second).  A counter update through prometheus-client costs about 0.3-0.5 us
        # (a lock and checks), a histogram observation over 1 us.
        self._received = [0, 0]  # messages, bytes
        self._handled: dict[tuple[str, str], _Buffered] = {}
        self._sent: dict[tuple[str, str], list[int]] = {}  # deliveries, bytes
        self._lag = _Buffered(self.backend_lag, self.lag_buckets)

    # Connections -------------------------------------------------------------

    def _ns(self, namespace: str) -> tuple[Any, ...]:
        children = self._by_ns.get(namespace)
        if children is None:
            children = self._by_ns[namespace] = (
                self.connections.labels(namespace),
                self.connects.labels(namespace),
                self.reconnections.labels(namespace),
                self.recovered_sessions.labels(namespace),
            )
        return children

    def connection_opened(self, namespace: str) -> None:
        gauge, connects, _, _ = self._ns(namespace)
        gauge.inc()
        connects.inc()

    def connection_closed(self, namespace: str, reason: str, code: int | None) -> None:
        self._ns(namespace)[0].dec()
        self.disconnects.labels(namespace, reason_label(reason), code_label(code)).inc()

    def connection_refused(self, namespace: str, code: str) -> None:
        self.connect_errors.labels(namespace, code).inc()

    def connection_recovered(self, namespace: str, recovered: bool) -> None:
        _, _, reconnections, recovered_sessions = self._ns(namespace)
        reconnections.inc()
        if recovered:
            recovered_sessions.inc()

    # Events ------------------------------------------------------------------

    def _error(self, namespace: str, event: str, code: str) -> None:
        key = (namespace, event, code)
        child = self._errors.get(key)
        if child is None:
            child = self._errors[key] = self.event_errors.labels(namespace, event, code)
        child.inc()

    def handler_started(self) -> float:
        return time.perf_counter()

    def handler_finished(self, namespace: str, event: str, started: float, error: str | None) -> None:
        elapsed = time.perf_counter() - started
        buffered = self._handled.get((namespace, event))
        if buffered is None:
            buffered = self._handled[(namespace, event)] = _Buffered(
                self.handler_duration.labels(namespace, event),
                self.handler_buckets,
                self.events_received.labels(namespace, event),
            )
        buffered.counts[bisect_left(buffered.bounds, elapsed)] += 1
        buffered.total += elapsed
        if error is not None:
            self._error(namespace, event, error)

    def event_rejected(self, namespace: str, event: str, code: str) -> None:
        self.events_received.labels(namespace, event).inc()
        self._error(namespace, event, code)

    def message_in(self, nbytes: int) -> None:
        received = self._received
        received[0] += 1
        received[1] += nbytes

    def broadcast(self, namespace: str, event: str, deliveries: int, nbytes: int, published_at: float) -> None:
        # Once per publication, whatever the number of receivers.  (Publications per
        # second: the rate of the lag histogram's _count.)
        sent = self._sent.get((namespace, event))
        if sent is None:
            sent = self._sent[(namespace, event)] = [0, 0]
        sent[0] += deliveries
        sent[1] += nbytes
        if published_at:
            lag = time.time() - published_at
            if lag < 0.0:  # a clock step between nodes: no lag at all
                lag = 0.0
            buffered = self._lag
            buffered.counts[bisect_left(buffered.bounds, lag)] += 1
            buffered.total += lag

    def tick(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Move the buffered counts into the Prometheus metrics.

        Called on each scrape of :attr:`registry`, by :meth:`sample` and by the
        router about once a second; call it on the event loop's thread.
        """
        received = self._received
        if received[0]:
            messages, nbytes = received
            received[0] = received[1] = 0
            self.messages_received.inc(messages)
            self.received_bytes.inc(nbytes)
        for (namespace, event), sent in self._sent.items():
            deliveries, nbytes = sent
            if deliveries or nbytes:
                sent[0] = sent[1] = 0
                self.events_sent.labels(namespace, event).inc(deliveries)
                self.sent_bytes.labels(namespace).inc(nbytes)
        for buffered in self._handled.values():
            buffered.flush()
        self._lag.flush()

    # Trouble -------------------------------------------------------------------

    def dropped(self, reason: str) -> None:
        self.dropped_messages.labels(reason).inc()

    def closed_by_server(self, reason: str) -> None:
        self.server_closes.labels(reason).inc()

    def backend_reconnected(self) -> None:
        self.backend_reconnections.inc()

    # Reading -------------------------------------------------------------------

    def sample(self) -> MetricsSample:
        """This process's running totals (for the dashboard; Prometheus scrapes the registry).

        Returns:
            The totals now; rates and windowed quantiles come from the difference of two samples.
        """
        self.flush()
        return MetricsSample(
            events_received=_total(self.events_received),
            events_sent=_total(self.events_sent),
            received_bytes=_total(self.received_bytes),
            sent_bytes=_total(self.sent_bytes),
            errors=_total(self.event_errors),
            handler_buckets=_buckets(self.handler_duration, len(self.handler_buckets) + 1),
            lag_buckets=_buckets(self.backend_lag, len(self.lag_buckets) + 1),
        )

    def __repr__(self) -> str:
        return f"PrometheusMetrics(prefix={self.prefix!r}, multiprocess={multiprocess_dir() is not None})"


class _Buffered:
    """Histogram observations (and optionally a counter of them) waiting for :meth:`flush`."""

    __slots__ = ("bounds", "child", "counter", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...], counter: Any = None) -> None:
        self.child = child
        self.bounds = bounds
        self.counter = counter
        self.counts = [0] * (len(bounds) + 1)  # one per bound, then +Inf
        self.total = 0.0

    def flush(self) -> None:
        counts = self.counts
        n = sum(counts)
        if not n:
            return
        total, self.counts, self.total = self.total, [0] * len(counts), 0.0
        buckets, value_sum = getattr(self.child, "_buckets", None), getattr(self.child, "_sum", None)
        if isinstance(buckets, list) and len(buckets) == len(counts) and value_sum is not None:
            # prometheus-client keeps a histogram as one value per bucket and a sum (in
            # memory or, multi-process, in its files): add to them at once.
            for i, k in enumerate(counts):
                if k:
                    buckets[i].inc(k)
            value_sum.inc(total)
        else:  # a layout we do not know: replay the mean (exact count and sum, approximate buckets)
            for _ in range(n):
                self.child.observe(total / n)
        if self.counter is not None:
            self.counter.inc(n)


class _Flusher:
    """A collector that yields nothing: it flushes the buffers before the registry's metrics are read."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        # Only on an event loop's thread (a scrape through metrics_app): the hot paths
        # add to the buffers without a lock.  Another thread reads values up to one
        # scheduler tick old.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return []
        self._metrics.flush()
        return []


def _total(metric: Counter) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))


def _buckets(metric: Histogram, n: int) -> tuple[float, ...]:
    counts = [0.0] * n
    for m in metric.collect():
        i = 0
        for s in m.samples:
            if s.name.endswith("_bucket"):
                counts[i % n] += s.value
                i += 1
    return tuple(counts)


__all__ = [
    "HANDLER_BUCKETS",
    "KNOWN_REASONS",
    "LAG_BUCKETS",
    "MetricsApp",
    "MetricsSample",
    "PrometheusMetrics",
    "code_label",
    "metrics_app",
    "multiprocess_dir",
    "reason_label",
]
