"""What a backend is: the only place where state crosses processes.

A backend moves :class:`Publication` values between nodes, assigning each one
its place (epoch and offset) in its room's stream.  Everything a backend
carries is a msgspec Struct or bytes.  Optional capabilities are separate
``runtime_checkable`` Protocols, so that a backend without one says so by not
implementing it instead of raising ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ..exceptions import RealtimeError
from ..frames import Position


class Publication(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """One message published to one room's stream.

    Attributes:
        ns: the namespace.
        room: the stream: an application room, ``#all`` or ``#sid:<sid>``.
        event: the event name.
        data: the payload, JSON-encoded once by the publisher.
        exclude: a sid that must not receive it (the sender, for ``conn.to(room)``).
        rooms: for an emit to several rooms, all of them, so that a connection in
            more than one gets it once (through the first room it is in).
        epoch: the stream epoch, assigned by the backend.
        offset: the offset in the stream, assigned by the backend.
        ts: the publisher's wall-clock time (seconds), for lag metrics.
        volatile: deliver only to receivers that can take it at once, keep no history.
    """

    ns: str
    room: str
    event: str
    data: bytes
    exclude: str | None = None
    rooms: tuple[str, ...] = ()
    epoch: str = ""
    offset: int = 0
    ts: float = 0.0
    volatile: bool = False


#: Called by the backend, on the node's event loop, for each publication to a
#: room this node subscribed to.  It must not block.
Deliver = Callable[[Publication], None]


@runtime_checkable
class Backend(Protocol):
    """The interface every backend implements."""

    async def start(self, deliver: Deliver) -> None:
        """Connect, and start handing publications of subscribed rooms to ``deliver``.

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """

    async def stop(self) -> None:
        """Disconnect and release every resource."""

    async def publish(self, pub: Publication) -> Publication:
        """Publish to the room's stream and return the publication with its epoch and offset.

        Raises:
            BackendUnavailable: the backend cannot take it now; the call fails fast.
        """

    async def subscribe(self, ns: str, room: str) -> None:
        """Start receiving the room's publications on this node."""

    async def unsubscribe(self, ns: str, room: str) -> None:
        """Stop receiving the room's publications on this node."""


class HistoryReply(msgspec.Struct, frozen=True):
    """The answer to a history query.

    Attributes:
        recovered: ``False`` when the history no longer covers the position asked for.
        publications: what came after the position, in order (empty when not recovered).
        position: the stream's current position, or ``None`` for a stream with no history.
    """

    recovered: bool
    publications: Sequence[Publication]
    position: Position | None


@runtime_checkable
class History(Protocol):
    """A backend that keeps a bounded history of each room's stream."""

    async def position(self, ns: str, room: str) -> Position | None:
        """The stream's current position (``None`` when it has no retained history)."""

    async def since(self, ns: str, room: str, position: Position | None) -> HistoryReply:
        """Every publication after ``position`` (all retained ones when ``None``)."""


@runtime_checkable
class SessionStore(Protocol):
    """A backend that keeps disconnected sessions for recovery, on any node."""

    async def save_session(self, key: str, state: bytes, ttl: float) -> None:
        """Keep a session's state for ``ttl`` seconds."""

    async def take_session(self, key: str) -> bytes | None:
        """Return and forget a saved session's state (``None`` when unknown or expired)."""


@runtime_checkable
class LiveSessionStore(Protocol):
    """A session store that also keeps live sessions as they change (write-through).

    With it, a node that dies (SIGKILL, out of memory) loses no session: its clients
    resume on any other node.  The memory backend does not offer it: its sessions die
    with its process anyway.
    """

    async def put_session(
        self, key: str, state: bytes, ttl: float, *, owner: str, create: bool, final: bool = False
    ) -> bool:
        """Write a session's state for ``ttl`` seconds, on behalf of the connection ``owner``.

        With ``create=False`` only over a state that ``owner`` wrote and that is still there:
        a session that its client resumed on another node (which took it and wrote its own)
        is never overwritten by the old node.  A ``final`` state is the one saved when the
        connection closed (written also where no state is, in case a live write failed); the
        others are live.  ``take_session`` returns the state alone.

        Returns:
            Whether it was written.
        """

    async def take_final_session(self, key: str) -> tuple[bytes | None, bool]:
        """Take a session only if its connection closed and saved it.

        Returns:
            ``(state, False)`` when a final state was taken; ``(None, True)`` while a live one is
            there (its node may still save a newer one); ``(None, False)`` when there is none.
        """

    async def touch_sessions(self, keys: Sequence[str], ttl: float) -> None:
        """Push back the expiry of live sessions to ``ttl`` seconds from now (the node's keep-alive)."""


@runtime_checkable
class HealthCheck(Protocol):
    """A backend whose link can be down while the node keeps serving."""

    @property
    def healthy(self) -> bool:
        """Whether the backend's link is up."""


class PresenceChange(msgspec.Struct, array_like=True, frozen=True):
    """A user coming online or going offline in a room, as decided by a presence store.

    Attributes:
        user: the user's id (``identity.user_key``).
        online: ``True`` for online, ``False`` for offline.
        seq: the room's presence sequence number: it grows with every change of the
            room, across nodes and restarts of the store (it starts from the clock).
        meta: the user's public metadata, JSON-encoded.
    """

    user: str
    online: bool
    seq: int
    meta: bytes


class PresencePage(msgspec.Struct, frozen=True):
    """Members of a room with their JSON-encoded metadata.

    Attributes:
        seq: the room's presence sequence number when the page was read.
        members: ``(user, meta)`` pairs.
        cursor: where the next page starts, or ``None`` when this was the last one.
    """

    seq: int
    members: list[tuple[str, bytes]]
    cursor: str | None = None


class PresenceReset(RealtimeError):
    """Raised by ``presence_apply`` when the store no longer holds this node's entries.

    The caller writes the room again with ``replace=True`` (its whole set for the room).
    """


@runtime_checkable
class PresenceStore(Protocol):
    """A backend (or a companion object) that keeps who is present in each room.

    Every node records its own users (``presence_apply``); the store counts them
    across nodes and reports each room-wide transition exactly once.
    """

    async def presence_apply(
        self,
        ns: str,
        room: str,
        adds: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        *,
        replace: bool = False,
    ) -> list[PresenceChange]:
        """Record users of this node entering (with metadata) and leaving a room.

        Args:
            ns: the namespace.
            room: the room.
            adds: ``(user, meta)`` pairs now present on this node.
            removes: users no longer present on this node.
            replace: ``adds`` is this node's complete set for the room; forget the rest.

        Returns:
            The room-wide transitions this call caused, in ``seq`` order.

        Raises:
            BackendUnavailable: the store cannot be reached.
            PresenceReset: the store lost this node's entries; write the room again with ``replace``.
        """

    async def presence_page(self, ns: str, room: str, cursor: str | None, limit: int | None) -> PresencePage:
        """Read a room's members: all at once (``limit=None``) or a page from ``cursor``."""

    async def presence_contains(self, ns: str, room: str, user: str) -> bool:
        """Whether ``user`` is present in the room on any node."""

    async def presence_count(self, ns: str, room: str) -> int:
        """How many users are present in the room."""


__all__ = [
    "Backend",
    "Deliver",
    "HealthCheck",
    "History",
    "HistoryReply",
    "PresenceChange",
    "PresencePage",
    "PresenceReset",
    "PresenceStore",
    "Publication",
    "SessionStore",
]
