"""Cluster-wide operations: ask every node about a room or a connection, or act on one.

A backend that spans nodes implements :class:`Cluster`; the router then sends a
:class:`ControlRequest` to every node and gathers their replies.  On a
single-node backend the router answers itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import msgspec


class ControlRequest(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """An operation for every node.

    Attributes:
        op: ``members``, ``rooms``, ``join``, ``leave``, ``disconnect``, ``disconnect_user`` or ``stats``.
        ns: the namespace.
        sid: the target connection, for ``rooms``, ``join``, ``leave`` and ``disconnect``.
        room: the room, for ``members``, ``join`` and ``leave``.
        user: the user id, for ``disconnect_user``.
        reason: why, for the disconnects.
    """

    op: str
    ns: str = ""
    sid: str = ""
    room: str = ""
    user: str = ""
    reason: str = ""


class NodeStats(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """One node's figures, the answer to a ``stats`` request (the dashboard's cluster view).

    Counters are running totals since the node started: a reader's rate is the difference
    of two answers over the difference of their ``uptime``.

    Attributes:
        node: the node id.
        t: the node's wall-clock time, seconds.
        uptime: seconds on the node's monotonic clock (for rates).
        links: open WebSockets.
        connections: open namespace connections per namespace.
        users: distinct authenticated users.
        rooms: application rooms with a member on this node.
        deliveries: events delivered to local connections.
        publications: publications fanned out on this node.
        events_in: events received (``None`` without a metrics object that keeps totals).
        bytes_in: WebSocket bytes received (likewise).
        bytes_out: event bytes delivered (likewise).
        errors: events answered with an error (likewise).
    """

    node: str
    t: float
    uptime: float
    links: int = 0
    connections: dict[str, int] = {}
    users: int = 0
    rooms: int = 0
    deliveries: int = 0
    publications: int = 0
    events_in: float | None = None
    bytes_in: float | None = None
    bytes_out: float | None = None
    errors: float | None = None


class ControlReply(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """One node's answer: ``found`` says whether it acted on or knew the target; ``stats`` answers ``stats``."""

    node: str
    found: bool = False
    items: list[str] = []
    stats: NodeStats | None = None


ControlHandler = Callable[[ControlRequest], Awaitable[ControlReply]]


@runtime_checkable
class Cluster(Protocol):
    """A backend that can reach every node."""

    def on_control(self, handler: ControlHandler) -> None:
        """Set the function that answers requests arriving at this node."""

    async def control(self, request: ControlRequest, *, timeout: float) -> list[ControlReply]:
        """Send a request to every node (this one included) and gather the replies.

        Replies that do not arrive within ``timeout`` are missing from the list.

        Raises:
            BackendUnavailable: the backend is down.
        """
