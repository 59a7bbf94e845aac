"""The Python asyncio client (on the ``websockets`` package, which is asyncio-only).

It reconnects with exponential backoff and jitter, re-opens its namespaces,
resumes its sessions (the server replays what it missed, and the client drops
what it already had, by offset), queues emits while offline and resends every
unacknowledged event with its id after a reconnect (the server runs each id once).

Importing it loads no server module: only the wire frames, codecs, status codes
and exceptions it shares with the server.

Modules: :mod:`.client` (``RealtimeClient``), :mod:`.loop` (the reconnecting
connection loop), :mod:`.namespace` (per-namespace state and how acks settle
calls), :mod:`.outgoing` (the unacknowledged events and room positions),
:mod:`.handlers` (event handlers), :mod:`.stats` (wire counts), :mod:`.backoff`,
:mod:`.errors`.
"""

from __future__ import annotations

from .client import CLIENT_DISCONNECT, RealtimeClient
from .errors import AckError, AckTimeout, ClientClosed, ConnectRefused, NamespaceNotOpen
from .handlers import CATCH_ALL, EventMeta
from .loop import ClientState
from .stats import StreamStats, WireStats

__all__ = [
    "CATCH_ALL",
    "CLIENT_DISCONNECT",
    "AckError",
    "AckTimeout",
    "ClientClosed",
    "ClientState",
    "ConnectRefused",
    "EventMeta",
    "NamespaceNotOpen",
    "RealtimeClient",
    "StreamStats",
    "WireStats",
]
