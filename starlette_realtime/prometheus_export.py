"""Serving Prometheus metrics over HTTP: one process's registry, or every worker's in multi-process mode."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Receive, Scope, Send

from . import status


class Scraped(Protocol):
    """What :func:`metrics_app` serves (a :class:`~starlette_realtime.prometheus.PrometheusMetrics`)."""

    @property
    def registry(self) -> CollectorRegistry: ...

    def flush(self) -> None: ...


def multiprocess_dir() -> str | None:
    """The prometheus-client multi-process directory, when multi-process mode is on.

    Returns:
        The value of ``PROMETHEUS_MULTIPROC_DIR``, or ``None``.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class MetricsApp:
    """The ASGI app of :func:`metrics_app` (a class, so that Starlette's ``Route`` treats it as an app)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        disable_compression: bool = False,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self._flush = flush
        self._inner = make_asgi_app(registry, disable_compression=disable_compression)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION})
            return
        if scope.get("method") not in ("GET", "HEAD"):
            headers = [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8")]
            await send({"type": "http.response.start", "status": 405, "headers": headers})
            await send({"type": "http.response.body", "body": b"method not allowed\n"})
            return
        if self._flush is not None:
            self._flush()
        await self._inner(scope, receive, send)

    def __repr__(self) -> str:
        return f"MetricsApp(multiprocess={multiprocess_dir() is not None})"


def metrics_app(metrics: Scraped, *, disable_compression: bool = False) -> MetricsApp:
    """A mountable ASGI app answering ``GET`` with the metrics in the Prometheus text format.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, it serves the values of every worker
    process, merged from that directory, as prometheus-client documents;
    otherwise the metrics' own registry.  The app speaks HTTP only; mount it
    behind your own authentication or on an internal port if the figures are
    not for everyone.

    Args:
        metrics: the metrics to serve.
        disable_compression: never gzip the answer, even when the scraper asks for it.

    Returns:
        An ASGI application: ``Route("/metrics", metrics_app(metrics))``, or
        ``app.mount("/metrics", ...)`` (scraped at ``/metrics/``).
    """
    registry: CollectorRegistry = metrics.registry
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return MetricsApp(registry, disable_compression=disable_compression, flush=metrics.flush)


__all__ = ["MetricsApp", "Scraped", "metrics_app", "multiprocess_dir"]
