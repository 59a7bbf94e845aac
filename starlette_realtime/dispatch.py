"""``@on_event``: typed event handlers, collected per endpoint class.

The payload parameter's annotation drives validation: msgspec decodes the raw
payload straight into it (Structs, dataclasses, TypedDicts, builtins, unions;
``None`` for no payload) with a decoder built once per handler and encoding.
A Pydantic annotation (a model, or any type built with Pydantic constraints) is
validated by one ``TypeAdapter`` per handler instead (:mod:`.validation`).

Unrelated to Starlette's old ``Router.on_event`` (removed in Starlette 1.0),
which registered startup and shutdown hooks.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from .codec import Codec
from .validation import PydanticPayload, needs_pydantic

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

EVENT_NAME: Final = re.compile(r"^[A-Za-z0-9_.:\-/]{1,64}$")
_MARK: Final = "__realtime_event__"


class EventOptions:
    """What ``@on_event`` recorded on a function."""

    __slots__ = ("burst", "concurrent", "name", "rate")

    def __init__(self, name: str, concurrent: bool, rate: float | None, burst: int | None) -> None:
        self.name = name
        self.concurrent = concurrent
        self.rate = rate
        self.burst = burst


def on_event(
    name: str, *, concurrent: bool = False, rate: float | None = None, burst: int | None = None
) -> Callable[[F], F]:
    """Mark an endpoint method as the handler of an event.

    The handler is ``async def handler(self, conn, payload: T) -> R`` (or without
    ``payload``); ``T`` validates the payload (a msgspec type, or a Pydantic model or
    constrained type) and the return value ``R`` is the acknowledgement.  A handler
    with several payload parameters (``self, conn, a: A, b: B``) takes an array
    payload of that many elements, decoded as ``tuple[A, B]`` and spread into them:
    that is how a Socket.IO event's several arguments reach typed parameters.

    Args:
        name: the event name (1-64 characters of ``A-Z a-z 0-9 _ . : - /``).
        concurrent: run the handler in its own task instead of in order with the
            connection's other events; needed for a handler that awaits
            ``conn.call()`` on its own connection.
        rate: events per second allowed for this event per connection (overrides
            the endpoint's rate limit).
        burst: the bucket size for ``rate``.

    Raises:
        ValueError: the name is invalid or reserved.
    """
    if not EVENT_NAME.match(name):
        raise ValueError(f"invalid event name {name!r}")

    def decorate(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@on_event({name!r}) handler {fn.__qualname__} must be an async function")
        setattr(fn, _MARK, EventOptions(name, concurrent, rate, burst))
        return typing.cast(F, fn)

    return decorate


_NO_PAYLOAD: Final = object()


class Handler:
    """One event handler with its payload type and cached decoders."""

    __slots__ = (
        "_decoders", "_pydantic", "burst", "concurrent", "func", "name", "payload_type", "rate", "takes_payload"
    )

    def __init__(self, func: Callable[..., Awaitable[Any]], options: EventOptions, owner: type) -> None:
        self.name = options.name
        self.func = func
        self.concurrent = options.concurrent
        self.rate = options.rate
        self.burst = options.burst
        params = list(inspect.signature(func).parameters.values())
        # (self, conn) or (self, conn, payload)
        if len(params) < 2:
            raise TypeError(f"handler {func.__qualname__} must take (self, conn[, payload])")
        self.takes_payload = len(params) >= 3
        self.payload_type: Any = Any
        if self.takes_payload:
            try:
                hints = typing.get_type_hints(func, include_extras=True)
            except Exception as exc:
                raise TypeError(f"cannot resolve the annotations of {func.__qualname__}: {exc}") from exc
            kinds = [hints.get(p.name, Any) for p in params[2:]]
            kinds = [type(None) if tp is None else tp for tp in kinds]
            self.payload_type = kinds[0]
            if len(kinds) > 1:
                # Several payload parameters (a Socket.IO event's several arguments): the payload
                # is an array of that many elements, decoded as a tuple and spread into them.
                self.payload_type = tuple.__class_getitem__(tuple(kinds))
                self.func = _spread(func)
        # Built here, once per handler, so that a type Pydantic cannot handle fails at class definition.
        self._pydantic = PydanticPayload(self.payload_type) if needs_pydantic(self.payload_type) else None
        self._decoders: dict[Codec, Callable[[bytes], Any]] = {}

    def decode(self, codec: Codec, raw: Any) -> Any:
        """Decode a raw payload into the handler's payload type.

        Raises:
            msgspec.ValidationError, msgspec.DecodeError: the payload does not fit.
            RecursionError: the payload is nested too deeply.
        """
        dec = self._decoders.get(codec)
        if dec is None:
            if self._pydantic is not None:
                dec = self._decoders[codec] = self._pydantic.decoder(codec)
            else:
                dec = self._decoders[codec] = codec.payload_decoder(self.payload_type)
        return dec(raw)

    def __repr__(self) -> str:
        return f"Handler({self.name!r}, payload={self.payload_type!r})"


def _spread(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def spread(endpoint: Any, conn: Any, payload: tuple[Any, ...]) -> Any:
        return await func(endpoint, conn, *payload)

    spread.__qualname__ = func.__qualname__
    spread.__name__ = func.__name__
    return spread


_FILTER_MARK: Final = "__realtime_outgoing__"
OUTGOING_NAME: Final = re.compile(r"^\$?[A-Za-z0-9_.:\-/]{1,64}$")
G = TypeVar("G", bound=Callable[..., Any])


def outgoing(event: str) -> Callable[[G], G]:
    """Mark an endpoint method as the outgoing filter of an event (like Phoenix's ``intercept``).

    The filter is ``def filt(self, conn, data) -> data | None``: for each connection of
    this node about to receive ``event`` (live or replayed by recovery), it gets the
    receiver and the decoded payload, and returns the payload to send (the same, or a
    redacted copy: do not mutate ``data``, it is shared) or ``None`` to send nothing.
    It is a plain function, run inside the fan-out loop, so it must not block.  Only
    events that have a filter pay for it: their payload is decoded once per publication
    and encoded once per receiver.

    Args:
        event: the event name (a reserved one such as ``$presence`` may be filtered too).

    Raises:
        ValueError: the name is invalid.
        TypeError: the filter is an ``async`` function.
    """
    if not OUTGOING_NAME.match(event):
        raise ValueError(f"invalid event name {event!r}")

    def decorate(fn: G) -> G:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"@outgoing({event!r}) filter {fn.__qualname__} must be a plain function, not async")
        setattr(fn, _FILTER_MARK, event)
        return fn

    return decorate


def collect_filters(cls: type) -> dict[str, Callable[..., Any]]:
    """Build the outgoing-filter table of an endpoint class (its bases' filters included)."""
    table: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            event = getattr(attr, _FILTER_MARK, None)
            if isinstance(event, str):
                table[event] = attr
    return table


def collect_handlers(cls: type) -> dict[str, Handler]:
    """Build the handler table of an endpoint class (its bases' handlers included)."""
    table: dict[str, Handler] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            options = getattr(attr, _MARK, None)
            if isinstance(options, EventOptions):
                table[options.name] = Handler(attr, options, cls)
    return table
