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


# Error codes carried by Ack / Error / ConnectError frames.
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

AUTHENTICATION_REQUIRED: Final = "AUTHENTICATION_REQUIRED"
INVALID_TOKEN: Final = "INVALID_TOKEN"
UNKNOWN_NAMESPACE: Final = "UNKNOWN_NAMESPACE"
ALREADY_CONNECTED: Final = "ALREADY_CONNECTED"
REJECTED: Final = "REJECTED"
TOO_MANY_NAMESPACES: Final = "TOO_MANY_NAMESPACES"
TOO_MANY_CONNECTIONS: Final = "TOO_MANY_CONNECTIONS"
