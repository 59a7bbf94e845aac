"""Engine.IO over ASGI: HTTP long-polling and WebSocket, feeding each session to a socket server.

:class:`EngineIO` answers the Engine.IO requests at one path and runs, for each
session, a ``serve(scope, receive, send)`` coroutine with ASGI-websocket-shaped
callables, whatever the transport: ``receive()`` returns ``websocket.receive``
messages (``text`` for one Engine.IO packet such as ``'42["ev",1]'`` or ``"3"``;
``bytes`` for a binary Socket.IO packet grouped with its attachments, see
:func:`.packets.pack_unit`) and finally ``websocket.disconnect``; ``send()`` takes
``websocket.send`` messages whose text is an Engine.IO polling payload (one or
more packets, ``\\x1e``-separated, binary as ``b`` + base64) and
``websocket.close``.  The wire above (:mod:`.wire`) speaks exactly that.

A WebSocket-only session is served inline by its ASGI WebSocket call: ``receive``
reads the socket directly, no task is added.  A polling session runs ``serve``
in this object's task group (entered with ``async with``): POST bodies feed a
bounded stream that ``serve`` reads, ``send`` fills a buffer that the waiting
GET takes.  After an upgrade the WebSocket call feeds the same stream.
Polling sessions live in this process: several processes need sticky sessions.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qsl

import anyio
from anyio.abc import TaskGroup

from .. import status
from . import engineio
from .engineio import RequestError
from .live import LiveSession, Message, Receive, Send, SessionTable
from .recovery import RecoveryEcho
from .session import EngineSession, Transport, Verdict

logger = logging.getLogger(__name__)

Serve = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_TEXT_HEADERS: Final = [(b"content-type", b"text/plain; charset=UTF-8"), (b"cache-control", b"no-store")]
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


class EngineIO:
    """The ASGI application of Engine.IO v4 at one path.

    Args:
        serve: runs one session given its scope and ASGI-websocket-shaped callables.
        ping_interval: seconds between pings (announced in the handshake).
        ping_timeout: seconds a client has to answer a ping (announced in the handshake).
        max_payload: the largest POST body or WebSocket message accepted, in bytes.
        heartbeat: whether this object sends the pings and closes silent sessions;
            turn it off when ``serve`` drives the heartbeat (it then sends ``"2"``
            and receives the ``"3"`` answers).
        echo_pids: put the ``pid`` a client presented back into a recovered
            CONNECT reply (:class:`~.recovery.RecoveryEcho`).
        max_sessions: the most sessions at once; a handshake beyond it gets HTTP 503
            (polling) or close 1013 (WebSocket), and the client retries later.
        clock: the monotonic clock, in seconds.
    """

    def __init__(
        self,
        serve: Serve,
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        heartbeat: bool = True,
        echo_pids: bool = False,
        max_sessions: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._serve = serve
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.heartbeat = heartbeat
        self.echo_pids = echo_pids
        self.max_sessions = max_sessions
        self._clock = clock
        self.sessions = SessionTable(linger=ping_timeout, max_sessions=max_sessions, clock=clock)
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> EngineIO:
        self._tg = await anyio.create_task_group().__aenter__()
        if self.heartbeat:
            self._tg.start_soon(self._heartbeats)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            for live in self.sessions:
                live.engine.close("server close")
                await live.flush()
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    def _new_session(self, transport: Transport) -> LiveSession:
        sid = secrets.token_urlsafe(15)
        engine = EngineSession(
            sid,
            transport=transport,
            now=self._clock(),
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_payload=self.max_payload,
            heartbeat=self.heartbeat,
        )
        live = LiveSession(engine, RecoveryEcho() if self.echo_pids else None, self.sessions.forget)
        self.sessions.add(live)
        return live

    def _transport_of(self, sid: str) -> str | None:
        live = self.sessions.get(sid)
        return None if live is None else live.engine.transport.value

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _run_serve(self, live: LiveSession, scope: dict[str, Any]) -> None:
        receive, send = live.callables()
        try:
            await self._serve(scope, receive, send)
        finally:
            if not live.engine.closed:
                live.engine.close("server close")
                await live.flush()
            live.inbox_reader.close()

    async def _heartbeats(self) -> None:
        """One scheduler for every session's pings and pong deadlines."""
        step = max(0.01, min(self.ping_interval, self.ping_timeout) / 4)
        while True:
            await anyio.sleep(step)
            now = self._clock()
            for live in self.sessions:
                deadline = live.engine.deadline()
                if deadline is not None and now >= deadline:
                    live.engine.tick(now)
                    await live.flush()

    # -- HTTP long-polling --------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        method = scope["method"]
        self.sessions.sweep()
        checked = engineio.check_request(method, query, websocket=False, session_transport=self._transport_of)
        if isinstance(checked, RequestError):
            await _respond(send, checked.http_status, checked.body(), _JSON_HEADERS)
            return
        if checked.sid is None:
            if self.sessions.full():
                await _respond(send, 503, b'{"code":3,"message":"Server full"}', _JSON_HEADERS)
                return
            if self._tg is None:
                raise RuntimeError("EngineIO is not started: enter it with 'async with' (the router's lifespan does)")
            live = self._new_session(Transport.POLLING)
            live.engine.begin_get()
            body = live.engine.take_get_body() or b""
            # A WebSocket-shaped scope for the socket server; no HTTP extension applies to it (a pre-framed
            # writer, were one offered, would write into this request instead of the session's transport).
            ws_scope = {**scope, "type": "websocket", "subprotocols": [], "extensions": {}}
            self._tg.start_soon(self._run_serve, live, ws_scope)
            await _respond(send, 200, body, _TEXT_HEADERS)
        elif method == "GET":
            await self._poll(self.sessions[checked.sid], receive, send)
        else:
            await self._post(self.sessions[checked.sid], scope, receive, send)

    async def _poll(self, live: LiveSession, receive: Receive, send: Send) -> None:
        engine = live.engine
        if engine.begin_get() is not Verdict.OK:
            await live.flush()
            await _respond(send, 400, RequestError.BAD_REQUEST.body(), _JSON_HEADERS)
            return
        gone = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                live.wake.set()

            tg.start_soon(watch)
            while (body := engine.take_get_body()) is None and not gone:
                await live.wake.wait()
                live.wake = anyio.Event()
            tg.cancel_scope.cancel()
        if body is None:
            engine.abort_get()
            await live.flush()
            return
        if engine.closed:
            live.finish()
            self.sessions.forget(live)  # it kept the last body for this GET
        await _respond(send, 200, body, _TEXT_HEADERS)

    async def _post(self, live: LiveSession, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        engine = live.engine
        length = _content_length(scope)
        verdict = engine.begin_post(length)
        if verdict is Verdict.OK:
            body = await _read_body(receive, engine.max_payload)
            if body is None:  # the client went away
                engine.receive_post(b"", self._clock())
                await live.flush()
                return
            verdict = engine.receive_post(body, self._clock())
        await live.deliver()
        await live.flush()
        if verdict is Verdict.OK:
            await _respond(send, 200, b"ok", [(b"content-type", b"text/html")])
        else:
            await _respond(send, verdict, RequestError.BAD_REQUEST.body(), _JSON_HEADERS)

    # -- WebSocket ----------------------------------------------------------

    async def _websocket(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        checked = engineio.check_request("GET", query, websocket=True, session_transport=self._transport_of)
        if isinstance(checked, RequestError):
            await send({"type": "websocket.close", "code": 1008})
            return
        if checked.sid is None:
            await self._websocket_only(scope, receive, send)
        else:
            await self._upgrade(self.sessions[checked.sid], receive, send)

    async def _websocket_only(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        if self.sessions.full():
            await send({"type": "websocket.close", "code": status.WS_1013_TRY_AGAIN_LATER, "reason": "server full"})
            return
        live = self._new_session(Transport.WEBSOCKET)
        live.ws_send = send
        engine = live.engine
        pending: deque[Message] = deque()
        pongs = not self.heartbeat  # pongs go to the layer above when it drives the heartbeat
        await live.flush()  # the open packet

        reassembler = live.reassembler

        async def ws_receive() -> Message:
            while not pending:
                if engine.close_reason is not None:
                    return {"type": "websocket.disconnect", "code": engine.close_code}
                message = await receive()
                text = message.get("text")
                # A plain EVENT/ACK/DISCONNECT (or a pong the layer above answers for) goes on as uvicorn gave
                # it, as protocol v1's messages do; the layer above enforces the size limit.  Inline: per message.
                if (
                    text is not None
                    and ((text[:1] == "4" and text[1:2] in _PLAIN) or (pongs and text == "3"))
                    and not reassembler.missing
                ):
                    return message
                kind = message["type"]
                if kind == "websocket.disconnect":
                    live.ws_closed = True
                    engine.close("transport error")
                    live.finish()
                    return message
                if kind != "websocket.receive":
                    continue
                engine.receive_ws(text, message.get("bytes"), self._clock())
                pending.extend(live.units())
                await live.flush()
            return pending.popleft()

        def ws_send(message: Message) -> Awaitable[None]:
            if message["type"] == "websocket.send":
                text = message.get("text")
                if text and text[1:2] not in _SEVERAL and engine.close_reason is None:
                    # One packet (every EVENT, ACK, ping): the server's own send of the shared message,
                    # returned rather than awaited (no coroutine of ours per delivery).  No lock: the
                    # server writes each frame whole, and the only other writer here sends the close.
                    return send(message)
            return ws_send_slowly(message)

        async def ws_send_slowly(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                text = message.get("text")
                if text is None:  # a payload given as bytes: the same UTF-8 text
                    text = (message.get("bytes") or b"").decode()
                if not text or engine.close_reason is not None:
                    return  # "": a frame with no Socket.IO form (the wire encodes it as nothing)
                if live.echo is not None and text.startswith("40"):
                    text = live.echo.outbound(text)
                engine.send_payload(text)
                await live.flush()
            elif kind == "websocket.close":
                engine.close("server close", message.get("code"))
                await live.flush()

        try:
            await self._serve({**scope, "subprotocols": []}, ws_receive, ws_send)
        finally:
            engine.close("server close")
            with anyio.CancelScope(shield=True):
                await live.flush()

    async def _upgrade(self, live: LiveSession, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        engine = live.engine
        if not engine.begin_upgrade():
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        live.ws_send = send
        try:
            while not engine.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    live.ws_closed = True
                    break
                if message["type"] != "websocket.receive":
                    continue
                engine.receive_ws(message.get("text"), message.get("bytes"), self._clock())
                await live.deliver()
                await live.flush()
        finally:
            if engine.transport is Transport.POLLING and not engine.closed:
                engine.abort_upgrade()
                live.ws_send = None
                if not live.ws_closed:
                    with anyio.CancelScope(shield=True):
                        await send({"type": "websocket.close", "code": 1000})
            else:
                engine.close("transport error")
                with anyio.CancelScope(shield=True):
                    await live.flush()

    def __repr__(self) -> str:
        return f"EngineIO(sessions={len(self.sessions)}, heartbeat={self.heartbeat})"


#: The second character of a wire payload that may hold several packets (a binary packet and its attachments)
#: or that the session looks at (a CONNECT reply, for the recovery echo).
_SEVERAL: Final = ("0", "5", "6")


#: Socket.IO packet types (the second character of a ``4`` message) that need nothing from the session.
_PLAIN: Final = frozenset({"1", "2", "3"})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Read a request body, stopping one byte past ``limit``; ``None`` when the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _respond(send: Send, status_code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": int(status_code), "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["EngineIO"]
