"""What the session core asks its I/O shell to do: the actions :class:`~starlette_realtime.core.SessionCore` returns.

Actions are msgspec structs without garbage-collector tracking: one is built for most
frames a client sends, and a struct is built in C (~4x cheaper than a Python
``__init__`` here); an action refers to frames only, so it is never part of a cycle.
"""

from __future__ import annotations

import msgspec

from .frames import Ack, Connect, ConnectError, Error, Event, Ping


class Action(msgspec.Struct, gc=False):
    """Something the I/O shell must do."""


class Send(Action, gc=False):
    """Send this frame to the client."""

    frame: ConnectError | Ack | Error | Ping

    def __repr__(self) -> str:
        return f"Send({self.frame!r})"


class Refuse(Action, gc=False):
    """An event was refused before any handler ran: count it, and send ``reply`` if there is one.

    ``event`` is the handler's name, or ``""`` for an event without a handler (whose name the
    client chose, kept out of metric labels).
    """

    ns: str
    event: str
    code: str
    reply: Ack | None

    def __repr__(self) -> str:
        return f"Refuse({self.ns!r}, {self.event!r}, {self.code!r})"


class Open(Action, gc=False):
    """Run the open sequence of a namespace (authenticate, ``on_connect``, recovery), then
    report :meth:`SessionCore.opened` or :meth:`SessionCore.refused`."""

    frame: Connect

    def __repr__(self) -> str:
        return f"Open({self.frame.ns!r})"


class Dispatch(Action, gc=False):
    """Run the handler of this event; when it carries an id, report the answer to
    :meth:`SessionCore.answered`.  ``reauth`` marks the reserved ``$auth`` event."""

    frame: Event
    reauth: bool = False

    def __repr__(self) -> str:
        return f"Dispatch({self.frame.ns!r}, {self.frame.event!r}, id={self.frame.id})"


class CloseNamespace(Action, gc=False):
    """Close one namespace connection (the client sent DISCONNECT: no reply)."""

    ns: str
    reason: str

    def __repr__(self) -> str:
        return f"CloseNamespace({self.ns!r}, {self.reason!r})"


class Resolve(Action, gc=False):
    """The client answered the server's call ``frame.id``: resolve it."""

    frame: Ack

    def __repr__(self) -> str:
        return f"Resolve({self.frame.id})"


class Close(Action, gc=False):
    """Close the WebSocket with this code."""

    code: int
    reason: str

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"


__all__ = ["Action", "Close", "CloseNamespace", "Dispatch", "Open", "Refuse", "Resolve", "Send"]
