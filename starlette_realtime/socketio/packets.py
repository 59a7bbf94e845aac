"""Socket.IO v5 packets: encoding, decoding and binary attachments (sans-I/O).

Written from the published protocol description (``socketio/socket.io-protocol``,
README of version 5).  A packet travels as the payload of one Engine.IO
``message``::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]

followed, for ``BINARY_EVENT`` / ``BINARY_ACK``, by one binary message per
attachment; the JSON payload holds ``{"_placeholder": true, "num": n}`` where
attachment ``n`` goes.  The namespace is written only when it is not ``/``.

Validity, as the description states it: ``CONNECT`` carries an object or
nothing; ``DISCONNECT`` nothing; ``EVENT`` a non-empty array whose first element
is the event name; ``ACK`` an array; ``CONNECT_ERROR`` (server to client only)
an object.  Anything else is a :class:`~starlette_realtime.exceptions.ProtocolError`,
and the connection closes.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec

from ..exceptions import ProtocolError
from ..limits import MAX_NESTING, nesting_exceeds

#: Largest ack id accepted (JavaScript clients count up from 0; 31 bits as on our own wire).
MAX_ACK_ID: Final = 2**31 - 1
#: Most attachments one packet may announce.
MAX_ATTACHMENTS: Final = 1000
#: Event names a client may not send: the client-side lifecycle events of Socket.IO.
RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


class PacketType(enum.IntEnum):
    """Socket.IO packet types."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_BINARY: Final = {PacketType.EVENT: PacketType.BINARY_EVENT, PacketType.ACK: PacketType.BINARY_ACK}
_PLAIN: Final = {PacketType.BINARY_EVENT: PacketType.EVENT, PacketType.BINARY_ACK: PacketType.ACK}


class Packet(msgspec.Struct):
    """One Socket.IO packet with its payload decoded (``bytes`` where attachments were)."""

    type: PacketType
    nsp: str = "/"
    data: Any = None
    id: int | None = None


_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder()


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, dict) and value.get("_placeholder") is True and isinstance(value.get("num"), int)


def _deconstruct(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        attachments.append(bytes(value))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(value, list | tuple):
        return [_deconstruct(v, attachments) for v in value]
    if isinstance(value, dict):
        return {k: _deconstruct(v, attachments) for k, v in value.items()}
    return value


def _reconstruct(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_reconstruct(v, attachments) for v in value]
    if isinstance(value, dict):
        if _is_placeholder(value):
            num = value["num"]
            if not 0 <= num < len(attachments):
                raise ProtocolError(f"placeholder {num} out of range")
            return attachments[num]
        return {k: _reconstruct(v, attachments) for k, v in value.items()}
    return value


def header(ptype: PacketType, nsp: str, ack_id: int | None, attachments: int = 0) -> str:
    """The text before the JSON payload: type, attachment count, namespace, ack id."""
    parts = [str(int(ptype))]
    if attachments:
        parts.append(f"{attachments}-")
    if nsp != "/":
        parts.append(nsp + ",")
    if ack_id is not None:
        parts.append(str(ack_id))
    return "".join(parts)


def encode(packet: Packet) -> list[str | bytes]:
    """Encode a packet as Engine.IO message payloads: the text packet, then each attachment.

    ``bytes`` anywhere in an ``EVENT`` or ``ACK`` payload turn it into its binary
    variant with placeholders.
    """
    ptype = packet.type
    attachments: list[bytes] = []
    data = packet.data
    if ptype in _BINARY or ptype in _PLAIN:
        data = _deconstruct(data, attachments)
        ptype = _BINARY.get(ptype, ptype) if attachments else _PLAIN.get(ptype, ptype)
    text = header(ptype, packet.nsp, packet.id, len(attachments))
    if data is not None or ptype in _PLAIN:
        text += _json_encoder.encode(data).decode()
    return [text, *attachments]


class Partial(msgspec.Struct):
    """A binary packet whose attachments are still arriving."""

    packet: Packet
    expected: int
    attachments: list[bytes] = []


def _digits(text: str, pos: int) -> int:
    end = pos
    while end < len(text) and text[end].isdigit() and text[end].isascii():
        end += 1
    return end


class Header(msgspec.Struct, frozen=True):
    """What precedes a packet's JSON payload; ``end`` is where the payload starts."""

    type: PacketType
    attachments: int
    nsp: str
    id: int | None
    end: int


def parse_header(text: str, start: int = 0) -> Header:
    """Parse a packet's type, attachment count, namespace and ack id from ``text[start:]``.

    Raises:
        ProtocolError: the type is unknown, a binary packet has no attachment
            count, or the ack id is out of range.
    """
    if len(text) <= start or not text[start].isdigit() or not text[start].isascii():
        raise ProtocolError("missing Socket.IO packet type")
    try:
        ptype = PacketType(int(text[start]))
    except ValueError:
        raise ProtocolError(f"unknown Socket.IO packet type {text[start]!r}") from None
    pos = start + 1
    expected = 0
    if ptype in _PLAIN:
        end = _digits(text, pos)
        if end == pos or end >= len(text) or text[end] != "-":
            raise ProtocolError("binary packet without an attachment count")
        expected = int(text[pos:end])
        if not 0 < expected <= MAX_ATTACHMENTS:
            raise ProtocolError("bad attachment count")
        pos = end + 1
    nsp = "/"
    if text.startswith("/", pos):
        comma = text.find(",", pos)
        end = len(text) if comma < 0 else comma
        nsp = text[pos:end]
        pos = end + 1 if comma >= 0 else end
    ack_id: int | None = None
    end = _digits(text, pos)
    if end > pos:
        if end - pos > 10 or (ack_id := int(text[pos:end])) > MAX_ACK_ID:
            raise ProtocolError("ack id out of range")
        pos = end
    return Header(ptype, expected, nsp, ack_id, pos)


def decode(text: str) -> Packet | Partial:
    """Decode the text part of a packet sent by a client.

    Returns:
        The :class:`Packet`, or a :class:`Partial` when attachments follow.

    Raises:
        ProtocolError: the packet is malformed or not allowed from a client.
    """
    head = parse_header(text)
    ptype, expected, nsp, ack_id, pos = head.type, head.attachments, head.nsp, head.id, head.end
    data: Any = None
    if pos < len(text):
        body = text[pos:]
        # Checked before decoding, as on protocol v1: one answer for every depth, never the stack's.
        if nesting_exceeds(body.encode(), MAX_NESTING + 1, binary=False):
            raise ProtocolError(f"Socket.IO payload nested deeper than {MAX_NESTING} levels")
        try:
            data = _json_decoder.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise ProtocolError("invalid Socket.IO payload") from None
    packet = Packet(ptype, nsp, data, ack_id)
    _validate(packet, binary=bool(expected))
    if expected:
        return Partial(packet, expected)
    return packet


def _validate(packet: Packet, *, binary: bool) -> None:
    ptype, data = packet.type, packet.data
    if ptype is PacketType.CONNECT:
        ok = data is None or isinstance(data, dict)
    elif ptype is PacketType.DISCONNECT:
        ok = data is None
    elif ptype in (PacketType.EVENT, PacketType.BINARY_EVENT):
        ok = isinstance(data, list) and bool(data) and isinstance(data[0], str)
        if ok and data[0] in RESERVED_EVENTS:
            raise ProtocolError(f"reserved event name {data[0]!r}")
    elif ptype in (PacketType.ACK, PacketType.BINARY_ACK):
        ok = isinstance(data, list) and packet.id is not None
    else:  # CONNECT_ERROR only goes from server to client
        ok = False
    if not ok:
        raise ProtocolError(f"invalid {ptype.name} packet")
    if ptype in (PacketType.CONNECT, PacketType.DISCONNECT) and packet.id is not None:
        raise ProtocolError(f"{ptype.name} with an ack id")
    if ptype in _PLAIN and not binary:
        raise ProtocolError(f"{ptype.name} without attachments")


class Decoder:
    """Reassembles packets from successive Engine.IO messages of one connection.

    Feed every ``message`` payload in order; a complete packet comes out when the
    text part (and, for binary packets, its last attachment) has arrived.
    """

    def __init__(self) -> None:
        self._partial: Partial | None = None

    @property
    def waiting(self) -> bool:
        """Whether attachments of a binary packet are still expected."""
        return self._partial is not None

    def feed(self, message: str | bytes) -> Packet | None:
        """Take one Engine.IO message payload; return the packet it completes, if any.

        Raises:
            ProtocolError: the message is malformed, or is text while attachments
                are expected, or binary while none are.
        """
        partial = self._partial
        if isinstance(message, str):
            if partial is not None:
                raise ProtocolError("text packet while binary attachments were expected")
            result = decode(message)
            if isinstance(result, Partial):
                self._partial = result
                return None
            return result
        if partial is None:
            raise ProtocolError("binary message without a packet announcing it")
        partial.attachments.append(bytes(message))
        if len(partial.attachments) < partial.expected:
            return None
        self._partial = None
        packet = partial.packet
        packet.data = _reconstruct(packet.data, partial.attachments)
        return packet

    def __repr__(self) -> str:
        return f"Decoder(waiting={self.waiting})"


class Reassembler:
    """Groups the Engine.IO messages of one binary packet (its text, then its attachments) into one unit.

    A layer that hands one unit per packet to the layer above (which decodes it
    with :func:`decode` and :func:`reconstruct`) feeds it every message from the
    client: Engine.IO texts (``"4..."`` messages, ``"3"`` pongs) and binary
    attachments.  Only binary packets' headers are looked at here.
    """

    def __init__(self) -> None:
        self._parts: list[str | bytes] = []
        #: How many attachments of the current binary packet are still expected.
        self.missing = 0

    @property
    def waiting(self) -> bool:
        """Whether attachments of a binary packet are still expected."""
        return self.missing > 0

    def feed(self, message: str | bytes) -> str | list[str | bytes] | None:
        """Take one message; return a text unit, a completed ``[text, *attachments]`` unit, or ``None``.

        Raises:
            ProtocolError: an attachment nobody announced, a text while attachments
                are expected, or a bad attachment count.
        """
        if isinstance(message, str):
            if self.missing:
                raise ProtocolError("text packet while binary attachments were expected")
            if message[1:2] not in ("5", "6") or message[:1] != "4":
                return message
            end = _digits(message, 2)
            if end == 2 or message[end : end + 1] != "-":
                raise ProtocolError("binary packet without an attachment count")
            count = int(message[2:end])
            if not 0 < count <= MAX_ATTACHMENTS:
                raise ProtocolError("bad attachment count")
            self._parts, self.missing = [message], count
            return None
        if not self.missing:
            raise ProtocolError("binary message without a packet announcing it")
        self._parts.append(message)
        self.missing -= 1
        if self.missing:
            return None
        unit, self._parts = self._parts, []
        return unit


def reconstruct(packet: Packet, attachments: list[bytes]) -> Packet:
    """Put a binary packet's attachments where its placeholders are.

    Raises:
        ProtocolError: a placeholder names an attachment that is not there, or the
            number of attachments differs from the announced count.
    """
    packet.data = _reconstruct(packet.data, attachments)
    return packet


_unit_encoder: Final = msgspec.msgpack.Encoder()
_unit_decoder: Final = msgspec.msgpack.Decoder(tuple[str, list[bytes]])


def pack_unit(unit: list[str | bytes]) -> bytes:
    """Pack a binary packet's text and attachments into the ``bytes`` of one ``websocket.receive``."""
    return _unit_encoder.encode((unit[0], unit[1:]))


def unpack_unit(data: bytes) -> tuple[str, list[bytes]]:
    """Undo :func:`pack_unit`: the packet's text and its attachments.

    Raises:
        ProtocolError: the bytes are not a packed unit.
    """
    try:
        return _unit_decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError:
        raise ProtocolError("not a packed binary packet") from None


__all__ = [
    "MAX_ACK_ID",
    "MAX_ATTACHMENTS",
    "RESERVED_EVENTS",
    "Decoder",
    "Packet",
    "PacketType",
    "Partial",
    "Reassembler",
    "decode",
    "encode",
    "header",
    "pack_unit",
    "reconstruct",
    "unpack_unit",
]
