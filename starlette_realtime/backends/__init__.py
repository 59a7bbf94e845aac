"""Backends: pick one by URL (``memory://``, ``redis://``, ``rediss://``, ``redis+cluster://``) or pass an object."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from .base import Backend, HealthCheck, History, HistoryReply, LiveSessionStore, Publication, SessionStore
from .memory import MemoryBackend


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build a backend from a URL.

    Args:
        url: ``memory://``, ``redis://host:port/db`` (``rediss://`` for TLS), or
            ``redis+cluster://host:port`` for a Redis Cluster (any node of it;
            ``rediss+cluster://`` for TLS).
            Query parameters (``?history_size=500&history_ttl=60``) become options.
        **options: keyword options for the backend class; they win over the query.

    Returns:
        The backend, not yet started.

    Raises:
        ValueError: the scheme is not supported.
    """
    parts = urlsplit(url)
    query: dict[str, Any] = {}
    for key, values in parse_qs(parts.query).items():
        value: Any = values[-1]
        try:
            value = float(value) if "." in value else int(value)
        except ValueError:
            pass
        query[key] = value
    query.update(options)
    if parts.scheme == "memory":
        return MemoryBackend(**query)
    if parts.scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        # Imported lazily: redis-py is only needed by users of this backend.
        from .redis import RedisBackend

        return RedisBackend(url.split("?", 1)[0], **query)
    raise ValueError(f"unsupported backend URL scheme {parts.scheme!r} (use memory://, redis:// or redis+cluster://)")


def __getattr__(name: str) -> Any:
    # ``RedisBackend`` is importable from here without importing redis-py for
    # everyone else.
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Backend",
    "HealthCheck",
    "History",
    "HistoryReply",
    "MemoryBackend",
    "Publication",
    "LiveSessionStore",
    "SessionStore",
    "backend_from_url",
]
