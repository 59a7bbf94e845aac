"""``RealtimeEndpoint``: one namespace, its hooks and its typed event handlers.

Subclass it once per namespace.  The router creates one instance per class;
hooks and handlers receive the :class:`~starlette_realtime.connection.Connection`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from .connection import Connection
from .dispatch import Handler, collect_filters, collect_handlers
from .emitter import BroadcastOperator, Publisher


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
        self._router: Any = None
        self._publisher: Publisher | None = None

    def attach(self, router: Any, publisher: Publisher) -> None:
        """Called by the :class:`~starlette_realtime.RealtimeRouter` that serves this endpoint."""
        self._router = router
        self._publisher = publisher

    @property
    def router(self) -> Any:
        """The :class:`~starlette_realtime.RealtimeRouter` serving this endpoint.

        Raises:
            RuntimeError: the endpoint is not in a router.
        """
        if self._router is None:
            raise RuntimeError(f"{type(self).__name__} is not mounted in a RealtimeRouter")
        return self._router

    @property
    def publisher(self) -> Publisher:
        """What this endpoint's emits go through."""
        if self._publisher is None:
            raise RuntimeError(f"{type(self).__name__} is not mounted in a RealtimeRouter")
        return self._publisher

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
        return BroadcastOperator(self.publisher, namespace=self.namespace).to(*rooms)

    async def emit(self, event: str, data: Any = None, *, volatile: bool = False) -> None:
        """Emit to every connection of this namespace, on every node."""
        await BroadcastOperator(self.publisher, namespace=self.namespace).emit(
            event, data, volatile=volatile
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r}, events={sorted(self.handlers)!r})"
