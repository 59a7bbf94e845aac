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
        op: ``members``, ``rooms``, ``join``, ``leave``, ``disconnect`` or ``disconnect_user``.
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


class ControlReply(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """One node's answer: ``found`` says whether it acted on or knew the target."""

    node: str
    found: bool = False
    items: list[str] = []


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
