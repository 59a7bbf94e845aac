"""What the session core asks its I/O shell to do: the actions :class:`~starlette_realtime.core.SessionCore` returns."""

from __future__ import annotations

from .frames import Ack, Connect, ConnectError, Error, Event, Ping


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


__all__ = ["Action", "Close", "CloseNamespace", "Dispatch", "Open", "Refuse", "Resolve", "Send"]
