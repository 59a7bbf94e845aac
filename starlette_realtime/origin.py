"""Which Origins may open a WebSocket: the defence against cross-site WebSocket hijacking."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit


class OriginPolicy:
    """Decides whether a handshake's Origin header is allowed.

    Args:
        allowed: exact origins allowed, ``["*"]`` for any, or ``None`` for the default: only
            the page's own origin when the handshake carries credentials a browser sends by
            itself (``ambient`` endpoints, or a session/user in the scope), else any.
        allow_missing: whether a handshake without an Origin header is allowed.
        ambient: whether some endpoint authenticates with cookies (credentials the browser adds).
    """

    __slots__ = ("allow_missing", "allowed", "ambient")

    def __init__(self, allowed: Iterable[str] | None, *, allow_missing: bool, ambient: bool) -> None:
        self.allowed = None if allowed is None else frozenset(allowed)
        self.allow_missing = allow_missing
        self.ambient = ambient

    def allows(self, scope: dict[str, Any]) -> bool:
        """Whether the handshake in ``scope`` may go on."""
        allowed = self.allowed
        if allowed is None:
            # Cross-site hijacking needs credentials the browser adds by itself (cookies).
            if not (self.ambient or "session" in scope or "user" in scope):
                return True
        elif "*" in allowed:
            return True
        origin = host = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        if origin is None:
            return self.allow_missing
        if allowed is not None:
            return origin in allowed
        return same_origin(origin, host)

    def __repr__(self) -> str:
        return f"OriginPolicy(allowed={self.allowed!r}, allow_missing={self.allow_missing})"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str, host: str | None) -> bool:
    """Tell whether an Origin header names the host (and port) of the Host header.

    Default ports are ignored on both sides, so that a TLS proxy in front of the
    server (``https://app.example`` to ``Host: app.example``) still matches.

    Args:
        origin: the Origin header, e.g. ``https://app.example:8443``.
        host: the Host header, e.g. ``app.example:8443``.

    Returns:
        ``True`` when they name the same host and port.
    """
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or not hostname:
        return False
    if ":" in hostname:
        hostname = f"[{hostname}]"
    netloc = hostname if port is None or port == default else f"{hostname}:{port}"
    host = host.lower()
    for suffix in (":80", ":443"):
        if host.endswith(suffix):
            host = host[: -len(suffix)]
    return netloc == host


__all__ = ["OriginPolicy", "same_origin"]
