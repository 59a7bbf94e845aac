"""The embedded backend (``memory://``): one process, no external service.

Publications are handed to the local hub synchronously.  Each room stream keeps
a bounded history (a ring buffer, trimmed by count and age) so that recovery
works exactly as on Redis.  Expired streams and sessions are swept lazily while
publishing, so the backend needs no task of its own.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable

import msgspec

from ..frames import Position
from .base import Deliver, HistoryReply, Publication

_SWEEP_EVERY = 1.0


class _Stream:
    __slots__ = ("epoch", "items", "last", "offset")

    def __init__(self, epoch: str, maxlen: int) -> None:
        self.epoch = epoch
        self.offset = 0
        self.items: deque[tuple[float, Publication]] = deque(maxlen=maxlen)
        self.last = 0.0


class MemoryBackend:
    """A single-process backend with history and session recovery.

    Args:
        history_size: messages kept per room stream (0 disables history).
        history_ttl: seconds a message is kept in history.
        clock: a monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._clock = clock
        # One epoch per backend instance: a restarted process has lost its history.
        self._epoch = secrets.token_urlsafe(6)
        self._stream_seq = 0
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._deliver: Deliver | None = None
        self._next_sweep = 0.0

    @property
    def healthy(self) -> bool:
        return self._deliver is not None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None
        self._streams.clear()
        self._sessions.clear()

    async def subscribe(self, ns: str, room: str) -> None:
        return None

    async def unsubscribe(self, ns: str, room: str) -> None:
        return None

    async def publish(self, pub: Publication) -> Publication:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        if not pub.volatile and self.history_size > 0:
            key = (pub.ns, pub.room)
            stream = self._streams.get(key)
            if stream is None:
                self._stream_seq += 1
                stream = _Stream(f"{self._epoch}.{self._stream_seq}", self.history_size)
                self._streams[key] = stream
            stream.offset += 1
            stream.last = now
            pub = msgspec.structs.replace(pub, epoch=stream.epoch, offset=stream.offset)
            stream.items.append((now, pub))
        if self._deliver is not None:
            self._deliver(pub)
        return pub

    # History ----------------------------------------------------------------

    async def position(self, ns: str, room: str) -> Position | None:
        stream = self._streams.get((ns, room))
        if stream is None:
            return None
        return Position(stream.epoch, stream.offset)

    async def since(self, ns: str, room: str, position: Position | None) -> HistoryReply:
        stream = self._streams.get((ns, room))
        if stream is None:
            # Nothing retained: the stream was idle for longer than the window, so a
            # client that disconnected within the window missed nothing -- provided
            # the position comes from this backend's epoch (else the history was lost).
            recovered = position is None or position.epoch.startswith(self._epoch + ".")
            return HistoryReply(recovered, (), None)
        current = Position(stream.epoch, stream.offset)
        horizon = self._clock() - self.history_ttl
        items = [pub for ts, pub in stream.items if ts > horizon]
        if position is None:
            return HistoryReply(True, items, current)
        if position.epoch != stream.epoch:
            return HistoryReply(False, (), current)
        if position.offset >= stream.offset:
            return HistoryReply(True, (), current)
        missed = [pub for pub in items if pub.offset > position.offset]
        # The history covers the position only if the first missed offset follows it.
        first = missed[0].offset if missed else stream.offset + 1
        if first != position.offset + 1:
            return HistoryReply(False, (), current)
        return HistoryReply(True, missed, current)

    # Sessions ---------------------------------------------------------------

    async def save_session(self, key: str, state: bytes, ttl: float) -> None:
        self._sessions[key] = (self._clock() + ttl, state)

    async def take_session(self, key: str) -> bytes | None:
        entry = self._sessions.pop(key, None)
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1]

    # -------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_EVERY
        horizon = now - self.history_ttl
        for key, stream in list(self._streams.items()):
            items = stream.items
            while items and items[0][0] <= horizon:
                items.popleft()
            if not items and stream.last <= horizon:
                del self._streams[key]
        for session, (deadline, _) in list(self._sessions.items()):
            if deadline < now:
                del self._sessions[session]

    def stats(self) -> dict[str, int]:
        """Counts for tests and metrics: streams, retained messages, saved sessions."""
        return {
            "streams": len(self._streams),
            "messages": sum(len(s.items) for s in self._streams.values()),
            "sessions": len(self._sessions),
        }

    def __repr__(self) -> str:
        return f"MemoryBackend(history_size={self.history_size}, history_ttl={self.history_ttl})"
