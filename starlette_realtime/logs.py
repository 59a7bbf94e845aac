"""The fields every log record about a connection carries, so that a formatter can rely on them."""

from __future__ import annotations

from typing import Any, Protocol

from .identity import user_key


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


__all__ = ["log_fields"]
