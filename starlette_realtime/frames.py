"""Wire frames of protocol v1, as msgspec Structs.

Every frame is a tagged ``array_like`` Struct: on the wire it is an array whose
first element is the frame type (an integer).  ``array_like`` frames decode
about twice as fast as maps and are smaller.  Fields are only ever *appended*
(with defaults), never reordered: that is how the protocol evolves without a
version bump.  Decoding accepts a frame whose trailing optional fields are missing;
msgspec writes every field of an ``array_like`` Struct (``omit_defaults`` only drops
them from maps), so sent frames carry their trailing ``null``s.

User payloads travel as :class:`msgspec.Raw`: the envelope is decoded first and
the payload later, by the handler's own typed decoder (or never, when the
server only relays it).

docs/protocol.md is the normative description of these frames.
"""

from __future__ import annotations

from typing import Annotated, Final, TypeAlias

import msgspec

PROTOCOL_VERSION: Final = 1

#: Largest ack id either side may use (ids are 31-bit so that every client,
#: JavaScript included, handles them exactly).
MAX_ACK_ID: Final = 2**31 - 1

AckId = Annotated[int, msgspec.Meta(ge=0, le=MAX_ACK_ID)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Namespace = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _Frame(msgspec.Struct, array_like=True, omit_defaults=True):
    pass


class Position(msgspec.Struct, array_like=True, frozen=True):
    """Where a client stands in one room's stream: the stream epoch and the last offset seen."""

    epoch: Annotated[str, msgspec.Meta(max_length=64)]
    offset: Offset


class Hello(_Frame, tag=0):
    """Server -> client, first frame after the WebSocket is accepted."""

    version: int
    node: str
    ping_interval: float
    ping_timeout: float
    max_message_size: int


class Connect(_Frame, tag=1):
    """Client -> server: open a namespace, optionally resuming an earlier session."""

    ns: Namespace
    auth: msgspec.Raw
    session: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    positions: dict[Annotated[str, msgspec.Meta(max_length=300)], Position] | None = None


class Connected(_Frame, tag=2):
    """Server -> client: the namespace is open."""

    ns: str
    sid: str
    session: str
    #: ``True`` when an earlier session was resumed with nothing lost.
    recovered: bool = False
    #: ``True`` when an earlier session was presented but could not be resumed.
    recovery_failed: bool = False


class ConnectError(_Frame, tag=3):
    """Server -> client: the namespace refused the connection."""

    ns: str
    code: str
    message: str
    retryable: bool = False


class Disconnect(_Frame, tag=4):
    """Either way: the namespace is closed (the WebSocket stays open)."""

    ns: Namespace
    reason: str = ""


class Event(_Frame, tag=5):
    """Either way: an event.

    ``id`` asks for an acknowledgement.  Server -> client room messages also carry
    the room, the stream epoch and the offset, which the client uses to resume.
    """

    ns: Namespace
    event: EventName
    data: msgspec.Raw
    id: AckId | None = None
    room: str | None = None
    epoch: str | None = None
    offset: Offset | None = None


class ErrorInfo(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """A machine-readable error: a stable ``code`` and a human ``message``."""

    code: str
    message: str = ""


class Ack(_Frame, tag=6):
    """Either way: the answer to an event that carried an ``id``."""

    ns: Namespace
    id: AckId
    data: msgspec.Raw
    error: ErrorInfo | None = None


class Ping(_Frame, tag=7):
    """Server -> client heartbeat; the client answers with :class:`Pong`."""


class Pong(_Frame, tag=8):
    """Client -> server heartbeat answer."""


class Error(_Frame, tag=9):
    """Server -> client: a frame could not be handled (the connection may stay open)."""

    code: str
    message: str = ""
    ns: str | None = None


Frame: TypeAlias = Hello | Connect | Connected | ConnectError | Disconnect | Event | Ack | Ping | Pong | Error

#: Frames a client may send.  Anything else from a client is a protocol error.
ClientFrame: TypeAlias = Connect | Disconnect | Event | Ack | Pong

__all__ = [
    "MAX_ACK_ID",
    "PROTOCOL_VERSION",
    "Ack",
    "ClientFrame",
    "Connect",
    "ConnectError",
    "Connected",
    "Disconnect",
    "Error",
    "ErrorInfo",
    "Event",
    "Frame",
    "Hello",
    "Ping",
    "Pong",
    "Position",
]
