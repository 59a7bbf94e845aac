"""One heartbeat scheduler per node: no timer per connection.

Each tick visits the sockets that are due; the socket's session core decides
whether to ping, to close (ping unanswered, no namespace opened within
``connect_timeout``) or to do nothing, and says when it is due next; credential
expiry rides on the same loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import anyio


class Ticking(Protocol):
    """A socket the scheduler visits (a :class:`~starlette_realtime.link.Link`)."""

    def tick(self, now: float, wall: float) -> float | None:
        """Ping, close or nothing; return when to visit again (monotonic), or ``None`` once closed."""
        ...


class HeartbeatScheduler:
    """Visits each socket of a node when it is due, not every socket at every tick.

    A timing wheel of ``period``-long slots: a socket is put in the slot of its next due
    time (its next PING, its PING's deadline, its CONNECT deadline, its credential's expiry,
    at most ``horizon`` seconds ahead), so an idle node of 10,000 sockets with the default
    25 s interval makes about 10,000 / ``horizon`` visits a second instead of 10,000.

    Args:
        clock: the monotonic clock (pings, time-outs).
        wall_clock: seconds since the epoch (credential expiry).
        interval: seconds between the server's pings.
        timeout: seconds a ping may stay unanswered.
        connect_timeout: seconds a socket may stay without a namespace.
        on_tick: called once per tick (metrics flush their buffered counts).
        horizon: the longest a socket waits for its next visit (so that a deadline moved
            earlier without the scheduler knowing is late by at most this).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        interval: float,
        timeout: float,
        connect_timeout: float,
        on_tick: Callable[[], None],
        horizon: float = 5.0,
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.period = max(0.05, min(1.0, interval / 4, timeout / 4, connect_timeout / 4))
        self.horizon = max(self.period, horizon)
        self.on_tick = on_tick
        self._wheel: dict[int, list[Ticking]] = {}
        #: Slots up to this one were visited (set by the first socket: the clock may be swapped before).
        self._done: int | None = None

    def add(self, sock: Ticking) -> None:
        """Start visiting a new socket (its first visit is one period from now)."""
        now = self.clock()
        if self._done is None:
            self._done = math.floor(now / self.period)
        self._put(sock, now + self.period)

    def _put(self, sock: Ticking, due: float) -> None:
        assert self._done is not None
        slot = max(math.ceil(due / self.period), self._done + 1)
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = [sock]
        else:
            bucket.append(sock)

    def tick(self) -> None:
        """Visit the sockets that are due."""
        self.on_tick()
        now = self.clock()
        wall = self.wall_clock()
        current = math.floor(now / self.period)
        done = self._done
        if done is None:
            return
        if current < done or current - done > len(self._wheel) + 64:
            # The clock went back (a test swapped it) or jumped far ahead: visit everything now.
            pending = [sock for bucket in self._wheel.values() for sock in bucket]
            self._wheel = {current: pending}
            done = current - 1
        wheel = self._wheel
        self._done = current  # re-put sockets land after this tick
        for slot in range(done + 1, current + 1):
            bucket = wheel.pop(slot, None)
            if not bucket:
                continue
            for sock in bucket:
                due = sock.tick(now, wall)
                if due is not None:
                    self._put(sock, min(due, now + self.horizon))

    async def run(self) -> None:
        """Tick forever (until cancelled)."""
        while True:
            await anyio.sleep(self.period)
            self.tick()

    def __len__(self) -> int:
        return sum(len(b) for b in self._wheel.values())

    def __repr__(self) -> str:
        return f"HeartbeatScheduler(period={self.period}, sockets={len(self)})"


__all__ = ["HeartbeatScheduler", "Ticking"]
