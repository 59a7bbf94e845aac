"""Engine.IO v4 packets, polling payloads, the handshake and its errors (sans-I/O).

Written from the published protocol description (``socketio/engine.io-protocol``,
README of version 4).  An Engine.IO packet is a type digit and an optional
payload.  On a WebSocket each packet is one frame: a text frame starts with the
type digit, a binary frame is a ``message`` packet whose payload is the frame as
is.  Over HTTP long-polling several packets travel in one body separated by the
record separator ``\\x1e``, and a binary payload is written ``b`` + base64.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import msgspec

from ..exceptions import ProtocolError

#: The only Engine.IO version served (``EIO=4``: Socket.IO v3 and later clients).
VERSION: Final = "4"
RECORD_SEPARATOR: Final = "\x1e"
TRANSPORTS: Final = ("polling", "websocket")


class PacketType(enum.IntEnum):
    """Engine.IO packet types; the digit that starts every text packet."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class Packet(msgspec.Struct, frozen=True):
    """One Engine.IO packet: a type and its payload (text, bytes for a binary message, or empty)."""

    type: PacketType
    data: str | bytes = ""


_TYPES: Final = {str(t.value): t for t in PacketType}

OPEN: Final = Packet(PacketType.OPEN)
CLOSE: Final = Packet(PacketType.CLOSE)
PING: Final = Packet(PacketType.PING)
PONG: Final = Packet(PacketType.PONG)
NOOP: Final = Packet(PacketType.NOOP)
PROBE: Final = "probe"


def encode_ws(packet: Packet) -> str | bytes:
    """Encode a packet as the content of one WebSocket frame (``bytes`` means a binary frame)."""
    if isinstance(packet.data, bytes):
        return packet.data
    return f"{packet.type.value}{packet.data}"


def decode_ws(text: str | None, data: bytes | None) -> Packet:
    """Decode one WebSocket frame into a packet.

    Raises:
        ProtocolError: the frame is empty or starts with no known packet type.
    """
    if data is not None:
        return Packet(PacketType.MESSAGE, bytes(data))
    if not text:
        raise ProtocolError("empty Engine.IO packet")
    ptype = _TYPES.get(text[0])
    if ptype is None:
        raise ProtocolError(f"unknown Engine.IO packet type {text[0]!r}")
    return Packet(ptype, text[1:])


def encode_polling_packet(packet: Packet) -> str:
    """Encode a packet for a polling body: binary payloads become ``b`` + base64."""
    if isinstance(packet.data, bytes):
        return "b" + base64.b64encode(packet.data).decode("ascii")
    return f"{packet.type.value}{packet.data}"


def encode_payload(packets: Iterable[Packet]) -> bytes:
    """Encode packets as one HTTP long-polling body (UTF-8, ``\\x1e``-separated)."""
    return RECORD_SEPARATOR.join(map(encode_polling_packet, packets)).encode()


def decode_payload(body: bytes) -> list[Packet]:
    """Decode an HTTP long-polling body into its packets.

    Raises:
        ProtocolError: the body is not UTF-8, or one of its packets is empty, of
            an unknown type or badly base64-encoded.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ProtocolError("polling payload is not UTF-8") from None
    packets = []
    for part in text.split(RECORD_SEPARATOR):
        if part[:1] == "b":
            try:
                packets.append(Packet(PacketType.MESSAGE, base64.b64decode(part[1:], validate=True)))
            except (binascii.Error, ValueError):  # ValueError: a character that is not ASCII
                raise ProtocolError("bad base64 in a binary polling packet") from None
        else:
            packets.append(decode_ws(part, None))
    return packets


def payload_frames(payload: str) -> list[str | bytes]:
    """Split a polling payload into WebSocket frames: text packets as they are, ``b`` + base64 as bytes."""
    if RECORD_SEPARATOR not in payload and payload[:1] != "b":
        return [payload]
    return [base64.b64decode(p[1:]) if p[:1] == "b" else p for p in payload.split(RECORD_SEPARATOR)]


class Handshake(msgspec.Struct, frozen=True):
    """The payload of the ``open`` packet, in milliseconds as the protocol states them."""

    sid: str
    upgrades: list[str]
    pingInterval: int  # the protocol spells these in camelCase
    pingTimeout: int
    maxPayload: int


_handshake_encoder: Final = msgspec.json.Encoder()


def open_packet(
    sid: str, *, upgrades: list[str], ping_interval: float, ping_timeout: float, max_payload: int
) -> Packet:
    """Build the ``open`` packet that starts a session (intervals in seconds)."""
    hs = Handshake(sid, upgrades, round(ping_interval * 1000), round(ping_timeout * 1000), max_payload)
    return Packet(PacketType.OPEN, _handshake_encoder.encode(hs).decode())


class RequestError(enum.IntEnum):
    """Handshake errors with the numeric codes the reference server puts in its HTTP 400 body."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5

    @property
    def message(self) -> str:
        """The human text sent with the code."""
        return _MESSAGES[self]

    @property
    def http_status(self) -> int:
        """The HTTP status of the refusal (403 for ``FORBIDDEN``, 400 otherwise)."""
        return 403 if self is RequestError.FORBIDDEN else 400

    def body(self) -> bytes:
        """The JSON body ``{"code": .., "message": ..}`` of the refusal."""
        return _error_encoder.encode({"code": int(self), "message": self.message})


_MESSAGES: Final = {
    RequestError.UNKNOWN_TRANSPORT: "Transport unknown",
    RequestError.UNKNOWN_SID: "Session ID unknown",
    RequestError.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    RequestError.BAD_REQUEST: "Bad request",
    RequestError.FORBIDDEN: "Forbidden",
    RequestError.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}
_error_encoder: Final = msgspec.json.Encoder()


class Request(msgspec.Struct, frozen=True):
    """What an accepted Engine.IO request asks for: a transport, and the session it belongs to if any."""

    transport: str
    sid: str | None


def check_request(
    method: str,
    query: Mapping[str, str],
    *,
    websocket: bool,
    session_transport: Callable[[str], str | None],
) -> Request | RequestError:
    """Validate an Engine.IO request before any session state is touched.

    Args:
        method: the HTTP method (``GET`` for a WebSocket upgrade).
        query: the query parameters (``EIO``, ``transport``, ``sid``).
        websocket: whether the request is a WebSocket upgrade.
        session_transport: returns the current transport of a session id, or
            ``None`` when the id is unknown.

    Returns:
        The accepted :class:`Request`, or the :class:`RequestError` to answer with.
    """
    transport = query.get("transport")
    if transport not in TRANSPORTS or (transport == "websocket") != websocket:
        return RequestError.UNKNOWN_TRANSPORT
    if query.get("EIO") != VERSION:
        return RequestError.UNSUPPORTED_PROTOCOL_VERSION
    sid = query.get("sid")
    if sid is None:
        if method != "GET":
            return RequestError.BAD_HANDSHAKE_METHOD
        return Request(transport, None)
    current = session_transport(sid)
    if current is None:
        return RequestError.UNKNOWN_SID
    if current != transport and not (websocket and current == "polling"):
        # A polling request for a session that has upgraded to WebSocket.
        return RequestError.BAD_REQUEST
    if not websocket and method not in ("GET", "POST"):
        return RequestError.BAD_REQUEST
    return Request(transport, sid)


__all__ = [
    "CLOSE",
    "NOOP",
    "OPEN",
    "PING",
    "PONG",
    "PROBE",
    "RECORD_SEPARATOR",
    "TRANSPORTS",
    "VERSION",
    "Handshake",
    "Packet",
    "PacketType",
    "Request",
    "RequestError",
    "check_request",
    "decode_payload",
    "decode_ws",
    "encode_payload",
    "encode_polling_packet",
    "encode_ws",
    "open_packet",
    "payload_frames",
]
