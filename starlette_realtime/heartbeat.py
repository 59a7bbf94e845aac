"""One heartbeat scheduler per node: no timer per connection.

Each tick visits every socket of the node once; the socket's session core
decides whether to ping, to close (ping unanswered, no namespace opened within
``connect_timeout``) or to do nothing, and credential expiry rides on the same
loop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

import anyio


class Ticking(Protocol):
    """A socket the scheduler visits (a :class:`~starlette_realtime.link.Link`)."""

    def tick(self, now: float, wall: float) -> None: ...


class HeartbeatScheduler:
    """Visits every socket of a node about four times per ``ping_interval``.

    Args:
        sockets: the node's live sockets (read at each tick).
        clock: the monotonic clock (pings, time-outs).
        wall_clock: seconds since the epoch (credential expiry).
        interval: seconds between the server's pings.
        timeout: seconds a ping may stay unanswered.
        connect_timeout: seconds a socket may stay without a namespace.
        on_tick: called once per tick (metrics flush their buffered counts).
    """

    def __init__(
        self,
        sockets: Collection[Ticking],
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        interval: float,
        timeout: float,
        connect_timeout: float,
        on_tick: Callable[[], None],
    ) -> None:
        self.sockets = sockets
        self.clock = clock
        self.wall_clock = wall_clock
        self.period = max(0.05, min(1.0, interval / 4, timeout / 4, connect_timeout / 4))
        self.on_tick = on_tick

    def tick(self) -> None:
        """Visit every socket once."""
        self.on_tick()
        now = self.clock()
        wall = self.wall_clock()
        for sock in list(self.sockets):
            sock.tick(now, wall)

    async def run(self) -> None:
        """Tick forever (until cancelled)."""
        while True:
            await anyio.sleep(self.period)
            self.tick()

    def __repr__(self) -> str:
        return f"HeartbeatScheduler(period={self.period})"


__all__ = ["HeartbeatScheduler"]
