"""starlette-realtime: typed, recoverable real-time WebSockets for Starlette and FastAPI."""

from __future__ import annotations

from .auth import Identity, SessionAuth, SignedTokenAuth, StarletteAuth
from .backends import Backend, MemoryBackend
from .connection import Connection, ConnectionState
from .dispatch import on_event, outgoing
from .emitter import BroadcastOperator, Emitter
from .endpoint import RealtimeEndpoint
from .exceptions import (
    AckError,
    BackendUnavailable,
    CallTimeout,
    ConnectionClosed,
    Forbidden,
    HandlerError,
    InvalidRoom,
    LimitExceeded,
    ProtocolError,
    RealtimeError,
    Rejected,
    SlowConsumer,
)
from .limits import Limits
from .metrics import Metrics
from .presence import PresenceMixin
from .routing import RealtimeConfig, RealtimeRouter
from .transport import Overflow

__version__ = "0.1.0"

__all__ = [
    "AckError",
    "Backend",
    "BackendUnavailable",
    "BroadcastOperator",
    "CallTimeout",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "Emitter",
    "Forbidden",
    "HandlerError",
    "Identity",
    "InvalidRoom",
    "LimitExceeded",
    "Limits",
    "MemoryBackend",
    "Metrics",
    "Overflow",
    "PresenceMixin",
    "ProtocolError",
    "RealtimeConfig",
    "RealtimeEndpoint",
    "RealtimeError",
    "RealtimeRouter",
    "Rejected",
    "SessionAuth",
    "SignedTokenAuth",
    "SlowConsumer",
    "StarletteAuth",
    "on_event",
    "outgoing",
]
