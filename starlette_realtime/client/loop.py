"""The client's connection loop: one WebSocket at a time, reconnected with backoff after a retryable close.

It knows sockets, close codes and delays, and nothing of namespaces or events: what to send on a new
socket and what to do with each message are callbacks handed in by the client. It runs on the
``websockets`` package's asyncio client, so the Python client is asyncio-only.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .. import status
from ..exceptions import RealtimeError
from .errors import ClientClosed

logger = logging.getLogger(__name__)

#: HTTP answers to the handshake after which trying again later may work.
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


class ClientState(str, enum.Enum):
    """The connection's state, as ``RealtimeClient.state`` shows it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class ConnectionLoop:
    """Opens a WebSocket, feeds its messages to ``on_message``, and reconnects until told to stop.

    Args:
        urls: the URLs of equivalent nodes; each reconnect attempt goes to the next one.
        subprotocol: the WebSocket subprotocol to offer.
        on_open: awaited on each new socket (the client sends its CONNECTs).
        on_message: awaited with each message's bytes; a :class:`RealtimeError` it raises stops
            the loop for good (a namespace refused for good).
        on_closed: called after each socket closed, with its close code (``None``: no close frame).
        on_failed: called once when the loop stops for good, with the reason.
        on_state: called on each state change.
        backoff: a factory of delay iterators, started over after a socket that opened a namespace.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        subprotocol: str,
        on_open: Callable[[], Awaitable[None]],
        on_message: Callable[[bytes], Awaitable[None]],
        on_closed: Callable[[int | None], None],
        on_failed: Callable[[BaseException], None],
        on_state: Callable[[ClientState], None],
        backoff: Callable[[], Iterator[float]],
        reconnection: bool = True,
        reconnection_attempts: int | None = None,
        open_timeout: float = 10.0,
        origin: str | None = None,
        compression: bool = False,
    ) -> None:
        self.urls = list(urls)
        self.url_index = 0
        self.subprotocol = subprotocol
        self._on_open, self._on_message, self._on_closed = on_open, on_message, on_closed
        self._on_failed, self._on_state = on_failed, on_state
        self._backoff = backoff
        self.reconnection = reconnection
        self.reconnection_attempts = reconnection_attempts
        self.open_timeout = open_timeout
        self.origin = origin
        self.compression = compression
        #: Seconds without a frame after which the server is taken for dead (HELLO sets it).
        self.silence = 45.0
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.reconnects = 0
        self.last_close_code: int | None = None
        # Set when the client closes the socket itself to retry a namespace later.
        self._retry_close = False
        # Whether the current socket got a namespace open (then the backoff starts over).
        self._opened = False

    @property
    def url(self) -> str:
        return self.urls[self.url_index]

    def start(self) -> None:
        """Start the loop in a task (once)."""
        if self.task is None:
            self.closing = False
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Close the socket with 1000 and end the loop."""
        self.closing = True
        ws = self.ws
        if ws is not None:
            await ws.close(status.WS_1000_NORMAL_CLOSURE)
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def kill(self) -> None:
        """Drop the socket without a close frame, as a network failure would (for tests)."""
        ws = self.ws
        if ws is not None:
            ws.transport.abort()

    def mark_opened(self) -> None:
        """Record that the current socket opened a namespace: the next backoff starts over."""
        self._opened = True

    async def close_for_retry(self) -> None:
        """Close the socket with 1000 and reconnect after the backoff delay (a retryable refusal)."""
        self._retry_close = True
        ws = self.ws
        if ws is not None:
            await ws.close(status.WS_1000_NORMAL_CLOSURE)

    async def send(self, message: bytes | str) -> bool:
        """Send one message on the current socket; ``False`` when there is none or it closed."""
        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(message)
        except ConnectionClosed:
            return False
        return True

    async def _run(self) -> None:
        delays = self._backoff()
        attempts = 0
        self._on_state(ClientState.CONNECTING)
        while not self.closing:
            code: int | None = None
            self._opened = False
            try:
                code = await self._session()
                if self._opened:
                    attempts = 0
                    delays = self._backoff()
            except InvalidStatus as exc:
                http = exc.response.status_code
                if http not in RETRYABLE_HTTP:
                    self._on_failed(ClientClosed(f"handshake refused with HTTP {http}", None))
                    return
            except (OSError, ConnectionClosed, TimeoutError, asyncio.IncompleteReadError) as exc:
                logger.debug("connection attempt failed: %r", exc)
            except RealtimeError as exc:  # a namespace refused for good
                self._on_failed(exc)
                return
            finally:
                self.ws = None
                self._on_closed(code)
            self.last_close_code = code
            if self.closing:
                break
            if code is not None and not status.is_retryable(code):
                self._on_failed(ClientClosed(f"closed by the server with {code}", code))
                return
            if not self.reconnection:
                self._on_failed(ClientClosed(f"connection lost ({code})", code))
                return
            attempts += 1
            if self.reconnection_attempts is not None and attempts > self.reconnection_attempts:
                self._on_failed(ClientClosed("gave up reconnecting", code))
                return
            self._on_state(ClientState.RECONNECTING)
            await asyncio.sleep(next(delays))
            self.reconnects += 1
            self.url_index = (self.url_index + 1) % len(self.urls)

    async def _session(self) -> int | None:
        """One WebSocket, from open to close; returns the close code."""
        async with websockets.connect(
            self.url,
            subprotocols=[self.subprotocol],  # type: ignore[list-item]
            origin=self.origin,  # type: ignore[arg-type]
            compression="deflate" if self.compression else None,
            ping_interval=None,
            max_size=None,
            open_timeout=self.open_timeout,
            close_timeout=2,
        ) as ws:
            self.ws = ws
            self._retry_close = False
            await self._on_open()
            try:
                while True:
                    async with asyncio.timeout(self.silence):
                        message = await ws.recv()
                    await self._on_message(message if isinstance(message, bytes) else message.encode())
            except TimeoutError:
                logger.info("no frame from the server within %.1f s: reconnecting", self.silence)
                ws.transport.abort()
                return None
            except ConnectionClosed as exc:
                if self._retry_close:
                    return None
                return exc.rcvd.code if exc.rcvd is not None else None

    def __repr__(self) -> str:
        return f"ConnectionLoop(url={self.url!r}, reconnects={self.reconnects}, closing={self.closing})"
