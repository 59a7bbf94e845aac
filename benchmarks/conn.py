"""One client connection (picows, callbacks only: no task per connection), run inside a client process."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .peers import Dialect

if TYPE_CHECKING:
    from .worker import Worker


try:
    from picows import WSListener, WSMsgType, ws_connect
except ImportError:  # the orchestrator can still print --help; workers need picows
    WSListener = object  # type: ignore[misc,assignment]
    WSMsgType = ws_connect = None  # type: ignore[assignment]

# picows's own default is to use aiofastnet's transports when installed; BENCH_AIOFASTNET=0/1 forces a choice.
USE_AIOFASTNET = None if os.environ.get("BENCH_AIOFASTNET", "") == "" else os.environ["BENCH_AIOFASTNET"] == "1"
_T_KEY = b'"t":'
_S_KEY = b'"s":'


class Conn(WSListener):  # type: ignore[misc,valid-type]
    """One client connection. Callbacks only: no task per connection."""

    def __init__(self, worker: Worker, dialect: Dialect):
        self.w = worker
        self.d = dialect
        self.transport: Any = None
        self.ready: asyncio.Future[bool] = worker.loop.create_future()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.ack_cb: Callable[[Conn, int, bytes], None] | None = None
        self.next_id = 1
        self.inflight_id = 0
        self.t_sent = 0.0
        self.next_seq = 0
        self.last_offset = -1
        self.n_msg = 0
        self.pings = 0
        self.paused = False
        self.closed = False
        self.close_code: int | None = None

    # picows callbacks
    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        self._send = transport.send
        self.d.on_connected(self)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        mt = frame.msg_type
        if mt == WSMsgType.TEXT:
            self.d.on_text(self, frame.get_payload_as_bytes())
        elif mt == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self.closed:
            self.closed = True
            self.w.on_closed(self)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed ({self.close_code})"))
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready ({self.close_code})"))

    # helpers for dialects
    def set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(True)

    def fail(self, why: str) -> None:
        if len(self.w.errors) < 20:
            self.w.errors.append(why)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))

    def send_raw(self, b: bytes) -> None:
        self._send(WSMsgType.TEXT, b)

    def send_event(self, ev: str, data_json: str, ack: bool) -> int | None:
        ack_id = None
        if ack:
            ack_id = self.next_id
            self.next_id += 1
        self._send(WSMsgType.TEXT, self.d.event(ev, data_json, ack_id))
        return ack_id

    async def request(self, ev: str, data_json: str, timeout: float) -> bytes:
        ack_id = self.send_event(ev, data_json, True)
        assert ack_id is not None
        fut = self.w.loop.create_future()
        self.pending[ack_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(ack_id, None)

    # inbound
    def on_msg(self, b: bytes) -> None:
        w = self.w
        if self.paused or not w.recording:
            return
        now = time.monotonic()
        i = b.find(_T_KEY)
        j = b.find(b",", i)
        k = b.find(_S_KEY, j)
        seq = int(b[k + 4:b.find(b",", k)])
        w.lat.append(now - float(b[i + 4:j]))
        if seq != self.next_seq:
            w.order_errors += 1
        self.next_seq = seq + 1
        if w.strict:
            w.check_msg(self, b, seq)
        self.n_msg += 1
        w.last_msg = now
        w.total += 1
        if w.total >= w.target and w.done is not None and not w.done.done():
            w.done.set_result(True)

    def on_ack(self, ack_id: int, b: bytes) -> None:
        cb = self.ack_cb
        if cb is not None:
            cb(self, ack_id, b)
            return
        fut = self.pending.get(ack_id)
        if fut is not None and not fut.done():
            fut.set_result(b)

    def on_other(self, b: bytes) -> None:
        self.w.others += 1
        if len(self.w.errors) < 20:
            self.w.errors.append(f"unexpected frame {b[:200]!r}")


