"""starlette-realtime: typed, recoverable real-time WebSockets for Starlette and FastAPI.

The package root imports lazily (PEP 562): ``import starlette_realtime.client``
loads no server module, and ``from starlette_realtime import RealtimeRouter``
loads only what the server needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .auth import Identity, SessionAuth, SignedTokenAuth, StarletteAuth
    from .backends import Backend, MemoryBackend
    from .config import RealtimeConfig
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
    from .outbox import Overflow
    from .presence import PresenceMixin
    from .routing import RealtimeRouter

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "AckError": "exceptions",
    "Backend": "backends",
    "BackendUnavailable": "exceptions",
    "BroadcastOperator": "emitter",
    "CallTimeout": "exceptions",
    "Connection": "connection",
    "ConnectionClosed": "exceptions",
    "ConnectionState": "connection",
    "Emitter": "emitter",
    "Forbidden": "exceptions",
    "HandlerError": "exceptions",
    "Identity": "auth",
    "InvalidRoom": "exceptions",
    "LimitExceeded": "exceptions",
    "Limits": "limits",
    "MemoryBackend": "backends",
    "Metrics": "metrics",
    "Overflow": "outbox",
    "PresenceMixin": "presence",
    "ProtocolError": "exceptions",
    "RealtimeConfig": "config",
    "RealtimeEndpoint": "endpoint",
    "RealtimeError": "exceptions",
    "RealtimeRouter": "routing",
    "Rejected": "exceptions",
    "SessionAuth": "auth",
    "SignedTokenAuth": "auth",
    "SlowConsumer": "exceptions",
    "StarletteAuth": "auth",
    "on_event": "dispatch",
    "outgoing": "dispatch",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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
