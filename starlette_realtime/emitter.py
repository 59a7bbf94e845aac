"""Emitting to rooms: ``to(room).emit(event, data)`` from a connection, an endpoint, the router, or a script.

Every emit goes through the backend, so the same code reaches one process or a
cluster.  The payload is encoded once per emit, whatever the number of rooms
and receivers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from .backends import Backend, backend_from_url
from .backends.base import Publication
from .rooms import ALL_ROOM, room_error, sid_room
from .validation import enc_hook

#: Event names the clients use for their own connection events; the server never sends them.
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "recovery_failed", "error"})


def check_event(event: str) -> None:
    """Refuse event names that clients keep for their own connection events.

    Raises:
        ValueError: the name is reserved.
    """
    if event in RESERVED_EVENTS:
        raise ValueError(f"{event!r} is reserved for the clients' connection events; choose another name")


class Publisher:
    """Turns emits into publications on a backend.

    Args:
        backend: the backend to publish through.
        check: called with each emit's namespace and event before it is published (the
            router's development-mode check of declared emits); ``None`` checks nothing.
    """

    __slots__ = ("_check", "_encoder", "backend")

    def __init__(self, backend: Backend, check: Callable[[str, str], None] | None = None) -> None:
        self.backend = backend
        self._encoder = msgspec.json.Encoder(enc_hook=enc_hook)
        self._check = check

    async def publish(
        self,
        ns: str,
        rooms: tuple[str, ...],
        event: str,
        data: Any,
        *,
        exclude: str | None = None,
        volatile: bool = False,
    ) -> None:
        """Publish one event to each of ``rooms`` (the whole namespace when empty)."""
        if self._check is not None:
            self._check(ns, event)
        payload = self._encoder.encode(data)
        ts = time.time()
        if not rooms:
            await self.backend.publish(Publication(ns, ALL_ROOM, event, payload, exclude, ts=ts, volatile=volatile))
            return
        if len(rooms) == 1:
            await self.backend.publish(Publication(ns, rooms[0], event, payload, exclude, ts=ts, volatile=volatile))
            return
        for room in rooms:
            await self.backend.publish(
                Publication(ns, room, event, payload, exclude, rooms, ts=ts, volatile=volatile)
            )

    def __repr__(self) -> str:
        return f"Publisher(backend={self.backend!r})"


class BroadcastOperator:
    """A target for an emit: some rooms (or the whole namespace), minus maybe one sender.

    Built by ``conn.to(...)``, ``endpoint.to(...)``, ``router.to(...)`` and
    :class:`Emitter`; chain ``.to(...)`` to add rooms.
    """

    __slots__ = ("_exclude", "_ns", "_publisher", "_rooms")

    def __init__(
        self,
        publisher: Publisher,
        *,
        namespace: str | None = None,
        rooms: tuple[str, ...] = (),
        exclude: str | None = None,
    ) -> None:
        self._publisher = publisher
        self._ns = namespace
        self._rooms = rooms
        self._exclude = exclude

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Add rooms to the target.

        Raises:
            ValueError: a room name is invalid.
        """
        added: list[str] = []
        for room in rooms:
            names = [room] if isinstance(room, str) else list(room)
            for name in names:
                err = room_error(name)
                if err is not None:
                    raise ValueError(err)
                if name not in self._rooms and name not in added:
                    added.append(name)
        return BroadcastOperator(
            self._publisher, namespace=self._ns, rooms=self._rooms + tuple(added), exclude=self._exclude
        )

    def to_sid(self, sid: str) -> BroadcastOperator:
        """Target one connection by its sid (in this namespace)."""
        return BroadcastOperator(
            self._publisher, namespace=self._ns, rooms=self._rooms + (sid_room(sid),), exclude=self._exclude
        )

    async def emit(
        self, event: str, data: Any = None, *, namespace: str | None = None, volatile: bool = False
    ) -> None:
        """Emit an event to the target.

        Args:
            event: the event name.
            data: the payload: anything msgspec encodes (Structs, dataclasses, builtins), or a
                Pydantic model (dumped in JSON mode, by alias).
            namespace: required when the operator was not built from an endpoint or connection.
            volatile: keep no history and drop it for receivers that are behind.

        Raises:
            TypeError: no namespace was given, or the payload cannot be encoded.
            BackendUnavailable: the backend is down (the emit fails fast).
        """
        check_event(event)
        ns = namespace or self._ns
        if ns is None:
            raise TypeError("emit() needs namespace=... outside an endpoint or connection")
        await self._publisher.publish(ns, self._rooms, event, data, exclude=self._exclude, volatile=volatile)

    def __repr__(self) -> str:
        return f"BroadcastOperator(namespace={self._ns!r}, rooms={self._rooms!r}, exclude={self._exclude!r})"


class Emitter:
    """Emit from a process that runs no server (a worker, a script).

    ``await Emitter("redis://localhost:6379/0").to("room").emit("event", data, namespace="/chat")``

    Args:
        backend: a backend URL or object; it must be the one the servers use.
    """

    def __init__(self, backend: str | Backend) -> None:
        self.backend = backend_from_url(backend) if isinstance(backend, str) else backend
        self._publisher = Publisher(self.backend)
        self._started = False

    async def _ensure(self) -> None:
        if not self._started:
            await self.backend.start(lambda pub: None)
            self._started = True

    def to(self, *rooms: str | Iterable[str]) -> _LazyOperator:
        """Target rooms (see :meth:`BroadcastOperator.to`)."""
        return _LazyOperator(self, BroadcastOperator(self._publisher).to(*rooms))

    def to_sid(self, sid: str) -> _LazyOperator:
        return _LazyOperator(self, BroadcastOperator(self._publisher).to_sid(sid))

    async def emit(self, event: str, data: Any = None, *, namespace: str, volatile: bool = False) -> None:
        """Emit to every connection of a namespace."""
        await self._ensure()
        await BroadcastOperator(self._publisher).emit(event, data, namespace=namespace, volatile=volatile)

    async def aclose(self) -> None:
        """Release the backend's connections."""
        if self._started:
            await self.backend.stop()
            self._started = False

    async def __aenter__(self) -> Emitter:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Emitter(backend={self.backend!r})"


class _LazyOperator:
    __slots__ = ("_emitter", "_op")

    def __init__(self, emitter: Emitter, op: BroadcastOperator) -> None:
        self._emitter = emitter
        self._op = op

    def to(self, *rooms: str | Iterable[str]) -> _LazyOperator:
        return _LazyOperator(self._emitter, self._op.to(*rooms))

    async def emit(self, event: str, data: Any = None, *, namespace: str, volatile: bool = False) -> None:
        await self._emitter._ensure()
        await self._op.emit(event, data, namespace=namespace, volatile=volatile)
