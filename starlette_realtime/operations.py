"""What a router does across the cluster: emit from outside a connection, ask or act on every node."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .backends import Backend
from .cluster import Cluster, ControlReply, ControlRequest, NodeStats
from .config import RealtimeConfig
from .connection import Connection
from .control import ControlResponder
from .emitter import BroadcastOperator, Publisher
from .rooms import room_error


class ClusterOperations:
    """The emitting and cluster-wide part of :class:`~starlette_realtime.RealtimeRouter` (its base class)."""

    backend: Backend
    config: RealtimeConfig
    control: ControlResponder
    publisher: Publisher

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Target rooms from outside any connection (pass ``namespace=`` to ``emit``)."""
        return BroadcastOperator(self.publisher).to(*rooms)

    def to_sid(self, sid: str, *, namespace: str) -> BroadcastOperator:
        """Target one connection by sid, on whichever node it is."""
        return BroadcastOperator(self.publisher, namespace=namespace).to_sid(sid)

    async def emit(self, event: str, data: Any = None, *, namespace: str, volatile: bool = False) -> None:
        """Emit to every connection of a namespace, on every node."""
        await BroadcastOperator(self.publisher).emit(event, data, namespace=namespace, volatile=volatile)

    async def _control(self, request: ControlRequest) -> list[ControlReply]:
        if isinstance(self.backend, Cluster):
            return await self.backend.control(request, timeout=self.config.control_timeout)
        return [await self.control(request)]

    async def members(self, room: str, *, namespace: str) -> list[str]:
        """The sids of the connections in a room, across every node that answers in time."""
        replies = await self._control(ControlRequest("members", namespace, room=room))
        return sorted({sid for r in replies for sid in r.items})

    async def rooms_of(self, sid: str, *, namespace: str) -> set[str] | None:
        """The rooms of a connection on any node (``None`` when no node has it)."""
        for reply in await self._control(ControlRequest("rooms", namespace, sid=sid)):
            if reply.found:
                return set(reply.items)
        return None

    async def join(self, sid: str, room: str, *, namespace: str) -> bool:
        """Make a connection on any node join a room; ``True`` when some node had it."""
        if room_error(room) is not None:
            raise ValueError(room_error(room))
        return any(r.found for r in await self._control(ControlRequest("join", namespace, sid=sid, room=room)))

    async def leave(self, sid: str, room: str, *, namespace: str) -> bool:
        """Make a connection on any node leave a room."""
        return any(r.found for r in await self._control(ControlRequest("leave", namespace, sid=sid, room=room)))

    async def disconnect(self, sid: str, *, namespace: str, reason: str = "disconnected by server") -> bool:
        """Close a namespace connection on any node."""
        req = ControlRequest("disconnect", namespace, sid=sid, reason=reason)
        return any(r.found for r in await self._control(req))

    async def disconnect_user(self, user: str, *, reason: str = "disconnected by server") -> int:
        """Close every WebSocket of a user on every node with 4503 (logout, ban); returns how many."""
        replies = await self._control(ControlRequest("disconnect_user", user=user, reason=reason))
        return sum(len(r.items) for r in replies)

    async def node_stats(self) -> list[NodeStats]:
        """Each node's figures (connections, rooms, running totals), from the nodes that answer in time.

        Returns:
            One :class:`~starlette_realtime.cluster.NodeStats` per node, sorted by node id.

        Raises:
            BackendUnavailable: the backend is down.
        """
        replies = await self._control(ControlRequest("stats"))
        return sorted((r.stats for r in replies if r.stats is not None), key=lambda s: s.node)

    def local_connection(self, sid: str, namespace: str) -> Connection | None:
        """The connection ``sid`` of ``namespace`` if this node serves it."""
        return self.control.local_connection(sid, namespace)

    async def handle_control(self, req: ControlRequest) -> ControlReply:
        """Answer a cluster request for this node."""
        return await self.control(req)


__all__ = ["ClusterOperations"]
