"""Running one event: decode its payload into the handler's type, run the handler, build the answer.

The session core has already decided that the event may run (namespace open,
not a duplicate, within the limits).  Every outcome of a handler with an ack id
becomes one ACK frame, a value or an error, handed to :meth:`Link.answer`,
which keeps it for a resend (the dedup contract, docs/protocol.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import msgspec

from . import status
from .connection import Connection
from .core import Dispatch
from .dispatch import Handler
from .exceptions import BackendUnavailable, HandlerError, Rejected
from .frames import Ack, ErrorInfo, Event
from .identity import user_key
from .link import Link
from .logs import log_fields
from .metrics import Metrics

logger = logging.getLogger(__name__)


#: Notes that a connection's session changed (the node writes it through to the backend soon).
Persist = Callable[[Link, Connection], None]


class Owner(Protocol):
    """What running an event needs of its endpoint (a :class:`~starlette_realtime.RealtimeEndpoint`)."""

    @property
    def handlers(self) -> dict[str, Handler]: ...

    async def authenticate(self, conn: Connection) -> Any: ...


class Invoker:
    """Runs events for the connections of one node.

    Args:
        metrics: told when handlers start and finish.
        persist: notes that a session changed (an answer was kept), so that the node writes it
            through to the backend shortly; ``None``: no write-through.
    """

    __slots__ = ("metrics", "persist")

    def __init__(self, metrics: Metrics, persist: Persist | None = None) -> None:
        self.metrics = metrics
        self.persist = persist

    def _answer(self, link: Link, conn: Connection, reply: Ack) -> None:
        link.answer(conn.namespace, reply)
        if self.persist is not None:
            self.persist(link, conn)

    async def dispatch(self, link: Link, conn: Connection, action: Dispatch) -> None:
        """Validate and run one event, in order or in a task of its own (``concurrent=True``).

        The handlers are those of the connection's own endpoint (``conn.endpoint``).
        """
        owner: Owner = conn.endpoint  # type: ignore[assignment]  # an endpoint is both (no cast(): a call per event)
        frame = action.frame
        if action.reauth:
            await self._reauthenticate(link, conn, frame, owner)
            return
        handler = owner.handlers[frame.event]
        ack_id = frame.id
        if handler.takes_payload:
            try:
                payload = handler.decode(conn.codec, frame.data)  # type: ignore[arg-type]
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
                self._refuse(link, conn, handler.name, ack_id, status.INVALID_PAYLOAD, str(exc))
                return
            except RecursionError:
                self._refuse(link, conn, handler.name, ack_id, status.INVALID_PAYLOAD, "payload nested too deeply")
                return
        else:
            payload = None
        if handler.concurrent:
            link.spawn_handler(self._run, link, conn, owner, handler, payload, ack_id)
        else:
            await self._run(link, conn, owner, handler, payload, ack_id)

    def _refuse(self, link: Link, conn: Connection, event: str, ack_id: int | None, code: str, message: str) -> None:
        self.metrics.event_rejected(conn.namespace, event, code)
        if ack_id is not None:
            link.answer(conn.namespace, _error(conn, ack_id, code, message))

    async def _run(
        self, link: Link, conn: Connection, owner: Owner, handler: Handler, payload: Any, ack_id: int | None
    ) -> None:
        metrics = self.metrics
        ns = conn.namespace
        started = metrics.handler_started()
        try:
            if handler.takes_payload:
                result = await handler.func(owner, conn, payload)
            else:
                result = await handler.func(owner, conn)
        except HandlerError as exc:
            metrics.handler_finished(ns, handler.name, started, exc.code)
            if ack_id is not None:
                self._answer(link, conn, _error(conn, ack_id, exc.code, exc.message))
            return
        except BackendUnavailable:
            # An outage, not a bug: say so, so that clients can retry later.
            metrics.handler_finished(ns, handler.name, started, status.UNAVAILABLE)
            logger.warning("handler %r: backend unavailable (sid=%s)", handler.name, conn.sid)
            if ack_id is not None:
                reply = _error(conn, ack_id, status.UNAVAILABLE, "backend unavailable; retry later")
                self._answer(link, conn, reply)
            return
        except anyio.get_cancelled_exc_class():
            # Cancelled before it answered (its socket went away and it overran the grace):
            # a resend gets this answer, never a made-up success.
            if ack_id is not None:
                link.answer(ns, _error(conn, ack_id, status.INTERRUPTED, "the handler was cancelled"))
            raise
        except Exception:
            metrics.handler_finished(ns, handler.name, started, status.INTERNAL_ERROR)
            logger.exception(
                "handler %r failed (link=%s sid=%s namespace=%s)", handler.name, link.id, conn.sid, ns,
                extra=log_fields(link, conn, reason=status.INTERNAL_ERROR),
            )
            if ack_id is not None:
                self._answer(link, conn, _error(conn, ack_id, status.INTERNAL_ERROR, "internal error"))
            return
        metrics.handler_finished(ns, handler.name, started, None)
        if ack_id is not None:
            try:
                reply = Ack(ns, ack_id, conn.codec.encode_payload(result))
            except (TypeError, msgspec.EncodeError):
                logger.exception(
                    "handler %r returned a value that cannot be encoded (link=%s sid=%s namespace=%s)",
                    handler.name, link.id, conn.sid, ns,
                    extra=log_fields(link, conn, reason=status.INTERNAL_ERROR),
                )
                reply = _error(conn, ack_id, status.INTERNAL_ERROR, "internal error")
            self._answer(link, conn, reply)

    async def _reauthenticate(self, link: Link, conn: Connection, frame: Event, owner: Owner) -> None:
        """Handle ``$auth``: check a fresh credential for the same user and move the expiry."""
        ack_id = frame.id
        ns = conn.namespace
        try:
            payload = conn.codec.payload_decoder(Any)(frame.data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            if ack_id is not None:
                link.answer(ns, _error(conn, ack_id, status.INVALID_PAYLOAD, "undecodable auth payload"))
            return
        previous = conn.auth
        conn.auth = payload
        try:
            user = await owner.authenticate(conn)
            if user_key(user) != user_key(conn.user):
                raise Rejected(status.FORBIDDEN, "a fresh credential must name the same user")
        except Rejected as exc:
            conn.auth = previous
            logger.info(
                "$auth refused with %s (link=%s sid=%s namespace=%s)", exc.code, link.id, conn.sid, ns,
                extra=log_fields(link, conn, reason=exc.code),
            )
            if ack_id is not None:
                link.answer(ns, _error(conn, ack_id, exc.code, exc.message))
            return
        except Exception:
            conn.auth = previous
            logger.exception(
                "$auth failed (link=%s sid=%s namespace=%s)", link.id, conn.sid, ns,
                extra=log_fields(link, conn, reason=status.INTERNAL_ERROR),
            )
            if ack_id is not None:
                link.answer(ns, _error(conn, ack_id, status.INTERNAL_ERROR, "internal error"))
            return
        conn.user = user
        link.track_expiry(conn)
        if ack_id is not None:
            link.answer(ns, Ack(ns, ack_id, conn.codec.null))

    def __repr__(self) -> str:
        return "Invoker()"


def _error(conn: Connection, ack_id: int, code: str, message: str) -> Ack:
    return Ack(conn.namespace, ack_id, conn.codec.null, ErrorInfo(code, message))


__all__ = ["Invoker", "Owner"]
