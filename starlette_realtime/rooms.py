"""Room bookkeeping for one node: which local members are in which room.

Pure data structure: no awaits, no clock, no I/O.  A key is
``(namespace, room)``; a member is anything hashable with a ``sid``
(a :class:`~starlette_realtime.connection.Connection` in practice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

M = TypeVar("M")

RoomKey = tuple[str, str]


class RoomTable(Generic[M]):
    """Two-way index between rooms and their local members, keyed by sid."""

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[RoomKey, dict[str, M]] = {}

    def add(self, key: RoomKey, sid: str, member: M) -> bool:
        """Add a member; return ``True`` when it is the room's first local member."""
        members = self._rooms.get(key)
        if members is None:
            self._rooms[key] = {sid: member}
            return True
        members[sid] = member
        return False

    def discard(self, key: RoomKey, sid: str) -> bool:
        """Remove a member; return ``True`` when the room has no local member left."""
        members = self._rooms.get(key)
        if members is None or members.pop(sid, None) is None:
            return False
        if not members:
            del self._rooms[key]
            return True
        return False

    def members(self, key: RoomKey) -> dict[str, M] | None:
        """The room's members by sid (do not mutate), or ``None`` for an empty room."""
        return self._rooms.get(key)

    def count(self, key: RoomKey) -> int:
        members = self._rooms.get(key)
        return 0 if members is None else len(members)

    def keys(self) -> Iterator[RoomKey]:
        return iter(list(self._rooms))

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, key: object) -> bool:
        return key in self._rooms

    def __repr__(self) -> str:
        return f"RoomTable(rooms={len(self._rooms)})"


ALL_ROOM = "#all"
SID_ROOM_PREFIX = "#sid:"
MAX_ROOM_LENGTH = 255


def sid_room(sid: str) -> str:
    """The stream that carries messages addressed to one connection."""
    return SID_ROOM_PREFIX + sid


def room_error(room: object) -> str | None:
    """Why ``room`` is not a valid application room name, or ``None`` when it is."""
    if not isinstance(room, str):
        return "a room name must be a string"
    if not room:
        return "a room name must not be empty"
    if len(room) > MAX_ROOM_LENGTH:
        return f"a room name must be at most {MAX_ROOM_LENGTH} characters"
    if room.startswith("#"):
        return "room names starting with '#' are reserved"
    return None
