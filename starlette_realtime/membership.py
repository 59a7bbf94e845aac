"""Room membership on this node: streams subscribed, rooms joined and left, users counted.

The node's :class:`~starlette_realtime.hub.Hub` holds the room table; the
backend is subscribed to a room when its first local member joins and
unsubscribed when its last one leaves.  Connections reach this through the
:class:`~starlette_realtime.connection.Rooms` interface they are handed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from .backends import Backend, History
from .connection import Connection, ConnectionState
from .exceptions import LimitExceeded, Rejected
from .hub import Hub
from .identity import user_key
from .limits import Limits

logger = logging.getLogger(__name__)


class Membership:
    """Joins and leaves of the connections of one node.

    Args:
        hub: the node's room table and fan-out.
        backend: the backend to subscribe rooms on.
        limits: ``max_rooms`` and ``max_connections_per_user``.
    """

    __slots__ = ("_history", "_subscribing", "backend", "hub", "limits", "on_change", "users")

    def __init__(self, hub: Hub, backend: Backend, limits: Limits) -> None:
        self.hub = hub
        self.backend = backend
        # A runtime_checkable Protocol's isinstance() costs microseconds: once, not per join.
        self._history: History | None = backend if isinstance(backend, History) else None
        self.limits = limits
        #: Open namespace connections per user key on this node.
        self.users: dict[str, int] = {}
        #: Rooms whose first local member is subscribing the backend now.
        self._subscribing: dict[tuple[str, str], anyio.Event | None] = {}
        #: Awaited after a join or a leave of an open connection (the session's write-through).
        self.on_change: Callable[[Connection], Awaitable[None]] | None = None

    async def add_stream(self, conn: Connection, stream: str) -> None:
        """Start delivering a stream (room, ``#all``, ``#sid:...``) to ``conn``, noting its position.

        Returns once the node receives the stream's live publications: a member that joins
        while the first one is still subscribing waits for it, so that the position it notes
        (or the history it reads for recovery) leaves no gap before live delivery starts.
        """
        key = (conn.namespace, stream)
        if self.hub.rooms.add(key, conn.sid, conn):
            # The event is made only if another member comes to wait (most subscribes are alone).
            self._subscribing[key] = None
            try:
                await self.backend.subscribe(conn.namespace, stream)
            finally:
                done = self._subscribing.pop(key, None)
                if done is not None:
                    done.set()
        elif key in self._subscribing:
            pending = self._subscribing[key]
            if pending is None:
                pending = self._subscribing[key] = anyio.Event()
            await pending.wait()
        history = self._history
        if history is not None:
            conn.joined[stream] = await history.position(conn.namespace, stream)
        else:
            conn.joined[stream] = None

    async def remove_stream(self, conn: Connection, stream: str) -> None:
        """Stop delivering a stream to ``conn``."""
        conn.joined.pop(stream, None)
        if self.hub.rooms.discard((conn.namespace, stream), conn.sid):
            await self.backend.unsubscribe(conn.namespace, stream)

    async def join(self, conn: Connection, room: str) -> None:
        """Add ``conn`` to ``room`` (after ``authorize_join`` agreed), then call ``on_join``.

        Raises:
            LimitExceeded: the connection is in ``max_rooms`` rooms already.
        """
        if len(conn.rooms) >= self.limits.max_rooms:
            raise LimitExceeded(f"at most {self.limits.max_rooms} rooms per connection")
        conn.rooms = conn.rooms | {room}
        await self.add_stream(conn, room)
        if self.on_change is not None:
            await self.on_change(conn)
        await conn.endpoint.on_join(conn, room)

    async def leave(self, conn: Connection, room: str) -> None:
        """Remove ``conn`` from ``room``, then call ``on_leave``."""
        conn.rooms = conn.rooms - {room}
        await self.remove_stream(conn, room)
        if self.on_change is not None and conn.state is ConnectionState.OPEN:
            await self.on_change(conn)
        await conn.endpoint.on_leave(conn, room)

    async def forget(self, conn: Connection) -> None:
        """Remove every trace of a connection from this node (``on_leave`` for each room)."""
        rooms = list(conn.rooms) if conn.state is not ConnectionState.CONNECTING else []
        for stream in list(conn.joined):
            try:
                await self.remove_stream(conn, stream)
            except Exception:
                logger.exception("unsubscribe from %r failed (sid=%s namespace=%s)", stream, conn.sid, conn.namespace)
        conn.rooms = frozenset()
        for room in rooms:
            try:
                await conn.endpoint.on_leave(conn, room)
            except Exception:
                logger.exception("on_leave failed (sid=%s namespace=%s room=%r)", conn.sid, conn.namespace, room)
        conn.buffer = None

    def check_user_limit(self, conn: Connection) -> None:
        """Refuse a user at ``max_connections_per_user`` on this node.

        Raises:
            Rejected: ``TOO_MANY_CONNECTIONS``, retryable.
        """
        limit = self.limits.max_connections_per_user
        key = user_key(conn.user)
        if limit is not None and key is not None and self.users.get(key, 0) >= limit:
            raise Rejected("TOO_MANY_CONNECTIONS", f"at most {limit} connections per user", retryable=True)

    def count_user(self, conn: Connection) -> None:
        """Count an opened connection for its user."""
        key = user_key(conn.user)
        if key is not None:
            self.users[key] = self.users.get(key, 0) + 1

    def uncount_user(self, conn: Connection) -> None:
        """Stop counting a closed connection that was counted."""
        key = user_key(conn.user)
        if key is None:
            return
        left = self.users.get(key, 0) - 1
        if left > 0:
            self.users[key] = left
        else:
            self.users.pop(key, None)

    def __repr__(self) -> str:
        return f"Membership(rooms={len(self.hub.rooms)}, users={len(self.users)})"


__all__ = ["Membership"]
