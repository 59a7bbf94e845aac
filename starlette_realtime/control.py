"""Answering cluster requests for this node: who is in a room, join/leave/disconnect a sid, kick a user."""

from __future__ import annotations

from collections.abc import Collection

from . import status
from .cluster import ControlReply, ControlRequest
from .connection import Connection, ConnectionState
from .hub import Hub
from .identity import user_key
from .link import Link
from .rooms import sid_room


class ControlResponder:
    """Answers :class:`~starlette_realtime.cluster.ControlRequest` values with this node's state.

    Args:
        node_id: this node's name.
        hub: the node's room table.
        links: the node's live sockets.
    """

    def __init__(self, node_id: str, hub: Hub, links: Collection[Link]) -> None:
        self.node_id = node_id
        self.hub = hub
        self.links = links

    def local_connection(self, sid: str, namespace: str) -> Connection | None:
        """The connection ``sid`` of ``namespace`` if this node serves it."""
        members = self.hub.rooms.members((namespace, sid_room(sid)))
        conn = None if not members else members.get(sid)
        return conn if isinstance(conn, Connection) else None

    async def __call__(self, req: ControlRequest) -> ControlReply:
        """Answer one request."""
        node = self.node_id
        if req.op == "members":
            members = self.hub.rooms.members((req.ns, req.room))
            return ControlReply(node, bool(members), list(members or ()))
        if req.op == "disconnect_user":
            closed = []
            for link in list(self.links):
                if any(user_key(c.user) == req.user for c in link.connections.values()):
                    closed.append(link.id)
                    link.abort(status.WS_4503_KICKED, req.reason or "kicked")
            return ControlReply(node, bool(closed), closed)
        conn = self.local_connection(req.sid, req.ns)
        if conn is None or conn.state is not ConnectionState.OPEN:
            return ControlReply(node, False)
        if req.op == "rooms":
            return ControlReply(node, True, sorted(conn.rooms))
        if req.op == "join":
            await conn.join(req.room)
        elif req.op == "leave":
            await conn.leave(req.room)
        elif req.op == "disconnect":
            await conn.disconnect(req.reason)
        return ControlReply(node, True)

    def __repr__(self) -> str:
        return f"ControlResponder(node={self.node_id!r})"


__all__ = ["ControlResponder"]
