"""A client process: connects, publishes, echoes and counts on its own uvloop, on orders from the orchestrator.

Pinned to the client CPU, with the collector off (few cycles are made; keeps the client's latency free of collector
pauses). Commands come over one pipe, replies go back over another (clients.WorkerHandle is the other end).
"""

from __future__ import annotations

import array
import asyncio
import gc
import os
import random
import time
import traceback
from typing import Any

from .common import CLIENT_CPU, _pin
from .conn import USE_AIOFASTNET, Conn, ws_connect
from .peers import DIALECTS, Dialect
from .peers.base import _json_frag
from .peers.raw import RawDialect


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


class Worker:
    """A client process: runs commands from the orchestrator (over a pipe) on its own uvloop."""

    def __init__(self, pipe: Any, results: Any, index: int):
        self.pipe = pipe  # commands in (read from the event loop)
        self.results = results  # replies out (a separate, blocking pipe: replies can be megabytes)
        self.index = index
        self.loop = asyncio.get_running_loop()
        self.conns: list[Conn] = []
        self.dialect: Dialect = RawDialect()
        self.strict = False
        self.errors: list[str] = []
        self.others = 0
        self.closed_count = 0
        self.close_codes: dict[str, int] = {}
        self.recording = False
        self.reset_counters()

    def reset_counters(self) -> None:
        self.lat = array.array("d")
        self.order_errors = 0
        self.content_errors = 0
        self.total = 0
        self.target = 1 << 62
        self.last_msg = 0.0
        self.done: asyncio.Future[bool] | None = None

    def on_closed(self, c: Conn) -> None:
        self.closed_count += 1
        code = str(c.close_code)
        self.close_codes[code] = self.close_codes.get(code, 0) + 1

    def check_msg(self, c: Conn, b: bytes, seq: int) -> None:
        try:
            data = self.dialect.msg_data(b)
            assert data["s"] == seq and isinstance(data["t"], float) and len(data["p"]) == self.pad_len, data
            if "_offset" in data:
                assert data["_offset"] > c.last_offset, (data["_offset"], c.last_offset)
                c.last_offset = data["_offset"]
        except Exception as e:
            self.content_errors += 1
            if len(self.errors) < 20:
                self.errors.append(f"bad msg {b[:200]!r}: {e!r}")

    async def serve(self) -> None:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        ppid = os.getppid()

        def readable() -> None:
            try:
                q.put_nowait(self.pipe.recv())
            except (EOFError, OSError):
                self.loop.remove_reader(self.pipe.fileno())
                q.put_nowait({"op": "close"})

        def watchdog() -> None:  # the orchestrator died: do not linger
            if os.getppid() != ppid:
                q.put_nowait({"op": "close"})
            else:
                self.loop.call_later(1.0, watchdog)

        self.loop.add_reader(self.pipe.fileno(), readable)
        watchdog()
        while True:
            cmd = await q.get()
            op = cmd.pop("op")
            if op == "close":
                await self.close_all()
                try:
                    self.results.send({"ok": True})
                except OSError:
                    pass
                return
            try:
                res = await getattr(self, "op_" + op)(**cmd)
            except Exception as e:
                res = {"error": f"worker {self.index} {op}: {type(e).__name__}: {e}\n{traceback.format_exc()}"}
            self.results.send(res)

    async def close_all(self) -> None:
        for c in self.conns:
            if not c.closed and c.transport is not None:
                try:
                    c.transport.disconnect()
                except Exception:
                    pass
        await asyncio.sleep(0)

    # --- operations ---------------------------------------------------------------------------------------------------

    async def op_connect(self, url: str, dialect: str, n: int, src_ip: str, concurrency: int, join: str | None,
                         strict: bool, pad_len: int, timeout: float, retries: int = 0) -> dict[str, Any]:
        """Open n connections. ``retries``: how often one connection may try again after a retryable failure (a
        CONNECT_ERROR marked retryable, or a handshake time-out), with a jittered backoff, as a real client would;
        the retries are counted (0 by default: any failure is final)."""
        self.dialect = DIALECTS[dialect]()
        self.strict = strict
        self.pad_len = pad_len
        sem = asyncio.Semaphore(concurrency)
        ok = 0
        failed = 0
        retried = 0
        t_start = time.monotonic()
        t_end = t_start
        deadline = t_start + timeout

        async def attempt() -> Conn:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connect phase timed out")
            c: Conn | None = None

            def factory() -> Conn:
                nonlocal c
                c = Conn(self, self.dialect)
                return c

            try:
                await asyncio.wait_for(
                    ws_connect(factory, url, extra_headers=self.dialect.headers, local_addr=(src_ip, 0),
                               websocket_handshake_timeout=min(10.0, remaining), enable_auto_ping=False,
                               use_aiofastnet=USE_AIOFASTNET),
                    remaining)
                assert c is not None
                await asyncio.wait_for(c.ready, max(0.1, deadline - time.monotonic()))
            except BaseException:
                if c is not None and c.transport is not None and not c.closed:
                    c.closed = True  # a failed attempt, not a connection closed later: not counted as closed
                    c.transport.disconnect()  # do not leave a half-open connection behind
                raise
            return c

        async def one() -> None:
            nonlocal ok, failed, t_end, retried
            async with sem:
                try:
                    for k in range(retries + 1):
                        try:
                            c = await attempt()
                            break
                        except (ConnectionError, TimeoutError) as e:
                            text = str(e)
                            # retryable: a CONNECT_ERROR whose last field is true, or a handshake time-out
                            again = (("CONNECT_ERROR" in text and text.rstrip("'\"").endswith("true]"))
                                     or (isinstance(e, TimeoutError) and "connect phase" not in text))
                            if k == retries or not again or time.monotonic() > deadline - 1.0:
                                raise
                            retried += 1
                            await asyncio.sleep(min(2.0, 0.25 * 2 ** k) * (0.5 + random.random()))
                    if join is not None:
                        b = await c.request("join", _json_frag(join), max(0.1, deadline - time.monotonic()))
                        if strict:
                            self.dialect.ack_data(b)
                    self.conns.append(c)
                    ok += 1
                    t_end = time.monotonic()
                except Exception as e:
                    failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"connect: {type(e).__name__}: {e}")

        cpu0 = _cpu_self()
        await asyncio.gather(*(one() for _ in range(n)))
        return {"ok": ok, "failed": failed, "retried": retried, "t_start": t_start, "t_end": t_end,
                "cpu": _cpu_self() - cpu0, "errors": self.errors[:10]}

    async def op_pause(self, k: int) -> dict[str, Any]:
        """Make the last k connections stop reading (slow receivers); they are left out of every count."""
        for c in self.conns[-k:]:
            c.paused = True
            c.transport.underlying_transport.pause_reading()
        return {"ok": True}

    async def op_arm(self) -> dict[str, Any]:
        self.reset_counters()
        for c in self.conns:
            c.next_seq = 0
            c.n_msg = 0
        self.recording = True
        self.cpu0 = _cpu_self()
        return {"ok": True}

    async def op_wait(self, expect: int, timeout: float) -> dict[str, Any]:
        """Wait until each reading receiver got `expect` messages since arm, or timeout."""
        active = [c for c in self.conns if not c.paused]
        self.target = expect * len(active)
        if self.total < self.target:
            self.done = self.loop.create_future()
            try:
                await asyncio.wait_for(self.done, timeout)
            except TimeoutError:
                pass
        self.recording = False
        counts = [c.n_msg for c in active]
        return {
            "expected": self.target, "total": self.total, "min_per_conn": min(counts, default=0),
            "max_per_conn": max(counts, default=0), "short_conns": sum(1 for x in counts if x < expect),
            "order_errors": self.order_errors, "content_errors": self.content_errors,
            "last_msg": self.last_msg, "lat": self.lat.tobytes(), "cpu": _cpu_self() - self.cpu0,
            "closed": self.closed_count, "close_codes": self.close_codes, "errors": self.errors[:10],
        }

    async def op_publish(self, mode: str, count: int, duration: float, window: int, rate: float, pad_len: int,
                         stall_timeout: float, max_outstanding: int, drain: float = 0.0) -> dict[str, Any]:
        """The publisher: `burst` keeps `window` publishes awaiting their ack; `steady` publishes at `rate`/s."""
        c = self.conns[0]
        pad = "x" * pad_len
        loop = self.loop
        st = {"sent": 0, "acked": 0, "outstanding": 0, "last_ack": 0.0, "max_gap": 0.0, "stop": False,
              "stalled": False, "overloaded": False}
        finished: asyncio.Future[bool] = loop.create_future()
        t0 = time.monotonic()
        deadline = t0 + duration
        st["last_ack"] = t0

        def send_one() -> None:
            seq = st["sent"]
            c.send_event("publish", f'{{"t":{time.monotonic()!r},"s":{seq},"p":"{pad}"}}', True)
            st["sent"] = seq + 1
            st["outstanding"] += 1

        def more() -> bool:
            return not st["stop"] and st["sent"] < count and time.monotonic() < deadline

        def on_ack(_c: Conn, _id: int, _b: bytes) -> None:
            now = time.monotonic()
            gap = now - st["last_ack"]
            if gap > st["max_gap"]:
                st["max_gap"] = gap
            st["last_ack"] = now
            st["acked"] += 1
            st["outstanding"] -= 1
            if mode == "burst" and more():
                send_one()
            elif st["outstanding"] == 0 and not more() and not finished.done():
                finished.set_result(True)

        c.ack_cb = on_ack
        cpu0 = _cpu_self()
        try:
            if mode == "burst":
                for _ in range(min(window, count)):
                    send_one()
            else:
                interval = 1.0 / rate

                def tick(k: int) -> None:
                    if not more():
                        if st["outstanding"] == 0 and not finished.done():
                            finished.set_result(True)
                        return
                    if st["outstanding"] >= max_outstanding:
                        st["overloaded"] = True
                        st["stop"] = True
                        return
                    send_one()
                    loop.call_at(t_loop0 + (k + 1) * interval, tick, k + 1)

                t_loop0 = loop.time()
                tick(0)
            # watch for stalls: no ack for stall_timeout while acks are outstanding
            while not finished.done():
                await asyncio.wait({finished}, timeout=0.1)
                now = time.monotonic()
                if st["outstanding"] > 0 and now - st["last_ack"] > stall_timeout:
                    st["stalled"] = True
                    break
                if now > deadline + 4 * stall_timeout + 30:
                    break
        finally:
            st["stop"] = True
            c.ack_cb = None
        gap = time.monotonic() - st["last_ack"] if st["outstanding"] else 0.0
        return {"sent": st["sent"], "acked": st["acked"], "t_first": t0, "t_last_ack": st["last_ack"],
                "max_ack_gap": max(st["max_gap"], gap), "stalled": st["stalled"], "overloaded": st["overloaded"],
                "cpu": _cpu_self() - cpu0, "closed": self.closed_count, "errors": self.errors[:10]}

    async def op_ack_run(self, start: float, measure_start: float, deadline: float, pad_len: int,
                         timeout: float) -> dict[str, Any]:
        """Every connection keeps one echo in flight until `deadline`; acks completed in the window are counted."""
        pad = "x" * pad_len
        rtts = array.array("d")
        st = {"acks": 0, "bad": 0, "outstanding": 0}
        finished: asyncio.Future[bool] = self.loop.create_future()
        strict = self.strict
        dialect = self.dialect

        def send(c: Conn, now: float) -> None:
            c.inflight_id = c.next_id
            c.t_sent = now
            c.send_event("echo", f'{{"s":{c.inflight_id},"p":"{pad}"}}', True)

        def on_ack(c: Conn, ack_id: int, b: bytes) -> None:
            now = time.monotonic()
            if ack_id != c.inflight_id:
                st["bad"] += 1
            elif strict:
                try:
                    data = dialect.ack_data(b)
                    assert data == {"s": ack_id, "p": pad}, data
                except Exception as e:
                    st["bad"] += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"bad ack {b[:200]!r}: {e!r}")
            if measure_start <= now < deadline:
                st["acks"] += 1
                rtts.append(now - c.t_sent)
            if now < deadline:
                send(c, now)
            else:
                st["outstanding"] -= 1
                if st["outstanding"] == 0 and not finished.done():
                    finished.set_result(True)

        active = [c for c in self.conns if not c.closed]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu0 = _cpu_self()
        st["outstanding"] = len(active)
        now = time.monotonic()
        for c in active:
            c.ack_cb = on_ack
            send(c, now)
        try:
            await asyncio.wait_for(finished, max(0.1, deadline - time.monotonic()) + timeout)
        except TimeoutError:
            pass
        for c in active:
            c.ack_cb = None
        return {"acks": st["acks"], "bad": st["bad"], "unanswered": st["outstanding"], "rtt": rtts.tobytes(),
                "cpu": _cpu_self() - cpu0, "closed": self.closed_count, "close_codes": self.close_codes,
                "errors": self.errors[:10]}

    async def op_status(self) -> dict[str, Any]:
        return {"open": sum(1 for c in self.conns if not c.closed), "closed": self.closed_count,
                "close_codes": self.close_codes, "pings": sum(c.pings for c in self.conns), "cpu": _cpu_self(),
                "errors": self.errors[:10]}

    async def op_check(self, timeout: float, concurrency: int) -> dict[str, Any]:
        """Every open connection must answer an echo."""
        sem = asyncio.Semaphore(concurrency)
        answered = 0

        async def one(c: Conn) -> None:
            nonlocal answered
            async with sem:
                try:
                    await c.request("echo", '{"check":true}', timeout)
                    answered += 1
                except Exception as e:
                    if len(self.errors) < 20:
                        self.errors.append(f"check: {type(e).__name__}: {e}")

        await asyncio.gather(*(one(c) for c in self.conns if not c.closed))
        return {"answered": answered, "open": sum(1 for c in self.conns if not c.closed), "closed": self.closed_count,
                "close_codes": self.close_codes, "errors": self.errors[:10]}


def worker_main(pipe: Any, results: Any, index: int) -> None:
    _pin(CLIENT_CPU)
    gc.disable()  # few cycles are made; keeps the client's latency free of collector pauses
    import uvloop

    async def main() -> None:
        await Worker(pipe, results, index).serve()

    uvloop.run(main())

