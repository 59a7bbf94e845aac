"""The client's event handlers: several per event, a catch-all, and the event's metadata when asked for.

A handler is a sync or async callable. It gets the payload, and also an :class:`EventMeta` when its
signature has a second positional parameter without a default, or named ``meta``
(``def on_said(msg, meta)``). A catch-all handler,
registered for the event ``"*"``, gets the event's name first (``def anything(event, data)`` or
``def anything(event, data, meta)``) and runs for the server's events that have no handler of their
own, as python-socketio's ``@sio.on("*")`` does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[..., Any]

#: The event name of catch-all handlers.
CATCH_ALL = "*"

#: Events the client reports itself (not sent by the server); catch-all handlers do not get them.
CLIENT_EVENTS = frozenset({"connect", "disconnect", "connect_error", "recovery_failed", "error"})


@dataclass(frozen=True, slots=True)
class EventMeta:
    """Where an event comes from, for handlers that ask for it.

    Attributes:
        namespace: the namespace the event arrived on.
        event: the event's name.
        room: the room of a broadcast (``#all`` for the whole namespace, ``#sid:<sid>`` for one
            connection), or ``None`` for an event that was not broadcast (a server call, the
            client's own events).
        epoch: the room stream's epoch, or ``None``.
        offset: the message's offset in the room's stream, or ``None``.
    """

    namespace: str
    event: str
    room: str | None = None
    epoch: str | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class _Registered:
    func: Handler
    takes_meta: bool

    def args(self, event: str, data: Any, meta: EventMeta, catch_all: bool) -> tuple[Any, ...]:
        head = (event, data) if catch_all else (data,)
        return (*head, meta) if self.takes_meta else head


def _takes_meta(func: Handler, positional: int) -> bool:
    """Whether ``func`` asks for the metadata after the ``positional`` arguments it always gets.

    It does with one more positional parameter that has no default, or that is named ``meta``.
    A defaulted one is left alone: ``lambda data, event=event: ...`` binds a loop variable.
    """
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins such as print have no signature: give them the payload only
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    extra = [p for p in params if p.kind in kinds][positional:]
    return bool(extra) and (extra[0].default is inspect.Parameter.empty or extra[0].name == "meta")


class Handlers:
    """The handlers of one client, by namespace and event, in the order they were added."""

    def __init__(self) -> None:
        self._by_event: dict[tuple[str, str], list[_Registered]] = {}
        #: Tasks of async handlers still running (closed with the client).
        self.tasks: set[asyncio.Task[Any]] = set()

    def add(self, namespace: str, event: str, func: Handler) -> None:
        """Add ``func`` after the handlers ``event`` has already."""
        catch_all = event == CATCH_ALL
        entry = _Registered(func, _takes_meta(func, 2 if catch_all else 1))
        self._by_event.setdefault((namespace, event), []).append(entry)

    def remove(self, namespace: str, event: str, func: Handler | None = None) -> None:
        """Remove ``func`` (every handler of the event when ``None``)."""
        if func is None:
            self._by_event.pop((namespace, event), None)
            return
        entries = self._by_event.get((namespace, event), [])
        self._by_event[(namespace, event)] = [e for e in entries if e.func is not func]

    def _targets(self, namespace: str, event: str) -> tuple[list[_Registered], bool]:
        own = self._by_event.get((namespace, event))
        if own or event in CLIENT_EVENTS:
            return list(own or ()), False
        return list(self._by_event.get((namespace, CATCH_ALL), ())), True

    def notify(self, meta: EventMeta, data: Any) -> None:
        """Run every handler of the event (or the catch-alls when it has none); errors are logged."""
        targets, catch_all = self._targets(meta.namespace, meta.event)
        for entry in targets:
            self._run(entry, entry.args(meta.event, data, meta, catch_all))

    async def answer(self, meta: EventMeta, data: Any) -> tuple[bool, Any]:
        """Answer a call from the server: the first handler's result is the ack, the others just run.

        Returns:
            ``(False, None)`` when nobody handles the event, else ``(True, result)``.

        Raises:
            Exception: whatever the first handler raised.
        """
        targets, catch_all = self._targets(meta.namespace, meta.event)
        if not targets:
            return False, None
        first, *rest = targets
        for entry in rest:
            self._run(entry, entry.args(meta.event, data, meta, catch_all))
        result = first.func(*first.args(meta.event, data, meta, catch_all))
        if inspect.isawaitable(result):
            result = await result
        return True, result

    def _run(self, entry: _Registered, args: tuple[Any, ...]) -> None:
        try:
            result = entry.func(*args)
        except Exception:
            logger.exception("event handler %r failed", entry.func)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("event handler failed", exc_info=task.exception())

    def cancel(self) -> None:
        """Cancel the async handlers still running."""
        for task in list(self.tasks):
            task.cancel()

    def __repr__(self) -> str:
        return f"Handlers({sorted(self._by_event)!r})"
