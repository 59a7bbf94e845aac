"""``RealtimeEndpoint``: one namespace, its hooks and its typed event handlers.

Subclass it once per namespace.  The router creates one instance per class;
hooks and handlers receive the :class:`~starlette_realtime.connection.Connection`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgspec

from . import status
from .connection import Connection, inline_handler
from .dispatch import Handler, collect_filters, collect_handlers
from .emitter import BroadcastOperator
from .exceptions import BackendUnavailable, Forbidden, HandlerError, Rejected
from .frames import Event
from .link import log_fields

if TYPE_CHECKING:
    from .routing import RealtimeRouter

logger = logging.getLogger(__name__)

#: The reserved client event that carries a fresh credential (docs/protocol.md).
AUTH_EVENT: Final = "$auth"


class RealtimeEndpoint:
    """Base class of a namespace.

    Class attributes:
        namespace: the namespace path, e.g. ``"/chat"``.
        auth: an authenticator (e.g. :class:`~starlette_realtime.auth.SignedTokenAuth`)
            checked before ``on_connect``, per namespace; ``None`` accepts every connection.
        handlers: the ``@on_event`` handlers by event name (built per class).
        filters: the ``@outgoing`` filters by event name (built per class).
    """

    namespace: ClassVar[str] = "/"
    auth: ClassVar[Any] = None
    handlers: ClassVar[dict[str, Handler]] = {}
    filters: ClassVar[dict[str, Callable[..., Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.namespace.startswith("/"):
            raise ValueError(f"{cls.__name__}.namespace must start with '/': {cls.namespace!r}")
        cls.handlers = collect_handlers(cls)
        cls.filters = collect_filters(cls)

    def __init__(self) -> None:
        self._router: RealtimeRouter | None = None

    @property
    def router(self) -> RealtimeRouter:
        """The router serving this endpoint."""
        if self._router is None:
            raise RuntimeError(f"{type(self).__name__} is not mounted in a RealtimeRouter")
        return self._router

    # Hooks -----------------------------------------------------------------

    async def authenticate(self, conn: Connection) -> Any:
        """Return the user of a connecting client (runs before ``on_connect``).

        The default uses ``self.auth`` when set, else the ``user`` that Starlette's
        ``AuthenticationMiddleware`` put in the scope, else ``None``.

        Raises:
            Rejected: to refuse the connection (e.g. ``AUTHENTICATION_REQUIRED``).
        """
        if self.auth is not None:
            return await self.auth.authenticate(conn)
        user = conn.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", True):
            return user
        return None

    async def on_connect(self, conn: Connection) -> None:
        """Called when a client opens the namespace; raise ``Rejected`` to refuse it."""

    async def on_disconnect(self, conn: Connection, reason: str) -> None:
        """Called once when the connection ends, whatever ended it."""

    async def authorize_join(self, conn: Connection, room: str) -> bool:
        """Return whether ``conn`` may join ``room``; also re-checked on recovery."""
        return True

    async def on_join(self, conn: Connection, room: str) -> None:
        """Called after ``conn`` joined ``room`` (also when recovery restores it)."""

    async def on_leave(self, conn: Connection, room: str) -> None:
        """Called after ``conn`` left ``room``, including when the connection closes."""

    # Emitting --------------------------------------------------------------

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Target rooms in this namespace, everyone in them."""
        return BroadcastOperator(self.router.publisher, namespace=self.namespace).to(*rooms)

    async def emit(self, event: str, data: Any = None, *, volatile: bool = False) -> None:
        """Emit to every connection of this namespace, on every node."""
        await BroadcastOperator(self.router.publisher, namespace=self.namespace).emit(
            event, data, volatile=volatile
        )

    # Internals -------------------------------------------------------------

    async def _authorize(self, conn: Connection, room: str) -> None:
        if not await self.authorize_join(conn, room):
            raise Forbidden(f"not allowed to join {room!r}")

    async def _dispatch(self, conn: Connection, frame: Event) -> None:
        """Validate, run and acknowledge one event (errors become error acks)."""
        link = conn.link
        ack_id = frame.id
        if ack_id is not None:
            dedup = conn.dedup
            if ack_id <= dedup.last_id:
                cached = dedup.cached(ack_id)
                if cached is None:
                    cached = link.protocol.ack_error(conn.namespace, ack_id, "duplicate", "already handled")
                conn.outbox.push(conn.codec.message(cached), len(cached))
                return
            dedup.last_id = ack_id
        if frame.event == AUTH_EVENT:
            await self._reauthenticate(conn, frame)
            return
        if frame.event not in self.handlers:
            # Unknown events are charged too, so that they cannot flood for free.
            limited = link.router.limits.charge(link, "", None, None)
            if limited is not None:
                if ack_id is not None:
                    link.reply_error(conn, ack_id, status.RATE_LIMITED, limited)
                return
        handler = self.handlers.get(frame.event)
        if handler is None:
            # The name is the client's choice: keep it out of metric labels.
            link.router.metrics.event_rejected(conn.namespace, "", status.UNKNOWN_EVENT)
            if ack_id is not None:
                link.reply_error(conn, ack_id, status.UNKNOWN_EVENT, f"no handler for {frame.event!r}")
            return
        limiter = link.router.limits.rate_check(conn, handler)
        if limiter is not None:
            link.router.metrics.event_rejected(conn.namespace, handler.name, status.RATE_LIMITED)
            if ack_id is not None:
                link.reply_error(conn, ack_id, status.RATE_LIMITED, limiter)
            return
        too_big = link.router.limits.payload_error(frame.data, binary=conn.codec.binary)
        if too_big is not None:
            link.router.metrics.event_rejected(conn.namespace, handler.name, status.LIMIT_EXCEEDED)
            if ack_id is not None:
                link.reply_error(conn, ack_id, status.LIMIT_EXCEEDED, too_big)
            return
        if handler.takes_payload:
            try:
                payload = handler.decode(conn.codec, frame.data)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
                link.router.metrics.event_rejected(conn.namespace, handler.name, status.INVALID_PAYLOAD)
                if ack_id is not None:
                    link.reply_error(conn, ack_id, status.INVALID_PAYLOAD, str(exc))
                return
            except RecursionError:
                link.router.metrics.event_rejected(conn.namespace, handler.name, status.INVALID_PAYLOAD)
                if ack_id is not None:
                    link.reply_error(conn, ack_id, status.INVALID_PAYLOAD, "payload nested too deeply")
                return
        else:
            payload = None
        if handler.concurrent:
            link.spawn(self._run, conn, handler, payload, ack_id)
        else:
            token = inline_handler.set(link)
            try:
                await self._run(conn, handler, payload, ack_id)
            finally:
                inline_handler.reset(token)

    async def _reauthenticate(self, conn: Connection, frame: Event) -> None:
        """Handle ``$auth``: check a fresh credential for the same user and move the expiry."""
        from .routing import user_key  # routing imports this module

        link = conn.link
        ack_id = frame.id
        limits = link.router.limits
        refused = limits.charge(link, "", None, None)
        code = status.RATE_LIMITED
        if refused is None:
            refused = limits.payload_error(frame.data, binary=conn.codec.binary)
            code = status.LIMIT_EXCEEDED
        if refused is None:
            try:
                payload = conn.codec.payload_decoder(Any)(frame.data)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                refused, code = "undecodable auth payload", status.INVALID_PAYLOAD
        if refused is not None:
            if ack_id is not None:
                link.reply_error(conn, ack_id, code, refused)
            return
        previous = conn.auth
        conn.auth = payload
        try:
            user = await self.authenticate(conn)
            if user_key(user) != user_key(conn.user):
                raise Rejected(status.FORBIDDEN, "a fresh credential must name the same user")
        except Rejected as exc:
            conn.auth = previous
            logger.info(
                "$auth refused with %s (link=%s sid=%s namespace=%s)", exc.code, link.id, conn.sid, conn.namespace,
                extra=log_fields(link, conn, reason=exc.code),
            )
            if ack_id is not None:
                link.reply_error(conn, ack_id, exc.code, exc.message)
            return
        except Exception:
            conn.auth = previous
            logger.exception(
                "$auth failed (link=%s sid=%s namespace=%s)", link.id, conn.sid, conn.namespace,
                extra=log_fields(link, conn, reason=status.INTERNAL_ERROR),
            )
            if ack_id is not None:
                link.reply_error(conn, ack_id, status.INTERNAL_ERROR, "internal error")
            return
        conn.user = user
        link.track_expiry(conn)
        if ack_id is not None:
            raw = link.protocol.ack(conn.namespace, ack_id, None)
            conn.dedup.remember(ack_id, raw)
            conn.outbox.push(conn.codec.message(raw), len(raw))

    async def _run(self, conn: Connection, handler: Handler, payload: Any, ack_id: int | None) -> None:
        link = conn.link
        metrics = link.router.metrics
        started = metrics.handler_started()
        link.busy += 1
        try:
            if handler.takes_payload:
                result = await handler.func(self, conn, payload)
            else:
                result = await handler.func(self, conn)
        except HandlerError as exc:
            link.busy -= 1
            metrics.handler_finished(conn.namespace, handler.name, started, exc.code)
            if ack_id is not None:
                link.reply_error(conn, ack_id, exc.code, exc.message)
            return
        except BackendUnavailable:
            # An outage, not a bug: say so, so that clients can retry later.
            link.busy -= 1
            metrics.handler_finished(conn.namespace, handler.name, started, status.UNAVAILABLE)
            logger.warning("handler %r: backend unavailable (sid=%s)", handler.name, conn.sid)
            if ack_id is not None:
                link.reply_error(conn, ack_id, status.UNAVAILABLE, "backend unavailable; retry later")
            return
        except BaseException as exc:
            link.busy -= 1
            if not isinstance(exc, Exception):
                raise
            metrics.handler_finished(conn.namespace, handler.name, started, status.INTERNAL_ERROR)
            logger.exception(
                "handler %r failed (link=%s sid=%s namespace=%s)", handler.name, link.id, conn.sid, conn.namespace,
                extra=log_fields(link, conn, reason=status.INTERNAL_ERROR),
            )
            if ack_id is not None:
                link.reply_error(conn, ack_id, status.INTERNAL_ERROR, "internal error")
            return
        link.busy -= 1
        metrics.handler_finished(conn.namespace, handler.name, started, None)
        if ack_id is not None:
            try:
                raw = link.protocol.ack(conn.namespace, ack_id, result)
            except (TypeError, msgspec.EncodeError):
                logger.exception(
                    "handler %r returned a value that cannot be encoded (link=%s sid=%s namespace=%s)",
                    handler.name, link.id, conn.sid, conn.namespace,
                    extra=log_fields(link, conn, reason=status.INTERNAL_ERROR),
                )
                link.reply_error(conn, ack_id, status.INTERNAL_ERROR, "internal error")
                return
            conn.dedup.remember(ack_id, raw)
            conn.outbox.push(conn.codec.message(raw), len(raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r}, events={sorted(self.handlers)!r})"
