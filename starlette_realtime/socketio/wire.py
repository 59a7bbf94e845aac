"""The Socket.IO v5 wire: Socket.IO packets to and from the core's frames (protocol v1's vocabulary).

What comes in is one Engine.IO packet per ASGI message, as :class:`~.asgi.EngineIO`
hands them over: ``"3"`` (a pong), ``"4<socket.io packet>"``, or the bytes of a
binary packet grouped with its attachments.  What goes out is an Engine.IO
polling payload (``\\x1e``-separated, attachments as ``b`` + base64), which the
transport writes to a GET body or splits into WebSocket frames.

The mapping, decided here and documented in docs/socketio.md:

- ``CONNECT {auth}`` -> ``Connect(ns, auth)``; ``pid`` / ``offset`` in the auth
  are the session string and the stream position of connection state recovery;
  ``Connected`` -> ``CONNECT {sid, pid}``; ``ConnectError`` ->
  ``CONNECT_ERROR {message, data: {code, retryable}}``.
- ``EVENT [name, *args]`` -> ``Event(ns, name, payload)``: no argument is ``null``,
  one argument is the payload itself, several are one JSON array (a handler
  typed ``tuple[A, B]`` gets them typed).  ``ACK [*args]`` -> ``Ack`` the same way.
- Server ``Event`` -> ``EVENT [name, payload]`` (``[name]`` for ``null``), an
  :class:`Args` payload spreads into several arguments; ``Ack`` -> ``ACK [payload]``;
  an error ack -> ``ACK [{"error": {"code", "message"}}]``.
- ``bytes`` from a client arrive in the JSON payload as base64 strings (a handler
  typed ``bytes`` gets bytes); ``bytes`` in a payload the server sends to one
  connection become attachments (a ``BINARY_EVENT`` / ``BINARY_ACK``).
- ``Ping`` -> ``"2"``, ``"3"`` -> ``Pong``; ``Hello`` and ``Error`` frames have no
  Socket.IO form and are sent as nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Final

import msgspec

from .. import status
from ..backends.base import Publication
from ..exceptions import ProtocolError
from ..frames import Ack, ClientFrame, Connect, Connected, ConnectError, Disconnect, Event, Frame, Ping, Pong
from . import packets
from .packets import PacketType
from .recovery import RecoveryAuth, decode_offset, encode_offset

NAME: Final = "socket.io"
#: Marks a base64 string that stands for bytes the server sends (see :meth:`SocketIOWire.encode_payload`).
# A member read through its Enum class costs ~0.2 us on CPython 3.11 (EnumType.__getattr__, 12x a global):
# the per-packet paths read these module constants instead (the same objects).
_EVENT, _BINARY_EVENT = PacketType.EVENT, PacketType.BINARY_EVENT
_ACK, _BINARY_ACK = PacketType.ACK, PacketType.BINARY_ACK
_CONNECT, _DISCONNECT = PacketType.CONNECT, PacketType.DISCONNECT

_BIN: Final = "\x00sio-bin:"
_BIN_JSON: Final = b'"\\u0000sio-bin:'
_EMPTY: Final = b""


class Args(tuple[Any, ...]):
    """Several Socket.IO arguments in one payload: ``return Args(a, b)`` acks with two arguments.

    On protocol v1 (our own clients) it is an ordinary array.
    """

    __slots__ = ()

    def __new__(cls, *values: Any) -> Args:
        return super().__new__(cls, values)


def _mark_bytes(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return _BIN + base64.b64encode(value).decode()
    if isinstance(value, list | tuple):
        return [_mark_bytes(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark_bytes(v) for k, v in value.items()}
    return value


def _unmark_bytes(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_BIN):
        return base64.b64decode(value[len(_BIN) :])
    if isinstance(value, list):
        return [_unmark_bytes(v) for v in value]
    if isinstance(value, dict):
        return {k: _unmark_bytes(v) for k, v in value.items()}
    return value


def _has_bytes(value: Any) -> bool:
    # Runs on every payload the server encodes: flat containers of scalars (the common case) cost no call per item.
    kind = type(value)
    if kind in _SCALARS:
        return False
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple or kind is Args:
        items = value
    else:
        return isinstance(value, bytes | bytearray | memoryview)
    for item in items:  # noqa: SIM110 - a loop, not any() over a generator: this runs per payload
        if type(item) not in _SCALARS and _has_bytes(item):
            return True
    return False


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


class SocketIOWire:
    """Socket.IO v5 packets <-> protocol v1 frames, payloads in JSON.

    One instance serves every Socket.IO connection of a router: it holds only
    encoders, decoders and caches, no per-connection state.

    Args:
        recovery: whether CONNECT replies carry ``pid`` and room events carry
            their stream position as a last argument (what Socket.IO 4.6+ clients
            send back to recover), as a Socket.IO server does with
            ``connectionStateRecovery``; off, events carry exactly the arguments emitted.
    """

    name = NAME
    binary = False
    null = msgspec.Raw(b"null")

    def __init__(self, *, recovery: bool = False) -> None:
        self.recovery = recovery
        self._encoder = msgspec.json.Encoder()
        self._args = msgspec.json.Decoder(list[msgspec.Raw])
        self._name = msgspec.json.Decoder(str)
        self._auth = msgspec.json.Decoder(dict[str, msgspec.Raw])
        self._recovery_auth = msgspec.json.Decoder(RecoveryAuth)
        self._any = msgspec.json.Decoder()
        self._payload_decoders: dict[Any, Callable[[bytes], Any]] = {}

    # -- client -> server -----------------------------------------------------

    def receive(self, text: str | None, data: bytes | None) -> ClientFrame:
        """Decode one Engine.IO packet (or a binary packet with its attachments) into a client frame.

        Raises:
            ProtocolError: the packet is malformed or not allowed from a client.
        """
        if text is not None:
            kind = text[1:2]
            if (kind == "2" or kind == "3") and text[:1] == "4":
                fast = self._plain(text, kind == "2")
                if fast is not None:
                    return fast
            if text == "3":
                return Pong()
            if text[:1] != "4":
                raise ProtocolError("not an Engine.IO message")
            head = packets.parse_header(text, 1)
            if head.attachments:
                raise ProtocolError("binary packet without its attachments")
            return self._frame(head, text[head.end :].encode())
        if data is None:
            raise ProtocolError("empty message")
        unit_text, attachments = packets.unpack_unit(data)
        head = packets.parse_header(unit_text, 1)
        if head.attachments != len(attachments):
            raise ProtocolError("attachment count differs from the packet's")
        body = packets.decode(unit_text[1:])
        if not isinstance(body, packets.Partial):
            raise ProtocolError("binary packet without attachments")
        packet = packets.reconstruct(body.packet, attachments)
        return self._frame(head, self._encoder.encode(packet.data))

    def _plain(self, text: str, event: bool) -> ClientFrame | None:
        """EVENT or ACK on the main namespace, the common case, parsed without a header object (``None``: not one)."""
        pos = text.find("[", 2, 13)
        if pos < 0:
            return None  # a namespace, no payload, or a long id: the general path decides
        ack_id = None
        if pos > 2:
            digits = text[2:pos]
            if not (digits.isascii() and digits.isdigit()):
                return None
            ack_id = int(digits)
            if ack_id > packets.MAX_ACK_ID:
                return None
        args = self._decode_args(text[pos:].encode())
        if event:
            if not args:
                raise ProtocolError("EVENT without an event name")
            try:
                name = self._name.decode(args[0])
            except msgspec.ValidationError:
                raise ProtocolError("EVENT whose first element is not a name") from None
            if name in packets.RESERVED_EVENTS:
                raise ProtocolError(f"reserved event name {name!r}")
            return Event("/", name, self._payload(args, 1), ack_id)
        if ack_id is None:
            raise ProtocolError("ACK without an id")
        return Ack("/", ack_id, self._payload(args, 0))

    def _frame(self, head: packets.Header, body: bytes) -> ClientFrame:
        kind, ns = head.type, head.nsp
        if kind is _EVENT or kind is _BINARY_EVENT:
            args = self._decode_args(body)
            if not args:
                raise ProtocolError("EVENT without an event name")
            try:
                name = self._name.decode(args[0])
            except msgspec.ValidationError:
                raise ProtocolError("EVENT whose first element is not a name") from None
            if name in packets.RESERVED_EVENTS:
                raise ProtocolError(f"reserved event name {name!r}")
            return Event(ns, name, self._payload(args, 1), head.id)
        if kind is _ACK or kind is _BINARY_ACK:
            if head.id is None:
                raise ProtocolError("ACK without an id")
            return Ack(ns, head.id, self._payload(self._decode_args(body), 0))
        if head.id is not None:
            raise ProtocolError(f"{kind.name} with an ack id")
        if kind is _CONNECT:
            return self._connect(ns, body)
        if kind is _DISCONNECT and not body:
            return Disconnect(ns)
        raise ProtocolError(f"invalid {kind.name} packet from a client")

    def _decode_args(self, body: bytes) -> list[msgspec.Raw]:
        try:
            return self._args.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise ProtocolError("payload is not a JSON array") from None

    def _payload(self, args: list[msgspec.Raw], start: int) -> msgspec.Raw:
        count = len(args) - start
        if count <= 0:
            return self.null
        if count == 1:
            return args[start]
        return msgspec.Raw(b"[" + b",".join(args[start:]) + b"]")

    def _connect(self, ns: str, body: bytes) -> Connect:
        if not body:
            return Connect(ns, self.null)
        try:
            fields = self._auth.decode(body)
            recovery = self._recovery_auth.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise ProtocolError("CONNECT payload is not an object") from None
        positions = decode_offset(recovery.offset) if recovery.offset else None
        if recovery.pid is None:
            return Connect(ns, msgspec.Raw(body))
        fields.pop("pid", None)
        fields.pop("offset", None)
        return Connect(ns, msgspec.Raw(self._encoder.encode(fields)), recovery.pid, positions)

    # -- server -> client ---------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        """Encode a server frame as an Engine.IO payload (empty when it has no Socket.IO form)."""
        kind = type(frame)
        if kind is Event:
            assert isinstance(frame, Event)
            return self._event(frame.ns, frame.event, frame.data, frame.id, None)
        if kind is Ack:
            assert isinstance(frame, Ack)
            if frame.error is None and frame.ns == "/":
                raw = bytes(frame.data)
                if raw[:1] != b"\x00" and _BIN_JSON not in raw:  # one plain argument, the common case
                    return b"43%d[]" % frame.id if raw == b"null" else b"43%d[%b]" % (frame.id, raw)
            if frame.error is not None:
                failed = {"error": {"code": frame.error.code, "message": frame.error.message}}
                data = msgspec.Raw(self._encoder.encode(failed))
            else:
                data = frame.data
            return self._packet(_ACK, frame.ns, frame.id, self._args_json(data))
        if kind is Ping:
            return b"2"
        if kind is Connected:
            assert isinstance(frame, Connected)
            reply: dict[str, str | bool] = {"sid": frame.sid}
            if self.recovery:
                reply["pid"] = frame.session
                if frame.recovered:
                    # For the transport to echo the pid the client presented (see recovery.RecoveryEcho).
                    reply["recovered"] = True
            return self._packet(PacketType.CONNECT, frame.ns, None, self._encoder.encode(reply))
        if kind is ConnectError:
            assert isinstance(frame, ConnectError)
            # The reference server's words for an unknown namespace, which clients may test for.
            text = "Invalid namespace" if frame.code == status.UNKNOWN_NAMESPACE else frame.message or frame.code
            refusal = {"message": text, "data": {"code": frame.code, "retryable": frame.retryable}}
            return self._packet(PacketType.CONNECT_ERROR, frame.ns, None, self._encoder.encode(refusal))
        if kind is Disconnect:
            assert isinstance(frame, Disconnect)
            return b"41" + (frame.ns.encode() + b"," if frame.ns != "/" else _EMPTY)
        return _EMPTY

    def _packet(self, kind: PacketType, ns: str, ack_id: int | None, body: bytes) -> bytes:
        head = "4" + packets.header(kind, ns, ack_id)
        if _BIN_JSON in body:
            return self._binary(head, kind, ns, ack_id, body)
        return head.encode() + body

    def _binary(self, head: str, kind: PacketType, ns: str, ack_id: int | None, body: bytes) -> bytes:
        data = _unmark_bytes(self._any.decode(body))
        text, *attachments = packets.encode(packets.Packet(kind, ns, data, ack_id))
        parts = ["4" + str(text)] + ["b" + base64.b64encode(a).decode() for a in attachments if isinstance(a, bytes)]
        return "\x1e".join(parts).encode()

    def _args_json(self, data: msgspec.Raw) -> bytes:
        raw = bytes(data)
        if raw == b"null":
            return b"[]"
        if raw[:1] == b"\x00":  # Args: already an array of arguments
            return raw[1:]
        return b"[" + raw + b"]"

    def _event(self, ns: str, event: str, data: msgspec.Raw, ack_id: int | None, offset: str | None) -> bytes:
        name = self._encoder.encode(event)
        raw = bytes(data)
        if raw == b"null":
            args = b"[" + name
        elif raw[:1] == b"\x00":
            inner = raw[2:-1]
            args = b"[" + name + (b"," + inner if inner else _EMPTY)
        else:
            args = b"[" + name + b"," + raw
        if offset is not None:
            args += b"," + self._encoder.encode(offset)
        return self._packet(_EVENT, ns, ack_id, args + b"]")

    def message(self, data: bytes) -> dict[str, Any]:
        """Wrap an encoded payload into an ASGI ``websocket.send`` message (shareable between receivers)."""
        return {"type": "websocket.send", "text": data.decode()}

    def publication(self, pub: Publication, data: msgspec.Raw | None = None) -> tuple[dict[str, Any], int]:
        """An EVENT for a room publication, framed once for every Socket.IO receiver.

        With recovery on, a publication with a stream position carries it as a
        last argument (Socket.IO clients keep the last one and send it back).
        """
        payload = data if data is not None else msgspec.Raw(pub.data)
        offset = encode_offset(pub.room, pub.epoch, pub.offset) if self.recovery and pub.offset else None
        raw = self._event(pub.ns, pub.event, payload, None, offset)
        return self.message(raw), len(raw)

    # -- payloads -----------------------------------------------------------

    def encode_payload(self, value: Any) -> msgspec.Raw:
        """Encode a payload once: JSON, with ``bytes`` marked to become attachments and :class:`Args` spread.

        Raises:
            TypeError: the value cannot be encoded.
        """
        if value is None:
            return self.null
        if isinstance(value, Args):
            items = [_mark_bytes(v) for v in value] if _has_bytes(value) else list(value)
            return msgspec.Raw(b"\x00" + self._encode(items))
        if _has_bytes(value):
            value = _mark_bytes(value)
        return msgspec.Raw(self._encode(value))

    def _encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except msgspec.EncodeError as exc:
            raise TypeError(str(exc)) from None

    def payload_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        """A cached decoder of JSON payloads into type ``tp``."""
        dec = self._payload_decoders.get(tp)
        if dec is None:
            dec = self._payload_decoders[tp] = msgspec.json.Decoder(tp).decode
        return dec

    def to_json(self, raw: msgspec.Raw) -> msgspec.Raw:
        """Payloads are JSON already (``bytes`` markers become plain base64 strings)."""
        data = bytes(raw)
        if data[:1] != b"\x00" and _BIN_JSON not in data:
            return raw
        if data[:1] == b"\x00":
            data = data[1:]
        if _BIN_JSON in data:
            data = self._encoder.encode(_unmark_bytes(self._any.decode(data)))
        return msgspec.Raw(data)

    def from_json(self, raw: msgspec.Raw) -> msgspec.Raw:
        """Payloads are JSON already."""
        return raw

    def __repr__(self) -> str:
        return f"SocketIOWire(recovery={self.recovery})"


__all__ = ["NAME", "Args", "SocketIOWire"]
