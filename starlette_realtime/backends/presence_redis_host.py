"""What Redis presence needs from its host (the Redis backend) and from the node's bookkeeping.

Small protocols, so that :class:`~starlette_realtime.backends.presence_redis.RedisPresence`
works on any object that offers them, and the core can tell whether a backend
can host Redis presence without touching it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .base import PresenceChange

if TYPE_CHECKING:
    from .redis_wire import Names


class RedisHost(Protocol):
    """What presence needs from the Redis backend (``RedisBackend`` has it)."""

    @property
    def redis(self) -> Any:
        """A redis-py asyncio client: ``Redis`` or ``RedisCluster``."""

    @property
    def prefix(self) -> str: ...

    @property
    def node_id(self) -> str: ...

    def add_heartbeat_callback(self, fn: Callable[[], Awaitable[None]]) -> None: ...

    def remove_heartbeat_callback(self, fn: Callable[[], Awaitable[None]]) -> None: ...


class StreamHost(RedisHost, Protocol):
    """What presence needs to publish its events on a room's stream (``RedisBackend`` has it)."""

    names: Names
    history_size: int
    history_ttl: float

    @property
    def global_epoch(self) -> str: ...

    @property
    def publish_command(self) -> str: ...


def is_redis_host(backend: object) -> bool:
    """Whether ``backend`` offers what :class:`RedisPresence` needs (checked without touching it)."""
    cls = type(backend)
    return all(hasattr(cls, name) for name in ("redis", "prefix", "add_heartbeat_callback")) and hasattr(
        backend, "node_id"
    )


class PresenceOwner(Protocol):
    """The node-side bookkeeping the heartbeat works with (a ``presence_tracker.Tracker``)."""

    def mark_all(self) -> None: ...

    async def flush_dirty(self) -> bool: ...

    async def collect(self) -> int: ...

    def stored_rooms(self) -> list[str]: ...


#: Publishes the transitions found while reaping a dead member's room.
PublishReaped = Callable[[str, Sequence[PresenceChange]], Awaitable[None]]


__all__ = ["PresenceOwner", "PublishReaped", "RedisHost", "StreamHost", "is_redis_host"]
