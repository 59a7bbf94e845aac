"""The client's outgoing bookkeeping: unacknowledged events, the offline queue, positions.

Pure: no awaits, no sockets; the caller passes the time in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..frames import Position


@dataclass
class Pending:
    """An event sent (or queued) and not yet acknowledged."""

    id: int
    event: str
    data: Any
    created: float
    #: The caller waiting for the ack (``call``), or ``None`` for a plain emit.
    waiter: Any = None
    sent: bool = False


@dataclass
class Outgoing:
    """Unacknowledged events of one namespace, in id order.

    Events are kept until their ack arrives, and resent after a reconnect: that
    and the server's deduplication by id give at-least-once delivery without
    duplicates.  Events older than ``ttl`` that never left are dropped (and
    counted); beyond ``maximum`` the oldest is dropped.
    """

    ttl: float
    maximum: int
    next_id: int = 0
    pending: OrderedDict[int, Pending] = field(default_factory=OrderedDict)
    dropped: int = 0

    def add(self, event: str, data: Any, now: float, waiter: Any = None) -> Pending:
        self.next_id += 1
        item = Pending(self.next_id, event, data, now, waiter)
        self.pending[item.id] = item
        while len(self.pending) > self.maximum:
            _, old = self.pending.popitem(last=False)
            self.dropped += 1
            if old.waiter is not None and not old.waiter.done():
                old.waiter.set_exception(OverflowError("offline queue full"))
        return item

    def acked(self, ack_id: int) -> Pending | None:
        return self.pending.pop(ack_id, None)

    def forget(self, ack_id: int) -> None:
        self.pending.pop(ack_id, None)

    def to_send(self, now: float) -> list[Pending]:
        """What to (re)send after a (re)connect, oldest first; expired unsent events are dropped."""
        out: list[Pending] = []
        for key, item in list(self.pending.items()):
            if not item.sent and now - item.created > self.ttl:
                del self.pending[key]
                self.dropped += 1
                if item.waiter is not None and not item.waiter.done():
                    item.waiter.set_exception(TimeoutError("expired in the offline queue"))
                continue
            out.append(item)
        return out

    def __len__(self) -> int:
        return len(self.pending)


@dataclass
class Positions:
    """Per-room stream positions of one namespace, for recovery and de-duplication."""

    rooms: dict[str, Position] = field(default_factory=dict)

    def accept(self, room: str, epoch: str, offset: int) -> bool:
        """Record a delivered message; ``False`` when it is a duplicate to drop."""
        current = self.rooms.get(room)
        if current is not None and current.epoch == epoch and offset <= current.offset:
            return False
        self.rooms[room] = Position(epoch, offset)
        return True

    def reset(self, room: str | None = None) -> None:
        if room is None:
            self.rooms.clear()
        else:
            self.rooms.pop(room, None)
