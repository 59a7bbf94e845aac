"""What arrived on the wire, counted before the client's own de-duplication.

The client drops a room message it delivered already (by offset), so what the application sees
cannot show whether the server sent something twice. These counters can: recovery tests assert
that the server sent no duplicate and skipped nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..frames import Event


@dataclass
class StreamStats:
    """The EVENT frames that arrived for one room stream of one namespace.

    Attributes:
        received: frames that carried a position in this stream, duplicates included.
        duplicates: frames whose offset was not above the highest one received before in the same
            epoch (the server sent that message again).
        gaps: frames whose offset skipped past the next one expected in the same epoch (the
            messages in between never arrived).
        epoch: the epoch of the last frame.
        first_offset: the offset of the first frame of ``epoch``.
        last_offset: the highest offset received in ``epoch``.
        epochs: how many epochs were seen (a new one means the history was lost).
    """

    received: int = 0
    duplicates: int = 0
    gaps: int = 0
    epoch: str | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    epochs: int = 0

    def record(self, epoch: str, offset: int) -> None:
        self.received += 1
        if epoch != self.epoch:
            self.epoch, self.first_offset, self.last_offset = epoch, offset, offset
            self.epochs += 1
            return
        last = self.last_offset if self.last_offset is not None else offset
        if offset <= last:
            self.duplicates += 1
            return
        if offset > last + 1:
            self.gaps += 1
        self.last_offset = offset


@dataclass
class WireStats:
    """Counts of what the client received, before it drops anything.

    Attributes:
        frames: every frame received (HELLO, PING and ACK frames included).
        events: the EVENT frames among them.
        streams: per ``(namespace, room)``, the EVENT frames that carried a stream position.
    """

    frames: int = 0
    events: int = 0
    streams: dict[tuple[str, str], StreamStats] = field(default_factory=dict)

    def record_event(self, frame: Event) -> None:
        self.events += 1
        if frame.room is None or frame.epoch is None or frame.offset is None:
            return
        key = (frame.ns, frame.room)
        stats = self.streams.get(key)
        if stats is None:
            stats = self.streams[key] = StreamStats()
        stats.record(frame.epoch, frame.offset)

    def stream(self, room: str, namespace: str = "/") -> StreamStats:
        """The counts of one room stream (all zero when nothing arrived for it)."""
        return self.streams.get((namespace, room)) or StreamStats()

    @property
    def duplicates(self) -> int:
        """Room messages the server sent more than once, over every stream."""
        return sum(s.duplicates for s in self.streams.values())

    @property
    def gaps(self) -> int:
        """Places where a stream skipped messages, over every stream."""
        return sum(s.gaps for s in self.streams.values())

    def reset(self) -> None:
        """Start counting from zero."""
        self.frames = self.events = 0
        self.streams.clear()
