"""Answering cluster requests for this node: who is in a room, join/leave/disconnect a sid, kick a user, stats."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from . import status
from .cluster import ControlReply, ControlRequest, NodeStats
from .connection import Connection, ConnectionState
from .hub import Hub
from .identity import user_key
from .link import Link
from .metrics import Metrics
from .rooms import sid_room

if TYPE_CHECKING:
    from .prometheus import MetricsSample


@runtime_checkable
class _KeepsTotals(Protocol):
    # PrometheusMetrics, without importing prometheus_client here (an optional extra).
    def sample(self) -> MetricsSample: ...


class ControlResponder:
    """Answers :class:`~starlette_realtime.cluster.ControlRequest` values with this node's state.

    Args:
        node_id: this node's name.
        hub: the node's room table.
        links: the node's live sockets.
        metrics: the router's metrics; with running totals (``PrometheusMetrics``) they join the ``stats`` answer.
    """

    def __init__(self, node_id: str, hub: Hub, links: Collection[Link], *, metrics: Metrics | None = None) -> None:
        self.node_id = node_id
        self.hub = hub
        self.links = links
        self.metrics = metrics

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
        if req.op == "stats":
            return ControlReply(node, True, stats=self.stats())
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

    def stats(self) -> NodeStats:
        """This node's figures now: O(sockets + rooms)."""
        connections: dict[str, int] = {}
        users: set[str] = set()
        for link in list(self.links):
            for ns, conn in link.connections.items():
                if conn.state is ConnectionState.OPEN:
                    connections[ns] = connections.get(ns, 0) + 1
                    user = user_key(conn.user)
                    if user is not None:
                        users.add(user)
        hub = self.hub
        keys = hub.rooms.keys()
        rooms = sum(1 for _, room in keys if not room.startswith("#"))  # "#all", "#sid:..." are the library's
        stats = NodeStats(
            self.node_id, round(time.time(), 3), time.monotonic(), len(self.links), connections, len(users),
            rooms, hub.deliveries, hub.publications,
        )
        if isinstance(self.metrics, _KeepsTotals):
            totals = self.metrics.sample()
            stats = msgspec.structs.replace(
                stats, events_in=totals.events_received, bytes_in=totals.received_bytes,
                bytes_out=totals.sent_bytes, errors=totals.errors,
            )
        return stats

    def __repr__(self) -> str:
        return f"ControlResponder(node={self.node_id!r})"


__all__ = ["ControlResponder"]
