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


#: CONNECT_ERROR codes the server sends with ``retryable = true`` (docs/protocol.md, "Errors").
RETRYABLE_CONNECT: Final = frozenset({
    status.INVALID_TOKEN, status.TOO_MANY_CONNECTIONS, status.CONNECT_UNAVAILABLE, status.RATE_LIMITED,
})


def codes() -> tuple[tuple[Code, ...], tuple[Code, ...], tuple[Code, ...]]:
    """The close codes, ACK error codes and CONNECT_ERROR codes of :mod:`~starlette_realtime.status`."""
    close = tuple(Code(code, meaning, retry) for code, (retry, meaning) in sorted(status.CLOSE_CODES.items()))
    ack = tuple(Code(code, meaning) for code, meaning in status.ERROR_CODES.items())
    connect = tuple(
        # Only "retryable" is certain: an application's Rejected may mark any code retryable.
        Code(code, meaning, True if code in RETRYABLE_CONNECT else None)
        for code, meaning in status.CONNECT_ERROR_CODES.items()
    )
    return close, ack, connect


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
