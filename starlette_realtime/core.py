"""The sans-I/O session core: what to do with each frame a client sends, and when.

One :class:`SessionCore` per WebSocket (whatever its wire) keeps the protocol
state: the namespaces opening and open, each one's :class:`DedupWindow`, the
token buckets, the server's outstanding calls, the heartbeat and the CONNECT
deadline.  It takes decoded frames and the time (the caller reads the clock)
and returns actions; it never awaits, reads a clock or touches a socket, so its
rules are table-tested without an event loop (``tests/test_core.py``).

The I/O shell (:class:`~starlette_realtime.link.Link`) carries the actions out:
it sends frames, runs the open sequence and the handlers, and closes sockets.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Mapping

import msgspec

from . import status
from .frames import (
    MAX_ACK_ID,
    Ack,
    ClientFrame,
    Connect,
    ConnectError,
    Disconnect,
    Error,
    ErrorInfo,
    Event,
    Ping,
    Pong,
)
from .limits import Limits

#: The reserved client event that carries a fresh credential (docs/protocol.md).
AUTH_EVENT = "$auth"

#: Per namespace, per event name: the handler's own rate limit ``(rate, burst)``, or ``None``
#: for the connection's shared bucket.  An event missing from a namespace's table has no handler.
EventRules = Mapping[str, Mapping[str, tuple[float, int | None] | None]]

#: Converts an encoded payload between the wire's encoding and JSON.
_Transcode = Callable[[msgspec.Raw], msgspec.Raw]


# Actions --------------------------------------------------------------------------


class Action:
    """Something the I/O shell must do."""

    __slots__ = ()


class Send(Action):
    """Send this frame to the client."""

    __slots__ = ("frame",)

    def __init__(self, frame: ConnectError | Ack | Error | Ping) -> None:
        self.frame = frame

    def __repr__(self) -> str:
        return f"Send({self.frame!r})"


class Refuse(Action):
    """An event was refused before any handler ran: count it, and send ``reply`` if there is one.

    ``event`` is the handler's name, or ``""`` for an event without a handler (whose name the
    client chose, kept out of metric labels).
    """

    __slots__ = ("code", "event", "ns", "reply")

    def __init__(self, ns: str, event: str, code: str, reply: Ack | None) -> None:
        self.ns = ns
        self.event = event
        self.code = code
        self.reply = reply

    def __repr__(self) -> str:
        return f"Refuse({self.ns!r}, {self.event!r}, {self.code!r})"


class Open(Action):
    """Run the open sequence of a namespace (authenticate, ``on_connect``, recovery), then
    report :meth:`SessionCore.opened` or :meth:`SessionCore.refused`."""

    __slots__ = ("frame",)

    def __init__(self, frame: Connect) -> None:
        self.frame = frame

    def __repr__(self) -> str:
        return f"Open({self.frame.ns!r})"


class Dispatch(Action):
    """Run the handler of this event; when it carries an id, report the answer to
    :meth:`SessionCore.answered`.  ``reauth`` marks the reserved ``$auth`` event."""

    __slots__ = ("frame", "reauth")

    def __init__(self, frame: Event, reauth: bool = False) -> None:
        self.frame = frame
        self.reauth = reauth

    def __repr__(self) -> str:
        return f"Dispatch({self.frame.ns!r}, {self.frame.event!r}, id={self.frame.id})"


class CloseNamespace(Action):
    """Close one namespace connection (the client sent DISCONNECT: no reply)."""

    __slots__ = ("ns", "reason")

    def __init__(self, ns: str, reason: str) -> None:
        self.ns = ns
        self.reason = reason

    def __repr__(self) -> str:
        return f"CloseNamespace({self.ns!r}, {self.reason!r})"


class Resolve(Action):
    """The client answered the server's call ``frame.id``: resolve it."""

    __slots__ = ("frame",)

    def __init__(self, frame: Ack) -> None:
        self.frame = frame

    def __repr__(self) -> str:
        return f"Resolve({self.frame.id})"


class Close(Action):
    """Close the WebSocket with this code."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"


# Token buckets --------------------------------------------------------------------


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up.  Pure: the caller passes the time."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token; ``False`` when the bucket is empty."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self.tokens:.1f})"


# Deduplication ---------------------------------------------------------------------


class Seen(enum.Enum):
    """What :meth:`DedupWindow.check` found for a client event id."""

    NEW = 0
    IN_FLIGHT = 1
    REPLAY = 2
    DUPLICATE = 3


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
            return Seen.NEW
        inflight = self._inflight
        if inflight is not None and ack_id in inflight:
            return Seen.IN_FLIGHT
        replies = self._replies
        if replies is not None and ack_id in replies:
            return Seen.REPLAY
        high = self.high
        if ack_id > high:
            gaps = self._gaps
            if gaps is None:
                gaps = self._gaps = set()
            gaps.update(range(max(high + 1, ack_id - self.span), ack_id))
            self.high = ack_id
            self._prune()
            return Seen.NEW
        gaps = self._gaps
        if gaps is not None and ack_id in gaps:
            gaps.discard(ack_id)
            return Seen.NEW
        return Seen.DUPLICATE

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

    def export(self, to_json: _Transcode | None = None) -> DedupState:
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
        cls, state: DedupState, ns: str, from_json: _Transcode | None = None, *, size: int = 64, span: int = 1024
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


# The core ---------------------------------------------------------------------------------


class NamespaceState(enum.Enum):
    CONNECTING = 0
    OPEN = 1


class SessionCore:
    """The protocol state of one WebSocket.

    Args:
        rules: the events each namespace handles, with their rate limits (shared by every core).
        limits: the router's limits.
        now: the time the socket was accepted.
        ping_interval: seconds between pings.
        ping_timeout: seconds a ping may stay unanswered.
        connect_timeout: seconds the socket may stay without any namespace open.
        binary: whether payloads are MessagePack (for the depth check).
        null: the wire's encoding of ``None`` (the payload of error acks).
    """

    __slots__ = (
        "_buckets",
        "_calls",
        "_connect_deadline",
        "_limited",
        "_next_call_id",
        "binary",
        "closing",
        "connect_timeout",
        "last_ping",
        "last_received",
        "limits",
        "namespaces",
        "null",
        "ping_interval",
        "ping_sent",
        "ping_timeout",
        "rules",
        "windows",
    )

    def __init__(
        self,
        rules: EventRules,
        limits: Limits,
        *,
        now: float,
        ping_interval: float,
        ping_timeout: float,
        connect_timeout: float,
        binary: bool,
        null: msgspec.Raw,
    ) -> None:
        self.rules = rules
        self.limits = limits
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self.binary = binary
        self.null = null
        self.namespaces: dict[str, NamespaceState] = {}
        self.windows: dict[str, DedupWindow] = {}
        self._buckets: dict[str, TokenBucket] | None = None
        self._limited = 0
        self._calls: dict[int, str] | None = None
        self._next_call_id = 0
        self.last_received = now
        self.last_ping = now
        self.ping_sent: float | None = None
        self._connect_deadline: float | None = now + connect_timeout
        #: Set once the core decided to close the socket: later frames are ignored.
        self.closing: Close | None = None

    # Input: frames ----------------------------------------------------------------------

    def message_in(self, size: int, now: float, max_size: int) -> Close | None:
        """A WebSocket message of ``size`` bytes arrived (before decoding)."""
        self.last_received = now
        if size > max_size:
            return self._close(status.WS_1009_MESSAGE_TOO_BIG, "message too big")
        return None

    def frame_in(self, frame: ClientFrame, now: float) -> Action | None:
        """Decide what to do with one decoded client frame."""
        if self.closing is not None:
            return None
        kind = type(frame)
        if kind is Event:
            return self._event(frame, now)  # type: ignore[arg-type]
        if kind is Ack:
            return self._ack(frame)  # type: ignore[arg-type]
        if kind is Connect:
            return self._connect(frame, now)  # type: ignore[arg-type]
        if kind is Disconnect:
            if self.namespaces.get(frame.ns) is NamespaceState.OPEN:  # type: ignore[union-attr]
                return CloseNamespace(frame.ns, "client disconnect")  # type: ignore[union-attr]
            return None
        if kind is Pong:
            return None
        return self._close(status.WS_4501_PROTOCOL_ERROR, "protocol error")  # pragma: no cover

    def _event(self, frame: Event, now: float) -> Action | None:
        ns = frame.ns
        ack_id = frame.id
        if self.namespaces.get(ns) is not NamespaceState.OPEN:
            refused = self.charge("", None, None, now)
            if isinstance(refused, Close):
                return refused
            if refused is not None:
                return None
            return self._refuse(ns, ack_id, status.NOT_CONNECTED, "namespace not connected")
        if ack_id is not None:
            window = self.windows[ns]
            seen = window.check(ack_id)
            if seen is not Seen.NEW:
                if seen is Seen.REPLAY:
                    return Send(window.reply(ack_id))  # type: ignore[arg-type]
                if seen is Seen.IN_FLIGHT:
                    return None  # the answer goes out once the handler is done
                return Send(Ack(ns, ack_id, self.null, ErrorInfo(status.DUPLICATE, "already handled")))
        event = frame.event
        if event == AUTH_EVENT:
            return self._checked(frame, now, None, reauth=True)
        table = self.rules.get(ns)
        if table is None or event not in table:
            # Unknown events are charged too, so that they cannot flood for free.
            refused = self.charge("", None, None, now)
            if isinstance(refused, Close):
                return refused
            if refused is not None:
                return self._answer(ns, "", ack_id, status.RATE_LIMITED, refused)
            return self._answer(ns, "", ack_id, status.UNKNOWN_EVENT, f"no handler for {event!r}")
        return self._checked(frame, now, table[event], reauth=False)

    def _checked(
        self, frame: Event, now: float, rate: tuple[float, int | None] | None, *, reauth: bool
    ) -> Action | None:
        ns, ack_id = frame.ns, frame.id
        if rate is not None:
            refused = self.charge(frame.event, rate[0], rate[1], now)
        else:
            refused = self.charge("", None, None, now)
        if isinstance(refused, Close):
            return refused
        name = "" if reauth else frame.event
        if refused is not None:
            return self._answer(ns, name, ack_id, status.RATE_LIMITED, refused)
        too_big = self.limits.payload_error(frame.data, binary=self.binary)
        if too_big is not None:
            return self._answer(ns, name, ack_id, status.LIMIT_EXCEEDED, too_big)
        if ack_id is not None:
            self.windows[ns].started(ack_id)
        return Dispatch(frame, reauth)

    def _ack(self, frame: Ack) -> Action | None:
        calls = self._calls
        if calls is None or calls.get(frame.id) != frame.ns:
            # A stray ACK is answered but does not close the socket (docs/protocol.md).
            return Send(Error(status.BAD_FRAME, f"unexpected ack id {frame.id}", frame.ns))
        del calls[frame.id]
        return Resolve(frame)

    def _connect(self, frame: Connect, now: float) -> Action:
        ns = frame.ns
        refused = self.charge("", None, None, now)
        if isinstance(refused, Close):
            return refused
        if refused is not None:
            return Send(ConnectError(ns, status.RATE_LIMITED, refused, True))
        if ns not in self.rules:
            return Send(ConnectError(ns, status.UNKNOWN_NAMESPACE, f"no namespace {ns!r}"))
        if ns in self.namespaces:
            return Send(ConnectError(ns, status.ALREADY_CONNECTED, f"{ns!r} is already connected"))
        if len(self.namespaces) >= self.limits.max_namespaces:
            return Send(ConnectError(ns, status.TOO_MANY_NAMESPACES, "too many namespaces on one connection"))
        self.namespaces[ns] = NamespaceState.CONNECTING
        return Open(frame)

    # Input: what the shell reports back ---------------------------------------------------

    def opened(self, ns: str, window: DedupWindow | None = None) -> None:
        """The open sequence of ``ns`` succeeded (with the recovered session's window, if any)."""
        self.namespaces[ns] = NamespaceState.OPEN
        self.windows[ns] = window if window is not None else DedupWindow()
        self._connect_deadline = None

    def refused(self, ns: str, now: float) -> None:
        """The open sequence of ``ns`` failed (the shell sent CONNECT_ERROR)."""
        self.closed(ns, now)

    def closed(self, ns: str, now: float) -> None:
        """The namespace connection ``ns`` is closed."""
        self.namespaces.pop(ns, None)
        self.windows.pop(ns, None)
        calls = self._calls
        if calls:
            for ack_id in [i for i, call_ns in calls.items() if call_ns == ns]:
                del calls[ack_id]
        if not self.namespaces and self._connect_deadline is None:
            # A socket with nothing open holds a slot: the same deadline as at the start.
            self._connect_deadline = now + self.connect_timeout

    def answered(self, ns: str, reply: Ack) -> Send | None:
        """A handler answered the event ``reply.id``: keep the answer, send it if ``ns`` is open."""
        window = self.windows.get(ns)
        if window is None:
            return None
        window.answered(reply.id, reply)
        return Send(reply)

    def call(self, ns: str) -> int:
        """Allocate the id of a server-to-client call on ``ns`` (wraps within 31 bits)."""
        calls = self._calls
        if calls is None:
            calls = self._calls = {}
        ack_id = self._next_call_id = (self._next_call_id + 1) & MAX_ACK_ID
        calls[ack_id] = ns
        return ack_id

    def call_done(self, ack_id: int) -> None:
        """A server call ended without an answer (time-out): forget its id."""
        if self._calls is not None:
            self._calls.pop(ack_id, None)

    # Input: time ----------------------------------------------------------------------------

    def tick(self, now: float) -> Action | None:
        """What the heartbeat scheduler does now: ping, close, or nothing."""
        if self.closing is not None:
            return None
        deadline = self._connect_deadline
        if deadline is not None and now >= deadline:
            return self._close(status.WS_4007_CONNECT_TIMEOUT, "connect timeout")
        ping_sent = self.ping_sent
        if ping_sent is not None and self.last_received < ping_sent:
            if now - ping_sent >= self.ping_timeout:
                return self._close(status.WS_4005_HEARTBEAT_TIMEOUT, "heartbeat timeout")
            return None
        if now - self.last_ping >= self.ping_interval:
            self.last_ping = self.ping_sent = now
            return Send(Ping())
        return None

    # Limits -----------------------------------------------------------------------------------

    def charge(self, key: str, rate: float | None, burst: int | None, now: float) -> str | Close | None:
        """Charge one frame to bucket ``key`` (``""`` is the socket's shared one).

        Returns:
            ``None`` when the frame may go on, a message saying why it may not, or
            :class:`Close` (4006) after ``abuse_threshold`` refusals in a row.
        """
        limits = self.limits
        if rate is None:
            rate = limits.rate
            if rate is None:
                return None
        buckets = self._buckets
        if buckets is None:
            buckets = self._buckets = {}
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(rate, burst if burst is not None else limits.burst, now)
        if bucket.take(now):
            self._limited = 0
            return None
        self._limited += 1
        if self._limited >= limits.abuse_threshold:
            return self._close(status.WS_4006_RATE_LIMITED, "rate limited")
        return f"over {rate:g} events/s"

    # Helpers ------------------------------------------------------------------------------------

    def _answer(self, ns: str, event: str, ack_id: int | None, code: str, message: str) -> Refuse:
        if ack_id is None:
            return Refuse(ns, event, code, None)
        reply = Ack(ns, ack_id, self.null, ErrorInfo(code, message))
        self.windows[ns].answered(ack_id, reply)
        return Refuse(ns, event, code, reply)

    def _refuse(self, ns: str, ack_id: int | None, code: str, message: str) -> Send:
        if ack_id is not None:
            return Send(Ack(ns, ack_id, self.null, ErrorInfo(code, message)))
        return Send(Error(code, message, ns))

    def undecodable(self, code: str, message: str, close_code: int) -> tuple[Send, Close]:
        """A message could not be decoded: answer with an ERROR frame, then close."""
        return Send(Error(code, message)), self._close(close_code, "protocol error")

    def _close(self, code: int, reason: str) -> Close:
        close = self.closing = Close(code, reason)
        return close

    def __repr__(self) -> str:
        return f"SessionCore(namespaces={sorted(self.namespaces)!r})"


__all__ = [
    "AUTH_EVENT",
    "Action",
    "Close",
    "CloseNamespace",
    "DedupState",
    "DedupWindow",
    "Dispatch",
    "EventRules",
    "NamespaceState",
    "Open",
    "Refuse",
    "Resolve",
    "Seen",
    "Send",
    "SessionCore",
    "TokenBucket",
]
