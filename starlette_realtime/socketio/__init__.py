"""The Socket.IO v5 wire (over Engine.IO v4): the official Socket.IO clients talk to our endpoints.

Layers, upstream first: :mod:`.engineio` (Engine.IO packets, polling payloads,
handshake checks), :mod:`.session` (one Engine.IO session as a sans-I/O state
machine), :mod:`.packets` (Socket.IO packets and binary attachments),
:mod:`.recovery` (the ``pid`` / ``offset`` of connection state recovery).  None of
them awaits or does I/O.  docs/socketio.md describes what is supported.
"""

from .server import SocketIOOptions
from .wire import Args, SocketIOWire

__all__ = ["Args", "SocketIOOptions", "SocketIOWire"]
