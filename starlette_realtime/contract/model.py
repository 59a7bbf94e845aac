"""What an app's contract is made of, read once from its endpoint classes.

Both outputs (the AsyncAPI document and the TypeScript types) are built from
one :class:`Contract`, so they cannot disagree: the namespaces, each event with
its payload and reply types, the events each endpoint declares it emits, the
auth payload, and the close and error codes of :mod:`starlette_realtime.status`.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from ..auth import SignedTokenAuth
from ..core import AUTH_EVENT
from ..dispatch import EVENT_NAME, Handler
from ..endpoint import RealtimeEndpoint
from ..presence import PRESENCE_EVENT, PresenceEvent, PresenceMixin
from ..validation import needs_pydantic
from .codes import CODE_SCHEMAS, Code, code_schema, codes

#: Where a schema's ``$ref`` points: both outputs keep the schemas in one table.
REF_PREFIX: Final = "#/components/schemas/"

_EMITS_ATTR: Final = "emits"
_EMITS_MARK: Final = "__realtime_emits__"


class TokenAuth(msgspec.Struct):
    """The CONNECT auth payload of an endpoint checked by ``SignedTokenAuth``."""

    token: str


class Resync(msgspec.Struct):
    """The data of ``$resync``: the room's history is gone; reload the room's state."""

    room: str
    epoch: str


class AckError(msgspec.Struct, array_like=True):
    """The ``error`` element of an ACK, ``[code, message]`` (its ``data`` is then ``null``)."""

    code: str
    message: str


class Connected(msgspec.Struct, array_like=True):
    """The elements of a CONNECTED frame after ``ns``."""

    sid: str
    session: str
    recovered: bool = False
    recovery_failed: bool = False


class ConnectError(msgspec.Struct, array_like=True):
    """The elements of a CONNECT_ERROR frame after ``ns``."""

    code: str
    message: str
    retryable: bool = False


class Event(msgspec.Struct, frozen=True):
    """One event of a namespace, in one direction.

    Attributes:
        name: the event name on the wire.
        payload: the type of its data (``None`` when it carries none).
        reply: the type of its ACK data, for client events (``None`` when the
            handler returns nothing).
        description: the handler's docstring, or ``""``.
        reserved: a library event (``$presence.list``, ``$resync``...).
    """

    name: str
    payload: Any
    reply: Any = None
    description: str = ""
    reserved: bool = False


class Namespace(msgspec.Struct, frozen=True):
    """One namespace of the app: what clients send, what the server sends.

    Attributes:
        path: the namespace path, e.g. ``"/chat"``.
        endpoint: the endpoint class's name.
        description: the endpoint class's docstring, or ``""``.
        client_events: events clients send (``@on_event`` handlers), by name.
        server_events: events the server sends (declared with :func:`emits`), by name.
        auth: the type of the CONNECT auth payload (``None``: no auth payload).
    """

    path: str
    endpoint: str
    description: str
    client_events: tuple[Event, ...]
    server_events: tuple[Event, ...]
    auth: Any


class Contract(msgspec.Struct, frozen=True):
    """Everything both outputs are built from.

    Attributes:
        namespaces: the app's namespaces, in the router's order.
        close_codes: WebSocket close codes (``status.CLOSE_CODES``).
        ack_error_codes: codes of ACK errors and ERROR frames.
        connect_error_codes: codes of CONNECT_ERROR frames.
    """

    namespaces: tuple[Namespace, ...]
    close_codes: tuple[Code, ...]
    ack_error_codes: tuple[Code, ...]
    connect_error_codes: tuple[Code, ...]

    def types(self) -> list[Any]:
        """Every type the contract names, each once, in a stable order."""
        seen: dict[int, Any] = {}
        for t in (AckError, Connected, ConnectError):
            seen.setdefault(id(t), t)
        for ns in self.namespaces:
            if ns.auth is not None:
                seen.setdefault(id(ns.auth), ns.auth)
            for ev in (*ns.client_events, *ns.server_events):
                seen.setdefault(id(ev.payload), ev.payload)
                seen.setdefault(id(ev.reply), ev.reply)
        return list(seen.values())


E = TypeVar("E", bound=type)


def emits(events: Mapping[str, Any] | None = None, /, **more: Any) -> Callable[[E], E]:
    """Declare the events an endpoint class emits to clients, with their data types.

    ``@emits(said=Said, typing=str)``, or ``@emits({"room:update": Room})`` for names
    that are not Python identifiers; ``None`` for an event without data.  A subclass
    adds to its bases' declarations.  The contract (AsyncAPI document, TypeScript
    types) lists them; a class attribute ``emits = {...}`` (a ``ClassVar``) works too.

    Args:
        events: event name -> data type.
        **more: more of the same.

    Raises:
        ValueError: an event name is invalid.
    """
    table = {**(events or {}), **more}
    _check("@emits", table)

    def decorate(cls: E) -> E:
        setattr(cls, _EMITS_MARK, dict(table))
        return cls

    return decorate


def _check(where: str, table: object) -> None:
    if not isinstance(table, Mapping):
        raise TypeError(f"{where} must be a dict of event name -> type, not {type(table).__name__}")
    for name in table:
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            raise ValueError(f"{where}: invalid event name {name!r}")


def declared_emits(endpoint: type[RealtimeEndpoint]) -> dict[str, Any]:
    """The server-to-client events an endpoint class declares, with their data types.

    Args:
        endpoint: a :class:`~starlette_realtime.RealtimeEndpoint` subclass.

    Returns:
        Event name -> data type (``type(None)`` for none), bases first.

    Raises:
        TypeError: an ``emits`` attribute is not a mapping.
        ValueError: an event name is invalid.
    """
    table: dict[str, Any] = {}
    for klass in reversed(endpoint.__mro__):
        for attr in (_EMITS_ATTR, _EMITS_MARK):
            declared = vars(klass).get(attr)
            if declared is None:
                continue
            _check(f"{klass.__name__}.{attr}", declared)
            table.update({name: type(None) if tp is None else tp for name, tp in declared.items()})
    return table


def _doc(obj: object) -> str:
    doc = getattr(obj, "__doc__", None)
    return _clean(doc) if isinstance(doc, str) else ""


def _clean(doc: str) -> str:
    # Sphinx double backticks read as Markdown code in AsyncAPI renderers and TSDoc.
    return re.sub(r"``([^`]+)``", r"`\1`", inspect.cleandoc(doc))


def _reply_type(handler: Handler) -> Any:
    try:
        hints = typing.get_type_hints(handler.func, include_extras=True)
    except Exception as exc:
        raise TypeError(f"cannot resolve the return annotation of {handler.func.__qualname__}: {exc}") from exc
    tp = hints.get("return", Any)
    return type(None) if tp is None else tp


def _auth_type(endpoint: type[RealtimeEndpoint]) -> Any:
    declared = getattr(endpoint, "auth_payload", None)
    if declared is not None:
        return declared
    auth = endpoint.auth
    if auth is None:
        return None
    declared = getattr(auth, "payload_type", None)
    if declared is not None:
        return declared
    if isinstance(auth, SignedTokenAuth):
        return TokenAuth
    # Cookie and scope authenticators (SessionAuth, StarletteAuth) read no payload.
    if getattr(auth, "ambient_credentials", False):
        return None
    return Any


def namespace_of(endpoint: type[RealtimeEndpoint]) -> Namespace:
    """Read one endpoint class's part of the contract.

    Args:
        endpoint: a :class:`~starlette_realtime.RealtimeEndpoint` subclass.

    Returns:
        Its namespace, events and auth payload.

    Raises:
        TypeError: an annotation cannot be resolved, or ``emits`` is malformed.
    """
    client = [
        Event(
            name,
            handler.payload_type if handler.takes_payload else type(None),
            _reply_type(handler),
            _doc(handler.func),
            name.startswith("$"),
        )
        for name, handler in endpoint.handlers.items()
    ]
    auth = _auth_type(endpoint)
    if auth is not None:
        client.append(
            Event(AUTH_EVENT, auth, type(None), "A fresh credential for an open connection (same user).", True)
        )
    server = [Event(name, tp) for name, tp in declared_emits(endpoint).items()]
    server.append(Event("$resync", Resync, description=_doc(Resync), reserved=True))
    if issubclass(endpoint, PresenceMixin):
        server.append(Event(PRESENCE_EVENT, PresenceEvent, description=_doc(PresenceEvent), reserved=True))
    return Namespace(endpoint.namespace, endpoint.__name__, _doc(endpoint) if endpoint.__doc__ else "",
                     tuple(client), tuple(server), auth)


def endpoint_classes(source: Any) -> list[type[RealtimeEndpoint]]:
    """The endpoint classes of a router, of one endpoint class, or of a list of endpoint classes or instances."""
    if isinstance(source, RealtimeEndpoint) or (isinstance(source, type) and issubclass(source, RealtimeEndpoint)):
        source = [source]
    endpoints = getattr(source, "endpoints", source)
    items: Iterable[Any] = endpoints.values() if isinstance(endpoints, Mapping) else endpoints
    classes: list[type[RealtimeEndpoint]] = []
    for item in items:
        cls = item if isinstance(item, type) else type(item)
        if not issubclass(cls, RealtimeEndpoint):
            raise TypeError(f"not a RealtimeEndpoint: {item!r}")
        classes.append(cls)
    return classes


def build_contract(source: Any) -> Contract:
    """Read the contract of an app.

    Args:
        source: a :class:`~starlette_realtime.RealtimeRouter`, an endpoint class, or
            endpoint classes (or instances).

    Returns:
        The contract both outputs are built from.

    Raises:
        TypeError: an endpoint's annotations cannot be resolved, or ``emits`` is malformed.
        ValueError: an ``emits`` event name is invalid.
    """
    close, ack, connect = codes()
    return Contract(tuple(namespace_of(cls) for cls in endpoint_classes(source)), close, ack, connect)


def schemas(contract: Contract) -> tuple[dict[int, dict[str, Any]], dict[str, dict[str, Any]]]:
    """JSON Schemas of every type of the contract, from msgspec.

    Returns:
        ``(by_type, components)``: the schema of each type by ``id(type)`` (small
        ones inline, named ones a ``$ref``), and the named schemas by name.  Both are
        in the AsyncAPI dialect (JSON Schema draft 07): tuples use ``items: [...]``.
    """
    types = contract.types()
    plain = [t for t in types if not needs_pydantic(t)]
    try:
        top, raw = msgspec.json.schema_components(plain, ref_template=REF_PREFIX + "{name}")
    except TypeError as exc:
        raise TypeError(f"a type of the contract has no JSON Schema: {exc}") from exc
    by_type = {id(t): draft07(s) for t, s in zip(plain, top, strict=True)}
    components = {name: draft07(s) for name, s in raw.items()}
    for t in types:
        if id(t) not in by_type:
            by_type[id(t)] = _pydantic_schema(t, components)
    for name in CODE_SCHEMAS:
        if name in components:
            raise ValueError(f"a type of the contract is named {name!r}, a name the contract reserves")
    components["CloseCode"] = code_schema(
        contract.close_codes, "CloseCode",
        "WebSocket close codes. `x-retryable`: whether a client reconnects; unlisted codes 4000-4499 mean "
        "reconnect, 4500-4999 stop.", open_ended=False,
    )
    components["AckErrorCode"] = code_schema(
        contract.ack_error_codes, "AckErrorCode", "Codes of ACK errors and ERROR frames.", open_ended=True
    )
    components["ConnectErrorCode"] = code_schema(
        contract.connect_error_codes, "ConnectErrorCode",
        "Codes of CONNECT_ERROR frames. `x-retryable`: the server marks the error retryable.", open_ended=True,
    )
    # The first element of these frames is a code: point it at the code table.
    for name, ref in (("AckError", "AckErrorCode"), ("ConnectError", "ConnectErrorCode")):
        items = components[name]["items"]
        items[0] = {k: v for k, v in items[0].items() if k != "type"} | {"$ref": REF_PREFIX + ref}
    return by_type, components


def _pydantic_schema(tp: Any, components: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The schema of a Pydantic type (what it validates); its models join ``components``."""
    from pydantic import TypeAdapter

    try:
        schema = TypeAdapter(tp).json_schema(ref_template=REF_PREFIX + "{model}")
    except Exception as exc:
        raise TypeError(f"a type of the contract has no JSON Schema: {tp!r}: {exc}") from exc
    defs: dict[str, Any] = schema.pop("$defs", {})
    if isinstance(tp, type) and "title" in schema and schema.get("type") == "object":
        # A model is named, like a Struct: a component and a reference to it.
        defs[schema["title"]] = schema
        schema = {"$ref": REF_PREFIX + schema["title"]}
    for name, sub in defs.items():
        sub = draft07(sub)
        if components.setdefault(name, sub) != sub:
            raise ValueError(f"two different types of the contract are named {name!r}")
    result: dict[str, Any] = draft07(schema)
    return result


def draft07(schema: Any) -> Any:
    """Rewrite msgspec's JSON Schema (2020-12) into the draft 07 that AsyncAPI schemas extend.

    ``prefixItems`` becomes ``items: [...]`` (with ``additionalItems``), and
    OpenAPI-style ``discriminator`` objects are dropped (AsyncAPI's is a plain
    property name, and the ``anyOf`` already says everything).
    """
    if isinstance(schema, list):
        return [draft07(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "discriminator" and isinstance(value, dict):
            continue
        if key == "prefixItems":
            out["items"] = draft07(value)
            if schema.get("items") is False:
                out["additionalItems"] = False
            continue
        if key == "items" and "prefixItems" in schema:
            continue
        out[key] = draft07(value)
    return out
