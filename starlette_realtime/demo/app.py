"""The chat demo: a Starlette app with a token endpoint, a ``/chat`` namespace and a static page.

* ``POST /token`` with ``{"name": "ada"}`` answers ``{"token": ..., "user": "ada"}``: a
  :class:`~starlette_realtime.auth.SignedTokenAuth` token the page sends with CONNECT.
  Anyone may pick any free-form name: this is a demo, not a login.
* ``/realtime`` is the :class:`~starlette_realtime.RealtimeRouter` (the page imports the
  browser client from ``/realtime/client.js``).  It also serves the official Socket.IO
  clients at ``/realtime/socket.io/``, with connection state recovery, and the app's contract,
  ``/realtime/asyncapi.json`` (AsyncAPI 3.0) and ``/realtime/types.d.ts``, which the page links to.
* ``/`` and ``/static/`` serve the page; ``/config.json`` tells it which clients it may use.
* ``/vendor/socket.io.min.js`` serves socket.io-client's browser bundle from the file given
  as ``socketio_client``, for the page's ``?wire=socketio`` mode (404 without one): the
  repository ships no third-party code.
* ``/dashboard/`` (with ``dashboard=True``) serves the live dashboard
  (:mod:`starlette_realtime.dashboard`) to requests from this machine only.

The ``/chat`` namespace keeps the last ``history`` messages of each room in this process,
so that a page that reconnects to a restarted server (whose memory backend lost every
session) still shows what was said while it was away; a page whose session is recovered
gets the missed messages replayed by the protocol instead.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ..auth import SignedTokenAuth
from ..backends import Backend
from ..connection import Connection
from ..contract import emits
from ..dashboard import DashboardEndpoint, dashboard_app
from ..dispatch import on_event
from ..endpoint import RealtimeEndpoint
from ..exceptions import HandlerError
from ..presence import PresenceList, PresenceMixin
from ..routing import RealtimeRouter, user_key
from ..socketio import SocketIOOptions

logger = logging.getLogger(__name__)

STATIC: Final = Path(__file__).with_name("static")
NAME: Final = re.compile(r"^[^\x00-\x1f\x7f<>&\"']{1,24}$")
ROOM: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_TEXT: Final = 2000
# The page's own files may load; nothing else, and no inline script.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Say(msgspec.Struct, forbid_unknown_fields=True):
    """A message a user sends to a room."""

    room: str
    text: str


class Typing(msgspec.Struct, forbid_unknown_fields=True):
    """A typing notice (sent volatile: a lost one does not matter)."""

    room: str
    typing: bool = True


class Message(msgspec.Struct):
    """A chat message as the server stamped it."""

    id: str
    room: str
    user: str
    text: str
    ts: float


class TypingNotice(msgspec.Struct):
    """Who is (or stopped) typing in a room, as the others in it get it."""

    room: str
    user: str
    typing: bool


class Joined(msgspec.Struct):
    """What ``join`` answers: the room's recent messages and who is online in it.

    ``presence.seq`` tells which ``$presence`` events the member list already reflects.
    """

    room: str
    history: list[Message]
    presence: PresenceList


class History:
    """The last ``size`` messages of each room, for at most ``max_rooms`` rooms (least recently used go).

    Args:
        size: messages kept per room.
        max_rooms: rooms kept.
    """

    def __init__(self, *, size: int = 50, max_rooms: int = 1000) -> None:
        self.size = size
        self.max_rooms = max_rooms
        self._rooms: collections.OrderedDict[str, collections.deque[Message]] = collections.OrderedDict()

    def add(self, message: Message) -> None:
        """Append a message to its room's history."""
        room = self._rooms.get(message.room)
        if room is None:
            room = self._rooms[message.room] = collections.deque(maxlen=self.size)
            while len(self._rooms) > self.max_rooms:
                self._rooms.popitem(last=False)
        else:
            self._rooms.move_to_end(message.room)
        room.append(message)

    def get(self, room: str) -> list[Message]:
        """The room's messages, oldest first."""
        return list(self._rooms.get(room, ()))

    def __repr__(self) -> str:
        return f"History(size={self.size}, rooms={len(self._rooms)})"


def check_room(room: str) -> str:
    """Return the room name, or raise ``HandlerError("bad_room")`` for one the demo does not allow."""
    if not ROOM.match(room):
        raise HandlerError("bad_room", "room names are 1-32 characters of a-z, 0-9, - and _")
    return room


@emits(message=Message, typing=TypingNotice)
class ChatEndpoint(PresenceMixin, RealtimeEndpoint):
    """The ``/chat`` namespace: rooms, messages with history, typing notices and presence.

    Presence comes from :class:`~starlette_realtime.presence.PresenceMixin`: members of a
    room get ``$presence`` events, and clients list a room with ``$presence.list``.

    Args:
        tokens: checks the ``{"token"}`` every client sends with CONNECT.
        history: where the recent messages of each room are kept.
    """

    namespace = "/chat"

    def __init__(self, *, tokens: SignedTokenAuth, history: History) -> None:
        super().__init__()
        self.tokens = tokens
        self.history = history
        self._boot = secrets.token_hex(3)  # message ids stay unique across restarts of the demo
        self._seq = itertools.count(1)

    async def authenticate(self, conn: Connection) -> Any:
        """Check the signed token of the CONNECT payload."""
        return await self.tokens.authenticate(conn)

    @on_event("join")
    async def join(self, conn: Connection, room: str) -> Joined:
        """Join a room; answer its recent messages and its members."""
        await conn.join(check_room(room))
        return Joined(room, self.history.get(room), await self.list_presence(conn, room))

    @on_event("leave")
    async def leave(self, conn: Connection, room: str) -> None:
        """Leave a room."""
        await conn.leave(room)

    @on_event("say", rate=5, burst=20)
    async def say(self, conn: Connection, msg: Say) -> Message:
        """Post a message to a room (joining it first), keep it in the history and answer it."""
        text = msg.text.strip()
        if not text or len(text) > MAX_TEXT:
            raise HandlerError("bad_text", f"a message has 1 to {MAX_TEXT} characters")
        # A message queued offline is resent before the page re-joins its rooms: join on its behalf.
        await conn.join(check_room(msg.room))
        message = Message(f"{self._boot}-{next(self._seq)}", msg.room, _user(conn), text, time.time())
        self.history.add(message)
        await self.to(msg.room).emit("message", message)
        return message

    @on_event("typing", rate=5, burst=10)
    async def typing(self, conn: Connection, notice: Typing) -> None:
        """Tell the others in the room that this user is (or stopped) typing; never kept."""
        if notice.room in conn.rooms:
            data = TypingNotice(notice.room, _user(conn), notice.typing)
            await conn.to(notice.room).emit("typing", data, volatile=True)


def _user(conn: Connection) -> str:
    return user_key(conn.user) or conn.sid


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"content-security-policy": CSP, "cache-control": "no-cache"})


def _config_view(bundle: Path | None) -> Callable[[Request], Awaitable[Response]]:
    async def config(request: Request) -> Response:
        return JSONResponse({"socketioClient": bundle is not None}, headers={"cache-control": "no-cache"})

    return config


def _bundle_view(bundle: Path | None) -> Callable[[Request], Awaitable[Response]]:
    async def socketio_client(request: Request) -> Response:
        if bundle is None:
            return PlainTextResponse("no socket.io-client bundle: start the demo with --socketio-client PATH",
                                     status_code=404)
        return FileResponse(bundle, media_type="text/javascript", headers={"cache-control": "no-cache"})

    return socketio_client


def _from_this_machine(request: Request) -> bool:
    # The demo has no administrators: its dashboard is for whoever runs it, on loopback.
    return request.client is not None and request.client.host in ("127.0.0.1", "::1")


def _token_view(tokens: SignedTokenAuth) -> Callable[[Request], Awaitable[Response]]:
    async def token(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "send JSON: {\"name\": \"...\"}"}, status_code=400)
        name = body.get("name") if isinstance(body, dict) else None
        name = name.strip() if isinstance(name, str) else ""
        if not NAME.match(name):
            return JSONResponse({"error": "a name has 1 to 24 characters, without <>&\"'"}, status_code=422)
        return JSONResponse({"token": tokens.issue(name), "user": name}, headers={"cache-control": "no-store"})

    return token


def create_app(
    *,
    backend: str | Backend = "memory://",
    secret_key: str | bytes | Sequence[str | bytes] | None = None,
    history: int = 50,
    token_max_age: float = 12 * 3600,
    dashboard: bool = False,
    socketio_client: str | os.PathLike[str] | None = None,
    **router_options: Any,
) -> tuple[Starlette, RealtimeRouter]:
    """Build the demo app and its realtime router.

    Args:
        backend: the router's backend (``memory://`` or ``redis://...``).
        secret_key: signs the tokens and the recovery sessions; every node of a cluster
            needs the same one.  Random by default (then a restart logs every page in again,
            which the page does by itself).
        history: messages kept per room.
        token_max_age: seconds a token is valid (the page fetches a fresh one on every connect).
        dashboard: also serve the live dashboard at ``/dashboard/``, to requests from
            127.0.0.1 or ::1 only (its cluster view lists every node of a ``redis://`` backend).
        socketio_client: socket.io-client's browser bundle (the npm package's
            ``dist/socket.io.min.js``), served to the page for its ``?wire=socketio`` mode;
            without it the page's switch to socket.io-client is disabled.
        **router_options: other :class:`~starlette_realtime.RealtimeRouter` options
            (``ping_interval``, ``recovery_window``...); by default the router also serves
            Socket.IO clients, with recovery, and its contract (``contract=True``).

    Returns:
        The Starlette app and the router mounted at ``/realtime`` (pass it to
        :func:`starlette_realtime.server.run` for a graceful shutdown).

    Raises:
        FileNotFoundError: ``socketio_client`` is not a file.
    """
    bundle = Path(socketio_client) if socketio_client is not None else None
    if bundle is not None and not bundle.is_file():
        raise FileNotFoundError(f"no socket.io-client bundle at {bundle} (the npm package's dist/socket.io.min.js)")
    key = secret_key if secret_key is not None else secrets.token_bytes(32)
    tokens = SignedTokenAuth(key, max_age=token_max_age)
    chat = ChatEndpoint(tokens=tokens, history=History(size=history))
    endpoints: list[RealtimeEndpoint | type[RealtimeEndpoint]] = [chat, DashboardEndpoint] if dashboard else [chat]
    # Both wires, and the contract the page links to; a caller's own options win.
    options: dict[str, Any] = {"socketio": SocketIOOptions(recovery=True), "contract": True} | router_options
    realtime = RealtimeRouter(endpoints, backend=backend, secret_key=key, **options)
    app = Starlette(
        routes=[
            Route("/", _index),
            Route("/token", _token_view(tokens), methods=["POST"]),
            Route("/config.json", _config_view(bundle)),
            Route("/vendor/socket.io.min.js", _bundle_view(bundle)),
            # RealtimeRouter.__call__ takes a dict scope where Starlette types a MutableMapping.
            Mount("/realtime", cast(ASGIApp, realtime)),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        lifespan=realtime.lifespan,
    )
    if dashboard:
        dashboard_app(realtime, auth=_from_this_machine, title="chat demo").mount(app, "/dashboard")
    return app, realtime


__all__ = ["ChatEndpoint", "History", "Joined", "Message", "Say", "Typing", "TypingNotice", "create_app"]
