"""The I/O side of one Engine.IO session: what :class:`~.session.EngineSession` decides, carried out.

A :class:`LiveSession` holds a session's state machine with what the transports
share: the inbox that ``serve`` reads, the event that wakes the waiting GET, the
WebSocket once there is one, and the per-session helpers (binary packet
reassembly, recovery ``pid`` echo).  A :class:`SessionTable` finds them by id.
:mod:`.asgi` owns the table and the HTTP and WebSocket handlers; they all go
through these few methods.

The ``send`` callable uses no anyio cancel scope: the core's outbox drives a send
as a bare coroutine from the pushing task and may finish it in its writer task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Final

import anyio

from ..exceptions import ProtocolError
from .packets import Reassembler, pack_unit
from .recovery import RecoveryEcho
from .session import EngineSession

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Messages from the client waiting for ``serve`` (a POST waits when it is full).
INBOX_SIZE: Final = 64


def unit_message(unit: str | list[str | bytes]) -> Message:
    """The ``websocket.receive`` message for one packet: its text, or a binary packet packed with its attachments."""
    if isinstance(unit, str):
        return {"type": "websocket.receive", "text": unit}
    return {"type": "websocket.receive", "bytes": pack_unit(unit)}


class LiveSession:
    """One session's state machine with its inbox, its waiting GET's wake-up and its WebSocket.

    Args:
        engine: the session's state machine.
        echo: the recovery ``pid`` echo, or ``None`` when recovery is off.
        on_finish: called once when the session closes (the owner forgets it).
    """

    __slots__ = (
        "_finished",
        "_on_finish",
        "echo",
        "engine",
        "inbox",
        "inbox_reader",
        "reassembler",
        "wake",
        "write_lock",
        "ws_closed",
        "ws_send",
    )

    def __init__(
        self, engine: EngineSession, echo: RecoveryEcho | None, on_finish: Callable[[LiveSession], None]
    ) -> None:
        self.engine = engine
        self.echo = echo
        self.reassembler = Reassembler()
        #: Set whenever the waiting GET may have something to take.
        self.wake = anyio.Event()
        #: The ASGI ``send`` of the session's WebSocket (the probing one during an upgrade).
        self.ws_send: Send | None = None
        self.ws_closed = False
        # serve() writes while the reader answers probes and the scheduler pings: one writer at a time.
        # An asyncio lock, not anyio's: the core's outbox may start a send in one task and finish
        # it in another, and anyio's lock enters a cancel scope that must be left in the same task.
        self.write_lock = asyncio.Lock()
        self.inbox, self.inbox_reader = anyio.create_memory_object_stream[Message](INBOX_SIZE)
        self._on_finish = on_finish
        self._finished = False

    async def flush(self) -> None:
        """Carry out what the state machine decided: frames to write, a GET to wake, a close."""
        engine = self.engine
        frames = engine.ws_frames()
        ws_send = self.ws_send
        if ws_send is not None and not self.ws_closed and (frames or engine.closed):
            async with self.write_lock:
                for frame in frames:
                    if isinstance(frame, str):
                        await ws_send({"type": "websocket.send", "text": frame})
                    else:
                        await ws_send({"type": "websocket.send", "bytes": frame})
                if engine.closed and not self.ws_closed:
                    self.ws_closed = True
                    await ws_send({"type": "websocket.close", "code": engine.close_code})
        self.wake.set()
        if engine.closed:
            self.finish()

    def finish(self) -> None:
        """Tell the owner and ``serve`` that the session is over (once)."""
        if self._finished:
            return
        self._finished = True
        self._on_finish(self)
        try:
            self.inbox.send_nowait({"type": "websocket.disconnect", "code": self.engine.close_code})
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self.inbox.close()

    def units(self) -> list[Message]:
        """Take what the client sent as ``websocket.receive`` messages, one per packet.

        A malformed grouping of binary attachments closes the session.
        """
        out: list[Message] = []
        for message in self.engine.messages():
            try:
                unit = self.reassembler.feed(message)
            except ProtocolError:
                self.engine.close("parse error")
                break
            if unit is not None:
                if self.echo is not None and isinstance(unit, str):
                    self.echo.inbound(unit)
                out.append(unit_message(unit))
        return out

    async def deliver(self) -> None:
        """Pass what the client sent to ``serve`` through the inbox (waiting while it is full)."""
        for message in self.units():
            try:
                await self.inbox.send(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

    def callables(self) -> tuple[Receive, Send]:
        """The ``receive`` and ``send`` that ``serve`` gets for a session fed through the inbox."""

        async def receive() -> Message:
            try:
                return await self.inbox_reader.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return {"type": "websocket.disconnect", "code": self.engine.close_code}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                text = message.get("text")
                payload = text if text is not None else message["bytes"].decode()
                if self.echo is not None:
                    payload = self.echo.outbound(payload)
                self.engine.send_payload(payload)
            elif kind == "websocket.close":
                self.engine.close("server close", message.get("code"))
            await self.flush()

        return receive, send

    def __repr__(self) -> str:
        return f"LiveSession({self.engine!r}, websocket={self.ws_send is not None})"


class SessionTable:
    """The sessions of one Engine.IO endpoint by id.

    A polling session closed by the server stays until a GET takes its last body
    (what was still buffered, then ``close``), as the reference server keeps it for
    its ``closeTimeout``: forgotten at once, the client's next GET would get
    "Session ID unknown" instead.  One whose client does not come back within
    ``linger`` seconds is forgotten by :meth:`sweep`, which the endpoint runs on
    each request (no timer).  Such sessions do not count towards :meth:`full`.

    Args:
        linger: the longest a closed session waits for its client's GET (seconds).
        max_sessions: the most open sessions at once, or ``None``.
        clock: the monotonic clock, in seconds.
    """

    __slots__ = ("_clock", "_closing", "_live", "linger", "max_sessions")

    def __init__(self, *, linger: float, max_sessions: int | None, clock: Callable[[], float]) -> None:
        self.linger = linger
        self.max_sessions = max_sessions
        self._clock = clock
        self._live: dict[str, LiveSession] = {}
        self._closing: dict[str, float] = {}  # sid -> when to forget it anyway; deadlines in insertion order

    def add(self, live: LiveSession) -> None:
        """Register a new session."""
        self._live[live.engine.sid] = live

    def forget(self, live: LiveSession) -> None:
        """Drop a closed session, or keep it until its client takes its last body (or ``linger`` runs out)."""
        sid = live.engine.sid
        if self._live.get(sid) is not live:
            return
        if live.engine.owes_get:
            self._closing.setdefault(sid, self._clock() + self.linger)
            return
        del self._live[sid]
        self._closing.pop(sid, None)

    def sweep(self) -> None:
        """Forget the closed sessions whose client did not come back in time."""
        closing = self._closing
        if not closing:
            return
        now = self._clock()
        for sid, deadline in list(closing.items()):
            if deadline > now:
                break
            del closing[sid]
            self._live.pop(sid, None)

    def full(self) -> bool:
        """Whether a new session would exceed ``max_sessions``."""
        limit = self.max_sessions
        return limit is not None and len(self._live) - len(self._closing) >= limit

    def get(self, sid: str) -> LiveSession | None:
        """The session with this id, or ``None``."""
        return self._live.get(sid)

    def __getitem__(self, sid: str) -> LiveSession:
        return self._live[sid]

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._live.values()))

    def __repr__(self) -> str:
        return f"SessionTable(sessions={len(self._live)}, closing={len(self._closing)})"


__all__ = ["INBOX_SIZE", "LiveSession", "Message", "Receive", "Send", "SessionTable", "unit_message"]
