"""The library's exceptions: one root, named subclasses, no shadowed builtins.

Three kinds are kept apart, as in Starlette: misuse of the API raises
``RuntimeError`` or ``TypeError``; a peer that went away is
:class:`ConnectionClosed`; a deliberate refusal is :class:`Rejected` or
:class:`HandlerError`.
"""

from __future__ import annotations

from . import status


class RealtimeError(Exception):
    """Root of every exception raised by starlette-realtime."""


class ProtocolError(RealtimeError):
    """A frame could not be decoded or is not allowed in the current state.

    Attributes:
        code: the error code sent in the ERROR frame.
        close_code: the WebSocket close code, or ``None`` when the connection survives.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = status.BAD_FRAME,
        close_code: int | None = status.WS_4501_PROTOCOL_ERROR,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


class Rejected(RealtimeError):
    """Raised by ``on_connect`` (or an auth hook) to refuse a namespace connection.

    The client receives a CONNECT_ERROR frame with ``code`` and ``message``.
    """

    def __init__(self, code: str = status.REJECTED, message: str = "", *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.retryable = retryable


class HandlerError(RealtimeError):
    """Raised by a handler to answer with an ack error of the application's choice."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class Forbidden(HandlerError):
    """The connection may not do this (for example join a room); ack code ``forbidden``."""

    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(status.FORBIDDEN, message)


class LimitExceeded(HandlerError):
    """A configured limit was hit; ack code ``limit_exceeded``."""

    def __init__(self, message: str) -> None:
        super().__init__(status.LIMIT_EXCEEDED, message)


class InvalidRoom(HandlerError):
    """A room name is empty, too long or reserved; ack code ``bad_room``."""

    def __init__(self, message: str) -> None:
        super().__init__(status.BAD_ROOM, message)


class ConnectionClosed(RealtimeError):
    """The connection is closed; nothing more can be sent or received on it."""


class SlowConsumer(RealtimeError):
    """A connection's outgoing queue overflowed (it did not read fast enough)."""


class BackendUnavailable(RealtimeError):
    """The backend (e.g. Redis) cannot be reached; the operation failed fast."""


class CallTimeout(RealtimeError, TimeoutError):
    """A call did not get its acknowledgement in time."""


class AckError(RealtimeError):
    """The other side answered a call with an error ack.

    Attributes:
        code: the machine-readable error code.
        message: the human-readable message.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


__all__ = [
    "AckError",
    "BackendUnavailable",
    "CallTimeout",
    "ConnectionClosed",
    "Forbidden",
    "HandlerError",
    "InvalidRoom",
    "LimitExceeded",
    "ProtocolError",
    "RealtimeError",
    "Rejected",
    "SlowConsumer",
]
