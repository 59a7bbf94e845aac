"""The server's calls to a client (``conn.call``) that wait for the client's ACK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from . import status
from .exceptions import AckError
from .frames import Ack

#: Stands for "no call yet": an empty mapping that is never written to.
_NONE: Any = {}


class Calls:
    """The calls of one socket awaiting their ACK, by call id.

    A future is resolved with the decoded answer, or with an :class:`AckError` (the
    client's error, an undecodable answer, or the connection closing).
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        # Created on first use: most sockets never see a server call.
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = _NONE

    def start(self, ack_id: int, ns: str) -> asyncio.Future[Any]:
        """A call went out: its future."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._pending is _NONE:
            self._pending = {}
        self._pending[ack_id] = (ns, fut)
        return fut

    def end(self, ack_id: int) -> None:
        """The call is over (answered or timed out)."""
        if self._pending:
            self._pending.pop(ack_id, None)

    def resolve(self, frame: Ack, decode: Callable[[bytes], Any]) -> None:
        """The client answered: resolve the call with the value or the error."""
        entry = self._pending.pop(frame.id, None) if self._pending else None
        if entry is None or entry[1].done():
            return
        fut = entry[1]
        if frame.error is not None:
            fut.set_result(AckError(frame.error.code, frame.error.message))
            return
        try:
            fut.set_result(decode(frame.data))
        except Exception:  # undecodable, too deep, not UTF-8
            fut.set_result(AckError(status.INVALID_PAYLOAD, "undecodable ack payload"))

    def fail(self, ns: str | None = None) -> None:
        """The connection on ``ns`` (every one, for ``None``) closed: its calls fail with ``not_connected``."""
        if not self._pending:
            return
        for ack_id, (call_ns, fut) in list(self._pending.items()):
            if ns is None or call_ns == ns:
                del self._pending[ack_id]
                if not fut.done():
                    fut.set_result(AckError(status.NOT_CONNECTED, "connection closed"))

    def __len__(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        return f"Calls(pending={len(self._pending)})"


__all__ = ["Calls"]
