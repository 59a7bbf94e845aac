"""The heartbeat scheduler visits each socket when it is due (a timing wheel), on an injected clock."""

from __future__ import annotations

from starlette_realtime.heartbeat import HeartbeatScheduler


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Sock:
    def __init__(self, every: float | None, clock: Clock, closes_after: int | None = None) -> None:
        self.every = every
        self.clock = clock
        self.visits: list[float] = []
        self.closes_after = closes_after

    def tick(self, now: float, wall: float) -> float | None:
        self.visits.append(now)
        if self.closes_after is not None and len(self.visits) >= self.closes_after:
            return None
        return None if self.every is None else now + self.every


def make(clock: Clock, ticks: list[int]) -> HeartbeatScheduler:
    return HeartbeatScheduler(clock=clock, wall_clock=lambda: 0.0, interval=25.0, timeout=20.0,
                              connect_timeout=10.0, on_tick=lambda: ticks.append(1))


def run(clock: Clock, sched: HeartbeatScheduler, seconds: int) -> None:
    for _ in range(seconds):
        clock.t += 1.0
        sched.tick()


def test_idle_sockets_are_visited_once_per_horizon_not_every_tick() -> None:
    clock, ticks = Clock(), []
    sched = make(clock, ticks)
    socks = [Sock(25.0, clock) for _ in range(100)]
    for s in socks:
        sched.add(s)
    run(clock, sched, 60)
    assert len(ticks) == 60  # metrics flush every tick
    visits = sum(len(s.visits) for s in socks)
    assert visits <= 100 * (60 / sched.horizon + 2), visits  # not 6,000
    assert all(len(s.visits) >= 60 / sched.horizon - 1 for s in socks)


def test_a_socket_is_visited_at_its_due_time() -> None:
    clock, ticks = Clock(), []
    sched = make(clock, ticks)
    sock = Sock(2.0, clock)
    sched.add(sock)
    run(clock, sched, 10)
    gaps = [b - a for a, b in zip(sock.visits, sock.visits[1:], strict=False)]
    assert gaps and all(g == 2.0 for g in gaps), sock.visits


def test_closed_sockets_are_dropped() -> None:
    clock, ticks = Clock(), []
    sched = make(clock, ticks)
    sock = Sock(1.0, clock, closes_after=3)
    sched.add(sock)
    run(clock, sched, 20)
    assert len(sock.visits) == 3
    assert len(sched) == 0


def test_a_clock_swapped_backwards_still_visits() -> None:
    clock, ticks = Clock(), []
    sched = make(clock, ticks)
    sock = Sock(1.0, clock)
    sched.add(sock)
    clock.t = 0.0  # a test's manual clock replaced the real one
    run(clock, sched, 3)
    assert len(sock.visits) >= 2
