"""uvicorn's websockets-sansio WebSocket protocol with pre-framed writes.

:class:`PreframedProtocol` is uvicorn's own ``WebSocketsSansIOProtocol`` plus the
:data:`~starlette_realtime.fastpath.EXTENSION` ASGI extension: a frame the
application built once (:func:`~starlette_realtime.fastpath.ws_frame`) goes
straight to the transport, without the ASGI ``send`` coroutine, websockets'
frame serialisation, ``data_to_send()`` and a join per socket; and the one
message the application asked to intercept (its heartbeat answer) is answered
by a callback in the reader, without queueing it and waking the application's
task.  Everything else (handshake, reading, pings, closing) is uvicorn's.

An idle connection costs less here than on uvicorn's own protocol: the inbox
and the write gate are small single-purpose objects instead of an
``asyncio.Queue`` (three deques of ~760 bytes each) and an ``asyncio.Event``
(one more), and the handshake's request and response are let go once the
``websocket.accept`` went out and the application called ``intercept``
(docs/benchmarks.md, "Memory per connection").

Use it with ``uvicorn app:app --ws starlette_realtime.fastpath.uvicorn:PreframedProtocol``
or ``uvicorn.Config(app, ws=PreframedProtocol)``; ``starlette_realtime.server.run``
does by default when the installed uvicorn is one this module is tested with
(:data:`TESTED_UVICORN`).  It subclasses uvicorn internals, hence the pin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from . import EXTENSION

__all__ = ["TESTED_UVICORN", "PreframedProtocol", "protocol_class"]

logger = logging.getLogger(__name__)

#: The uvicorn releases (major.minor) whose websockets-sansio protocol this class is tested against.
TESTED_UVICORN = ("0.52", "0.53", "0.54")

_OPEN = State.OPEN


class _Inbox:
    """The part of ``asyncio.Queue`` uvicorn's protocol uses (``put_nowait``, ``get``, ``empty``,
    ``qsize``), for its one reader: the ASGI ``receive``.

    uvicorn stops reading the socket while anything is queued, so the queue holds at most one
    read's worth of messages; a list that is emptied when drained is enough.
    """

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return self._head == len(self._items)

    def qsize(self) -> int:
        return len(self._items) - self._head

    async def get(self) -> Any:
        while self._head == len(self._items):
            if self._waiter is not None:
                raise RuntimeError("the inbox has one reader, and it is already waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        item = items[self._head]
        self._head += 1
        if self._head == len(items):
            items.clear()
            self._head = 0
        return item


class _Gate:
    """The part of ``asyncio.Event`` uvicorn's protocol uses for its write flow control (open unless
    the transport paused writing), with its list of waiters made only when someone waits."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class PreframedProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, offering pre-framed writes in the scope.

    The extension is left out when the handshake negotiated permessage-deflate
    (the frames of that socket are compressed, so shared bytes would not match).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Gate()  # type: ignore[assignment]


    async def run_asgi(self) -> None:
        # The scope was built by handle_connect; the app has not seen it yet.
        if not self.conn.extensions:
            extensions = self.scope.get("extensions")
            if extensions is None:
                extensions = self.scope["extensions"] = {}
            extensions[EXTENSION] = {"write": self.write_frame, "send": self.send_frame, "intercept": self.intercept}
        await super().run_asgi()

    #: The intercepted message: (payload, "text" or "bytes", callback), or None.
    _intercepted: tuple[bytes, str, Callable[[], None]] | None = None

    def intercept(self, payload: bytes, binary: bool, callback: Callable[[], None]) -> None:
        """Answer every whole message equal to ``payload`` (of that type) with ``callback()`` instead of
        queueing it for the application."""
        self._intercepted = (payload, "bytes" if binary else "text", callback)
        if self.handshake_complete:
            # Past the handshake uvicorn reads neither again (the headers stay in the scope). Here rather
            # than in send(), which would add a call to every ASGI send of the socket's life.
            self.request = self.response = None  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        # The callback refers to the application's socket object, which refers to this protocol (its writer):
        # let go of it with the connection, so that neither waits for the collector.
        self._intercepted = None
        super().connection_lost(exc)

    def send_receive_event_to_app(self) -> None:
        intercepted = self._intercepted
        if intercepted is not None and len(self.frames) == 1 and not self.close_sent:
            payload, kind, callback = intercepted
            if self.curr_msg_data_type == kind and self.frames[0] == payload:
                self.frames = []
                callback()
                return
        super().send_receive_event_to_app()

    def write_frame(self, frame: bytes) -> bool:
        """Write one complete frame now; ``False`` (nothing written) while writing is paused.

        Raises:
            uvicorn.protocols.utils.ClientDisconnected: the peer is gone or closing (as the ASGI ``send``).
            RuntimeError: the WebSocket was not accepted, or ``websocket.close`` was sent.
        """
        if not self.writable.is_set():
            return False
        self._check_open()
        self.transport.write(frame)
        return True

    async def send_frame(self, frame: bytes) -> None:
        """Wait while writing is paused, then write one complete frame (the ASGI ``send`` path).

        Raises:
            uvicorn.protocols.utils.ClientDisconnected: the peer is gone or closing.
            RuntimeError: the WebSocket was not accepted, or ``websocket.close`` was sent.
        """
        await self.writable.wait()
        self._check_open()
        self.transport.write(frame)

    def _check_open(self) -> None:
        # The checks of uvicorn's send() for a websocket.send message, in its order.
        if self.disconnected:
            raise ClientDisconnected()
        if not self.handshake_complete or self.initial_response is not None:
            raise RuntimeError("Expected ASGI message 'websocket.accept' before a pre-framed write.")
        if self.close_sent:
            raise RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.")
        if self.conn.state is not _OPEN:
            # websockets raises InvalidState here, which uvicorn's send() turns into this.
            raise ClientDisconnected()


def protocol_class() -> type[PreframedProtocol] | None:
    """Return :class:`PreframedProtocol` when the installed uvicorn is a tested release, else ``None``.

    Returns:
        The class, or ``None`` (then serve with uvicorn's own protocol: the library sends ASGI messages).
    """
    version = ".".join(uvicorn.__version__.split(".")[:2])
    if version in TESTED_UVICORN:
        return PreframedProtocol
    logger.warning(
        "uvicorn %s is not one the pre-framed fast path is tested with (%s): using plain ASGI sends",
        uvicorn.__version__,
        ", ".join(TESTED_UVICORN),
    )
    return None
