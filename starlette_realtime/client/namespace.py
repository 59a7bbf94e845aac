"""One namespace of the client: its session, positions, unacknowledged events, and how acks settle calls.

Pure apart from settling futures: no awaits, no sockets, no clock reads (the caller passes the time).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import status
from ..frames import Ack, Connect, Connected, Event
from .errors import AckError
from .outgoing import Outgoing, Pending, Positions

#: The auth payload of a namespace: a value, or a sync or async callable returning one, asked on
#: every (re)connect. A string is sent as ``{"token": value}``.
AuthProvider = Any

async def resolve_auth(provider: AuthProvider) -> Any:
    """The payload to send now: the provider's value (called and awaited when it is callable)."""
    value = provider() if callable(provider) else provider
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, str):
        value = {"token": value}
    return value


@dataclass
class NamespaceState:
    """What the client keeps for one namespace, across the WebSockets it goes through."""

    name: str
    auth: AuthProvider
    outgoing: Outgoing
    positions: Positions = field(default_factory=Positions)
    sid: str | None = None
    session: str | None = None
    recovered: bool = False
    #: CONNECTED on the current WebSocket.
    connected: bool = False
    #: Still wanted: ``False`` once the server sent DISCONNECT or the user closed it (never reopened).
    active: bool = True
    token_retries: int = 0

    def connect_frame(self, auth: msgspec.Raw) -> Connect:
        """The CONNECT to send, resuming the session (with every room's position) when there is one."""
        positions = dict(self.positions.rooms) if self.session else None
        return Connect(self.name, auth, self.session, positions)

    def opened(self, frame: Connected) -> None:
        """Apply a CONNECTED: a session that was not recovered starts its positions over.

        ``connected`` is left to the caller, set once the unacknowledged events went out again.
        """
        if not frame.recovered:
            self.positions.reset()
        self.sid, self.session, self.recovered = frame.sid, frame.session, frame.recovered
        self.token_retries = 0

    def closed_for_good(self, error: BaseException) -> None:
        """The server sent DISCONNECT (or the user closed it): forget the session, fail what waits."""
        self.connected = False
        self.active = False
        self.session = None
        self.positions.reset()
        self.fail_pending(error)

    def accept(self, frame: Event) -> bool:
        """Whether to deliver a server EVENT: ``False`` for a room message delivered already (by offset)."""
        if frame.offset is None or frame.room is None or frame.epoch is None:
            return True
        return self.positions.accept(frame.room, frame.epoch, frame.offset)

    def settle(self, frame: Ack, decode: Callable[[msgspec.Raw], Any]) -> Pending | None:
        """Settle the call an ACK answers, and return its entry (``None`` for an unknown or late ack).

        An error ack fails the awaited call with :class:`AckError`, ``duplicate`` included: the server
        handled this id already and no longer has the answer, which may have been an error, so it is
        never taken for a success. A plain emit has no waiter: the caller reports its errors.
        """
        item = self.outgoing.acked(frame.id)
        if item is None or item.waiter is None or item.waiter.done():
            return item
        if frame.error is not None:
            item.waiter.set_exception(AckError(frame.error.code, frame.error.message))
        else:
            try:
                item.waiter.set_result(decode(frame.data))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                item.waiter.set_exception(AckError(status.INVALID_PAYLOAD, str(exc)))
        return item

    def fail_pending(self, error: BaseException) -> None:
        """Fail every call still waiting, and drop the unacknowledged events."""
        for item in list(self.outgoing.pending.values()):
            if item.waiter is not None and not item.waiter.done():
                item.waiter.set_exception(error)
        self.outgoing.pending.clear()

    def __repr__(self) -> str:
        return (
            f"NamespaceState({self.name!r}, connected={self.connected}, active={self.active}, "
            f"sid={self.sid!r}, pending={len(self.outgoing)})"
        )
