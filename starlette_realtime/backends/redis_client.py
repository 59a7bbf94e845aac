"""The Redis backend's client: one server (``redis://``) or a Redis Cluster (``redis+cluster://``).

Making it, and running commands on it with a deadline (:class:`NodeClient`).
The user may pass a ready client instead; then the backend neither configures
nor closes it.  Both kinds are redis-py asyncio clients, so asyncio-only.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from ..exceptions import BackendUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

T = TypeVar("T")

#: What the backend talks to: one server, or a cluster.
Client: TypeAlias = "Redis | RedisCluster"

#: Connections a URL-built client opens at most (per node of a cluster).
MAX_CONNECTIONS = 100

#: URL schemes of a Redis Cluster (the TLS one first).
CLUSTER_SCHEMES = ("rediss+cluster", "redis+cluster")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a ``redis.asyncio.RedisCluster`` (checked without importing redis-py)."""
    return any(cls.__name__ == "RedisCluster" and cls.__module__.startswith("redis.") for cls in type(client).__mro__)


def check_client(client: Any) -> None:
    """Refuse a client that decodes responses: the backend moves bytes.

    Raises:
        ValueError: the client was made with ``decode_responses=True``.
    """
    kwargs = client.get_connection_kwargs() if is_cluster(client) else client.connection_pool.connection_kwargs
    if kwargs.get("decode_responses"):
        raise ValueError("the redis client must not decode responses (decode_responses=False)")


def client_from_url(url: str, *, connect_timeout: float, command_timeout: float) -> Client:
    """A client for ``url``, failing fast: an outage surfaces at once as an error.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, or ``redis+cluster://host:port``
            (``rediss+cluster://`` for TLS; any node of the cluster: the others are discovered).
        connect_timeout: seconds to open a connection.
        command_timeout: seconds a reply may take.
    """
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff, NoBackoff

    options: dict[str, Any] = {
        "socket_connect_timeout": min(connect_timeout, command_timeout),
        "socket_timeout": command_timeout,
    }
    parts = urlsplit(url)
    if parts.scheme in CLUSTER_SCHEMES:
        from redis.asyncio import RedisCluster

        plain = urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))
        # A few quick retries: they are what follows a MOVED/ASK redirection or a
        # failover to the new master; the command deadline bounds them.
        # redis-py's cluster nodes refuse a command beyond max_connections instead
        # of queueing it: leave room for a connect storm's concurrent commands.
        return RedisCluster.from_url(plain, retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 3),
                                     max_connections=MAX_CONNECTIONS, **options)
    from redis.asyncio import BlockingConnectionPool, Redis

    # No silent retries: an outage must surface at once as BackendUnavailable
    # (the subscriber reconnects on its own schedule).  A blocking pool: beyond
    # MAX_CONNECTIONS concurrent commands wait for a free connection (within the
    # command deadline) instead of failing with MaxConnectionsError, which a
    # storm of connects would otherwise turn into "backend unavailable".
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=command_timeout, retry=Retry(NoBackoff(), 0),
        health_check_interval=0, **options,
    )
    return Redis.from_pool(pool)


def outage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis is unreachable now", not "this command is wrong".

    A Redis Cluster in the middle of a failover answers ``TRYAGAIN`` or
    ``CLUSTERDOWN``, or redis-py runs out of redirections: an outage too, over once
    the new master has the slots.
    """
    from redis import exceptions as rx

    return (rx.ConnectionError, rx.TimeoutError, rx.ClusterError, rx.RedisClusterException, rx.TryAgainError,
            TimeoutError, OSError)


async def run_command(aw: Awaitable[T], *, timeout: float, slots: anyio.Semaphore | None) -> T:
    """Await a command within ``timeout``, after taking one of ``slots`` when given.

    redis-py's cluster client fails a command beyond its connections per node
    instead of queueing it; the backend queues its commands here instead.  A
    command whose deadline passed while it waited was never awaited: it is closed.
    """
    try:
        with anyio.fail_after(timeout):
            if slots is None:
                return await aw
            async with slots:
                return await aw
    except BaseException:
        if inspect.iscoroutine(aw):
            aw.close()
        raise


def redacted(url: str | None) -> str:
    """The URL without its password, for logs and reprs."""
    if url is None:
        return "the given client"
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    return urlunsplit(parts)


class NodeClient:
    """One backend's redis-py client: made by :meth:`open` from a URL (or handed in), its scripts, its commands.

    A client handed in is the user's: it is checked, never configured and never closed.

    Args:
        url: a Redis URL, or a ready ``redis.asyncio.Redis`` or ``RedisCluster`` that does not decode responses.

    Raises:
        ValueError: the client decodes responses.
    """

    def __init__(self, url: str | Client) -> None:
        if isinstance(url, str):
            self.url: str | None = url
            self._client: Client | None = None
            self._owned = True
            self.cluster_mode = is_cluster_url(url)
        else:
            check_client(url)
            self.url = None
            self._client = url
            self._owned = False
            self.cluster_mode = is_cluster(url)
        #: Whether the last command failed with an outage.
        self.failing = False
        self._scripts: dict[str, Any] = {}
        self._slots: anyio.Semaphore | None = None

    @property
    def redis(self) -> Any:
        """The client (once opened, or when handed in).

        Raises:
            RuntimeError: made from a URL and not open.
        """
        if self._client is None:
            raise RuntimeError("RedisBackend is not started")
        return self._client

    def open(self, scripts: Mapping[str, str], *, connect_timeout: float, command_timeout: float) -> Any:
        """Make the client (from a URL) and register ``scripts`` (name -> Lua) on it; returns the client."""
        if self._owned:
            self._client = client_from_url(
                self.url or "", connect_timeout=connect_timeout, command_timeout=command_timeout
            )
        redis = self.redis
        if self.cluster_mode:
            self._slots = anyio.Semaphore(MAX_CONNECTIONS)
        for name, lua in scripts.items():
            self._scripts[name] = redis.register_script(lua)
        return redis

    def script(self, name: str) -> Any:
        """A script registered by :meth:`open`."""
        return self._scripts[name]

    async def command(self, aw: Awaitable[T], *, timeout: float) -> T:
        """Await a command within ``timeout``; an outage becomes ``BackendUnavailable``.

        Raises:
            BackendUnavailable: Redis is down or did not answer within ``timeout``.
        """
        try:
            result = await run_command(aw, timeout=timeout, slots=self._slots)
        except outage_errors() as exc:
            self.failing = True
            raise BackendUnavailable(f"Redis at {self.where()} is unavailable: {exc!r}") from exc
        self.failing = False
        return result

    async def drop_idle_connections(self) -> None:
        """Close the pooled connections not in use (they reconnect when next taken)."""
        if self.cluster_mode:
            return  # the cluster client replaces the connections of a node that failed
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None:
            await pool.disconnect(inuse_connections=False)

    async def close(self) -> None:
        """Close the client if it was made from a URL (a client handed in stays open)."""
        if self._owned and self._client is not None:
            client, self._client = self._client, None
            with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await client.aclose()

    def where(self) -> str:
        """The URL without its password (for messages)."""
        return redacted(self.url)

    def __repr__(self) -> str:
        return f"NodeClient({self.where()!r}, cluster_mode={self.cluster_mode})"


__all__ = [
    "CLUSTER_SCHEMES",
    "MAX_CONNECTIONS",
    "Client",
    "NodeClient",
    "check_client",
    "client_from_url",
    "is_cluster",
    "is_cluster_url",
    "outage_errors",
    "redacted",
    "run_command",
]
