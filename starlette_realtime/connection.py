"""A client's connection to one namespace: its identity, rooms and state.

Several connections (one per namespace) share one WebSocket and its outbox.
Handlers receive a :class:`Connection` and use it to join and leave rooms,
emit to rooms, emit to the client itself, or call the client and await its
acknowledgement.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Protocol

from .backends.base import Publication
from .emitter import BroadcastOperator, Publisher, check_event
from .exceptions import ConnectionClosed, Forbidden, InvalidRoom
from .frames import Position
from .outbox import Outbox
from .rooms import room_error, sid_room
from .wire import Wire

_NO_ROOMS: frozenset[str] = frozenset()

class Socket(Protocol):
    """What a connection needs of its WebSocket (a :class:`~starlette_realtime.link.Link`)."""

    id: str
    scope: dict[str, Any]
    codec: Wire
    outbox: Outbox

    async def call(self, ns: str, event: str, data: Any, *, timeout: float) -> Any:
        """Send an event to the client and return its acknowledgement."""
        ...

    async def close_namespace(self, ns: str, reason: str, *, notify: bool) -> None:
        """Close one namespace connection on this socket."""
        ...

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run a coroutine function as a task of the socket (cancelled and waited for when it closes)."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Close the socket from anywhere, without awaiting."""
        ...


class Hooks(Protocol):
    """The endpoint hooks a connection calls (a :class:`~starlette_realtime.RealtimeEndpoint`)."""

    @property
    def namespace(self) -> str: ...

    async def authorize_join(self, conn: Connection, room: str) -> bool: ...

    async def on_join(self, conn: Connection, room: str) -> None: ...

    async def on_leave(self, conn: Connection, room: str) -> None: ...


class Rooms(Protocol):
    """Room membership on this node (a :class:`~starlette_realtime.membership.Membership`)."""

    async def join(self, conn: Connection, room: str) -> None:
        """Add ``conn`` to ``room`` (limits, subscription, ``on_join``)."""
        ...

    async def leave(self, conn: Connection, room: str) -> None:
        """Remove ``conn`` from ``room`` (subscription, ``on_leave``)."""
        ...


class ConnectionState(str, enum.Enum):
    """The lifecycle of a namespace connection."""

    CONNECTING = "CONNECTING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


# Members read through their Enum class cost ~0.2 us each on CPython 3.11 (EnumType.__getattr__, 12x a global):
# the per-emit check reads module constants.
_CONNECTING, _CLOSING, _CLOSED = ConnectionState.CONNECTING, ConnectionState.CLOSING, ConnectionState.CLOSED


class Connection:
    """One client's connection to one namespace.

    Attributes:
        sid: the connection id, unique in the cluster (kept across a recovered reconnect).
        namespace: the namespace path.
        user: the authenticated identity (``None`` when the namespace needs none).
        auth: the decoded auth payload the client sent with CONNECT.
        data: free-form per-connection storage for the application.
        recovered: ``True`` when this connection resumed an earlier session with nothing lost.
        state: CONNECTING, OPEN, CLOSING or CLOSED.
        scope: the ASGI scope of the WebSocket handshake.
        expires_at: when the user's credential expires (seconds since the epoch), taken from
            ``user.expires_at``; the WebSocket is closed with 4003 then, unless the client
            sends a fresh credential with ``$auth``.  ``None``: never.
    """

    __slots__ = (
        "__weakref__",
        "_publisher",
        "_rooms",
        "auth",
        "buffer",
        "codec",
        "data",
        "early",
        "endpoint",
        "expires_at",
        "joined",
        "link",
        "namespace",
        "outbox",
        "recovered",
        "rooms",
        "scope",
        "sid",
        "state",
        "user",
    )

    def __init__(
        self, sid: str, namespace: str, link: Socket, endpoint: Hooks, rooms: Rooms, publisher: Publisher
    ) -> None:
        self.sid = sid
        self.namespace = namespace
        self.link = link
        self.endpoint = endpoint
        self._rooms = rooms
        self._publisher = publisher
        self.codec: Wire = link.codec
        self.outbox: Outbox = link.outbox
        self.scope = link.scope
        self.user: Any = None
        self.auth: Any = None
        self.data: dict[str, Any] = {}
        self.recovered = False
        self.state = ConnectionState.CONNECTING
        #: Application rooms this connection is in: immutable, replaced on each join and leave,
        #: so that a connection in no room shares one empty frozenset (an empty set costs 216 B).
        self.rooms: frozenset[str] = _NO_ROOMS
        #: Every stream this connection receives (rooms, ``#all``, ``#sid:...``) with the
        #: stream's position when it joined, for recovery.
        self.joined: dict[str, Position | None] = {}
        #: While connecting or recovering, live publications wait here.
        self.buffer: list[Publication] | None = None
        #: Events emitted to this client while it was connecting (in ``on_connect``): sent
        #: right after CONNECTED, in order.
        self.early: list[tuple[str, Any, bool]] | None = None
        self.expires_at: float | None = None

    # Rooms -----------------------------------------------------------------

    async def join(self, room: str) -> None:
        """Join a room (after the endpoint's ``authorize_join`` agrees).

        Raises:
            InvalidRoom: the name is empty, too long or reserved.
            Forbidden: ``authorize_join`` refused.
            LimitExceeded: the connection is in ``max_rooms`` rooms already.
            ConnectionClosed: the connection is closed.
        """
        err = room_error(room)
        if err is not None:
            raise InvalidRoom(err)
        if room in self.rooms:
            return
        self._check_open()
        if not await self.endpoint.authorize_join(self, room):
            raise Forbidden(f"not allowed to join {room!r}")
        await self._rooms.join(self, room)

    async def leave(self, room: str) -> None:
        """Leave a room (nothing happens when not in it)."""
        if room not in self.rooms:
            return
        await self._rooms.leave(self, room)

    async def leave_all(self) -> None:
        """Leave every application room."""
        for room in list(self.rooms):
            await self.leave(room)

    # Emitting --------------------------------------------------------------

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Target rooms, everyone in them but this connection."""
        return BroadcastOperator(self._publisher, namespace=self.namespace, exclude=self.sid).to(*rooms)

    @property
    def broadcast(self) -> BroadcastOperator:
        """Target the whole namespace but this connection."""
        return BroadcastOperator(self._publisher, namespace=self.namespace, exclude=self.sid)

    async def emit(self, event: str, data: Any = None, *, volatile: bool = False) -> None:
        """Send an event to this client (through its own stream, so it is recovered too).

        Called while the connection is being established (from ``on_connect``), the event is
        sent right after the client is told it is connected; it is dropped when the
        connection is refused.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        self._check_open()
        check_event(event)
        if self.state is _CONNECTING:
            # From on_connect: the client is not told it is connected yet and this connection
            # does not receive its own stream yet, so a publication now would reach nobody.
            if self.early is None:
                self.early = []
            self.early.append((event, data, volatile))
            return
        await self._publisher.publish(
            self.namespace, (sid_room(self.sid),), event, data, volatile=volatile
        )

    async def call(self, event: str, data: Any = None, *, timeout: float = 10.0) -> Any:
        """Send an event to this client and return its acknowledgement.

        Args:
            event: the event name.
            data: the payload.
            timeout: seconds to wait for the ack.

        Returns:
            The client's answer, decoded as plain Python values.

        Raises:
            CallTimeout: no ack in time.
            AckError: the client answered with an error.
            ConnectionClosed: the connection closed before the ack.
            RuntimeError: called from an in-order handler of this same connection (it
                would wait for itself): mark that handler ``@on_event(..., concurrent=True)``.
        """
        self._check_open()
        return await self.link.call(self.namespace, event, data, timeout=timeout)

    async def disconnect(self, reason: str = "server disconnect") -> None:
        """Close this namespace connection (the WebSocket stays open for other namespaces)."""
        await self.link.close_namespace(self.namespace, reason, notify=True)

    def _check_open(self) -> None:
        if self.state is _CLOSED or self.state is _CLOSING:
            raise ConnectionClosed(f"connection {self.sid} is {self.state.value}")

    def __repr__(self) -> str:
        return (
            f"Connection(sid={self.sid!r}, namespace={self.namespace!r}, state={self.state.value}, "
            f"rooms={sorted(self.rooms)!r})"
        )
