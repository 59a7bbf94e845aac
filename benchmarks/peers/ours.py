"""starlette-realtime ("ours", benchmarks/servers/ours.py), spoken to in rt.v1.json (docs/protocol.md).

Also ``ours-sio`` (ours over its Socket.IO wire, spoken to like the socket.io peers), ``ours-base`` (the same server on
the package of the checkout at BENCH_BASE_TREE, for before/after runs) and ``rtmock`` (a few-line stand-in that tests
the rt dialect; not a peer).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from ..common import ROOM
from .base import Dialect, ServerSpec
from .socketio import SIO_PATH

if TYPE_CHECKING:
    from ..conn import Conn


class RtDialect(Dialect):
    """starlette-realtime, docs/protocol.md, subprotocol rt.v1.json, namespace /bench."""

    name = "rt"
    headers: ClassVar[dict[str, str] | None] = {"Sec-WebSocket-Protocol": "rt.v1.json"}
    NS = "/bench"

    def on_connected(self, c: Conn) -> None:
        c.send_raw(b'[1,"/bench",null]')  # CONNECT; allowed before HELLO

    def on_text(self, c: Conn, b: bytes) -> None:
        if b.startswith(b"[5,"):
            c.on_msg(b)  # EVENT [5,ns,"msg",data,null,room,epoch,offset]
        elif b.startswith(b"[6,"):  # ACK [6,ns,id,data,error]
            i = b.index(b",", 3)
            j = b.find(b",", i + 1)
            if j < 0:
                j = b.index(b"]", i + 1)
            c.on_ack(int(b[i + 1:j]), b)
        elif b.startswith(b"[7"):
            c.send_raw(b"[8]")  # PING -> PONG
            c.pings += 1
        elif b.startswith(b"[2,"):
            c.set_ready()  # CONNECTED
        elif b.startswith(b"[0,"):
            version = json.loads(b)[1]  # HELLO
            if version != 1:
                c.fail(f"protocol version {version}")
        elif b.startswith(b"[3,"):
            c.fail(f"CONNECT_ERROR {b[:200]!r}")
        else:
            c.on_other(b)

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        return f'[5,"/bench","{ev}",{data_json},{"null" if ack_id is None else ack_id}]'.encode()

    def msg_data(self, b: bytes) -> dict[str, Any]:
        f = json.loads(b)
        assert f[0] == 5 and f[1] == self.NS and f[2] == "msg" and f[5] == ROOM, f
        assert isinstance(f[7], int), f
        return f[3] | {"_offset": f[7]}

    def ack_data(self, b: bytes) -> Any:
        f = json.loads(b)
        if len(f) > 4 and f[4]:
            raise AssertionError(f"ack error {f[4]}")
        return f[3] if len(f) > 3 else None




SPECS = [
    ServerSpec("ours", "starlette-realtime", "rt", "/ws/", "uvicorn", "ours:app"),  # Mount needs the slash
    # ours on the library's pre-framed uvicorn protocol (what starlette_realtime.server.run uses), whatever --ws says;
    # on another ASGI server (--asgi-server) it is plain ASGI like "ours".
    ServerSpec("ours-fast", "starlette-realtime (fast path)", "rt", "/ws/", "uvicorn", "ours:app", ws="preframed"),
    # ours over its Socket.IO wire, spoken to by the same client as the two socket.io peers.
    ServerSpec("ours-sio", "starlette-realtime (Socket.IO)", "sio", SIO_PATH, "uvicorn", "ours_socketio:app"),
    # ours on the package of the checkout at BENCH_BASE_TREE: before/after comparisons in one run.
    ServerSpec("ours-base", "starlette-realtime (base)", "rt", "/ws/", "uvicorn", "ours:app"),
    # A few-line stand-in that speaks docs/protocol.md, to test the "rt" dialect before ours exists. Not a peer.
    ServerSpec("rtmock", "rt.v1 mock", "rt", "/ws", "uvicorn", "rt_mock:app"),
]
