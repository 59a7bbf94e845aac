"""One socket's bounded outbox and its single writer.

Everything the server sends on a socket goes through :meth:`Outbox.push`,
which never awaits.  When nothing is queued it writes straight to the ASGI
server (uvicorn's ``send`` finishes without suspending while the socket keeps
up: that is the plain loop's cost without its danger); when the socket falls
behind, messages wait in a bounded queue that one writer task drains.  The
overflow policy decides what happens when the queue is full.

Where the server can write complete WebSocket frames itself (the pre-framed
extension of :mod:`starlette_realtime.fastpath`), :meth:`Outbox.push_frame`
writes a frame built once for all receivers, with the same queueing, flow
control and overflow as the ASGI path.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Preframed(Protocol):
    """A server's pre-framed writer (:class:`starlette_realtime.fastpath.Preframed`)."""

    @property
    def write(self) -> Callable[[bytes], bool]:
        """Write a frame now; ``False`` (nothing written) while the transport is paused."""

    @property
    def send(self) -> Callable[[bytes], Awaitable[None]]:
        """Wait while the transport is paused, then write a frame."""

#: The backlog of an outbox that never queued: see ``Outbox.__init__``.
_NO_QUEUE: Any = ()


class Overflow(str, enum.Enum):
    """What to do when a connection's outbox is full."""

    #: Close the connection with 4004 (slow consumer).  The default: nothing is lost silently.
    DISCONNECT = "disconnect"
    #: Drop the oldest queued message to make room.
    DROP_OLDEST = "drop_oldest"
    #: Drop the message being pushed.
    DROP_NEWEST = "drop_newest"


class Outbox:
    """Send-side of a WebSocket with one writer and a bounded queue.

    Args:
        send: the ASGI ``send`` callable.
        max_messages: queued messages allowed before the overflow policy applies.
        max_bytes: queued bytes allowed before the overflow policy applies.
        overflow: the overflow policy.
        on_overflow: called (synchronously) when the policy is ``DISCONNECT``
            and the queue overflows.
        on_drop: called (synchronously) with the reason (``volatile``, ``drop_oldest``,
            ``drop_newest``) for each message dropped without closing.
        preframed: the server's pre-framed writer for this socket
            (:func:`starlette_realtime.fastpath.preframed`), or ``None``.
    """

    __slots__ = (
        "_busy",
        "_closed",
        "_direct",
        "_fast",
        "_inflight",
        "_max_bytes",
        "_max_messages",
        "_on_drop",
        "_on_overflow",
        "_overflow",
        "_queue",
        "_queued_bytes",
        "_running",
        "_send",
        "_send_frame",
        "_spawn",
        "_write",
        "dropped",
    )

    def __init__(
        self,
        send: Send,
        *,
        max_messages: int,
        max_bytes: int,
        overflow: Overflow,
        on_overflow: Callable[[], None],
        on_drop: Callable[[str], None] | None = None,
        preframed: Preframed | None = None,
    ) -> None:
        self._send = send
        self._write: Callable[[bytes], bool] | None = None
        self._send_frame: Callable[[bytes], Awaitable[None]] | None = None
        if preframed is not None:
            self._write, self._send_frame = preframed.write, preframed.send
        # The backlog, created on first use: an empty deque costs ~600 bytes (its first
        # block), and most connections never queue anything (their sends complete at once).
        # Until then an empty tuple answers len(), truth tests and iteration the same way.
        # Queued items are ASGI messages, or frames (bytes) for the pre-framed writer.
        self._queue: deque[tuple[dict[str, Any] | bytes, int]] = _NO_QUEUE  # type: ignore[assignment]
        self._queued_bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._overflow = overflow
        self._on_overflow = on_overflow
        self._on_drop = on_drop
        # The writer task exists only while there is a backlog: most connections never
        # need one (their sends complete at once), which saves a task per connection.
        self._spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], object] | None = None
        self._running = False
        # True while the writer task is sending: pushes must queue to keep order.
        self._busy = False
        self._inflight: tuple[Coroutine[Any, Any, None], Any] | None = None
        try:
            asyncio.get_running_loop()
            self._fast = True
        except RuntimeError:
            self._fast = False
        # True while a push may write straight to the socket: nothing queued, nothing in
        # flight, the writer idle, the outbox open.  One flag keeps the fast path to one check.
        self._direct = self._fast
        self._closed = False
        self.dropped = 0

    @property
    def closed(self) -> bool:
        """Whether the outbox accepts no more messages."""
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        if value:
            self._direct = False

    @property
    def queued(self) -> int:
        """Messages waiting for the writer."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def push(self, message: dict[str, Any], size: int, volatile: bool = False) -> bool:
        """Send or queue one ASGI message without awaiting.

        Args:
            message: a ``websocket.send`` message (it may be shared between receivers).
            size: its size in bytes, for the byte limit.
            volatile: drop it rather than queue it when the socket is behind.

        Returns:
            ``False`` when the message was dropped.
        """
        if self._direct:
            coro = self._send(message)
            try:
                yielded = coro.send(None)  # type: ignore[attr-defined]
            except StopIteration:
                return True
            except BaseException:
                # The socket is gone; the reader will see the disconnect and clean up.
                self.closed = True
                coro.close()  # type: ignore[attr-defined]
                return False
            # The ASGI server is applying flow control: the writer finishes this send.
            self._direct = False
            self._inflight = (coro, yielded)  # type: ignore[assignment]
            self._wake()
            return True
        return self._enqueue(message, size, volatile)

    def push_frame(self, frame: bytes, message: dict[str, Any], size: int, volatile: bool = False) -> bool:
        """Send or queue one message given as a complete WebSocket frame and as its ASGI message.

        The frame (the same bytes object for every receiver) is written as is when the
        server offers pre-framed writes; otherwise this is :meth:`push` of the message.

        Args:
            frame: the message framed by :func:`starlette_realtime.fastpath.ws_frame`.
            message: the same message as a ``websocket.send`` message.
            size: its size in bytes, for the byte limit.
            volatile: drop it rather than queue it when the socket is behind.

        Returns:
            ``False`` when the message was dropped.
        """
        write = self._write
        if write is None:
            return self.push(message, size, volatile)
        if self._direct:
            try:
                if write(frame):
                    return True
            except Exception:
                # The socket is gone; the reader will see the disconnect and clean up.
                self.closed = True
                return False
            # The server is applying flow control: the writer finishes this write, as it
            # finishes a suspended ASGI send (in flight, not queued).
            assert self._send_frame is not None
            self._direct = False
            self._inflight = (self._send_frame(frame), None)  # type: ignore[assignment]
            self._wake()
            return True
        return self._enqueue(frame, size, volatile)

    def _enqueue(self, item: dict[str, Any] | bytes, size: int, volatile: bool) -> bool:
        if self._closed:
            return False
        if volatile:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop("volatile")
            return False
        if len(self._queue) >= self._max_messages or self._queued_bytes + size > self._max_bytes:
            if self._overflow is Overflow.DROP_NEWEST:
                self.dropped += 1
                if self._on_drop is not None:
                    self._on_drop("drop_newest")
                return False
            if self._overflow is Overflow.DROP_OLDEST and self._queue:
                while self._queue and (
                    len(self._queue) >= self._max_messages or self._queued_bytes + size > self._max_bytes
                ):
                    _, old = self._queue.popleft()
                    self._queued_bytes -= old
                    self.dropped += 1
                    if self._on_drop is not None:
                        self._on_drop("drop_oldest")
            else:
                self.dropped += 1
                self.closed = True
                self._on_overflow()
                return False
        self._direct = False
        if self._queue is _NO_QUEUE:
            self._queue = deque()
        self._queue.append((item, size))
        self._queued_bytes += size
        self._wake()
        return True

    def attach(self, spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], object]) -> None:
        """Give the outbox a way to start its writer (the link's ``spawn``)."""
        self._spawn = spawn
        if self._queue or self._inflight is not None:
            self._wake()

    def _wake(self) -> None:
        if not self._running and self._spawn is not None:
            self._running = True
            self._spawn(self.run)

    async def run(self) -> None:
        """The writer: finish a suspended send and drain the queue, then exit."""
        try:
            await self._drain()
        finally:
            self._running = False
            self._busy = False
            if self._fast and not self._closed and self._inflight is None and not self._queue:
                self._direct = True

    async def _drain(self) -> None:
        while self._inflight is not None or (self._queue and not self._closed):
            inflight = self._inflight
            if inflight is not None:
                self._busy = True
                try:
                    await _resume(*inflight)
                except Exception:
                    self.closed = True
                    return
                finally:
                    self._inflight = None
            if self._queue and not self.closed:
                self._busy = True
                while self._queue and not self.closed:
                    item, size = self._queue.popleft()
                    self._queued_bytes -= size
                    try:
                        if type(item) is bytes:
                            assert self._send_frame is not None
                            await self._send_frame(item)
                        else:
                            await self._send(item)  # type: ignore[arg-type]
                    except Exception:
                        # The peer is gone: the reader sees the disconnect and cleans up.
                        self.closed = True
                        self._queue.clear()
                        self._queued_bytes = 0
                        return

    def __repr__(self) -> str:
        return f"Outbox(queued={len(self._queue)}, bytes={self._queued_bytes}, dropped={self.dropped})"


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Drive to completion a coroutine that suspended outside any task.

    This mirrors what an asyncio Task does with a coroutine: wait for the future
    it yielded, then resume it; errors (and our own cancellation) are thrown in.
    """
    try:
        while True:
            try:
                if yielded is None:
                    await asyncio.sleep(0)
                else:
                    await _Yield(yielded)
            except BaseException as exc:
                yielded = coro.throw(exc)
            else:
                yielded = coro.send(None)
    except StopIteration:
        return
    finally:
        coro.close()


class _Yield:
    """Re-yield a future to our own task, exactly as the suspended coroutine did."""

    __slots__ = ("fut",)

    def __init__(self, fut: Any) -> None:
        self.fut = fut

    def __await__(self) -> Generator[Any, None, None]:
        yield self.fut

