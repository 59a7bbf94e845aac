"""Encodings of the wire frames: JSON text frames and MessagePack binary frames.

Each :class:`Codec` builds its msgspec encoder and decoders once; nothing is
constructed per message.  Decoding happens in two steps: :meth:`Codec.decode`
turns a WebSocket message into a frame whose payload is still ``msgspec.Raw``,
and the handler later decodes the payload with its own cached typed decoder
(:meth:`Codec.payload_decoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .exceptions import ProtocolError
from .frames import ClientFrame, Event, Frame
from .limits import MAX_NESTING, nesting_exceeds
from .validation import enc_hook

if TYPE_CHECKING:  # the client imports this module and must not load the backends
    from .backends.base import Publication

JSON_SUBPROTOCOL: Final = "rt.v1.json"
MSGPACK_SUBPROTOCOL: Final = "rt.v1.msgpack"


class Codec:
    """Protocol v1 in one encoding: msgspec's JSON or MessagePack module, every encoder and decoder built once.

    A :class:`~starlette_realtime.wire.Wire`.

    Attributes:
        subprotocol: the WebSocket subprotocol that selects this encoding (also its ``name``).
        binary: whether messages travel as binary (``True``) or text frames.
        null: the literal encoding of ``None``, used for empty payloads.
    """

    subprotocol: str
    binary: bool
    null: msgspec.Raw

    def __init__(self, module: Any) -> None:
        self._module = module
        # enc_hook only runs for values msgspec cannot encode itself (Pydantic models).
        self._encoder = module.Encoder(enc_hook=enc_hook)
        self._client_decoder = module.Decoder(ClientFrame)
        self._any_decoder = module.Decoder(Frame)
        self._payload_decoders: dict[Any, Callable[[bytes], Any]] = {}

    def encode(self, frame: Frame) -> bytes:
        """Encode a frame to the bytes of one WebSocket message."""
        return self._encoder.encode(frame)  # type: ignore[no-any-return]

    def encode_payload(self, value: Any) -> msgspec.Raw:
        """Encode an application payload once, to embed it in frames without re-encoding.

        Raises:
            TypeError: the value cannot be encoded.
        """
        if value is None:
            return self.null
        return msgspec.Raw(self._encoder.encode(value))

    @property
    def name(self) -> str:
        """The wire's name: its subprotocol."""
        return self.subprotocol

    def receive(self, text: str | None, data: bytes | None) -> ClientFrame:
        """Decode one WebSocket message (``text`` for a text frame, ``data`` for binary).

        Raises:
            ProtocolError: a message of the wrong kind, or not a valid client frame.
        """
        if self.binary:
            if data is None:
                raise ProtocolError("text frame on a binary (MessagePack) connection")
            return self.decode(data)
        if text is None:
            raise ProtocolError("binary frame on a text (JSON) connection")
        # The hot path: msgspec decodes the str itself; the depth check encodes only a message
        # with enough brackets to be too deep.
        if text.count("[") + text.count("{") > _FRAME_DEPTH and nesting_exceeds(
            text.encode(), _FRAME_DEPTH, binary=False
        ):
            raise ProtocolError(f"frame nested too deeply (a payload over {MAX_NESTING} levels)")
        try:
            return self._client_decoder.decode(text)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError is a DecodeError
            raise _frame_error(exc) from None

    def publication(self, pub: Publication, data: msgspec.Raw | None = None) -> tuple[dict[str, Any], int]:
        """Encode a room publication as an EVENT frame, as a shareable ASGI message and its size."""
        if data is None:
            data = msgspec.Raw(pub.data) if not self.binary else self.from_json(msgspec.Raw(pub.data))
        if pub.offset:
            frame = Event(pub.ns, pub.event, data, None, pub.room, pub.epoch, pub.offset)
        else:
            frame = Event(pub.ns, pub.event, data, None, pub.room)
        raw = self._encoder.encode(frame)
        return self.message(raw), len(raw)

    def to_json(self, raw: msgspec.Raw) -> msgspec.Raw:
        """Convert a payload of this encoding to JSON."""
        if not self.binary:
            return raw
        return msgspec.Raw(msgspec.json.encode(msgspec.msgpack.decode(raw)))

    def from_json(self, raw: msgspec.Raw) -> msgspec.Raw:
        """Convert a JSON payload to this encoding."""
        if not self.binary:
            return raw
        return msgspec.Raw(msgspec.msgpack.encode(msgspec.json.decode(raw)))

    def decode(self, data: bytes) -> ClientFrame:
        """Decode a client message into a frame.

        Raises:
            ProtocolError: the message is not a valid client frame.
        """
        return _wrap_decode(self._client_decoder.decode, data, self.binary)  # type: ignore[no-any-return]

    def decode_any(self, data: bytes) -> Frame:
        """Decode any frame (used by clients).

        Raises:
            ProtocolError: the message is not a valid frame.
        """
        return _wrap_decode(self._any_decoder.decode, data, self.binary)  # type: ignore[no-any-return]

    def payload_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        """Return a cached decoder for payloads of type ``tp``."""
        dec = self._payload_decoders.get(tp)
        if dec is None:
            dec = self._payload_decoders[tp] = self._module.Decoder(tp).decode
        return dec

    def message(self, data: bytes) -> dict[str, Any]:
        """Wrap encoded bytes into an ASGI ``websocket.send`` message.

        The message may be shared by every receiver of a broadcast.
        """
        if self.binary:
            return {"type": "websocket.send", "bytes": data}
        return {"type": "websocket.send", "text": data.decode()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The deepest a client frame may nest: its payload sits one level inside the frame's array.
_FRAME_DEPTH: Final = MAX_NESTING + 1


def _wrap_decode(fn: Callable[[bytes], Any], data: bytes, binary: bool) -> Any:
    # Payloads sit one level inside the frame's array.  Checked first, so that msgspec never
    # nears the recursion limit and every depth has one answer (limits.MAX_NESTING).
    if nesting_exceeds(data, MAX_NESTING + 1, binary=binary):
        raise ProtocolError(f"frame nested too deeply (a payload over {MAX_NESTING} levels)")
    try:
        return fn(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _frame_error(exc) from None


def _frame_error(exc: Exception) -> ProtocolError:
    """The protocol error for a message msgspec could not decode into a frame."""
    if isinstance(exc, msgspec.ValidationError):
        return ProtocolError(f"invalid frame: {exc}")
    if isinstance(exc, RecursionError):
        # Only with a recursion limit lowered far below the default: msgspec raises this, not DecodeError.
        return ProtocolError("frame nested too deeply")
    return ProtocolError(f"undecodable frame: {exc}")


class JsonCodec(Codec):
    """JSON in text frames (``rt.v1.json``)."""

    subprotocol = JSON_SUBPROTOCOL
    binary = False
    null = msgspec.Raw(b"null")

    def __init__(self) -> None:
        super().__init__(msgspec.json)


class MsgpackCodec(Codec):
    """MessagePack in binary frames (``rt.v1.msgpack``)."""

    subprotocol = MSGPACK_SUBPROTOCOL
    binary = True
    null = msgspec.Raw(b"\xc0")

    def __init__(self) -> None:
        super().__init__(msgspec.msgpack)


def codecs() -> dict[str, Codec]:
    """Build one codec per supported subprotocol (one set per router, none global)."""
    return {c.subprotocol: c for c in (JsonCodec(), MsgpackCodec())}
