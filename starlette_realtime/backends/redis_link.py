"""The Redis backend's pub/sub link: one supervised connection per node, subscribed per room.

A *session* is the life of one pub/sub connection: subscribe to the control
channel, the node's own channel and every hosted room's channel, then read.
The session ends when the connection fails or when the node has not heard its
own heartbeat for ``link_timeout`` seconds (the only way to notice a Redis that
is stopped rather than dead: redis-py then neither raises nor returns).  The
supervisor then opens a new session after a jittered, capped backoff.

Exactly once, in order: the link remembers the last (epoch, offset) it handed
to the hub for each room.  Live messages at or below it are dropped; a gap, or
a new session after a lost one, makes the room *catch up*: live messages are
buffered while the missed ones are read from the room's Redis Stream and
delivered, then the buffer is drained.  When the stream no longer covers the
gap the room's members get a ``$resync`` publication instead: never silence.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import msgspec

from .base import Publication
from .redis_wire import HEARTBEAT, REPLY, decode_message

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from .redis import RedisBackend

logger = logging.getLogger("starlette_realtime.backends.redis")

_SUBSCRIBE_CHUNK = 500
_JSON = msgspec.json.Encoder()


class LinkLost(Exception):
    """The pub/sub connection stopped answering (raised inside the link only)."""


class RoomSub:
    """One hosted room stream: whether it is wanted, and what was delivered last.

    ``epoch`` is ``None`` until the position is known; ``"<global>."`` with
    offset 0 means "no stream existed, in that global epoch".  ``buffer`` is not
    ``None`` while the room catches up.
    """

    __slots__ = ("buffer", "channel", "epoch", "ns", "offset", "room", "wanted")

    def __init__(self, ns: str, room: str, channel: bytes) -> None:
        self.ns = ns
        self.room = room
        self.channel = channel
        self.wanted = True
        self.epoch: str | None = None
        self.offset = 0
        self.buffer: list[Publication] | None = None

    def __repr__(self) -> str:
        return f"RoomSub({self.ns!r}, {self.room!r}, epoch={self.epoch!r}, offset={self.offset})"


def backoff(first: float, cap: float) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform in [d/2, d], d doubling up to ``cap``."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


class Link:
    """The pub/sub side of a :class:`RedisBackend` (asyncio only, like redis-py)."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.rooms: dict[bytes, RoomSub] = {}
        self.up = False
        self.changed = time.monotonic()
        self.last_beat = 0.0
        self.sessions = 0
        self.last_error: str | None = None
        self.resyncs = 0
        self.caught_up = 0
        self._ps: PubSub | None = None
        self._actual: set[bytes] = set()
        self._dirty = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._ever_up = False
        self._up_event = asyncio.Event()
        self._node_channel = backend.names.node(backend.node_id)

    # Rooms (called by the backend) ------------------------------------------------

    async def subscribe(self, ns: str, room: str) -> None:
        channel = self.backend.names.channel(ns, room)
        sub = self.rooms.get(channel)
        if sub is None:
            sub = self.rooms[channel] = RoomSub(ns, room, channel)
        sub.wanted = True
        await self._sync()

    async def unsubscribe(self, ns: str, room: str) -> None:
        sub = self.rooms.get(self.backend.names.channel(ns, room))
        if sub is not None:
            sub.wanted = False
            await self._sync()

    async def _sync(self) -> None:
        # Callers only declare what they want; one flusher per session turns the
        # wanted set into SUBSCRIBE/UNSUBSCRIBE batches, so concurrent calls for the
        # same room cannot interleave badly: the last declaration wins.  Without a
        # link the next session subscribes whatever is wanted then.
        self._dirty.set()
        if not self.up:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        with anyio.move_on_after(self.backend.link_timeout):
            await asyncio.shield(fut)

    async def wait_up(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            await self._up_event.wait()
        return self.up

    # Supervision ------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a session going until cancelled; log and restart after any failure."""
        be = self.backend
        delays = backoff(0.1, be.reconnect_max_delay)
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except Exception as exc:
                leaves = _leaves(exc)
                if all(_is_outage(leaf) for leaf in leaves):
                    self._down("; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves))
                else:
                    # A bug, not an outage: say so loudly, with the traceback.
                    logger.exception("redis pub/sub listener crashed (node %s); restarting it", be.node_id)
                    self._down(f"listener crashed: {exc!r}")
            if time.monotonic() - started > 10 * be.link_timeout:
                delays = backoff(0.1, be.reconnect_max_delay)
            await anyio.sleep(next(delays))

    def _down(self, reason: str) -> None:
        self.last_error = reason
        self._up_event.clear()
        if self.up:
            self.up = False
            self.changed = time.monotonic()
            logger.error("redis link down (node %s): %s; reconnecting", self.backend.node_id, reason)
        else:
            logger.debug("redis link still down (node %s): %s", self.backend.node_id, reason)

    def _mark_up(self) -> None:
        now = time.monotonic()
        if self._ever_up:
            logger.warning(
                "redis link up again (node %s) after %.1f s down; %d rooms resubscribed",
                self.backend.node_id, now - self.changed, len(self._actual),
            )
            self.backend._reconnected()
        else:
            logger.info("redis link up (node %s)", self.backend.node_id)
        self._ever_up = True
        self.up = True
        self.changed = now
        self._up_event.set()

    async def _session(self) -> None:
        be = self.backend
        ps = be.redis.pubsub()
        self._ps = ps
        self._actual = set()
        self.sessions += 1
        # Rooms we delivered from before must catch up; their live messages wait.
        for channel, sub in list(self.rooms.items()):
            if not sub.wanted:
                del self.rooms[channel]
            elif sub.epoch is not None or self._ever_up:
                sub.buffer = []
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                with anyio.fail_after(be.connect_timeout):
                    await ps.subscribe(be.names.control, self._node_channel)
                    wanted = [ch for ch, sub in self.rooms.items() if sub.wanted]
                    for i in range(0, len(wanted), _SUBSCRIBE_CHUNK):
                        await ps.subscribe(*wanted[i : i + _SUBSCRIBE_CHUNK])
                    self._actual.update(wanted)
                    tg.start_soon(self._read, ps)
                    await self._barrier(ps)
                    await be._refresh_epoch()
                    await be._register()
                self.last_beat = time.monotonic()
                self._mark_up()
                tg.start_soon(self._flusher, ps)
                tg.start_soon(self._catch_up_all, [sub for sub in self.rooms.values() if sub.buffer is not None])
                fresh = [sub for sub in self.rooms.values() if sub.buffer is None and sub.epoch is None]
                if fresh:
                    tg.start_soon(self._position, fresh)
                await self._watch()
        finally:
            self._tg = None
            self._ps = None
            self._release_waiters()
            with anyio.move_on_after(1.0, shield=True):
                try:
                    await ps.aclose()  # type: ignore[no-untyped-call]
                except Exception:
                    logger.debug("closing the pub/sub connection failed", exc_info=True)

    async def _watch(self) -> None:
        be = self.backend
        tick = min(0.25, be.heartbeat_interval / 4)
        while True:
            await anyio.sleep(tick)
            silent = time.monotonic() - self.last_beat
            if silent > be.link_timeout:
                raise LinkLost(f"no heartbeat of our own for {silent:.1f} s")

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        for fut in self._pongs.values():
            if not fut.done():
                fut.cancel()
        self._pongs.clear()

    async def _barrier(self, ps: PubSub) -> None:
        # Replies on one connection come in command order, so the PONG of a PING
        # sent after SUBSCRIBE proves that the subscription is active.
        token = secrets.token_hex(8).encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[token] = fut
        try:
            await ps.ping(token)
            with anyio.fail_after(self.backend.link_timeout):
                await fut
        except TimeoutError:
            raise LinkLost("no answer to a PING on the pub/sub connection") from None
        finally:
            self._pongs.pop(token, None)

    async def _flusher(self, ps: PubSub) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            waiters, self._waiters = self._waiters, []
            adds = [ch for ch, sub in self.rooms.items() if sub.wanted and ch not in self._actual]
            drops = [ch for ch in self._actual if ch not in self.rooms or not self.rooms[ch].wanted]
            for i in range(0, len(adds), _SUBSCRIBE_CHUNK):
                await ps.subscribe(*adds[i : i + _SUBSCRIBE_CHUNK])
            self._actual.update(adds)
            if drops:
                await ps.unsubscribe(*drops)
                self._actual.difference_update(drops)
            for ch, sub in list(self.rooms.items()):
                if not sub.wanted and ch not in self._actual:
                    del self.rooms[ch]
            if adds or drops:
                await self._barrier(ps)
            fresh = [self.rooms[ch] for ch in adds if ch in self.rooms and self.rooms[ch].epoch is None]
            if fresh:
                await self._position(fresh)
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def _position(self, subs: list[RoomSub]) -> None:
        positions = await self.backend._positions([(sub.ns, sub.room) for sub in subs])
        for sub, pos in zip(subs, positions, strict=True):
            if sub.epoch is None:
                sub.epoch, sub.offset = pos

    # Reading ------------------------------------------------------------------------

    async def _read(self, ps: PubSub) -> None:
        while True:
            msg = await ps.get_message(timeout=1.0)
            if msg is None:
                continue
            kind = msg["type"]
            if kind == "message":
                self._on_message(msg["channel"], msg["data"])
            elif kind == "pong":
                fut = self._pongs.get(msg["data"])
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        sub = self.rooms.get(channel)
        if sub is not None:
            try:
                pub = decode_message(data)
            except (ValueError, msgspec.DecodeError):
                logger.warning("dropped a malformed message on %r", channel)
                return
            self._on_pub(sub, pub)
        elif channel == self._node_channel:
            if data == HEARTBEAT:
                self.last_beat = time.monotonic()
            elif data[:1] == REPLY:
                self.backend._bus.on_reply(data[1:])
        elif channel == self.backend.names.control:
            self.backend._bus.on_request(data)

    def _on_pub(self, sub: RoomSub, pub: Publication) -> None:
        if sub.buffer is not None:
            sub.buffer.append(pub)
            return
        if pub.offset == 0:
            self._deliver(pub)
            return
        if sub.epoch is None or (pub.epoch == sub.epoch and pub.offset == sub.offset + 1) or (
            pub.epoch != sub.epoch and pub.offset == 1
        ):
            sub.epoch, sub.offset = pub.epoch, pub.offset
            self._deliver(pub)
            return
        if pub.epoch == sub.epoch and pub.offset <= sub.offset:
            return  # already delivered (by a catch-up)
        # A gap: read what is missing from the stream before going on.
        sub.buffer = [pub]
        if self._tg is not None:
            self._tg.start_soon(self._catch_up_all, [sub])

    def _deliver(self, pub: Publication) -> None:
        try:
            self.backend._deliver(pub)
        except Exception:
            logger.exception("delivering a publication to %r failed", pub.room)

    # Catching up ---------------------------------------------------------------------

    async def _catch_up_all(self, subs: list[RoomSub]) -> None:
        for sub in subs:
            if self.rooms.get(sub.channel) is sub:
                await self._catch_up(sub)

    async def _catch_up(self, sub: RoomSub) -> None:
        be = self.backend
        from_epoch, from_offset = sub.epoch, sub.offset
        epoch, last, pubs = await be._read(sub.ns, sub.room, from_offset, from_epoch or "")
        same_global = from_epoch is not None and from_epoch.startswith(be.global_epoch + ".")
        missed: list[Publication] = []
        ok: bool
        if epoch is None:
            # No stream: idle past its TTL (nothing missed), unless Redis lost it.
            ok = same_global
            epoch, last = be.global_epoch + ".", 0
        elif epoch == from_epoch:
            missed = [p for p in pubs if p.offset > from_offset]
            ok = last <= from_offset or _contiguous(missed, from_offset)
        else:
            # A new stream: complete if we knew the old one ended while idle.
            missed = pubs
            ok = same_global and _contiguous(missed, 0)
        if ok:
            for pub in missed:
                self._deliver(pub)
            self.caught_up += len(missed)
        else:
            self.resyncs += 1
            logger.warning("room %r of %r: missed messages are gone; sending $resync", sub.room, sub.ns)
            data = _JSON.encode({"room": sub.room, "epoch": None if last == 0 else epoch})
            self._deliver(Publication(sub.ns, sub.room, "$resync", data, ts=time.time()))
        sub.epoch, sub.offset = epoch, last
        buffered, sub.buffer = sub.buffer or [], None
        for pub in buffered:
            self._on_pub(sub, pub)

    def __repr__(self) -> str:
        return f"Link(up={self.up}, rooms={len(self.rooms)}, sessions={self.sessions})"


def _contiguous(pubs: list[Publication], after: int) -> bool:
    return bool(pubs) and pubs[0].offset == after + 1 and pubs[-1].offset == after + len(pubs)


def _leaves(exc: BaseException) -> list[BaseException]:
    # Task groups wrap failures in exception groups; classify the real errors.
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _is_outage(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from ..exceptions import BackendUnavailable

    return isinstance(
        exc, (LinkLost, BackendUnavailable, RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
    )


__all__ = ["Link", "LinkLost", "RoomSub", "backoff"]
