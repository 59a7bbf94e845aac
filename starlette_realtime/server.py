"""Running under uvicorn with a graceful realtime shutdown.

uvicorn closes every WebSocket at once with 1012 when it shuts down, before
the application's lifespan shutdown runs.  :class:`Server` first lets each
router close its WebSockets with 1001 in batches (after their running handlers
finish), so that clients spread their reconnects over the other nodes.
It serves WebSockets with the library's pre-framed protocol
(:mod:`starlette_realtime.fastpath.uvicorn`) unless told otherwise.
Requires the ``server`` extra (uvicorn).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import uvicorn

from .routing import RealtimeRouter


class Server(uvicorn.Server):
    """A uvicorn server that drains realtime routers before its own shutdown.

    Args:
        config: the uvicorn configuration.
        routers: the routers to drain on shutdown.
    """

    def __init__(self, config: uvicorn.Config, routers: Sequence[RealtimeRouter]) -> None:
        super().__init__(config)
        self.routers = list(routers)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so that drained clients reconnect elsewhere.
        for server in self.servers:
            server.close()
        for router in self.routers:
            await router.shutdown()
        await super().shutdown(sockets=sockets)


def run(
    app: Any, *, routers: Sequence[RealtimeRouter], host: str = "127.0.0.1", port: int = 8000, **options: Any
) -> None:
    """Serve ``app`` with uvicorn, draining ``routers`` gracefully on SIGINT/SIGTERM.

    permessage-deflate is off unless ``ws_per_message_deflate=True`` is passed
    (compression side channels and decompression bombs).  WebSockets are served
    by :class:`~starlette_realtime.fastpath.uvicorn.PreframedProtocol` (a broadcast
    framed once for every receiver) unless ``ws`` is passed or the installed
    uvicorn is not one it is tested with.

    Args:
        app: the ASGI application.
        routers: the realtime routers mounted in it.
        host: the interface to bind.
        port: the port to bind.
        **options: any other ``uvicorn.Config`` option.
    """
    options.setdefault("ws_per_message_deflate", False)
    if "ws" not in options:
        ws = default_ws()
        if ws is not None:
            options["ws"] = ws
    config = uvicorn.Config(app, host=host, port=port, **options)
    try:
        Server(config, routers).run()
    except KeyboardInterrupt:
        # uvicorn has already shut down gracefully; a second Ctrl-C lands here.
        pass


def default_ws() -> type[asyncio.Protocol] | None:
    """The WebSocket protocol class :func:`run` uses: the pre-framed one, or ``None`` (uvicorn's default)."""
    try:
        from .fastpath.uvicorn import protocol_class
    except ImportError:
        # A uvicorn without the websockets-sansio protocol, or websockets missing.
        return None
    return protocol_class()
