"""The fields every log record about a connection carries, so that a formatter can rely on them."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Protocol

from .identity import user_key

#: True in the task of a WebSocket handshake the router refused on purpose (an HTTP 400/403/503 was sent).
refused_handshake: ContextVar[bool] = ContextVar("refused_handshake", default=False)


class RefusedHandshakeFilter(logging.Filter):
    """Drops uvicorn's ``ASGI callable returned without completing handshake.`` for refused handshakes.

    A router that refuses a handshake with an HTTP response (an unknown subprotocol: 400,
    shutting down: 503) completes the ASGI sequence, but uvicorn still logs that error, so
    any peer could fill an operator's error log.  The record is dropped only when it comes
    from the task of a handshake this library refused on purpose; the same message from
    any other application is kept.
    """

    MESSAGE = "ASGI callable returned without completing handshake."

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == self.MESSAGE and refused_handshake.get())


def quiet_refused_handshakes(logger_name: str = "uvicorn.error") -> None:
    """Add :class:`RefusedHandshakeFilter` to uvicorn's error logger once (the router does it at start-up)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RefusedHandshakeFilter) for f in logger.filters):
        logger.addFilter(RefusedHandshakeFilter())


class _Socket(Protocol):
    @property
    def id(self) -> str: ...


class _Member(Protocol):
    @property
    def sid(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def user(self) -> Any: ...


def log_fields(
    link: _Socket | None, conn: _Member | None = None, *, reason: str | None = None, close_code: int | None = None
) -> dict[str, Any]:
    """The ``extra=`` fields of the library's log records about a connection.

    Every record carries the same keys (``None`` when not applicable), so that a
    formatter or a JSON handler can rely on them: ``link_id`` (the WebSocket),
    ``sid`` (the namespace connection), ``namespace``, ``user`` (the identity key,
    never a token), ``reason`` and ``close_code``.

    Args:
        link: the WebSocket, when there is one.
        conn: the namespace connection, when there is one.
        reason: why it closed or was refused.
        close_code: the WebSocket close code.

    Returns:
        The fields, for ``logger.info(..., extra=log_fields(...))``.
    """
    return {
        "link_id": link.id if link is not None else None,
        "sid": conn.sid if conn is not None else None,
        "namespace": conn.namespace if conn is not None else None,
        "user": user_key(conn.user) if conn is not None else None,
        "reason": reason,
        "close_code": close_code,
    }


__all__ = ["RefusedHandshakeFilter", "log_fields", "quiet_refused_handshakes", "refused_handshake"]
