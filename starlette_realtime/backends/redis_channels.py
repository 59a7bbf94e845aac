"""How one pub/sub session carries its channels: one connection, or one per Redis Cluster shard.

A session subscribes a few fixed channels (the control channel, the node's own
channel) with ``SUBSCRIBE`` and every hosted room's channel: on one server
with ``SUBSCRIBE`` on the same connection (:class:`PlainChannels`), on a
Redis Cluster with ``SSUBSCRIBE`` on a connection to the master that owns the
room's slot (:class:`ShardedChannels`), so that a room's traffic touches one
shard only.  Both are asyncio-only (redis-py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

logger = logging.getLogger("starlette_realtime.backends.redis")

#: Called by a reader for each message: (channel, data).  Must not block.
OnMessage = Callable[[bytes, bytes], None]

SUBSCRIBE_CHUNK = 500


class LinkLost(Exception):
    """The pub/sub connection stopped answering, or the cluster moved a slot (raised inside the subscriber only)."""


class Channels(Protocol):
    """The connections of one pub/sub session."""

    async def open(self, tg: anyio.abc.TaskGroup, fixed: list[bytes], rooms: list[bytes]) -> None:
        """Connect, subscribe ``fixed`` and ``rooms``, and start the readers in ``tg``."""

    async def add(self, rooms: list[bytes]) -> None:
        """Subscribe more room channels."""

    async def drop(self, rooms: list[bytes]) -> None:
        """Unsubscribe room channels."""

    async def barrier(self) -> None:
        """Return once every subscription sent so far is active (raises ``LinkLost`` after ``timeout``)."""

    async def close(self) -> None:
        """Close every connection of the session."""


class Pinger:
    """PING with a token on a subscribed connection; its PONG proves the commands before it were applied.

    Replies on one connection come in command order, so the PONG of a PING sent
    after ``SUBSCRIBE`` proves that the subscription is active.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pongs: dict[bytes, asyncio.Future[None]] = {}

    async def ping(self, ps: PubSub) -> None:
        token = secrets.token_hex(8).encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[token] = fut
        try:
            await ps.ping(token)
            with anyio.fail_after(self.timeout):
                await fut
        except TimeoutError:
            raise LinkLost("no answer to a PING on a pub/sub connection") from None
        finally:
            self._pongs.pop(token, None)

    def pong(self, token: bytes) -> None:
        fut = self._pongs.get(token)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def cancel(self) -> None:
        for fut in self._pongs.values():
            if not fut.done():
                fut.cancel()
        self._pongs.clear()


async def read(ps: PubSub, on_message: OnMessage, pinger: Pinger, *, sharded: set[bytes] | None = None) -> None:
    """Read one connection until it fails: messages to ``on_message``, PONGs to ``pinger``.

    ``sharded`` is the set of shard channels this connection should hold: a
    ``sunsubscribe`` the server sends on its own for one of them (its slot moved
    to another master) ends the session.
    """
    while True:
        msg = await ps.get_message(timeout=1.0)
        if msg is None:
            continue
        kind = msg["type"]
        if kind == "message" or kind == "smessage":
            on_message(msg["channel"], msg["data"])
        elif kind == "pong":
            pinger.pong(msg["data"])
        elif kind == "sunsubscribe" and sharded is not None and msg["channel"] in sharded:
            raise LinkLost(f"the cluster moved the slot of {msg['channel']!r}")


async def close_pubsub(ps: PubSub) -> None:
    with anyio.move_on_after(1.0, shield=True):
        try:
            await ps.aclose()  # type: ignore[no-untyped-call]
        except Exception:
            logger.debug("closing a pub/sub connection failed", exc_info=True)


class PlainChannels:
    """Every channel on one connection to one Redis server (``SUBSCRIBE``)."""

    def __init__(self, redis: Redis, on_message: OnMessage, timeout: float) -> None:
        self._redis = redis
        self._on_message = on_message
        self._pinger = Pinger(timeout)
        self._ps: PubSub | None = None

    async def open(self, tg: anyio.abc.TaskGroup, fixed: list[bytes], rooms: list[bytes]) -> None:
        ps = self._ps = self._redis.pubsub()
        await ps.subscribe(*fixed)
        await self.add(rooms)
        tg.start_soon(read, ps, self._on_message, self._pinger)

    async def add(self, rooms: list[bytes]) -> None:
        assert self._ps is not None
        for i in range(0, len(rooms), SUBSCRIBE_CHUNK):
            await self._ps.subscribe(*rooms[i : i + SUBSCRIBE_CHUNK])

    async def drop(self, rooms: list[bytes]) -> None:
        assert self._ps is not None
        if rooms:
            await self._ps.unsubscribe(*rooms)

    async def barrier(self) -> None:
        assert self._ps is not None
        await self._pinger.ping(self._ps)

    async def close(self) -> None:
        self._pinger.cancel()
        ps, self._ps = self._ps, None
        if ps is not None:
            await close_pubsub(ps)

    def __repr__(self) -> str:
        return f"PlainChannels(open={self._ps is not None})"


def pubsub_on(node: Any) -> PubSub:
    """A pub/sub object on one cluster node, with the cluster client's connection settings."""
    from redis.asyncio.client import PubSub
    from redis.asyncio.connection import ConnectionPool

    kwargs = dict(node.connection_kwargs)
    kwargs.pop("event_dispatcher", None)
    pool = ConnectionPool(connection_class=node.connection_class, max_connections=2, **kwargs)
    return PubSub(connection_pool=pool)


__all__ = ["Channels", "LinkLost", "OnMessage", "Pinger", "PlainChannels", "close_pubsub", "pubsub_on", "read"]
