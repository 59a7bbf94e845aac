"""Socket.IO next to protocol v1 in one router: Engine.IO requests at ``/socket.io/`` served through the wire seam.

:class:`SocketIOServer` is what ``RealtimeRouter(..., socketio=True)`` builds.
It checks the origin, answers Engine.IO (:class:`~.asgi.EngineIO`) and hands
each session to the router's ``serve(scope, receive, send, wire)`` with the
:class:`~.wire.SocketIOWire`: the session core, handlers, rooms, limits,
recovery and backends are the same as for our own wire.  The router's heartbeat
drives Engine.IO's ping and pong (its ``Ping`` frames are ``"2"``, ``"3"``
answers are ``Pong`` frames), so the handshake announces the router's
``ping_interval`` and ``ping_timeout``.

It receives the router's callables, never the router: it sits under the router
and imports nothing above the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from .asgi import EngineIO
from .engineio import RequestError
from .live import Receive, Send
from .wire import SocketIOWire

#: Where Socket.IO clients connect by default, under the router's mount.
DEFAULT_PATH: Final = "/socket.io"

Scope = dict[str, Any]


class SocketIOOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Options of the Socket.IO endpoint: ``RealtimeRouter(..., socketio=SocketIOOptions(recovery=True))``.

    Attributes:
        path: where Socket.IO clients connect, under the router's mount.
        recovery: connection state recovery for Socket.IO 4.6+ clients: CONNECT
            replies carry ``pid`` and room events their stream position as a last
            argument, as a Socket.IO server with ``connectionStateRecovery`` does
            (handlers of python-socketio clients then get that extra argument).
    """

    path: str = DEFAULT_PATH
    recovery: bool = False


ServeWire = Callable[[Scope, Receive, Send, SocketIOWire], Awaitable[None]]


class SocketIOServer:
    """The Socket.IO endpoint of one router.

    Args:
        serve: the router's ``serve(scope, receive, send, wire)``.
        allows_origin: the router's origin policy (``True`` when a request's Origin is allowed).
        ping_interval: the router's heartbeat interval (seconds).
        ping_timeout: the router's heartbeat timeout (seconds).
        max_payload: the largest message accepted (the router's ``max_message_size``).
        max_sessions: the most Engine.IO sessions at once (the router's ``max_connections``).
        options: ``True`` for the defaults, or :class:`SocketIOOptions`.
    """

    def __init__(
        self,
        serve: ServeWire,
        *,
        allows_origin: Callable[[Scope], bool],
        ping_interval: float,
        ping_timeout: float,
        max_payload: int,
        max_sessions: int | None = None,
        options: bool | SocketIOOptions = True,
    ) -> None:
        opts = options if isinstance(options, SocketIOOptions) else SocketIOOptions()
        self.options = opts
        self.wire = SocketIOWire(recovery=opts.recovery)
        self.path = opts.path.rstrip("/")
        self._serve = serve
        self._allows_origin = allows_origin
        self.engine = EngineIO(
            self._session,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_payload=max_payload,
            heartbeat=False,
            echo_pids=opts.recovery,
            max_sessions=max_sessions,
        )

    def handles(self, scope: Scope) -> bool:
        """Whether a request is for this endpoint (its path under the mount is ``/socket.io/...``)."""
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path == self.path or path.startswith(self.path + "/")

    async def __aenter__(self) -> SocketIOServer:
        await self.engine.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.__aexit__(*exc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._allows_origin(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                refusal = RequestError.FORBIDDEN
                await send(
                    {
                        "type": "http.response.start",
                        "status": refusal.http_status,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": refusal.body()})
            return
        await self.engine(scope, receive, send)

    async def _session(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, self.wire)

    def __repr__(self) -> str:
        return f"SocketIOServer(path={self.path!r}, {self.engine!r})"


__all__ = ["DEFAULT_PATH", "SocketIOOptions", "SocketIOServer"]
