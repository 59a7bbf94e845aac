"""The socket.io peers: python-socketio (benchmarks/servers/socketio_server.py) and Node socket.io
(benchmarks/servers/node_socketio.js), both spoken to over engine.io 4 on a plain WebSocket; ours over its Socket.IO
wire (ours_socketio.py) is listed in peers/ours.py."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .base import Dialect, ServerSpec

if TYPE_CHECKING:
    from ..conn import Conn


class SioDialect(Dialect):
    """engine.io 4 / socket.io 5 protocol over a plain WebSocket, default namespace "/"."""

    name = "sio"

    def on_connected(self, c: Conn) -> None:
        pass  # wait for the engine.io open packet "0{...}"

    def on_text(self, c: Conn, b: bytes) -> None:
        if b.startswith(b"42"):
            c.on_msg(b)  # the only event a server sends here is "msg"
        elif b.startswith(b"43"):
            c.on_ack(int(b[2:b.index(b"[")]), b)
        elif b == b"2":
            c.send_raw(b"3")  # engine.io ping -> pong
            c.pings += 1
        elif b.startswith(b"40"):
            c.set_ready()
        elif b.startswith(b"0"):
            c.send_raw(b"40")  # engine.io open -> socket.io CONNECT to "/"
        elif b.startswith(b"44"):
            c.fail(f"CONNECT_ERROR {b[:200]!r}")
        else:
            c.on_other(b)

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        return f'42{"" if ack_id is None else ack_id}["{ev}",{data_json}]'.encode()

    def msg_data(self, b: bytes) -> dict[str, Any]:
        f = json.loads(b[2:])
        assert f[0] == "msg", f
        return f[1]

    def ack_data(self, b: bytes) -> Any:
        return json.loads(b[b.index(b"["):])[0]




SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
SPECS = [
    ServerSpec("socketio", "python-socketio", "sio", SIO_PATH, "uvicorn", "socketio_server:app"),
    ServerSpec("node", "Node socket.io", "sio", SIO_PATH, "node", "node_socketio.js"),
]
