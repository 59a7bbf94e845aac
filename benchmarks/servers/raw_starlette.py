"""Raw Starlette peer: the ceiling.

A plain Starlette WebSocket route with a hand-written fan-out loop: rooms are sets of sockets, a published message is
encoded once and sent with ``await ws.send_text()`` to each member in turn. No queues, no tasks per receiver, no
protection against slow receivers (one that stops reading eventually blocks the loop for everyone behind it).

Wire format (JSON text frames, arrays), specific to this peer:

    C->S  ["join", room, id]        S->C ["ack", id, null]
    C->S  ["publish", data, id]     S->C ["msg", data] to every member of room "bench", then ["ack", id, null]
    C->S  ["echo", data, id]        S->C ["ack", id, data]

``id`` may be null (then no ack is sent). Run with the shared uvicorn settings, see benchmarks/README.md:

    python -m uvicorn raw_starlette:app --app-dir benchmarks/servers --loop uvloop --ws websockets-sansio ...
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ROOMS: dict[str, set[WebSocket]] = {}
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    joined: list[str] = []
    try:
        while True:
            text = await ws.receive_text()
            frame = _loads(text)
            kind = frame[0]
            ack_id = frame[2] if len(frame) > 2 else None
            if kind == "publish":
                out = _dumps(["msg", frame[1]])  # encode once
                for member in tuple(ROOMS.get("bench", ())):
                    try:
                        await member.send_text(out)
                    except Exception:
                        pass
                if ack_id is not None:
                    await ws.send_text(_dumps(["ack", ack_id, None]))
            elif kind == "echo":
                if ack_id is not None:
                    await ws.send_text(_dumps(["ack", ack_id, frame[1]]))
            elif kind == "join":
                room = frame[1]
                ROOMS.setdefault(room, set()).add(ws)
                joined.append(room)
                if ack_id is not None:
                    await ws.send_text(_dumps(["ack", ack_id, None]))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for room in joined:
            members = ROOMS.get(room)
            if members is not None:
                members.discard(ws)


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
