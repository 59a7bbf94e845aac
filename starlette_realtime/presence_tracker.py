"""Presence bookkeeping of one node, and the in-process presence store.

:class:`Tracker` knows which local connections of which user are in which room
of one namespace.  It turns the first connection of a user in a room into an
``add`` and the last one into a ``remove`` for the store, batching the pending
changes of a room into one store call made under the room's lock, so that the
store sees this node's changes of a room in order and the transitions it
reports are published in order.  When a store call fails, the room is marked
for a full re-sync (this node's complete set of users replaces what the store
holds for it), which the next heartbeat or change of that room retries.

:class:`MemoryPresence` is the store of the ``memory://`` backend: one
process, so no node can die without taking its users with it.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import anyio

from .backends.base import PresenceChange, PresencePage, PresenceReset, PresenceStore

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)

#: The pseudo-room that holds every user connected to the namespace (no events).
GLOBAL_ROOM = "#online"

#: Publishes the transitions of one room (called in ``seq`` order, under the room's lock).
Publish = Callable[[str, Sequence[PresenceChange]], Awaitable[None]]


class _User:
    __slots__ = ("conns", "meta", "stored")

    def __init__(self, meta: bytes) -> None:
        self.conns: set[Connection] = set()
        self.meta = meta
        #: Whether the store holds this user for this node (as far as we know).
        self.stored = False


class _Room:
    __slots__ = ("full", "lock", "pending", "refs", "users")

    def __init__(self) -> None:
        self.users: dict[str, _User] = {}
        self.lock = anyio.Lock()
        self.pending: set[str] = set()
        self.full = False
        self.refs = 0


class Tracker:
    """This node's presence in one namespace: connections per user per room.

    Args:
        namespace: the namespace.
        store: where presence is recorded (shared by every node).
        publish: sends the transitions of a room to its members.
    """

    def __init__(self, namespace: str, store: PresenceStore, publish: Publish) -> None:
        self.namespace = namespace
        self.store = store
        self._publish = publish
        self._rooms: dict[str, _Room] = {}
        self._dirty: set[str] = set()

    # Changes -----------------------------------------------------------------

    async def track(self, room: str, user: str, conn: Connection, meta: bytes) -> None:
        """Count ``conn`` as one of ``user``'s connections in ``room`` (idempotent)."""
        r = self._rooms.get(room)
        if r is None:
            r = self._rooms[room] = _Room()
        entry = r.users.get(user)
        if entry is None:
            entry = r.users[user] = _User(meta)
        if not entry.conns:
            r.pending.add(user)
        entry.conns.add(conn)
        # Flush even when nothing changed here: a change of this user may still be
        # in flight, and the caller must only return once the store reflects it.
        await self._flush(room, r)

    async def untrack(self, room: str, user: str, conn: Connection) -> None:
        """Stop counting ``conn`` in ``room`` (nothing happens when it was not counted)."""
        r = self._rooms.get(room)
        entry = None if r is None else r.users.get(user)
        if r is None or entry is None or conn not in entry.conns:
            return
        entry.conns.discard(conn)
        if not entry.conns:
            r.pending.add(user)
        await self._flush(room, r)

    async def _flush(self, room: str, r: _Room) -> None:
        r.refs += 1
        try:
            async with r.lock:
                for _ in range(2):
                    try:
                        await self._flush_locked(room, r)
                        break
                    except PresenceReset:
                        # The store changed this node's identity: write the room again.
                        r.full = True
                        self._dirty.add(room)
        finally:
            r.refs -= 1
            if r.refs == 0 and not r.users and not r.pending and not r.full and self._rooms.get(room) is r:
                del self._rooms[room]
                self._dirty.discard(room)

    async def _flush_locked(self, room: str, r: _Room) -> None:
        if not r.pending and not r.full:
            return
        full, pending = r.full, r.pending
        r.full, r.pending = False, set()
        adds: list[tuple[str, bytes]] = []
        removes: list[str] = []
        if full:
            adds = [(user, e.meta) for user, e in r.users.items() if e.conns]
        else:
            for user in pending:
                e = r.users.get(user)
                if e is None:
                    continue
                if e.conns and not e.stored:
                    adds.append((user, e.meta))
                elif not e.conns and e.stored:
                    removes.append(user)
            if not adds and not removes:
                self._prune(r)
                return
        try:
            changes = await self.store.presence_apply(self.namespace, room, adds, removes, replace=full)
        except PresenceReset:
            r.pending |= pending
            raise
        except Exception as exc:
            # Whether the store applied it is unknown: replace this node's set next time.
            r.full = True
            r.pending |= pending
            self._dirty.add(room)
            logger.warning(
                "presence update failed, will re-sync (namespace=%s room=%r): %r", self.namespace, room, exc
            )
            return
        self._dirty.discard(room)
        if full:
            present = {user for user, _ in adds}
            for user, e in r.users.items():
                e.stored = user in present
        else:
            for user, _ in adds:
                r.users[user].stored = True
            for user in removes:
                r.users[user].stored = False
        self._prune(r)
        if changes:
            await self._publish(room, changes)

    @staticmethod
    def _prune(r: _Room) -> None:
        for user in [u for u, e in r.users.items() if not e.conns and not e.stored]:
            del r.users[user]

    # Maintenance (heartbeats) -------------------------------------------------

    def mark_all(self) -> None:
        """Re-sync every room on its next flush (the store lost or dropped this node's entries)."""
        for room, r in self._rooms.items():
            r.full = True
            self._dirty.add(room)

    async def flush_dirty(self) -> bool:
        """Retry the rooms whose last store call failed; stop at the first that fails again.

        Returns:
            Whether no room is left to retry.
        """
        for room in list(self._dirty):
            r = self._rooms.get(room)
            if r is None:
                self._dirty.discard(room)
                continue
            await self._flush(room, r)
            if room in self._dirty:
                return False
        return True

    async def collect(self) -> int:
        """Forget connections that closed without leaving (a failed handshake); return how many."""
        from .connection import ConnectionState

        dropped = 0
        for room, r in list(self._rooms.items()):
            changed = False
            for user, e in r.users.items():
                dead = [c for c in e.conns if c.state is ConnectionState.CLOSED]
                if dead:
                    e.conns.difference_update(dead)
                    dropped += len(dead)
                    if not e.conns:
                        r.pending.add(user)
                        changed = True
            if changed:
                await self._flush(room, r)
        return dropped

    def stored_rooms(self) -> list[str]:
        """The rooms where the store holds users of this node."""
        return [room for room, r in self._rooms.items() if r.full or any(e.stored for e in r.users.values())]

    def local_users(self, room: str) -> set[str]:
        """The users with a connection in ``room`` on this node."""
        r = self._rooms.get(room)
        return set() if r is None else {user for user, e in r.users.items() if e.conns}

    def stats(self) -> dict[str, int]:
        """Counts for tests: rooms, (room, user) entries, connections, rooms waiting for a re-sync."""
        rooms = list(self._rooms.values())
        return {
            "rooms": len(rooms),
            "entries": sum(len(r.users) for r in rooms),
            "connections": sum(len(e.conns) for r in rooms for e in r.users.values()),
            "dirty": len(self._dirty),
        }

    def __repr__(self) -> str:
        return f"Tracker(namespace={self.namespace!r}, rooms={len(self._rooms)}, store={self.store!r})"


class MemoryPresence:
    """The presence store of one process (used with ``memory://``).

    Args:
        clock: wall-clock microseconds, the floor of sequence numbers (injectable for tests).
    """

    def __init__(self, *, clock: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._clock = clock
        self._rooms: dict[tuple[str, str], dict[str, bytes]] = {}
        self._seq = 0

    def _next(self) -> int:
        # One counter for every room (so an emptied room is forgotten entirely),
        # floored by the clock so that it still grows after a restart.
        self._seq = max(self._seq + 1, self._clock())
        return self._seq

    async def presence_apply(
        self,
        ns: str,
        room: str,
        adds: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        *,
        replace: bool = False,
    ) -> list[PresenceChange]:
        key = (ns, room)
        members = self._rooms.setdefault(key, {})
        changes: list[PresenceChange] = []
        gone: Iterable[str] = removes
        if replace:
            keep = {user for user, _ in adds}
            gone = [user for user in members if user not in keep]
        for user in gone:
            meta = members.pop(user, None)
            if meta is not None:
                changes.append(PresenceChange(user, False, self._next(), meta))
        for user, meta in adds:
            if user not in members:
                members[user] = meta
                changes.append(PresenceChange(user, True, self._next(), meta))
        if not members:
            del self._rooms[key]
        return changes

    async def presence_page(self, ns: str, room: str, cursor: str | None, limit: int | None) -> PresencePage:
        key = (ns, room)
        members = self._rooms.get(key, {})
        seq = self._seq
        if limit is None:
            return PresencePage(seq, list(members.items()))
        users = sorted(members)
        start = 0 if not cursor else bisect.bisect_right(users, cursor)
        page = users[start : start + limit]
        more = start + limit < len(users)
        return PresencePage(seq, [(u, members[u]) for u in page], page[-1] if more and page else None)

    async def presence_contains(self, ns: str, room: str, user: str) -> bool:
        return user in self._rooms.get((ns, room), ())

    async def presence_count(self, ns: str, room: str) -> int:
        return len(self._rooms.get((ns, room), ()))

    def __repr__(self) -> str:
        return f"MemoryPresence(rooms={len(self._rooms)})"


__all__ = ["GLOBAL_ROOM", "MemoryPresence", "Publish", "Tracker"]
