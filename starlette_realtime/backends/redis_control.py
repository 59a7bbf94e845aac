"""Cluster queries over Redis: one control channel for all nodes, one reply channel per node.

A requester reads the node registry (a sorted set scored by Redis' clock, each
node refreshing its entry on its heartbeat) to learn which nodes should
answer, publishes the request on the control channel, answers it itself
directly, and returns as soon as every other live node replied on the
requester's own channel, or at the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ..cluster import ControlHandler, ControlReply, ControlRequest
from ..exceptions import BackendUnavailable
from .redis_wire import CONTROL_DECODER, REPLY, REPLY_DECODER, ControlEnvelope, ReplyEnvelope, encode_msgpack

if TYPE_CHECKING:
    from .redis_node import ControlNode

logger = logging.getLogger("starlette_realtime.backends.redis")


class Pending:
    """Replies to one request, and whether every expected node answered."""

    __slots__ = ("done", "expected", "got", "replies")

    def __init__(self) -> None:
        self.replies: list[ControlReply] = []
        self.expected: set[str] = set()
        self.got: set[str] = set()
        self.done = asyncio.Event()

    def expect(self, nodes: set[str]) -> None:
        self.expected = nodes
        if self.expected <= self.got:
            self.done.set()

    def add(self, node: str, reply: ControlReply) -> None:
        self.replies.append(reply)
        self.got.add(node)
        if self.expected <= self.got:
            self.done.set()


class ControlBus:
    """The request/reply side of a Redis backend node (asyncio only).

    Args:
        node: the backend (its client, names, id, commands and task group).
        live_nodes: the ids of the nodes in the registry (``NodeHeartbeat.live_nodes``).
    """

    def __init__(self, node: ControlNode, *, live_nodes: Callable[[], Awaitable[set[str]]]) -> None:
        self.node = node
        self._live_nodes = live_nodes
        self.handler: ControlHandler | None = None
        self.pending: dict[str, Pending] = {}

    async def request(self, request: ControlRequest, timeout: float) -> list[ControlReply]:
        node = self.node
        deadline = time.monotonic() + timeout
        rid = secrets.token_hex(8)
        pending = self.pending[rid] = Pending()
        try:
            pending.expect(await self._live_nodes() - {node.node_id})
            envelope = encode_msgpack(ControlEnvelope(node.node_id, rid, request))
            await node.command(node.redis.publish(node.names.control, envelope))
            replies: list[ControlReply] = []
            if self.handler is not None:
                # This node answers directly: no round trip through Redis.
                replies.append(await self.handler(request))
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await pending.done.wait()
            if not pending.done.is_set():
                logger.info(
                    "cluster request %r: no reply from %s within %.1f s",
                    request.op, sorted(pending.expected - pending.got), timeout,
                )
            return replies + pending.replies
        finally:
            del self.pending[rid]

    def on_request(self, data: bytes) -> None:
        """A message on the control channel (called by the link's reader; must not block)."""
        try:
            envelope = CONTROL_DECODER.decode(data)
        except Exception:
            logger.warning("dropped a malformed cluster request")
            return
        if envelope.origin != self.node.node_id and self.handler is not None:
            self.node.spawn(self._answer, envelope)

    async def _answer(self, envelope: ControlEnvelope) -> None:
        node = self.node
        assert self.handler is not None
        try:
            with anyio.fail_after(max(node.command_timeout, 5.0)):
                reply = await self.handler(envelope.request)
        except Exception:
            logger.exception("cluster request %r failed on node %s", envelope.request.op, node.node_id)
            reply = ControlReply(node.node_id, False)
        message = REPLY + encode_msgpack(ReplyEnvelope(envelope.rid, node.node_id, reply))
        try:
            await node.command(node.redis.publish(node.names.node(envelope.origin), message))
        except BackendUnavailable:
            logger.debug("could not answer cluster request %s", envelope.rid)

    def on_reply(self, data: bytes) -> None:
        """A reply on this node's channel (called by the link's reader)."""
        try:
            envelope = REPLY_DECODER.decode(data)
        except Exception:
            logger.warning("dropped a malformed cluster reply")
            return
        pending = self.pending.get(envelope.rid)
        if pending is not None:
            pending.add(envelope.node, envelope.reply)

    def close(self) -> None:
        for pending in self.pending.values():
            pending.done.set()

    def __repr__(self) -> str:
        return f"ControlBus(pending={len(self.pending)})"


__all__ = ["ControlBus", "Pending"]
