"""The Redis backend's node heartbeat, node registry and global epoch: one timer per node for every periodic duty.

Every ``heartbeat_interval`` seconds the node publishes a heartbeat on its own
channel (the subscriber declares the link down when it has not heard one for
``link_timeout`` seconds), refreshes the global epoch and its entry in the
node registry, and runs the callbacks other components added (presence, the
session store).  A callback still running from the previous beat is skipped;
a failing one is logged and does not stop later beats.

The registry is a sorted set scored by Redis' clock (each node's deadline), so
that the hosts' clocks need not agree; cluster requests expect an answer from
every node in it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .redis_wire import HEARTBEAT

if TYPE_CHECKING:
    from .redis_node import HeartbeatNode

logger = logging.getLogger("starlette_realtime.backends.redis")

HeartbeatCallback = Callable[[], Awaitable[None]]


class NodeHeartbeat:
    """The beat of one Redis backend node, the callbacks it runs, and the global epoch it keeps.

    Args:
        node: the backend (its client, names, id and settings).
        answers: whether the node answers cluster requests (only then is it in the registry).
        link_up: whether the node's pub/sub link is up (the registry is refreshed only then).
    """

    def __init__(self, node: HeartbeatNode, *, answers: Callable[[], bool], link_up: Callable[[], bool]) -> None:
        self.node = node
        self._answers = answers
        self._link_up = link_up
        #: The epoch of everything Redis holds ("" until first read).
        self.global_epoch = ""
        self.callbacks: dict[HeartbeatCallback, bool] = {}
        self.beats = 0
        self._publisher: Any = None

    async def refresh_epoch(self) -> None:
        """Read the global epoch, creating it when Redis has none (it restarted empty)."""
        # The global epoch names everything Redis holds; a Redis that restarted
        # empty gets a new one from the first node that notices.
        node = self.node
        await node.redis.set(node.names.epoch, secrets.token_urlsafe(6), nx=True)
        epoch = await node.redis.get(node.names.epoch)
        if epoch is not None:
            self.global_epoch = epoch.decode()

    async def register(self) -> None:
        """Enter or refresh this node in the registry (when it answers cluster requests)."""
        node = self.node
        if self._answers():
            ttl_ms = int((node.link_timeout + node.heartbeat_interval) * 1000)
            await node.script("register")(keys=[node.names.nodes], args=[node.node_id, ttl_ms])

    async def live_nodes(self) -> set[str]:
        """The ids of the nodes whose registration has not expired (Redis' clock decides)."""
        node = self.node
        live = await node.command(node.script("live")(keys=[node.names.nodes]))
        return {n.decode() for n in live}

    def _publisher_client(self) -> Any:
        # On one server the heartbeat has a connection of its own: under a storm of
        # commands queued for the shared pool it must not come late, or the
        # subscriber would take a busy node for a lost link.  On a cluster it goes
        # through the cluster client, which follows failovers (the backend queues
        # its own commands in front of that client, not the heartbeat).
        node = self.node
        if node.cluster_mode:
            return node.redis
        if self._publisher is None:
            self._publisher = node.redis.client()
        return self._publisher

    async def close(self) -> None:
        """Close the heartbeat's own connection."""
        client, self._publisher = self._publisher, None
        if client is not None:
            with anyio.move_on_after(1.0, shield=True):
                try:
                    await client.aclose()
                except Exception:
                    logger.debug("closing the heartbeat connection failed", exc_info=True)

    def add(self, fn: HeartbeatCallback) -> None:
        self.callbacks[fn] = False

    def remove(self, fn: HeartbeatCallback) -> None:
        self.callbacks.pop(fn, None)

    async def run(self, tg: anyio.abc.TaskGroup) -> None:
        node = self.node
        failing = False
        while True:
            await anyio.sleep(node.heartbeat_interval)
            try:
                with anyio.fail_after(max(node.heartbeat_interval, 0.5)):
                    channel = node.names.node(node.node_id)
                    try:
                        await self._publisher_client().publish(channel, HEARTBEAT)
                    except Exception:
                        await self.close()  # the next beat opens a new connection
                        raise
                    await self.refresh_epoch()
                    if self._link_up():
                        await self.register()
                failing = False
                self.beats += 1
            except Exception as exc:
                if not failing:
                    logger.warning("node %s heartbeat failed: %r", node.node_id, exc)
                failing = True
            for fn, running in list(self.callbacks.items()):
                if not running:
                    self.callbacks[fn] = True
                    tg.start_soon(self._run_callback, fn)

    async def _run_callback(self, fn: HeartbeatCallback) -> None:
        try:
            await fn()
        except Exception:
            logger.warning("heartbeat callback %r failed", fn, exc_info=True)
        finally:
            if fn in self.callbacks:
                self.callbacks[fn] = False

    def __repr__(self) -> str:
        return f"NodeHeartbeat(callbacks={len(self.callbacks)}, beats={self.beats})"


__all__ = ["HeartbeatCallback", "NodeHeartbeat"]
