"""Engine.IO over ASGI: HTTP long-polling and WebSocket, feeding each session to a socket server.

:class:`EngineIO` answers the Engine.IO requests at one path and runs, for each
session, a ``serve(scope, receive, send)`` coroutine with ASGI-websocket-shaped
callables, whatever the transport: ``receive()`` returns ``websocket.receive``
messages (``text`` for one Engine.IO packet such as ``'42["ev",1]'`` or ``"3"``;
``bytes`` for a binary Socket.IO packet grouped with its attachments, see
:func:`pack_unit`) and finally ``websocket.disconnect``; ``send()`` takes
``websocket.send`` messages whose text is an Engine.IO polling payload (one or
more packets, ``\\x1e``-separated, binary as ``b`` + base64) and
``websocket.close``.  The wire above (:mod:`.wire`) speaks exactly that.

A WebSocket-only session is served inline by its ASGI WebSocket call: ``receive``
reads the socket directly, no task is added.  A polling session runs ``serve``
in this object's task group (entered with ``async with``): POST bodies feed a
bounded stream that ``serve`` reads, ``send`` fills a buffer that the waiting
GET takes.  After an upgrade the WebSocket call feeds the same stream.
Polling sessions live in this process: several processes need sticky sessions.

The ``send`` callables use no anyio cancel scope: the core's outbox drives a send
as a bare coroutine from the pushing task and may finish it in its writer task.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

import anyio
import msgspec
from anyio.abc import TaskGroup

from ..exceptions import ProtocolError
from . import engineio
from .engineio import RequestError
from .packets import Reassembler
from .session import EngineSession, Transport, Verdict

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Serve = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_TEXT_HEADERS: Final = [(b"content-type", b"text/plain; charset=UTF-8"), (b"cache-control", b"no-store")]
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_INBOX_SIZE: Final = 64
_unit_encoder: Final = msgspec.msgpack.Encoder()
_unit_decoder: Final = msgspec.msgpack.Decoder(tuple[str, list[bytes]])


def pack_unit(unit: list[str | bytes]) -> bytes:
    """Pack a binary packet's text and attachments into the ``bytes`` of one ``websocket.receive``."""
    return _unit_encoder.encode((unit[0], unit[1:]))


def unpack_unit(data: bytes) -> tuple[str, list[bytes]]:
    """Undo :func:`pack_unit`: the packet's text and its attachments.

    Raises:
        ProtocolError: the bytes are not a packed unit.
    """
    try:
        return _unit_decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError:
        raise ProtocolError("not a packed binary packet") from None


def _message(unit: str | list[str | bytes]) -> Message:
    if isinstance(unit, str):
        return {"type": "websocket.receive", "text": unit}
    return {"type": "websocket.receive", "bytes": pack_unit(unit)}


class _Live:
    """The I/O side of one session: its state machine, its inbox, its waiting GET and its WebSocket."""

    __slots__ = ("engine", "inbox", "inbox_reader", "reassembler", "wake", "write_lock", "ws_closed", "ws_send")

    def __init__(self, engine: EngineSession) -> None:
        self.engine = engine
        self.reassembler = Reassembler()
        self.wake = anyio.Event()
        self.ws_send: Send | None = None
        self.ws_closed = False
        # serve() writes while the reader answers probes and the scheduler pings: one writer at a time.
        # An asyncio lock, not anyio's: the core's outbox may start a send in one task and finish
        # it in another, and anyio's lock enters a cancel scope that must be left in the same task.
        self.write_lock = asyncio.Lock()
        self.inbox, self.inbox_reader = anyio.create_memory_object_stream[Message](_INBOX_SIZE)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._serve = serve
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.heartbeat = heartbeat
        self._clock = clock
        self.sessions: dict[str, _Live] = {}
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> EngineIO:
        self._tg = await anyio.create_task_group().__aenter__()
        if self.heartbeat:
            self._tg.start_soon(self._heartbeats)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            for live in list(self.sessions.values()):
                live.engine.close("server close")
                await self._flush(live)
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    def _new_session(self, transport: Transport) -> _Live:
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
        live = self.sessions[sid] = _Live(engine)
        return live

    def _transport_of(self, sid: str) -> str | None:
        live = self.sessions.get(sid)
        return None if live is None else live.engine.transport.value

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # -- shared -------------------------------------------------------------

    async def _flush(self, live: _Live) -> None:
        """Carry out what the state machine decided: frames, a woken GET, a closed session."""
        engine = live.engine
        frames = engine.ws_frames()
        ws_send = live.ws_send
        if ws_send is not None and not live.ws_closed and (frames or engine.closed):
            async with live.write_lock:
                for frame in frames:
                    if isinstance(frame, str):
                        await ws_send({"type": "websocket.send", "text": frame})
                    else:
                        await ws_send({"type": "websocket.send", "bytes": frame})
                if engine.closed and not live.ws_closed:
                    live.ws_closed = True
                    await ws_send({"type": "websocket.close", "code": engine.close_code})
        live.wake.set()
        if engine.closed:
            self._finish(live)

    def _finish(self, live: _Live) -> None:
        """Forget a closed session and tell ``serve`` it is over (once)."""
        if self.sessions.get(live.engine.sid) is live:
            del self.sessions[live.engine.sid]
            try:
                live.inbox.send_nowait({"type": "websocket.disconnect", "code": live.engine.close_code})
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            live.inbox.close()

    async def _deliver(self, live: _Live) -> None:
        """Pass what the client sent to ``serve`` through the session's inbox."""
        for message in live.engine.messages():
            try:
                unit = live.reassembler.feed(message)
            except ProtocolError:
                live.engine.close("parse error")
                return
            if unit is not None:
                try:
                    await live.inbox.send(_message(unit))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

    def _callables(self, live: _Live) -> tuple[Receive, Send]:
        async def receive() -> Message:
            try:
                return await live.inbox_reader.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return {"type": "websocket.disconnect", "code": live.engine.close_code}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                text = message.get("text")
                live.engine.send_payload(text if text is not None else message["bytes"].decode())
            elif kind == "websocket.close":
                live.engine.close("server close", message.get("code"))
            await self._flush(live)

        return receive, send

    async def _run_serve(self, live: _Live, scope: dict[str, Any]) -> None:
        receive, send = self._callables(live)
        try:
            await self._serve(scope, receive, send)
        finally:
            if not live.engine.closed:
                live.engine.close("server close")
                await self._flush(live)
            live.inbox_reader.close()

    async def _heartbeats(self) -> None:
        """One scheduler for every session's pings and pong deadlines."""
        step = max(0.01, min(self.ping_interval, self.ping_timeout) / 4)
        while True:
            await anyio.sleep(step)
            now = self._clock()
            for live in list(self.sessions.values()):
                deadline = live.engine.deadline()
                if deadline is not None and now >= deadline:
                    live.engine.tick(now)
                    await self._flush(live)

    # -- HTTP long-polling --------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        method = scope["method"]
        checked = engineio.check_request(method, query, websocket=False, session_transport=self._transport_of)
        if isinstance(checked, RequestError):
            await _respond(send, checked.http_status, checked.body(), _JSON_HEADERS)
            return
        if checked.sid is None:
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

    async def _poll(self, live: _Live, receive: Receive, send: Send) -> None:
        engine = live.engine
        if engine.begin_get() is not Verdict.OK:
            await self._flush(live)
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
            await self._flush(live)
            return
        if engine.closed:
            self._finish(live)
        await _respond(send, 200, body, _TEXT_HEADERS)

    async def _post(self, live: _Live, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        engine = live.engine
        length = _content_length(scope)
        verdict = engine.begin_post(length)
        if verdict is Verdict.OK:
            body = await _read_body(receive, engine.max_payload)
            if body is None:  # the client went away
                engine.receive_post(b"", self._clock())
                await self._flush(live)
                return
            verdict = engine.receive_post(body, self._clock())
        await self._deliver(live)
        await self._flush(live)
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
        live = self._new_session(Transport.WEBSOCKET)
        live.ws_send = send
        engine = live.engine
        pending: deque[Message] = deque()
        await self._flush(live)  # the open packet

        async def ws_receive() -> Message:
            while not pending:
                if engine.closed:
                    return {"type": "websocket.disconnect", "code": engine.close_code}
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    live.ws_closed = True
                    engine.close("transport error")
                    self._finish(live)
                    return message
                if message["type"] != "websocket.receive":
                    continue
                engine.receive_ws(message.get("text"), message.get("bytes"), self._clock())
                for got in engine.messages():
                    try:
                        unit = live.reassembler.feed(got)
                    except ProtocolError:
                        engine.close("parse error")
                        break
                    if unit is not None:
                        pending.append(_message(unit))
                await self._flush(live)
            return pending.popleft()

        async def ws_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                text = message.get("text")
                if text == "":  # a frame with no Socket.IO form (the wire encodes it as nothing)
                    return
                if text is not None and "\x1e" not in text and text[:1] != "b":
                    if not engine.closed:
                        async with live.write_lock:
                            await send(message)  # one packet: the shared message as it is
                    return
                engine.send_payload(text if text is not None else message["bytes"].decode())
                await self._flush(live)
            elif kind == "websocket.close":
                engine.close("server close", message.get("code"))
                await self._flush(live)

        try:
            await self._serve({**scope, "subprotocols": []}, ws_receive, ws_send)
        finally:
            engine.close("server close")
            with anyio.CancelScope(shield=True):
                await self._flush(live)

    async def _upgrade(self, live: _Live, receive: Receive, send: Send) -> None:
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
                await self._deliver(live)
                await self._flush(live)
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
                    await self._flush(live)

    def __repr__(self) -> str:
        return f"EngineIO(sessions={len(self.sessions)}, heartbeat={self.heartbeat})"


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


__all__ = ["EngineIO", "pack_unit", "unpack_unit"]
