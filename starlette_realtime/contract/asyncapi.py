"""The AsyncAPI 3.0 document of an app.

The document describes the server: a channel per namespace, a ``receive``
operation per client event (``@on_event`` handler) whose reply is its ACK (the
handler's return type, or an error), a ``send`` operation per event the
endpoint declares it emits, a ``connect`` operation whose message is the auth
payload, and the close and error codes as schemas.  A message's payload is the
frame's ``data`` element; the other elements of the frame (``ns``, ``event``,
``id``...) are its headers, and ``id`` correlates an event with its ACK.
"""

from __future__ import annotations

import re
from typing import Any, Final

from .. import frames
from .model import AckError, Connected, ConnectError, Contract, Event, Namespace, schemas

ASYNCAPI_VERSION: Final = "3.0.0"
_KEY: Final = re.compile(r"[^A-Za-z0-9_.\-]")
_MAX_ID: Final = 2**31 - 1


def key(name: str) -> str:
    """A name made safe as an AsyncAPI map key and a JSON pointer token."""
    return _KEY.sub("_", name) or "_"


def channel_key(path: str) -> str:
    """The channel id of a namespace path: ``/chat`` -> ``chat``, ``/`` -> ``root``."""
    return key(path.strip("/").replace("/", ".")) if path.strip("/") else "root"


def _headers(ns: Namespace, event: str | None, *, ack: bool, server: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"ns": {"const": ns.path, "description": "the namespace"}}
    required = ["ns"]
    if event is not None:
        props["event"] = {"const": event, "description": "the event name"}
        required.append("event")
    id_schema: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": _MAX_ID}
    if ack:
        props["id"] = {**id_schema, "description": "the id of the event this ACK answers"}
        required.append("id")
    elif event is not None:
        props["id"] = {**id_schema, "description": "set when the sender asks for an ACK"}
    if server and event is not None:
        props["room"] = {"type": ["string", "null"], "description": "the stream of a broadcast (`#all`, `#sid:...`)"}
        props["epoch"] = {"type": ["string", "null"], "description": "the stream's history (recovery)"}
        props["offset"] = {"type": ["integer", "null"], "description": "the message's position in the stream"}
    return {"type": "object", "properties": props, "required": required}


def _message(
    name: str, title: str, summary: str, payload: dict[str, Any], headers: dict[str, Any], *, correlated: bool
) -> dict[str, Any]:
    msg: dict[str, Any] = {"name": name, "title": title}
    if summary:
        msg["summary"] = summary.split("\n\n", 1)[0]
        if "\n\n" in summary:
            msg["description"] = summary
    msg["headers"] = headers
    msg["payload"] = payload
    if correlated:
        msg["correlationId"] = {"$ref": "#/components/correlationIds/ackId"}
    return msg


def _channel(
    ns: Namespace, by_type: dict[int, dict[str, Any]], operations: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    ch = channel_key(ns.path)
    ch_ref = {"$ref": f"#/channels/{ch}"}
    messages: dict[str, Any] = {}

    def msg_ref(mkey: str) -> dict[str, str]:
        return {"$ref": f"#/channels/{ch}/messages/{mkey}"}

    def op_key(kind: str, name: str) -> str:
        base = f"{ch}.{kind}.{key(name)}"
        candidate, n = base, 2
        while candidate in operations:
            candidate, n = f"{base}_{n}", n + 1
        return candidate

    def unique(mkey: str) -> str:
        candidate, n = mkey, 2
        while candidate in messages:
            candidate, n = f"{mkey}_{n}", n + 1
        return candidate

    # CONNECT: the auth payload, answered by CONNECTED or CONNECT_ERROR.
    messages["connect"] = _message(
        "connect", "CONNECT",
        "Opens the namespace; the payload is the CONNECT frame's `auth` element"
        + (" (`null`: this namespace reads none)." if ns.auth is None else "."),
        by_type[id(ns.auth)] if ns.auth is not None else {"type": "null"},
        _headers(ns, None, ack=False, server=False), correlated=False,
    )
    messages["connected"] = _message(
        "connected", "CONNECTED", Connected.__doc__ or "", by_type[id(Connected)],
        _headers(ns, None, ack=False, server=True), correlated=False,
    )
    messages["connectError"] = _message(
        "connect_error", "CONNECT_ERROR", ConnectError.__doc__ or "", by_type[id(ConnectError)],
        _headers(ns, None, ack=False, server=True), correlated=False,
    )
    messages["ackError"] = _message(
        "ack_error", "ACK (error)",
        "An ACK whose `error` element is set; its `data` is `null`. The payload is the `error` element.",
        by_type[id(AckError)], _headers(ns, None, ack=True, server=True), correlated=True,
    )
    operations[op_key("receive", "connect")] = {
        "action": "receive",
        "channel": ch_ref,
        "title": f"Open {ns.path}",
        "summary": "A client opens the namespace with its auth payload.",
        "messages": [msg_ref("connect")],
        "reply": {"channel": ch_ref, "messages": [msg_ref("connected"), msg_ref("connectError")]},
    }

    def add_client(ev: Event) -> None:
        mkey = unique(f"c2s.{key(ev.name)}")
        akey = unique(f"{mkey}.ack")
        messages[mkey] = _message(
            ev.name, ev.name, ev.description, by_type[id(ev.payload)],
            _headers(ns, ev.name, ack=False, server=False), correlated=True,
        )
        messages[akey] = _message(
            f"{ev.name}.ack", f"ACK of {ev.name}", "The handler's result, sent when the event carries an `id`.",
            by_type[id(ev.reply)], _headers(ns, None, ack=True, server=True), correlated=True,
        )
        op: dict[str, Any] = {"action": "receive", "channel": ch_ref, "title": ev.name}
        if ev.description:
            op["summary"] = ev.description.split("\n\n", 1)[0]
        if ev.reserved:
            op["tags"] = [{"name": "reserved"}]
        op["messages"] = [msg_ref(mkey)]
        op["reply"] = {"channel": ch_ref, "messages": [msg_ref(akey), msg_ref("ackError")]}
        operations[op_key("receive", ev.name)] = op

    def add_server(ev: Event) -> None:
        mkey = unique(f"s2c.{key(ev.name)}")
        messages[mkey] = _message(
            ev.name, ev.name, ev.description, by_type[id(ev.payload)],
            _headers(ns, ev.name, ack=False, server=True), correlated=False,
        )
        op: dict[str, Any] = {"action": "send", "channel": ch_ref, "title": ev.name}
        if ev.description:
            op["summary"] = ev.description.split("\n\n", 1)[0]
        if ev.reserved:
            op["tags"] = [{"name": "reserved"}]
        op["messages"] = [msg_ref(mkey)]
        operations[op_key("send", ev.name)] = op

    for ev in ns.client_events:
        add_client(ev)
    for ev in ns.server_events:
        add_server(ev)
    channel: dict[str, Any] = {"address": ns.path, "title": ns.endpoint}
    if ns.description:
        channel["description"] = ns.description
    channel["messages"] = messages
    return ch, channel


def asyncapi_document(
    contract: Contract,
    *,
    title: str = "starlette-realtime app",
    version: str = "0.0.0",
    description: str | None = None,
    server: str | None = None,
) -> dict[str, Any]:
    """Build the AsyncAPI 3.0 document of a contract.

    Args:
        contract: from :func:`~starlette_realtime.contract.build_contract`.
        title: ``info.title``.
        version: ``info.version``, the app's version.
        description: ``info.description``; a summary of the wire protocol by default.
        server: the WebSocket URL where the router is mounted, e.g.
            ``wss://chat.example/realtime/``; without it the document has no ``servers``.

    Returns:
        The document, ready for ``json.dumps``.
    """
    by_type, components = schemas(contract)
    operations: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for ns in contract.namespaces:
        ch, channel = _channel(ns, by_type, operations)
        channels[ch] = channel
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": description if description is not None else _DESCRIPTION,
            "tags": [{"name": "reserved", "description": "events of the library itself (names start with `$`)"}],
        },
    }
    if server is not None:
        doc["servers"] = {"realtime": server_entry(server)}
    doc["defaultContentType"] = "application/json"
    doc["channels"] = channels
    doc["operations"] = operations
    doc["components"] = {
        "schemas": components,
        "correlationIds": {
            "ackId": {"description": "An ACK carries the `id` of the event it answers.",
                      "location": "$message.header#/id"},
        },
    }
    return doc


def server_entry(url: str) -> dict[str, Any]:
    """The ``servers`` entry of the router at a WebSocket URL (``wss://host/mount/``).

    Raises:
        ValueError: not a ``ws://`` or ``wss://`` URL with a host.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"server must be a ws:// or wss:// URL, not {url!r}")
    server: dict[str, Any] = {"host": parts.netloc, "protocol": parts.scheme}
    path = parts.path or "/"
    server["pathname"] = path if path.endswith("/") else path + "/"
    server["description"] = "Offer the subprotocol `rt.v1.json` (text frames) or `rt.v1.msgpack` (binary frames)."
    return server


_DESCRIPTION: Final = (
    f"A starlette-realtime server, wire protocol version {frames.PROTOCOL_VERSION}. One WebSocket carries every "
    "namespace (a channel here); offer the subprotocol `rt.v1.json` (JSON text frames) or `rt.v1.msgpack`. "
    "A message's payload is the frame's `data` element; its headers are the frame's other elements. "
    "A client event with an `id` is answered by exactly one ACK with that `id`: its reply, or an error. "
    "Close codes and error codes are the schemas `CloseCode`, `AckErrorCode` and `ConnectErrorCode`."
)
