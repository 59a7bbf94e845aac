"""The app's contract, exported: an AsyncAPI 3.0 document and TypeScript types.

Both are built from the endpoints' typed handlers, the events each endpoint
declares it emits (``@emits(said=Said)``), its auth payload, and the close
and error codes of :mod:`starlette_realtime.status`::

    from starlette_realtime.contract import asyncapi_json, typescript_types_of

    open("asyncapi.json", "wb").write(asyncapi_json(realtime))

or ``python -m starlette_realtime.contract app:realtime --out asyncapi.json --types types.d.ts``,
or ``RealtimeRouter(..., contract=True)`` to serve them next to ``client.js``.
"""

from __future__ import annotations

import json
from typing import Any

from .asyncapi import ASYNCAPI_VERSION, asyncapi_document
from .model import Contract, Event, Namespace, build_contract, declared_emits, emits
from .typescript import typescript_types


def asyncapi_json(source: Any, **options: Any) -> bytes:
    """The AsyncAPI document of an app, as indented JSON.

    Args:
        source: a :class:`~starlette_realtime.RealtimeRouter`, or endpoint classes.
        **options: keyword arguments of :func:`asyncapi_document` (``title``,
            ``version``, ``description``, ``server``).

    Returns:
        UTF-8 JSON, ending with a newline.

    Raises:
        TypeError: a handler's or an event's type has no JSON Schema.
    """
    doc = asyncapi_document(build_contract(source), **options)
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def typescript_types_of(source: Any, **options: Any) -> str:
    """The TypeScript declarations of an app.

    Args:
        source: a :class:`~starlette_realtime.RealtimeRouter`, or endpoint classes.
        **options: keyword arguments of :func:`typescript_types` (``client_module``, ``header``).

    Returns:
        The text of a ``.d.ts`` module.

    Raises:
        TypeError: a handler's or an event's type has no JSON Schema.
    """
    return typescript_types(build_contract(source), **options)


__all__ = [
    "ASYNCAPI_VERSION",
    "Contract",
    "Event",
    "Namespace",
    "asyncapi_document",
    "asyncapi_json",
    "build_contract",
    "declared_emits",
    "emits",
    "typescript_types",
    "typescript_types_of",
]
