"""Who is online in which room, counted per user over its connections (this process only).

A stand-in for :mod:`starlette_realtime.presence` until the demo uses it: a user with
two tabs open is one member, online until its last connection leaves.  Pure: no awaits.
"""

from __future__ import annotations


class Roster:
    """Room -> user -> the sids of that user's connections in the room."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = {}

    def add(self, room: str, user: str, sid: str) -> bool:
        """Record a connection; ``True`` when it is the user's first one in the room."""
        users = self._rooms.setdefault(room, {})
        sids = users.setdefault(user, set())
        first = not sids
        sids.add(sid)
        return first

    def discard(self, room: str, user: str, sid: str) -> bool:
        """Forget a connection; ``True`` when it was the user's last one in the room."""
        users = self._rooms.get(room)
        sids = None if users is None else users.get(user)
        if users is None or sids is None or sid not in sids:
            return False
        sids.discard(sid)
        if sids:
            return False
        del users[user]
        if not users:
            del self._rooms[room]
        return True

    def members(self, room: str) -> list[str]:
        """The users online in a room, sorted."""
        return sorted(self._rooms.get(room, ()))

    def __repr__(self) -> str:
        return f"Roster(rooms={len(self._rooms)})"
