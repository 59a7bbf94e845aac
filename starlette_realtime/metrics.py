"""The metrics interface the core reports to; a no-op by default.

The core calls these methods at fixed points (connect, disconnect, each event,
each broadcast, each drop).  :class:`Metrics` does nothing and reads no clock, so
an app without metrics pays only a method call.  A Prometheus implementation
lives in :mod:`starlette_realtime.prometheus`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


class Metrics:
    """Receives what the core counts.  Subclass it and override what you need."""

    def connection_opened(self, namespace: str) -> None:
        """A namespace connection opened."""

    def connection_closed(self, namespace: str, reason: str, code: int | None) -> None:
        """A namespace connection closed, with why and the WebSocket close code."""

    def connection_refused(self, namespace: str, code: str) -> None:
        """A namespace connection was refused with a CONNECT_ERROR ``code`` (``""`` namespace: unknown)."""

    def connection_recovered(self, namespace: str, recovered: bool) -> None:
        """A client presented a session; ``recovered`` tells whether nothing was lost."""

    def handler_started(self) -> float:
        """A handler is about to run; the return value is passed to :meth:`handler_finished`."""
        return 0.0

    def handler_finished(self, namespace: str, event: str, started: float, error: str | None) -> None:
        """A handler finished; ``error`` is the ack error code, or ``None``."""

    def event_rejected(self, namespace: str, event: str, code: str) -> None:
        """An event was answered with an error before any handler ran (``invalid_payload``, ...).

        ``event`` is ``""`` for an event with no handler, whose name the client chose.
        """

    def message_in(self, nbytes: int) -> None:
        """A WebSocket message arrived."""

    def broadcast(self, namespace: str, event: str, deliveries: int, nbytes: int, published_at: float) -> None:
        """A publication was fanned out to ``deliveries`` local receivers: once per publication.

        ``nbytes`` is the bytes pushed to all of them together; ``published_at`` is the
        publisher's wall-clock time (``Publication.ts``, ``0.0`` when unknown), from
        which an implementation may compute the publish-to-receive lag.
        """

    def dropped(self, reason: str) -> None:
        """An outgoing message was dropped (``overflow``, ``volatile``, ``drop_oldest``, ``drop_newest``)."""

    def closed_by_server(self, reason: str) -> None:
        """The server closed a WebSocket (``slow_consumer``, ``heartbeat_timeout``, ``rate_limited``, ...)."""

    def backend_reconnected(self) -> None:
        """The backend's link came back after an outage."""

    def tick(self) -> None:
        """Called by the router's scheduler about once a second (to flush buffered counts)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@runtime_checkable
class ReportsReconnects(Protocol):
    """A backend that says when its link comes back after an outage (an optional capability).

    The router registers :meth:`Metrics.backend_reconnected` with it.
    """

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time the link to the backend is re-established."""
