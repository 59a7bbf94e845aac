"""The limits a router enforces, and the payload checks made before decoding.

Limits only give verdicts: the session core (:mod:`starlette_realtime.core`)
charges the token buckets (:class:`TokenBucket`, pure: the caller passes the
time) and decides to close a socket.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import msgspec


class Limits(msgspec.Struct, kw_only=True):
    """Limits a router enforces.

    Attributes:
        rate: events per second per connection (``None``: unlimited).
        burst: the bucket size for ``rate``.
        abuse_threshold: rate-limited events in a row after which the WebSocket is closed with 4006.
        max_rooms: application rooms per connection.
        max_namespaces: namespaces per WebSocket.
        max_connections: WebSockets per process (over it: refused with 1013).
        max_connections_per_user: namespace connections per user per process (over it: CONNECT_ERROR
            ``TOO_MANY_CONNECTIONS``, retryable).
        max_payload_bytes: the largest event payload, in encoded bytes (over it: ack error
            ``limit_exceeded``); ``None``: only ``max_message_size`` bounds it.
        max_depth: the deepest nesting of lists and maps in an event payload (over it: ack
            error ``limit_exceeded``), checked before the payload is decoded; ``None``: no check
            of its own.  Whatever it is, a frame whose payload nests deeper than
            :data:`MAX_NESTING` (256) levels is refused before decoding (close 4501 ``bad_frame``).
    """

    rate: float | None = None
    burst: int = 20
    abuse_threshold: int = 50
    max_rooms: int = 128
    max_namespaces: int = 16
    max_connections: int | None = None
    max_connections_per_user: int | None = None
    max_payload_bytes: int | None = None
    max_depth: int | None = 64
    clock: Callable[[], float] = time.monotonic

    def payload_error(self, data: bytes | msgspec.Raw, *, binary: bool) -> str | None:
        """Check an event payload against ``max_payload_bytes`` and ``max_depth`` before it is decoded.

        Args:
            data: the encoded payload.
            binary: ``True`` for MessagePack, ``False`` for JSON.

        Returns:
            ``None`` when it is within the limits, else why not.
        """
        max_bytes = self.max_payload_bytes
        if max_bytes is not None and len(data) > max_bytes:
            return f"payload of {len(data)} bytes exceeds max_payload_bytes={max_bytes}"
        max_depth = self.max_depth
        if max_depth is not None and nesting_exceeds(data, max_depth, binary=binary):
            return f"payload nested deeper than max_depth={max_depth}"
        return None


# Depth checks ---------------------------------------------------------------------
#
# Both scan the encoded bytes without decoding them.  A cheap count in C comes first:
# nesting needs one opening byte per level, so a payload with few of them passes
# at once, and only the rest is walked.

#: The deepest nesting of lists and maps a frame's payload may have, whatever ``max_depth`` says.
#: msgspec decodes recursively and, on CPython 3.11, counts each level against the interpreter's
#: recursion limit (1000) together with the caller's frames, so near that limit the outcome would
#: depend on the stack.  The codecs refuse deeper frames before decoding them (``bad_frame``).
MAX_NESTING = 256

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
#: MessagePack bytes that may open a container: fixmap, fixarray, array 16/32, map 16/32.
_MSGPACK_CONTAINER = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_MSGPACK_NOT_CONTAINER = bytes(b for b in range(256) if b not in _MSGPACK_CONTAINER)
#: MessagePack type byte -> (bytes of the length field, extra bytes) for str, bin and ext,
#: whose bodies are skipped.
_MSGPACK_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),
                  0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}
#: MessagePack type byte -> bytes that follow it, for fixed-size scalars.
_MSGPACK_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
                  0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}


def nesting_exceeds(data: bytes | msgspec.Raw, limit: int, *, binary: bool) -> bool:
    """Tell whether an encoded value nests lists and maps more than ``limit`` levels deep.

    A scalar has depth 0, ``[]`` depth 1, ``[{}]`` depth 2.  Malformed input is not
    judged here (``False``): the decoder refuses it afterwards.

    Args:
        data: a JSON or MessagePack value.
        limit: the deepest nesting allowed.
        binary: ``True`` for MessagePack, ``False`` for JSON.

    Returns:
        ``True`` when the value is nested deeper than ``limit``.
    """
    if len(data) <= limit:  # every level takes at least one byte
        return False
    raw = bytes(data)
    if binary:
        if len(raw.translate(None, _MSGPACK_NOT_CONTAINER)) <= limit:
            return False
        return _msgpack_exceeds(raw, limit)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _JSON_NOT_BRACKET):
        if byte == 0x5B or byte == 0x7B:  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _msgpack_exceeds(raw: bytes, limit: int) -> bool:
    end = len(raw)
    pos = 0
    todo = 1  # values still to read at the current level
    stack: list[int] = []  # values still to read at each enclosing level
    while pos < end:
        b = raw[pos]
        pos += 1
        todo -= 1
        items = -1
        if b <= 0x7F or b >= 0xE0:
            pass
        elif b <= 0x8F:
            items = (b & 0x0F) * 2
        elif b <= 0x9F:
            items = b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F
        elif b in _MSGPACK_FIXED:
            pos += _MSGPACK_FIXED[b]
        elif b in _MSGPACK_SIZED:
            width, extra = _MSGPACK_SIZED[b]
            pos += width + extra + int.from_bytes(raw[pos : pos + width], "big")
        elif 0xDC <= b <= 0xDF:
            width = 2 if b in (0xDC, 0xDE) else 4
            items = int.from_bytes(raw[pos : pos + width], "big") * (2 if b >= 0xDE else 1)
            pos += width
        else:  # 0xC1 is never used: malformed
            return False
        if items >= 0:
            stack.append(todo)
            if len(stack) > limit:
                return True
            todo = items
        while todo == 0:
            if not stack:
                return False
            todo = stack.pop()
    return False


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up.  Pure: the caller passes the time."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token; ``False`` when the bucket is empty."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self.tokens:.1f})"
