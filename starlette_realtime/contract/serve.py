"""The contract served by the router: ``<mount>/asyncapi.json`` and ``<mount>/types.d.ts``.

``RealtimeRouter(..., contract=True)`` turns it on.  Both files are built once, on
the first request (every endpoint is known by then); the document's ``servers``
entry is filled per request from the scheme, ``Host`` and mount path the client used.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from .asyncapi import asyncapi_document, server_entry
from .model import Contract, build_contract
from .typescript import typescript_types

_HOST: Final = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

#: File name -> content type.
FILES: Final = {
    "asyncapi.json": b"application/json",
    "types.d.ts": b"application/typescript",
}


class ContractFiles:
    """The two files of a router's contract, built on first use.

    Args:
        source: the router (or endpoint classes) whose contract is served.
        title: ``info.title`` of the document.
        version: ``info.version`` of the document.
    """

    def __init__(self, source: Any, *, title: str = "starlette-realtime app", version: str = "0.0.0") -> None:
        self._source = source
        self._title = title
        self._version = version
        self._contract: Contract | None = None
        self._doc: dict[str, Any] | None = None
        self._types: bytes | None = None

    def _built(self) -> Contract:
        if self._contract is None:
            self._contract = build_contract(self._source)
        return self._contract

    def get(self, name: str, scope: dict[str, Any]) -> tuple[bytes, bytes] | None:
        """The body and content type of ``name`` (``asyncapi.json`` or ``types.d.ts``), else ``None``."""
        if name == "types.d.ts":
            if self._types is None:
                self._types = typescript_types(self._built()).encode()
            return self._types, FILES[name]
        if name == "asyncapi.json":
            if self._doc is None:
                self._doc = asyncapi_document(self._built(), title=self._title, version=self._version)
            doc = dict(self._doc)
            server = _server_of(scope)
            if server is not None:
                # Keep the key order of a document written by the CLI: servers after info.
                head = {k: v for k, v in doc.items() if k in ("asyncapi", "info")}
                doc = head | {"servers": {"realtime": server}} | {k: v for k, v in doc.items() if k not in head}
            return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode(), FILES[name]
        return None

    def __repr__(self) -> str:
        return f"ContractFiles(built={self._contract is not None})"


def _server_of(scope: dict[str, Any]) -> dict[str, Any] | None:
    """The ``servers`` entry of the WebSocket next to this HTTP request, or ``None`` if the request says too little."""
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
    # A Host header is the client's to choose: only a plain host[:port] goes into the document.
    if not host or len(host) > 255 or not _HOST.match(host):
        return None
    scheme = "wss" if scope.get("scheme") in ("https", "wss") else "ws"
    path = scope.get("root_path", "") or "/"
    try:
        return server_entry(f"{scheme}://{host}{path}")
    except ValueError:
        return None
