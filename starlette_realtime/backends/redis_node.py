"""What the Redis backend's parts need from the node that composes them: small protocols, no behaviour.

``RedisBackend`` (``redis.py``) builds its parts (``redis_heartbeat``,
``redis_control``, ``redis_streams``, ``redis_pubsub``) and hands itself to
each, typed as one of these protocols, which it satisfies structurally.  Each
protocol lists only what its part uses, and no part imports ``redis.py``.
What a part needs from a sibling is handed in as a callback, or as the
sibling itself when that sits below it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .base import Publication
    from .redis_wire import Names

T = TypeVar("T")


class RedisNode(Protocol):
    """The node's redis-py client, its key and channel names, its id and whether Redis is a cluster."""

    @property
    def redis(self) -> Any: ...

    @property
    def names(self) -> Names: ...

    @property
    def node_id(self) -> str: ...

    @property
    def cluster_mode(self) -> bool: ...


class CommandNode(RedisNode, Protocol):
    """A node that also runs commands with a deadline, its registered scripts, and tasks in its task group."""

    async def command(self, aw: Awaitable[T]) -> T: ...

    def script(self, name: str) -> Any: ...

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool: ...


class HeartbeatNode(CommandNode, Protocol):
    """What the node heartbeat (``redis_heartbeat.NodeHeartbeat``) uses."""

    @property
    def heartbeat_interval(self) -> float: ...

    @property
    def link_timeout(self) -> float: ...


class ControlNode(CommandNode, Protocol):
    """What the cluster request bus (``redis_control.ControlBus``) uses."""

    @property
    def command_timeout(self) -> float: ...


class StreamNode(CommandNode, Protocol):
    """What the room streams (``redis_streams.RoomStreams``) use."""

    @property
    def global_epoch(self) -> str: ...

    @property
    def history_size(self) -> int: ...

    @property
    def history_ttl(self) -> float: ...

    @property
    def publish_command(self) -> str: ...


class SubscriberNode(RedisNode, Protocol):
    """What the pub/sub subscriber (``redis_pubsub.RedisSubscriber``) uses."""

    @property
    def heartbeat_interval(self) -> float: ...

    @property
    def link_timeout(self) -> float: ...

    @property
    def connect_timeout(self) -> float: ...

    @property
    def reconnect_max_delay(self) -> float: ...

    def deliver(self, pub: Publication) -> None: ...

    def reconnected(self) -> None: ...

    async def drop_idle_connections(self) -> None: ...


__all__ = ["CommandNode", "ControlNode", "HeartbeatNode", "RedisNode", "StreamNode", "SubscriberNode"]
