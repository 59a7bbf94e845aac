"""Raw Starlette, the ceiling: benchmarks/servers/raw_starlette.py and its JSON arrays."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .base import Dialect, ServerSpec

if TYPE_CHECKING:
    from ..conn import Conn


class RawDialect(Dialect):
    """benchmarks/servers/raw_starlette.py: ["join"|"publish"|"echo", data, id], ["ack", id, data], ["msg", data]."""

    name = "raw"

    def on_text(self, c: Conn, b: bytes) -> None:
        if b.startswith(b'["msg"'):
            c.on_msg(b)
        elif b.startswith(b'["ack",'):
            c.on_ack(int(b[7:b.index(b",", 7)]), b)
        else:
            c.on_other(b)

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        return f'["{ev}",{data_json},{"null" if ack_id is None else ack_id}]'.encode()

    def msg_data(self, b: bytes) -> dict[str, Any]:
        f = json.loads(b)
        assert f[0] == "msg", f
        return f[1]

    def ack_data(self, b: bytes) -> Any:
        return json.loads(b)[2]




SPECS = [ServerSpec("raw", "raw Starlette", "raw", "/ws", "uvicorn", "raw_starlette:app")]
