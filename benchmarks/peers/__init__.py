"""The servers the harness can run (--servers), one module each: how to start it and how to speak to it."""

from __future__ import annotations

from . import ours, raw, socketio
from .base import Dialect, ServerSpec

SERVERS: dict[str, ServerSpec] = {spec.key: spec for module in (raw, socketio, ours) for spec in module.SPECS}
DEFAULT_SERVERS = "raw,socketio,node"
#: ServerSpec.dialect -> the client's Dialect.
DIALECTS: dict[str, type[Dialect]] = {"raw": raw.RawDialect, "sio": socketio.SioDialect, "rt": ours.RtDialect}

__all__ = ["DEFAULT_SERVERS", "DIALECTS", "SERVERS", "Dialect", "ServerSpec"]
