"""The dedup contract of one namespace connection, in one pure place (docs/protocol.md, "The dedup contract")."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from . import status
from .frames import Ack, ErrorInfo

#: Converts an encoded payload between the wire's encoding and JSON.
Transcode = Callable[[msgspec.Raw], msgspec.Raw]


class Seen(enum.Enum):
    """What :meth:`DedupWindow.check` found for a client event id."""

    NEW = 0
    IN_FLIGHT = 1
    REPLAY = 2
    DUPLICATE = 3


# On CPython 3.11 reading a member through its Enum class (``Seen.NEW``) goes through
# EnumType.__getattr__'s slow attribute path, about 0.2 us each, 12 times a global: the
# per-event paths read these module constants instead (the same objects).
NEW, IN_FLIGHT, REPLAY, DUPLICATE = Seen.NEW, Seen.IN_FLIGHT, Seen.REPLAY, Seen.DUPLICATE


class DedupState(msgspec.Struct, array_like=True, frozen=True):
    """A :class:`DedupWindow` as saved with a session, for recovery on any node.

    Replies are kept as JSON bytes (wire-neutral); ``replies`` holds
    ``(id, data or None, error or None)`` oldest first.
    """

    high: int = -1
    gaps: list[int] = []
    replies: list[tuple[int, bytes | None, ErrorInfo | None]] = []


class DedupWindow:
    """The dedup contract of one namespace connection (docs/protocol.md, "Acknowledgements").

    - The answer to an id is the handler's real answer, a value or an error, kept for the
      last ``size`` ids and replayed on a resend.
    - A resend that arrives while the handler runs gets the answer once it is known.
    - An id handled whose answer is no longer kept gets the error ``duplicate``.
    - Ids may arrive out of order within ``span`` of the highest one: ``high`` is the highest
      id accepted and ``gaps`` the ids below it not seen yet.  An id more than ``span`` below
      ``high`` counts as handled.  In order (the common case), nothing but ``high`` changes.
    """

    __slots__ = ("_gaps", "_inflight", "_replies", "high", "size", "span")

    def __init__(self, *, size: int = 64, span: int = 1024) -> None:
        self.high = -1
        self.size = size
        self.span = span
        # Created on first use: most connections never ack anything.
        self._gaps: set[int] | None = None
        self._replies: OrderedDict[int, Ack] | None = None
        self._inflight: set[int] | None = None

    def check(self, ack_id: int) -> Seen:
        """Classify an incoming id, and accept it when it is new."""
        if ack_id == self.high + 1:
            self.high = ack_id
            return NEW
        inflight = self._inflight
        if inflight is not None and ack_id in inflight:
            return IN_FLIGHT
        replies = self._replies
        if replies is not None and ack_id in replies:
            return REPLAY
        high = self.high
        if ack_id > high:
            gaps = self._gaps
            if gaps is None:
                gaps = self._gaps = set()
            gaps.update(range(max(high + 1, ack_id - self.span), ack_id))
            self.high = ack_id
            self._prune()
            return NEW
        gaps = self._gaps
        if gaps is not None and ack_id in gaps:
            gaps.discard(ack_id)
            return NEW
        return DUPLICATE

    def started(self, ack_id: int) -> None:
        """The handler of ``ack_id`` started: resends now wait for its answer."""
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = set()
        inflight.add(ack_id)

    def answered(self, ack_id: int, reply: Ack) -> None:
        """Keep the answer of ``ack_id`` for replay."""
        if self._inflight is not None:
            self._inflight.discard(ack_id)
        replies = self._replies
        if replies is None:
            replies = self._replies = OrderedDict()
        replies[ack_id] = reply
        if len(replies) > self.size:
            replies.popitem(last=False)

    def reply(self, ack_id: int) -> Ack | None:
        """The kept answer of ``ack_id``, if any."""
        return None if self._replies is None else self._replies.get(ack_id)

    @property
    def in_flight(self) -> frozenset[int]:
        """Ids whose handler is running."""
        return frozenset(self._inflight or ())

    def _prune(self) -> None:
        gaps = self._gaps
        if gaps and len(gaps) > self.span:
            floor = self.high - self.span
            self._gaps = {i for i in gaps if i > floor}

    def export(self, to_json: Transcode | None = None) -> DedupState:
        """The window as saved with a session (answers converted to JSON by ``to_json``)."""
        replies: list[tuple[int, bytes | None, ErrorInfo | None]] = []
        for ack_id, ack in (self._replies or {}).items():
            if ack.error is not None:
                replies.append((ack_id, None, ack.error))
                continue
            data = ack.data if to_json is None else to_json(ack.data)
            replies.append((ack_id, bytes(data), None))
        # A handler still running when its session is saved never answers there: a resend
        # must get an error, never a made-up success.
        for ack_id in sorted(self._inflight or ()):
            replies.append((ack_id, None, ErrorInfo(status.INTERRUPTED, "the handler did not finish")))
        return DedupState(self.high, sorted(self._gaps or ()), replies)

    @classmethod
    def restore(
        cls, state: DedupState, ns: str, from_json: Transcode | None = None, *, size: int = 64, span: int = 1024
    ) -> DedupWindow:
        """Rebuild a window from a saved session (answers converted from JSON by ``from_json``)."""
        window = cls(size=size, span=span)
        window.high = state.high
        if state.gaps:
            window._gaps = set(state.gaps)
        for ack_id, data, error in state.replies:
            raw = msgspec.Raw(b"null" if data is None else data)
            if from_json is not None:
                raw = from_json(raw)
            window.answered(ack_id, Ack(ns, ack_id, raw, error))
        return window

    def __repr__(self) -> str:
        return f"DedupWindow(high={self.high}, kept={len(self._replies or ())}, in_flight={len(self._inflight or ())})"


__all__ = ["DedupState", "DedupWindow", "Seen", "Transcode"]
