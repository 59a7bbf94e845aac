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
from collections.abc import Mapping

import msgspec

from . import status
from .actions import Action, Close, CloseNamespace, Dispatch, Open, Refuse, Resolve, Send
from .dedup import IN_FLIGHT, NEW, REPLAY, DedupState, DedupWindow, Seen
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
from .limits import Limits, TokenBucket

#: The reserved client event that carries a fresh credential (docs/protocol.md).
AUTH_EVENT = "$auth"

#: Per namespace, per event name: the handler's own rate limit ``(rate, burst)``, or ``None``
#: for the connection's shared bucket.  An event missing from a namespace's table has no handler.
EventRules = Mapping[str, Mapping[str, tuple[float, int | None] | None]]


class NamespaceState(enum.Enum):
    CONNECTING = 0
    OPEN = 1


# Members read through their Enum class cost ~0.2 us each on CPython 3.11 (EnumType.__getattr__, 12x a global):
# the per-event paths read module constants (see dedup.py).
_OPEN = NamespaceState.OPEN


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
            if self.namespaces.get(frame.ns) is _OPEN:  # type: ignore[union-attr]
                return CloseNamespace(frame.ns, "client disconnect")  # type: ignore[union-attr]
            return None
        if kind is Pong:
            return None
        return self._close(status.WS_4501_PROTOCOL_ERROR, "protocol error")  # pragma: no cover

    def _event(self, frame: Event, now: float) -> Action | None:
        ns = frame.ns
        ack_id = frame.id
        if self.namespaces.get(ns) is not _OPEN:
            refused = self.charge("", None, None, now)
            if isinstance(refused, Close):
                return refused
            if refused is not None:
                return None
            return self._refuse(ns, ack_id, status.NOT_CONNECTED, "namespace not connected")
        window = None
        if ack_id is not None:
            window = self.windows[ns]
            seen = window.check(ack_id)
            if seen is not NEW:
                if seen is REPLAY:
                    return Send(window.reply(ack_id))  # type: ignore[arg-type]
                if seen is IN_FLIGHT:
                    return None  # the answer goes out once the handler is done
                return Send(Ack(ns, ack_id, self.null, ErrorInfo(status.DUPLICATE, "already handled")))
        event = frame.event
        if event == AUTH_EVENT:
            return self._checked(frame, now, None, window, reauth=True)
        table = self.rules.get(ns)
        if table is None or event not in table:
            # Unknown events are charged too, so that they cannot flood for free.
            refused = self.charge("", None, None, now)
            if isinstance(refused, Close):
                return refused
            if refused is not None:
                return self._answer(ns, "", ack_id, status.RATE_LIMITED, refused)
            return self._answer(ns, "", ack_id, status.UNKNOWN_EVENT, f"no handler for {event!r}")
        return self._checked(frame, now, table[event], window, reauth=False)

    def _checked(
        self, frame: Event, now: float, rate: tuple[float, int | None] | None, window: DedupWindow | None, *,
        reauth: bool,
    ) -> Action | None:
        ns, ack_id = frame.ns, frame.id
        if rate is not None:
            refused = self.charge(frame.event, rate[0], rate[1], now)
        elif self.limits.rate is None:
            refused = None  # no limit at all: the common case, without a call
        else:
            refused = self.charge("", None, None, now)
        if refused is not None:
            if isinstance(refused, Close):
                return refused
            return self._answer(ns, "" if reauth else frame.event, ack_id, status.RATE_LIMITED, refused)
        too_big = self.limits.payload_error(frame.data, binary=self.binary)
        if too_big is not None:
            return self._answer(ns, "" if reauth else frame.event, ack_id, status.LIMIT_EXCEEDED, too_big)
        if window is not None:
            window.started(ack_id)  # type: ignore[arg-type]
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

    def answered(self, ns: str, reply: Ack) -> bool:
        """A handler answered the event ``reply.id``: keep the answer; ``True`` when it is to be sent
        (``ns`` is still open here)."""
        window = self.windows.get(ns)
        if window is None:
            return False
        window.answered(reply.id, reply)
        return True

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

    def next_visit(self) -> float:
        """When :meth:`tick` may next have something to do (the next PING, a PING's deadline,
        the CONNECT deadline)."""
        due = self.last_ping + self.ping_interval
        ping_sent = self.ping_sent
        if ping_sent is not None and self.last_received < ping_sent:
            # Unanswered so far: its deadline, or the next PING's time if the PONG comes first.
            due = min(due, ping_sent + self.ping_timeout)
        deadline = self._connect_deadline
        return due if deadline is None or deadline > due else deadline

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
