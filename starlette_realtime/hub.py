"""Local fan-out: hand each publication to the connections of this node that should get it.

The hub owns the node's room table.  :meth:`Hub.deliver` is called by the
backend for every publication of a room this node hosts; it encodes the frame
once per encoding in use (not once per receiver) and pushes the same ASGI
message to every receiver's outbox, without ever awaiting a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

import msgspec

from .backends.base import Publication
from .fastpath import message_frame
from .metrics import Metrics
from .outbox import Outbox
from .rooms import RoomTable
from .wire import Wire

logger = logging.getLogger(__name__)


class Receiver(Protocol):
    """What the hub needs of a connection (a :class:`~starlette_realtime.connection.Connection`)."""

    sid: str

    @property
    def rooms(self) -> AbstractSet[str]:
        """The application rooms it is in (read only here)."""
    #: While connecting or recovering, live publications wait here instead of being sent.
    buffer: list[Publication] | None
    codec: Wire
    outbox: Outbox


#: An outgoing filter: given the receiving connection and the decoded payload,
#: return the payload to send (possibly redacted) or ``None`` to drop the event.
OutgoingFilter = Callable[[Any, Any], Any]


class Hub:
    """The node-local room table and fan-out.

    Args:
        metrics: told once per publication how many local receivers got it.
    """

    __slots__ = ("_filters", "_json_decoder", "_metrics", "_on_deliver", "deliveries", "publications", "rooms")

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.rooms: RoomTable[Receiver] = RoomTable()
        self._filters: dict[tuple[str, str], OutgoingFilter] = {}
        self.deliveries = 0
        self.publications = 0
        self._json_decoder = msgspec.json.Decoder()
        self._on_deliver: Callable[[Publication, int], None] | None = None
        self._metrics = metrics if metrics is not None else Metrics()

    def set_filter(self, ns: str, event: str, fn: OutgoingFilter) -> None:
        """Register an outgoing filter; only events that have one pay for it."""
        self._filters[(ns, event)] = fn

    def on_deliver(self, fn: Callable[[Publication, int], None] | None) -> None:
        """Observe each publication with its number of local deliveries (for metrics)."""
        self._on_deliver = fn

    def deliver(self, pub: Publication) -> None:
        """Fan a publication out to its room's local members."""
        members = self.rooms.members((pub.ns, pub.room))
        if not members:
            return
        self.publications += 1
        filt = self._filters.get((pub.ns, pub.event)) if self._filters else None
        if filt is not None:
            self._deliver_filtered(pub, members.values(), filt)
            return
        exclude = pub.exclude
        others = pub.rooms[: pub.rooms.index(pub.room)] if pub.rooms else ()
        cache: dict[Wire, tuple[dict[str, Any], int, bytes]] = {}
        volatile = pub.volatile
        count = nbytes = 0
        # The hot loop: a few attribute checks and one push per receiver; the frame is
        # encoded once per encoding and the same ASGI message object is shared, and so is
        # the same WebSocket frame where the server takes pre-framed writes (fastpath).
        last: Wire | None = None
        msg: dict[str, Any] = {}
        frame = b""
        size = run = 0
        for conn in members.values():
            if conn.sid == exclude or (others and not conn.rooms.isdisjoint(others)):
                continue
            if conn.buffer is not None:
                conn.buffer.append(pub)
                continue
            codec = conn.codec
            if codec is not last:
                # Bytes out per run of receivers with one encoding: no per-receiver sum.
                nbytes += size * (count - run)
                run = count
                entry = cache.get(codec)
                if entry is None:
                    msg, size = codec.publication(pub)
                    entry = cache[codec] = (msg, size, message_frame(msg))
                msg, size, frame = entry
                last = codec
            conn.outbox.push_frame(frame, msg, size, volatile)
            count += 1
        nbytes += size * (count - run)
        self.deliveries += count
        # Metrics once per publication, never per receiver.
        self._metrics.broadcast(pub.ns, pub.event, count, nbytes, pub.ts)
        if self._on_deliver is not None:
            self._on_deliver(pub, count)

    def _deliver_filtered(self, pub: Publication, members: Iterable[Receiver], filt: OutgoingFilter) -> None:
        data = self._json_decoder.decode(pub.data)
        exclude = pub.exclude
        others = pub.rooms[: pub.rooms.index(pub.room)] if pub.rooms else ()
        count = nbytes = 0
        for conn in list(members):
            if conn.sid == exclude or (others and not conn.rooms.isdisjoint(others)):
                continue
            if conn.buffer is not None:
                conn.buffer.append(pub)
                continue
            try:
                out = filt(conn, data)
                if out is None:
                    continue
                msg, size = conn.codec.publication(pub, conn.codec.encode_payload(out))
            except Exception:
                logger.exception("outgoing filter for %r failed; event dropped for %s", pub.event, conn.sid)
                continue
            conn.outbox.push(msg, size, volatile=pub.volatile)
            count += 1
            nbytes += size
        self.deliveries += count
        self._metrics.broadcast(pub.ns, pub.event, count, nbytes, pub.ts)
        if self._on_deliver is not None:
            self._on_deliver(pub, count)

    def replay(self, conn: Receiver, pubs: Iterable[Publication]) -> int:
        """Push publications to one connection (recovery), applying the same rules as live delivery."""
        count = 0
        for pub in pubs:
            if pub.exclude == conn.sid:
                continue
            if pub.rooms:
                others = pub.rooms[: pub.rooms.index(pub.room)]
                if not conn.rooms.isdisjoint(others):
                    continue
            filt = self._filters.get((pub.ns, pub.event))
            if filt is not None:
                try:
                    out = filt(conn, self._json_decoder.decode(pub.data))
                    if out is None:
                        continue
                    msg, size = conn.codec.publication(pub, conn.codec.encode_payload(out))
                except Exception:
                    # As in live delivery: a failing filter drops the event, never sends it unfiltered.
                    logger.exception("outgoing filter for %r failed; event dropped for %s", pub.event, conn.sid)
                    continue
            else:
                msg, size = conn.codec.publication(pub)
            conn.outbox.push(msg, size)
            count += 1
        return count

    def __repr__(self) -> str:
        return f"Hub(rooms={len(self.rooms)}, deliveries={self.deliveries})"
