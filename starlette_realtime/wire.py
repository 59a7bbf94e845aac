"""The wire seam: how one protocol turns socket messages into frames and frames into messages.

The session core, the handlers, rooms, presence, recovery and the backends speak
in :mod:`~starlette_realtime.frames` (protocol v1's frames are the library's
vocabulary).  A :class:`Wire` is everything that depends on the protocol on the
socket: decoding a client's message into a frame, encoding a server frame, the
encoding of payloads, and framing a room publication once for every receiver.
Protocol v1's two encodings (:class:`~starlette_realtime.codec.JsonCodec`,
:class:`~starlette_realtime.codec.MsgpackCodec`) are wires; a second protocol
(Socket.IO v5 on Engine.IO) is another.  docs/architecture.md shows how to add one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

from .backends.base import Publication
from .frames import ClientFrame, Frame


@runtime_checkable
class Wire(Protocol):
    """One wire protocol with one payload encoding.

    Attributes:
        name: the WebSocket subprotocol (or wire name) that selects it.
        binary: whether payloads are MessagePack (``True``) or JSON.
        null: the encoding of ``None`` as a payload.
    """

    @property
    def name(self) -> str: ...

    @property
    def binary(self) -> bool: ...

    @property
    def null(self) -> msgspec.Raw: ...

    def receive(self, text: str | None, data: bytes | None) -> ClientFrame:
        """Decode one socket message into a client frame.

        Raises:
            ProtocolError: the message is of the wrong kind or not a valid client frame.
        """
        ...

    def encode(self, frame: Frame) -> bytes:
        """Encode a server frame into the bytes of one socket message."""
        ...

    def message(self, data: bytes) -> dict[str, Any]:
        """Wrap encoded bytes into an ASGI ``websocket.send`` message (shareable between receivers)."""
        ...

    def encode_payload(self, value: Any) -> msgspec.Raw:
        """Encode an application payload once (``None`` becomes :attr:`null`).

        Raises:
            TypeError: the value cannot be encoded.
        """
        ...

    def payload_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        """A cached decoder of payloads into type ``tp``."""
        ...

    def publication(self, pub: Publication, data: msgspec.Raw | None = None) -> tuple[dict[str, Any], int]:
        """An EVENT for a room publication, framed once and shared by every receiver of this wire.

        Args:
            pub: the publication (its payload is JSON).
            data: the payload already in this wire's encoding (an outgoing filter's output).

        Returns:
            The ASGI message and its size in bytes.
        """
        ...

    def to_json(self, raw: msgspec.Raw) -> msgspec.Raw:
        """Convert a payload of this wire's encoding to JSON (for what is kept across wires)."""
        ...

    def from_json(self, raw: msgspec.Raw) -> msgspec.Raw:
        """Convert a JSON payload to this wire's encoding."""
        ...


__all__ = ["Wire"]
