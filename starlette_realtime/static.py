"""The HTTP side of a router's mount: the browser client, its types, and a 426 for the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from . import status
from .logs import refused_handshake

Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Files served at ``<mount>/<name>``.
FILES = {"client.js": b"text/javascript", "client.d.ts": b"application/typescript"}


#: More files by name: ``(name, scope) -> (body, content type)`` or ``None`` (the router's contract).
Extra = Callable[[str, dict[str, Any]], tuple[bytes, bytes] | None]


async def serve_http(scope: dict[str, Any], send: Send, *, extra: Extra | None = None) -> None:
    """Answer an HTTP request to the mount: a static file, a file of ``extra``, or 426 Upgrade Required."""
    path = scope.get("path", "")
    found = extra(path.rsplit("/", 1)[-1], scope) if extra is not None else None
    if found is not None:
        body, ctype = found
        await respond(send, 200, body, [(b"content-type", ctype + b"; charset=utf-8"), (b"cache-control", b"no-cache")])
        return
    for name, ctype in FILES.items():
        if path.endswith("/" + name):
            body = resources.files("starlette_realtime").joinpath("static", name).read_bytes()
            headers = [(b"content-type", ctype + b"; charset=utf-8"), (b"cache-control", b"no-cache")]
            await respond(send, 200, body, headers)
            return
    await respond(send, 426, b"this endpoint speaks WebSocket (subprotocol rt.v1.json or rt.v1.msgpack)\n",
                  [(b"content-type", b"text/plain; charset=utf-8"), (b"upgrade", b"websocket")])


async def respond(send: Send, code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Send a whole HTTP response."""
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def deny(scope: dict[str, Any], send: Send, code: int, text: str) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a reason, where the server can.

    Servers without the ``websocket.http.response`` extension get a close before accept
    (which they answer with 403).
    """
    refused_handshake.set(True)  # uvicorn's "returned without completing handshake" is expected
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({
            "type": "websocket.http.response.start",
            "status": code,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        })
        await send({"type": "websocket.http.response.body", "body": text.encode()})
    else:
        await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION})


__all__ = ["FILES", "deny", "respond", "serve_http"]
