"""Connection state recovery on the Socket.IO wire: the ``pid`` / ``offset`` a Socket.IO 4.6+ client keeps.

The client presents them in its CONNECT auth after an unexpected drop.  ``pid``
is our session string; ``offset`` is the stream position of the last room event
it got (:func:`encode_offset`), which :class:`~.wire.SocketIOWire` appends to
room events and reads back from a CONNECT.  :class:`RecoveryEcho` lets the
transport give the client back the ``pid`` it presented, which is how the client
knows it was recovered.
"""

from __future__ import annotations

import msgspec

from ..exceptions import ProtocolError
from ..frames import Position
from . import packets


class RecoveryAuth(msgspec.Struct):
    """The recovery fields a Socket.IO 4.6+ client adds to its CONNECT auth."""

    pid: str | None = None
    offset: str | None = None


def encode_offset(room: str, epoch: str, offset: int) -> str:
    """The ``offset`` string a client keeps for recovery: the room, its stream epoch and position."""
    return f"{offset}:{epoch}:{room}"


def decode_offset(text: str) -> dict[str, Position] | None:
    """Undo :func:`encode_offset`; ``None`` for anything else (the client may hold a user string)."""
    offset, sep, rest = text.partition(":")
    epoch, sep2, room = rest.partition(":")
    if not (sep and sep2 and offset.isdigit() and room):
        return None
    return {room: Position(epoch, int(offset))}


class RecoveryEcho:
    """Per Engine.IO session: echo the ``pid`` a client presented when its session is recovered.

    A Socket.IO client sets ``socket.recovered`` when the CONNECT reply's ``pid``
    equals the one it presented.  Session strings are signed with a timestamp, so
    the one the core signs anew differs: the transport remembers the presented
    ``pid`` per namespace (:meth:`inbound`) and puts it back into a recovered
    reply (:meth:`outbound`).  Only CONNECT packets are looked at.
    """

    __slots__ = ("_pids",)

    def __init__(self) -> None:
        self._pids: dict[str, str] = {}

    def inbound(self, text: str) -> None:
        """Note the ``pid`` of a client's CONNECT (``"40..."``), if any."""
        if not text.startswith("40") or '"pid"' not in text:
            return
        try:
            head = packets.parse_header(text, 1)
            pid = msgspec.json.decode(text[head.end :], type=RecoveryAuth).pid
        except (ProtocolError, msgspec.DecodeError, msgspec.ValidationError):
            return
        if pid is not None:
            self._pids[head.nsp] = pid

    def outbound(self, text: str) -> str:
        """Return a server payload with the presented ``pid`` in a recovered CONNECT reply."""
        if not text.startswith("40") or '"recovered":true' not in text:
            return text
        head = packets.parse_header(text, 1)
        pid = self._pids.get(head.nsp)
        if pid is None:
            return text
        reply = msgspec.json.decode(text[head.end :])
        reply["pid"] = pid
        return text[: head.end] + msgspec.json.encode(reply).decode()

    def __repr__(self) -> str:
        return f"RecoveryEcho(namespaces={sorted(self._pids)!r})"


__all__ = ["RecoveryAuth", "RecoveryEcho", "decode_offset", "encode_offset"]
