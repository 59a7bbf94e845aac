"""Presence: who is online in each room, across every node.

``class Chat(PresenceMixin, RealtimeEndpoint)`` adds presence to an endpoint.
A user (``identity.user_key(conn.user)``; anonymous connections are not
tracked) is online in a room while at least one of its connections, on any
node, is in it; the room's members get one ``$presence`` event per transition
of a user, never one per connection.  A user is online in the namespace while
at least one of its connections is open (:meth:`PresenceMixin.is_online`
without a room).  Clients list a room they are in with the built-in
``$presence.list`` event.  See docs/presence.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final, Literal

import anyio
import msgspec

from .backends.base import PresenceChange, PresencePage, PresenceStore
from .backends.memory import MemoryBackend
from .backends.presence_redis import is_redis_host
from .connection import Connection
from .dispatch import EventOptions, Handler
from .endpoint import RealtimeEndpoint
from .exceptions import Forbidden
from .identity import user_key
from .presence_tracker import GLOBAL_ROOM, MemoryPresence, Tracker
from .rooms import room_error
from .validation import enc_hook

logger = logging.getLogger(__name__)

#: The event every member of a room gets when a user comes online or goes offline there.
PRESENCE_EVENT: Final = "$presence"
#: The event a client sends (with an id) to list a room it is in.
LIST_EVENT: Final = "$presence.list"
#: The largest page a client may ask for.
MAX_PAGE: Final = 1000

# enc_hook: metadata may hold (or be) a Pydantic model, as handler return values may.
_META_ENCODER: Final = msgspec.json.Encoder(enc_hook=enc_hook)
_META_DECODER: Final = msgspec.json.Decoder(dict[str, Any])


class Member(msgspec.Struct, frozen=True):
    """A present user and its public metadata."""

    user: str
    meta: dict[str, Any] = {}


class PresenceList(msgspec.Struct, frozen=True):
    """A room's members (or one page of them), as returned to clients and to the server.

    Attributes:
        room: the room.
        seq: the room's presence sequence number when it was read: ``$presence``
            events with a ``seq`` at most this one are already reflected here.
        members: the present users.
        cursor: pass it back to get the next page; ``None`` after the last page.
    """

    room: str
    seq: int
    members: list[Member]
    cursor: str | None = None


class PresenceEvent(msgspec.Struct, frozen=True):
    """The data of a ``$presence`` event."""

    room: str
    user: str
    status: Literal["online", "offline"]
    meta: msgspec.Raw
    seq: int


class ListRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The payload of ``$presence.list``."""

    room: str
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = MAX_PAGE


class PresenceMixin(RealtimeEndpoint):
    """Adds presence to an endpoint: ``class Chat(PresenceMixin, RealtimeEndpoint)``.

    Overriding ``on_connect``, ``on_disconnect``, ``on_join`` or ``on_leave``?
    Call ``super()``: that is where presence is tracked.

    Class attributes:
        presence_fields: the attributes (or keys) of ``conn.user`` that become its
            public metadata, e.g. ``("display_name", "avatar")``.  Nothing else of
            the user object is ever sent; override :meth:`presence_meta` for more.
        presence_ttl: seconds within which the users of a node that died without
            cleaning up go offline (Redis only, at least two heartbeat intervals;
            a graceful shutdown removes them at once).
        presence_max_meta: the most bytes of JSON-encoded metadata per user; larger
            metadata is replaced by ``{}`` and logged.
    """

    presence_fields: ClassVar[tuple[str, ...]] = ()
    presence_ttl: ClassVar[float] = 30.0
    presence_max_meta: ClassVar[int] = 512

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Event names starting with "$" are reserved, so ``@on_event`` refuses
        # them: the built-in handler is added to the table directly.
        options = EventOptions(LIST_EVENT, False, None, None)
        cls.handlers = {**cls.handlers, LIST_EVENT: Handler(PresenceMixin._list_event, options, cls)}

    def __init__(self) -> None:
        super().__init__()
        self._presence: Tracker | None = None
        self._presence_lock: anyio.Lock | None = None
        self._heartbeat = False
        self._next_collect = 0.0

    # Metadata --------------------------------------------------------------------

    def presence_meta(self, conn: Connection) -> dict[str, Any]:
        """The public metadata of a connection's user (the first connection's wins).

        The default takes the attributes (or mapping keys) named in
        ``presence_fields`` from ``conn.user`` and skips missing ones.

        Args:
            conn: the connection being tracked.

        Returns:
            A JSON-encodable dict, sent to every member of the user's rooms.
        """
        user = conn.user
        meta: dict[str, Any] = {}
        for name in self.presence_fields:
            value = user.get(name) if isinstance(user, Mapping) else getattr(user, name, None)
            if value is not None:
                meta[name] = value
        return meta

    def _encode_meta(self, conn: Connection) -> bytes:
        try:
            raw = _META_ENCODER.encode(self.presence_meta(conn))
        except Exception:
            logger.exception("presence_meta failed; using {} (sid=%s namespace=%s)", conn.sid, conn.namespace)
            return b"{}"
        if len(raw) > self.presence_max_meta or not raw.startswith(b"{"):
            logger.warning(
                "presence metadata is not an object of at most %d bytes; using {} (sid=%s namespace=%s)",
                self.presence_max_meta, conn.sid, conn.namespace,
            )
            return b"{}"
        return raw

    # Hooks -----------------------------------------------------------------------

    async def on_connect(self, conn: Connection) -> None:
        """Track the user as online in the namespace (after the endpoint's own checks)."""
        await super().on_connect(conn)
        user = user_key(conn.user)
        if user is None:
            return
        tracker = await self._tracker()
        if not self._heartbeat and time.monotonic() >= self._next_collect:
            # Without a heartbeat (memory://), sweep connections that closed during
            # their handshake now and then.
            self._next_collect = time.monotonic() + 10.0
            await tracker.collect()
        await tracker.track(GLOBAL_ROOM, user, conn, self._encode_meta(conn))

    async def on_disconnect(self, conn: Connection, reason: str) -> None:
        """Untrack the connection from the namespace."""
        try:
            await super().on_disconnect(conn, reason)
        finally:
            user = user_key(conn.user)
            if user is not None and self._presence is not None:
                await self._presence.untrack(GLOBAL_ROOM, user, conn)

    async def on_join(self, conn: Connection, room: str) -> None:
        """Track the user in the room; its members get ``$presence`` if the user just came online."""
        await super().on_join(conn, room)
        user = user_key(conn.user)
        if user is not None:
            tracker = await self._tracker()
            await tracker.track(room, user, conn, self._encode_meta(conn))

    async def on_leave(self, conn: Connection, room: str) -> None:
        """Untrack the connection from the room; members get ``$presence`` if it was the user's last."""
        try:
            await super().on_leave(conn, room)
        finally:
            user = user_key(conn.user)
            if user is not None and self._presence is not None:
                await self._presence.untrack(room, user, conn)

    # Queries ---------------------------------------------------------------------

    async def presence(self, room: str) -> list[Member]:
        """Every user present in a room, on any node, with its metadata (one round trip).

        Args:
            room: the room.

        Returns:
            The members, sorted by user id.

        Raises:
            ValueError: the room name is invalid.
            BackendUnavailable: the backend cannot be reached.
        """
        page = await self._page(_checked(room), None, None)
        return sorted(page.members, key=lambda m: m.user)

    async def presence_page(self, room: str, *, cursor: str | None = None, limit: int = MAX_PAGE) -> PresenceList:
        """One page of a room's members (for rooms too large for one message).

        Args:
            room: the room.
            cursor: ``None`` for the first page, else the previous page's ``cursor``.
            limit: about how many members per page (a store may return a few more).

        Returns:
            The page; its ``cursor`` is ``None`` after the last page.  Pages are
            not one snapshot: merge them with ``$presence`` events by ``seq``.

        Raises:
            ValueError: the room name is invalid.
            BackendUnavailable: the backend cannot be reached.
        """
        return await self._page(_checked(room), cursor, limit)

    async def is_online(self, user_id: str, room: str | None = None) -> bool:
        """Whether a user is online: in ``room``, or (without one) connected to this namespace.

        Args:
            user_id: the user's id (``identity.user_key`` of the user object).
            room: the room, or ``None`` for the whole namespace.

        Returns:
            Whether at least one of the user's connections, on any node, is there.

        Raises:
            ValueError: the room name is invalid.
            BackendUnavailable: the backend cannot be reached.
        """
        tracker = await self._tracker()
        target = GLOBAL_ROOM if room is None else _checked(room)
        return await tracker.store.presence_contains(self.namespace, target, user_id)

    async def presence_count(self, room: str | None = None) -> int:
        """How many users are online in a room, or (without one) in the namespace.

        Raises:
            ValueError: the room name is invalid.
            BackendUnavailable: the backend cannot be reached.
        """
        tracker = await self._tracker()
        target = GLOBAL_ROOM if room is None else _checked(room)
        return await tracker.store.presence_count(self.namespace, target)

    async def list_presence(
        self, conn: Connection, room: str, *, cursor: str | None = None, limit: int = MAX_PAGE
    ) -> PresenceList:
        """A room's members for a client: only members of the room may list it.

        A join handler may ``return await self.list_presence(conn, room)`` so that
        the client gets the list with its join acknowledgement.

        Args:
            conn: the asking connection.
            room: the room.
            cursor: ``None`` for the first page, else the previous page's ``cursor``.
            limit: about how many members per page.

        Returns:
            The members (one page of them for rooms larger than ``limit``).

        Raises:
            Forbidden: ``conn`` is not in the room (ack code ``forbidden``).
        """
        if room not in conn.rooms:
            raise Forbidden(f"not a member of {room!r}")
        return await self._page(room, cursor, limit)

    async def _list_event(self, conn: Connection, req: ListRequest) -> PresenceList:
        return await self.list_presence(conn, req.room, cursor=req.cursor, limit=req.limit)

    async def _page(self, room: str, cursor: str | None, limit: int | None) -> PresenceList:
        tracker = await self._tracker()
        page: PresencePage = await tracker.store.presence_page(self.namespace, room, cursor, limit)
        members = [Member(user, _decode_meta(meta)) for user, meta in page.members]
        return PresenceList(room, page.seq, members, page.cursor)

    # Internals ---------------------------------------------------------------------

    async def _tracker(self) -> Tracker:
        tracker = self._presence
        if tracker is not None:
            return tracker
        if self._presence_lock is None:
            self._presence_lock = anyio.Lock()
        async with self._presence_lock:
            if self._presence is None:
                self._presence = await self._start_presence()
            return self._presence

    async def _start_presence(self) -> Tracker:
        # Started by the first connection rather than in __init__: the backend is
        # started by then (endpoints have no start-up hook of their own).
        backend = self.router.backend
        if isinstance(backend, PresenceStore):
            return Tracker(self.namespace, backend, self._publish_presence)
        if isinstance(backend, MemoryBackend):
            return Tracker(self.namespace, MemoryPresence(), self._publish_presence)
        if is_redis_host(backend):
            from .backends.presence_redis import RedisPresence

            # The store publishes each transition inside the script that makes it.
            store = RedisPresence(
                backend, namespace=self.namespace, ttl=self.presence_ttl, event=PRESENCE_EVENT  # type: ignore[arg-type]
            )
            tracker = Tracker(self.namespace, store, _published)
            try:
                await store.start(tracker, _published)
            except Exception as exc:
                # The heartbeat registers the node once Redis answers.
                logger.warning("presence could not register with Redis yet (namespace=%s): %r", self.namespace, exc)
            self._heartbeat = True
            return tracker
        raise TypeError(f"{type(backend).__name__} supports no presence: use memory://, redis:// or a PresenceStore")

    async def _publish_presence(self, room: str, changes: Sequence[PresenceChange]) -> None:
        if room.startswith("#"):
            return
        op = self.to(room)
        for change in changes:
            event = PresenceEvent(
                room, change.user, "online" if change.online else "offline", msgspec.Raw(change.meta), change.seq
            )
            try:
                await op.emit(PRESENCE_EVENT, event)
            except Exception as exc:
                logger.warning(
                    "could not publish $presence (namespace=%s room=%r user=%s): %r",
                    self.namespace, room, change.user, exc,
                )


async def _published(room: str, changes: Sequence[PresenceChange]) -> None:
    return None  # already published by the store


def _checked(room: str) -> str:
    err = room_error(room)
    if err is not None:
        raise ValueError(err)
    return room


def _decode_meta(raw: bytes) -> dict[str, Any]:
    try:
        return _META_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return {}


__all__ = ["LIST_EVENT", "PRESENCE_EVENT", "ListRequest", "Member", "PresenceEvent", "PresenceList", "PresenceMixin"]
