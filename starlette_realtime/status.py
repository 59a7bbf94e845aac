"""Close codes and error codes: the one table both clients act on.

Close codes 4000-4499 mean "reconnect" and 4500-4999 mean "stop"; the standard
codes are marked one way or the other below.  docs/protocol.md carries the
same table; keep them in step.
"""

from __future__ import annotations

from typing import Final

# Standard WebSocket close codes (RFC 6455).
WS_1000_NORMAL_CLOSURE: Final = 1000
WS_1001_GOING_AWAY: Final = 1001
WS_1002_PROTOCOL_ERROR: Final = 1002
WS_1006_ABNORMAL_CLOSURE: Final = 1006
WS_1008_POLICY_VIOLATION: Final = 1008
WS_1009_MESSAGE_TOO_BIG: Final = 1009
WS_1011_INTERNAL_ERROR: Final = 1011
WS_1012_SERVICE_RESTART: Final = 1012
WS_1013_TRY_AGAIN_LATER: Final = 1013

# Application close codes, retryable (4000-4499).
WS_4003_TOKEN_EXPIRED: Final = 4003
WS_4004_SLOW_CONSUMER: Final = 4004
WS_4005_HEARTBEAT_TIMEOUT: Final = 4005
WS_4006_RATE_LIMITED: Final = 4006
WS_4007_CONNECT_TIMEOUT: Final = 4007
WS_4008_SUPERSEDED: Final = 4008

# Application close codes, terminal (4500-4999).
WS_4501_PROTOCOL_ERROR: Final = 4501
WS_4503_KICKED: Final = 4503

#: code -> (retryable, meaning)
CLOSE_CODES: Final[dict[int, tuple[bool, str]]] = {
    WS_1000_NORMAL_CLOSURE: (False, "closed on purpose by the other side"),
    WS_1001_GOING_AWAY: (True, "server shutting down or restarting"),
    WS_1006_ABNORMAL_CLOSURE: (True, "connection lost without a close frame"),
    WS_1008_POLICY_VIOLATION: (False, "refused by policy (origin, authentication)"),
    WS_1009_MESSAGE_TOO_BIG: (False, "a message was larger than max_message_size"),
    WS_1011_INTERNAL_ERROR: (True, "unexpected server error"),
    WS_1012_SERVICE_RESTART: (True, "server restarting"),
    WS_1013_TRY_AGAIN_LATER: (True, "server or user at its connection limit"),
    WS_4003_TOKEN_EXPIRED: (True, "the authentication token expired; fetch a new one"),
    WS_4004_SLOW_CONSUMER: (True, "the client did not read fast enough; its queue overflowed"),
    WS_4005_HEARTBEAT_TIMEOUT: (True, "no pong within ping_timeout"),
    WS_4006_RATE_LIMITED: (True, "sustained flooding over the rate limit"),
    WS_4007_CONNECT_TIMEOUT: (True, "no namespace was opened within connect_timeout"),
    WS_4008_SUPERSEDED: (True, "the same session was resumed on another WebSocket"),
    WS_4501_PROTOCOL_ERROR: (False, "a frame that could not be decoded or was not allowed"),
    WS_4503_KICKED: (False, "disconnected by the server (logout, ban)"),
}


def is_retryable(code: int | None) -> bool:
    """Tell whether a client should reconnect after a close with ``code``.

    Args:
        code: the close code, or ``None`` when the connection dropped with none.

    Returns:
        ``True`` for retryable codes, unknown 4000-4499 codes and ``None``.
    """
    if code is None:
        return True
    known = CLOSE_CODES.get(code)
    if known is not None:
        return known[0]
    if 4000 <= code <= 4499:
        return True
    if 4500 <= code <= 4999:
        return False
    return code not in (1002, 1003, 1007, 1010)


# Error codes carried by Ack and Error frames (lower case).
INVALID_PAYLOAD: Final = "invalid_payload"
UNKNOWN_EVENT: Final = "unknown_event"
INTERNAL_ERROR: Final = "internal_error"
RATE_LIMITED: Final = "rate_limited"
FORBIDDEN: Final = "forbidden"
LIMIT_EXCEEDED: Final = "limit_exceeded"
NOT_CONNECTED: Final = "not_connected"
BAD_FRAME: Final = "bad_frame"
BAD_ROOM: Final = "bad_room"
TIMEOUT: Final = "timeout"
UNAVAILABLE: Final = "unavailable"
#: A resent event id whose answer is no longer kept: the event was handled, its answer is gone.
#: Never a success: clients raise it as an error.
DUPLICATE: Final = "duplicate"
#: A handler was cancelled before it answered (its WebSocket went away and it overran the grace).
INTERRUPTED: Final = "interrupted"

#: code -> meaning, for docs/protocol.md and the AsyncAPI export.
ERROR_CODES: Final[dict[str, str]] = {
    INVALID_PAYLOAD: "the payload does not fit the handler's type",
    UNKNOWN_EVENT: "no handler for this event",
    INTERNAL_ERROR: "the handler failed",
    RATE_LIMITED: "over the rate limit",
    FORBIDDEN: "not allowed (e.g. joining a room)",
    LIMIT_EXCEEDED: "a configured limit was hit (rooms, payload size or depth)",
    NOT_CONNECTED: "the namespace is not open on this WebSocket",
    BAD_FRAME: "a frame that is not allowed here (e.g. a stray ACK)",
    BAD_ROOM: "an invalid room name",
    TIMEOUT: "the other side did not answer in time",
    UNAVAILABLE: "the backend is unavailable; retry later",
    DUPLICATE: "already handled, and its answer is no longer kept",
    INTERRUPTED: "the handler was cancelled before it answered",
}

# Error codes carried by ConnectError frames (upper case).
AUTHENTICATION_REQUIRED: Final = "AUTHENTICATION_REQUIRED"
INVALID_TOKEN: Final = "INVALID_TOKEN"
UNKNOWN_NAMESPACE: Final = "UNKNOWN_NAMESPACE"
ALREADY_CONNECTED: Final = "ALREADY_CONNECTED"
REJECTED: Final = "REJECTED"
TOO_MANY_NAMESPACES: Final = "TOO_MANY_NAMESPACES"
TOO_MANY_CONNECTIONS: Final = "TOO_MANY_CONNECTIONS"
#: CONNECT_ERROR (retryable): the backend is down, the namespace cannot be opened now.
CONNECT_UNAVAILABLE: Final = "UNAVAILABLE"

CONNECT_ERROR_CODES: Final[dict[str, str]] = {
    AUTHENTICATION_REQUIRED: "the namespace needs credentials",
    INVALID_TOKEN: "the credentials were refused",
    UNKNOWN_NAMESPACE: "no endpoint serves this namespace",
    ALREADY_CONNECTED: "the namespace is already open on this WebSocket",
    REJECTED: "refused by the endpoint's on_connect",
    TOO_MANY_NAMESPACES: "too many namespaces on one WebSocket",
    TOO_MANY_CONNECTIONS: "the user is at max_connections_per_user (retryable)",
    CONNECT_UNAVAILABLE: "the backend is unavailable (retryable)",
    RATE_LIMITED: "over the rate limit (retryable; the same code as the ack error)",
}
