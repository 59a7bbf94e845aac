"""The close codes and error codes of the contract, read from :mod:`starlette_realtime.status`."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .. import status


class Code(msgspec.Struct, frozen=True):
    """A close code or an error code, with its meaning."""

    value: int | str
    description: str
    retryable: bool | None = None


# Codes used on the wire that status.py does not name (yet): kept here so that the
# contract lists every code a client can get.
_UNNAMED_ACK_CODES: Final = {
    "duplicate": "an event with this `id` was already handled and its result is no longer cached",
}
_UNNAMED_CONNECT_CODES: Final = {"UNAVAILABLE": "the server's backend (e.g. Redis) is unavailable; retry later"}

#: Meanings of the error codes of status.py (the values are read from status.py).
ERROR_MEANINGS: Final[dict[str, str]] = {
    status.INVALID_PAYLOAD: "the payload does not match the handler's type; the message is msgspec's",
    status.UNKNOWN_EVENT: "no handler for this event in this namespace",
    status.INTERNAL_ERROR: "the handler raised; details are only in the server log",
    status.RATE_LIMITED: "over the rate limit for this connection or event",
    status.FORBIDDEN: "not allowed (e.g. joining a room the user may not join)",
    status.LIMIT_EXCEEDED: "a limit was hit (rooms per connection, payload size, nesting depth)",
    status.NOT_CONNECTED: "the namespace is not connected on this WebSocket",
    status.BAD_FRAME: "a frame the server could not handle (ERROR frames)",
    status.BAD_ROOM: "an invalid room name",
    status.TIMEOUT: "no answer in time",
    status.UNAVAILABLE: "the backend (e.g. Redis) is down; retry later",
    status.AUTHENTICATION_REQUIRED: "the namespace needs an auth payload",
    status.INVALID_TOKEN: "the token is malformed, forged or expired; retry with a fresh one",
    status.UNKNOWN_NAMESPACE: "no endpoint serves this namespace",
    status.ALREADY_CONNECTED: "the namespace is already connected on this WebSocket",
    status.REJECTED: "refused by the endpoint's on_connect (the default code of Rejected)",
    status.TOO_MANY_NAMESPACES: "too many namespaces on one WebSocket",
    status.TOO_MANY_CONNECTIONS: "the user's connection limit",
}

_RETRYABLE_CONNECT: Final = frozenset({status.INVALID_TOKEN, status.TOO_MANY_CONNECTIONS, status.RATE_LIMITED,
                                       "UNAVAILABLE"})


def status_error_codes() -> list[str]:
    """Every error code :mod:`starlette_realtime.status` names, in its order."""
    return [
        value
        for name, value in vars(status).items()
        if name.isupper() and not name.startswith("WS_") and isinstance(value, str)
    ]


def codes() -> tuple[tuple[Code, ...], tuple[Code, ...], tuple[Code, ...]]:
    """The close codes, ACK error codes and CONNECT_ERROR codes, with their meanings."""
    close = tuple(Code(code, meaning, retry) for code, (retry, meaning) in sorted(status.CLOSE_CODES.items()))
    ack: list[Code] = []
    connect: list[Code] = []
    for value in status_error_codes():
        meaning = ERROR_MEANINGS.get(value, "")
        if value.isupper():
            connect.append(Code(value, meaning, value in _RETRYABLE_CONNECT))
        else:
            ack.append(Code(value, meaning))
            if value == status.RATE_LIMITED:
                connect.append(Code(value, meaning, True))
    ack.extend(Code(v, m) for v, m in _UNNAMED_ACK_CODES.items())
    connect.extend(Code(v, m, v in _RETRYABLE_CONNECT) for v, m in _UNNAMED_CONNECT_CODES.items())
    return close, tuple(ack), tuple(connect)


#: The schemas of the code tables, named in both outputs.
CODE_SCHEMAS: Final = ("CloseCode", "AckErrorCode", "ConnectErrorCode")


def code_schema(codes: tuple[Code, ...], title: str, description: str, *, open_ended: bool) -> dict[str, Any]:
    """A JSON Schema of a code table: one ``const`` per code, with its meaning."""
    alternatives: list[dict[str, Any]] = []
    for code in codes:
        alt: dict[str, Any] = {"const": code.value, "description": code.description}
        if code.retryable is not None:
            alt["x-retryable"] = code.retryable
        alternatives.append(alt)
    if open_ended:
        # An application may raise HandlerError / Rejected with its own code.
        alternatives.append({"type": "string", "description": "a code of the application"})
    return {"title": title, "description": description, "oneOf" if not open_ended else "anyOf": alternatives}
