"""Pre-framed WebSocket writes: a broadcast framed once, the same bytes written to every socket.

A server-to-client WebSocket frame is not masked, so with per-message
compression off the bytes of one frame are a valid frame on every socket.  A
server that can take such bytes offers the ASGI extension :data:`EXTENSION` in
``scope["extensions"]``; the library's own uvicorn protocol
(:mod:`starlette_realtime.fastpath.uvicorn`) does.  Its value is a dict with
two callables, both taking one complete frame (see :func:`ws_frame`):

``write(frame) -> bool``
    Writes the frame now and returns ``True``; returns ``False``, having written
    nothing, while the server applies flow control (its transport is paused).
    Never awaits.
``send(frame)`` (a coroutine function)
    Waits while the transport is paused, then writes: the ``websocket.send``
    path of the ASGI ``send`` callable without the framing.

Both fail as that ``send`` fails: an error once the peer is gone or after
``websocket.close``.  A third callable is optional:

``intercept(payload, binary, callback)``
    From now on, a whole message from the client whose payload is exactly
    ``payload`` (and whose type, binary or text, matches) is not queued for the
    application: the server calls ``callback()`` from its reader instead.  The
    library hands it its heartbeat answer (the PONG frame), so that an idle
    socket's heartbeat wakes no task.  A later call replaces the earlier one.

This module is pure (no server import): a server without
the extension, such as hypercorn or Starlette's ``TestClient``, simply leaves
it out and the library sends ASGI messages.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["EXTENSION", "Preframed", "message_frame", "preframed", "ws_frame"]

#: The name of the extension in ``scope["extensions"]``.
EXTENSION = "starlette_realtime.preframed"

# First header byte: FIN set, no RSV bits (no compression), the opcode.
_TEXT = 0x81
_BINARY = 0x82
_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def ws_frame(payload: bytes, *, binary: bool) -> bytes:
    """Frame a payload as one complete, unfragmented, unmasked WebSocket message.

    Args:
        payload: the message (UTF-8 for a text message; not checked).
        binary: a binary message (opcode 2) rather than a text one (opcode 1).

    Returns:
        The frame as a server writes it: header (7, 16 or 64-bit length) then payload.
    """
    head = _BINARY if binary else _TEXT
    n = len(payload)
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return _HEAD16(head, 126, n) + payload
    return _HEAD64(head, 127, n) + payload


def message_frame(message: Mapping[str, Any]) -> bytes:
    """Frame a ``websocket.send`` ASGI message: ``bytes`` as a binary message, ``text`` as a text one.

    Args:
        message: the ASGI message.

    Returns:
        The frame (see :func:`ws_frame`).
    """
    data = message.get("bytes")
    if data is not None:
        return ws_frame(data, binary=True)
    return ws_frame(message["text"].encode(), binary=False)


class Preframed(NamedTuple):
    """The pre-framed writer a server offers on one WebSocket (see the module docstring)."""

    #: Write now, or return ``False`` (writing nothing) while the transport is paused.
    write: Callable[[bytes], bool]
    #: Wait while the transport is paused, then write.
    send: Callable[[bytes], Awaitable[None]]
    #: Answer one exact message in the server's reader instead of queueing it, or ``None``.
    intercept: Callable[[bytes, bool, Callable[[], None]], None] | None = None


def preframed(scope: Mapping[str, Any]) -> Preframed | None:
    """Return the pre-framed writer the server offers on this WebSocket, or ``None``.

    Args:
        scope: the ASGI WebSocket scope.

    Returns:
        The writer, or ``None`` when the server does not offer the extension.
    """
    extensions = scope.get("extensions")
    entry = extensions.get(EXTENSION) if extensions else None
    if not entry:
        return None
    write = entry.get("write")
    send = entry.get("send")
    if not callable(write) or not callable(send):
        return None
    intercept = entry.get("intercept")
    return Preframed(write, send, intercept if callable(intercept) else None)
