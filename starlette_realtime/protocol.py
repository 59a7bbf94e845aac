"""The sans-I/O core of a server-side WebSocket: messages in, frames out.

Nothing here awaits, reads a clock or touches a socket; the caller passes the
time in.  :class:`ServerProtocol` validates what a client sends and builds
what the server answers; :func:`heartbeat_action` decides when to ping and
when to give up; :class:`DedupWindow` remembers which client event ids a
session has already handled.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import msgspec

from . import status
from .codec import Codec
from .exceptions import ProtocolError
from .frames import (
    MAX_ACK_ID,
    PROTOCOL_VERSION,
    Ack,
    ClientFrame,
    Connected,
    ConnectError,
    Disconnect,
    Error,
    ErrorInfo,
    Event,
    Hello,
    Ping,
)


class ServerProtocol:
    """Validate client messages and build server frames for one WebSocket.

    Args:
        codec: the encoding negotiated for this WebSocket.
        max_message_size: the largest message accepted, in bytes.
    """

    __slots__ = ("_next_call_id", "_ping", "codec", "max_message_size")

    def __init__(self, codec: Codec, *, max_message_size: int) -> None:
        self.codec = codec
        self.max_message_size = max_message_size
        self._next_call_id = 0
        self._ping: bytes | None = None

    def receive(self, text: str | None, data: bytes | None) -> ClientFrame:
        """Decode one WebSocket message (``text`` for a text frame, ``data`` for binary).

        Raises:
            ProtocolError: with ``close_code`` 1009 for an oversized message, 4501 for
                a message of the wrong kind or one that is not a valid client frame.
        """
        if self.codec.binary:
            if data is None:
                raise ProtocolError("text frame on a binary (MessagePack) connection")
            raw = data
        else:
            if text is None:
                raise ProtocolError("binary frame on a text (JSON) connection")
            raw = text.encode()
        if len(raw) > self.max_message_size:
            raise ProtocolError(
                f"message of {len(raw)} bytes exceeds max_message_size={self.max_message_size}",
                close_code=status.WS_1009_MESSAGE_TOO_BIG,
            )
        return self.codec.decode(raw)

    # Frames the server sends ------------------------------------------------

    def hello(self, *, node: str, ping_interval: float, ping_timeout: float) -> bytes:
        return self.codec.encode(
            Hello(PROTOCOL_VERSION, node, ping_interval, ping_timeout, self.max_message_size)
        )

    def ping(self) -> bytes:
        if self._ping is None:
            self._ping = self.codec.encode(Ping())
        return self._ping

    def connected(
        self, ns: str, sid: str, session: str, *, recovered: bool = False, recovery_failed: bool = False
    ) -> bytes:
        return self.codec.encode(Connected(ns, sid, session, recovered, recovery_failed))

    def connect_error(self, ns: str, code: str, message: str, *, retryable: bool = False) -> bytes:
        return self.codec.encode(ConnectError(ns, code, message, retryable))

    def disconnect(self, ns: str, reason: str = "") -> bytes:
        return self.codec.encode(Disconnect(ns, reason))

    def ack(self, ns: str, ack_id: int, result: Any) -> bytes:
        """Encode an ack carrying a handler's result.

        Raises:
            TypeError: the result cannot be encoded.
        """
        return self.codec.encode(Ack(ns, ack_id, self.codec.encode_payload(result)))

    def ack_error(self, ns: str, ack_id: int, code: str, message: str = "") -> bytes:
        return self.codec.encode(Ack(ns, ack_id, self.codec.null, ErrorInfo(code, message)))

    def error(self, code: str, message: str = "", ns: str | None = None) -> bytes:
        return self.codec.encode(Error(code, message, ns))

    def event(self, ns: str, event: str, data: msgspec.Raw, ack_id: int | None = None) -> bytes:
        return self.codec.encode(Event(ns, event, data, ack_id))

    def next_call_id(self) -> int:
        """Allocate the id of a server-to-client call (wraps within 31 bits)."""
        self._next_call_id = (self._next_call_id + 1) & MAX_ACK_ID
        return self._next_call_id

    def __repr__(self) -> str:
        return f"ServerProtocol(codec={self.codec!r}, max_message_size={self.max_message_size})"


class HeartbeatAction(enum.Enum):
    NONE = 0
    PING = 1
    TIMEOUT = 2


def heartbeat_action(
    now: float,
    *,
    last_received: float,
    ping_sent: float | None,
    last_ping: float,
    interval: float,
    timeout: float,
) -> HeartbeatAction:
    """Decide what the heartbeat scheduler does with one connection.

    Args:
        now: the current time.
        last_received: when the last message arrived from the client.
        ping_sent: when the unanswered ping was sent, or ``None``.
        last_ping: when the last ping was sent (or the connection opened).
        interval: seconds between pings.
        timeout: seconds a ping may stay unanswered.
    """
    if ping_sent is not None and last_received < ping_sent:
        if now - ping_sent >= timeout:
            return HeartbeatAction.TIMEOUT
        return HeartbeatAction.NONE
    if now - last_ping >= interval:
        return HeartbeatAction.PING
    return HeartbeatAction.NONE


class DedupWindow:
    """The event ids one session has handled, with their cached acks.

    Clients send strictly increasing ids; anything at or below ``last_id`` was
    handled already.  Only the most recent ``size`` acks are kept for replay.
    """

    __slots__ = ("_acks", "_size", "last_id")

    def __init__(self, last_id: int = -1, *, size: int = 64) -> None:
        self.last_id = last_id
        # Created on first use: most connections never ack anything.
        self._acks: OrderedDict[int, bytes] | None = None
        self._size = size

    def seen(self, ack_id: int) -> bool:
        """Whether an event with this id was handled already in this session."""
        return ack_id <= self.last_id

    def handled(self, ack_id: int) -> None:
        """Record that an event is being handled (before its handler runs)."""
        if ack_id > self.last_id:
            self.last_id = ack_id

    def remember(self, ack_id: int, ack: bytes) -> None:
        """Keep the encoded ack of an event for replay."""
        acks = self._acks
        if acks is None:
            acks = self._acks = OrderedDict()
        acks[ack_id] = ack
        if len(acks) > self._size:
            acks.popitem(last=False)

    def cached(self, ack_id: int) -> bytes | None:
        return None if self._acks is None else self._acks.get(ack_id)

    def __repr__(self) -> str:
        return f"DedupWindow(last_id={self.last_id}, cached={len(self._acks or ())})"
