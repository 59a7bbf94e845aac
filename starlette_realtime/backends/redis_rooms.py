"""Exactly once, in order: what the Redis subscriber delivered last in each room, and catching up.

The subscriber remembers the last (epoch, offset) it handed to the hub for
each room.  Live messages at or below it are dropped; a gap, or a new pub/sub
session after a lost one, makes the room *catch up*: live messages are
buffered while the missed ones are read from the room's Redis Stream and
delivered, then the buffer is drained.  When the stream no longer covers the
gap the room's members get a ``$resync`` publication instead: never silence.

A Redis Cluster failover may also move a stream *back*: writes the old master
acknowledged but had not yet replicated are gone.  Catching up notices a
stream that ends before what was delivered and moves the stream's offset
counter forward, so that the next publications get offsets nobody has seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from .base import Deliver, Publication

logger = logging.getLogger("starlette_realtime.backends.redis")

_JSON = msgspec.json.Encoder()

#: Reads a room's stream after an offset: (epoch or None, last offset, publications).
ReadStream = Callable[[str, str, int, str], Awaitable[tuple[str | None, int, list[Publication]]]]
#: Moves a stream's offset counter forward to at least the given offset (same epoch only).
SkipAhead = Callable[[str, str, str, int], Awaitable[None]]


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


class RoomOrder:
    """The ordering rules for every room one subscriber hosts.

    Args:
        deliver: hands a publication to the node (must not block).
        read: reads a room's stream (for catching up).
        skip_ahead: moves a stream's offset counter forward after a failover lost its tail.
        global_epoch: the current global epoch (a callable: it changes when Redis restarts empty).
    """

    def __init__(self, deliver: Deliver, read: ReadStream, skip_ahead: SkipAhead, global_epoch: Callable[[], str]):
        self.rooms: dict[bytes, RoomSub] = {}
        self.resyncs = 0
        self.caught_up = 0
        self.rollbacks = 0
        self._deliver_fn = deliver
        self._read = read
        self._skip_ahead = skip_ahead
        self._global_epoch = global_epoch

    def on_pub(self, sub: RoomSub, pub: Publication) -> bool:
        """Deliver or buffer one live publication.

        Returns:
            Whether the room must now catch up (a gap was found; the caller runs :meth:`catch_up`).
        """
        if sub.buffer is not None:
            sub.buffer.append(pub)
            return False
        if pub.offset == 0:
            self.deliver(pub)
            return False
        if sub.epoch is None or (pub.epoch == sub.epoch and pub.offset == sub.offset + 1) or (
            pub.epoch != sub.epoch and pub.offset == 1
        ):
            sub.epoch, sub.offset = pub.epoch, pub.offset
            self.deliver(pub)
            return False
        if pub.epoch == sub.epoch and pub.offset <= sub.offset:
            return False  # already delivered (by a catch-up)
        # A gap: read what is missing from the stream before going on.
        sub.buffer = [pub]
        return True

    def deliver(self, pub: Publication) -> None:
        try:
            self._deliver_fn(pub)
        except Exception:
            logger.exception("delivering a publication to %r failed", pub.room)

    async def catch_up_all(self, subs: list[RoomSub]) -> None:
        for sub in subs:
            if self.rooms.get(sub.channel) is sub:
                await self.catch_up(sub)

    async def catch_up(self, sub: RoomSub) -> None:
        """Deliver what the room missed since its last delivered offset (or ``$resync``), then its buffer."""
        from_epoch, from_offset = sub.epoch, sub.offset
        epoch, last, pubs = await self._read(sub.ns, sub.room, from_offset, from_epoch or "")
        global_epoch = self._global_epoch()
        same_global = from_epoch is not None and from_epoch.startswith(global_epoch + ".")
        missed: list[Publication] = []
        ok: bool
        if epoch is None:
            # No stream: idle past its TTL (nothing missed), unless Redis lost it.
            ok = same_global
            epoch, last = global_epoch + ".", 0
        elif epoch == from_epoch:
            missed = [p for p in pubs if p.offset > from_offset]
            ok = last <= from_offset or _contiguous(missed, from_offset)
            if last < from_offset:
                # The stream went back (a failover lost writes that were not yet
                # replicated): what we delivered is gone from it, and the next
                # offsets must not reuse numbers our receivers have seen.
                logger.warning(
                    "room %r of %r: the stream ends at %d but %d was delivered (lost in a failover); skipping ahead",
                    sub.room, sub.ns, last, from_offset,
                )
                await self._skip_ahead(sub.ns, sub.room, epoch, from_offset)
                self.rollbacks += 1  # counted once handled: the stream's counter is past what we delivered
                last = from_offset
        else:
            # A new stream: complete if we knew the old one ended while idle.
            missed = pubs
            ok = same_global and _contiguous(missed, 0)
        if ok:
            for pub in missed:
                self.deliver(pub)
            self.caught_up += len(missed)
        else:
            self.resyncs += 1
            logger.warning("room %r of %r: missed messages are gone; sending $resync", sub.room, sub.ns)
            data = _JSON.encode({"room": sub.room, "epoch": None if last == 0 else epoch})
            self.deliver(Publication(sub.ns, sub.room, "$resync", data, ts=time.time()))
        sub.epoch, sub.offset = epoch, last
        buffered, sub.buffer = sub.buffer or [], None
        again = False
        for pub in buffered:
            again = self.on_pub(sub, pub) or again
        if again:
            await self.catch_up(sub)

    def __repr__(self) -> str:
        return f"RoomOrder(rooms={len(self.rooms)}, resyncs={self.resyncs}, rollbacks={self.rollbacks})"


def _contiguous(pubs: list[Publication], after: int) -> bool:
    return bool(pubs) and pubs[0].offset == after + 1 and pubs[-1].offset == after + len(pubs)


__all__ = ["ReadStream", "RoomOrder", "RoomSub", "SkipAhead"]
