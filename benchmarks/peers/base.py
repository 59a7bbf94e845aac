"""What a peer is: how its server is started (ServerSpec) and how a client speaks to it (Dialect).

A new peer is a module of this package with a Dialect subclass (unless it speaks an existing one) and its
ServerSpec entries, listed in peers/__init__.py; its server goes into benchmarks/servers/.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..common import HOST, NODE_DIR, SERVERS_DIR, STACK, uvicorn_args

if TYPE_CHECKING:
    from ..conn import Conn


@dataclass(frozen=True)
class ServerSpec:
    key: str
    label: str
    dialect: str  # raw | sio | rt
    path: str
    kind: str  # uvicorn | node
    target: str  # "module:app" in benchmarks/servers, or a script there
    #: uvicorn's WebSocket implementation for this server whatever --ws says (``ours-fast``: the fast path).
    ws: str | None = None

    def command(self, port: int) -> list[str]:
        if self.kind == "node":
            return ["node", str(SERVERS_DIR / self.target), str(port), HOST]
        if STACK.asgi_server == "granian":
            # One worker process (granian always runs its workers in child processes: Server.pid finds it),
            # one runtime thread, uvloop; granian has no WebSocket ping of its own to turn off.
            return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
                    "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--log-level", "warning",
                    "--no-access-log", "--backlog", "2048", "--working-dir", str(SERVERS_DIR), self.target]
        if STACK.asgi_server == "hypercorn":
            # One worker process (Server.pid finds it), uvloop; hypercorn sends no WebSocket ping by default.
            module, app = self.target.split(":")
            return [sys.executable, "-m", "hypercorn", "--bind", f"{HOST}:{port}", "--workers", "1",
                    "--worker-class", "uvloop", "--backlog", "2048", "--graceful-timeout", "2", "--log-level",
                    "warning", f"{SERVERS_DIR / module}:{app}"]
        return [sys.executable, "-m", "uvicorn", self.target, "--app-dir", str(SERVERS_DIR), "--port", str(port),
                *uvicorn_args(self.ws)]

    def unavailable(self) -> str | None:
        """Why this server cannot run here, or None."""
        if self.kind == "node":
            if shutil.which("node") is None:
                return "node is not installed"
            if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
                return "run `npm ci` in benchmarks/node first"
        return None


def _json_frag(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


class Dialect:
    """How one kind of server is spoken to. on_text() is on the hot path: bytes prefix tests only."""

    name = ""
    headers: ClassVar[dict[str, str] | None] = None

    def on_connected(self, c: Conn) -> None:
        c.set_ready()

    def on_text(self, c: Conn, b: bytes) -> None:
        raise NotImplementedError

    def event(self, ev: str, data_json: str, ack_id: int | None) -> bytes:
        raise NotImplementedError

    # strict (smoke) decoding
    def msg_data(self, b: bytes) -> dict[str, Any]:
        raise NotImplementedError

    def ack_data(self, b: bytes) -> Any:
        raise NotImplementedError

