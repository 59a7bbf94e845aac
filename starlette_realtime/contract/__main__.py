"""``python -m starlette_realtime.contract module:router --out asyncapi.json --types types.d.ts``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import asyncapi_json, typescript_types_of


def load(target: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted: ``app:realtime.router``).

    Raises:
        ValueError: the target has no ``:``.
        ImportError, AttributeError: the module or the attribute does not exist.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected module:attribute, got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """Write the AsyncAPI document and/or the TypeScript types of an app; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m starlette_realtime.contract",
        description="Write an app's AsyncAPI 3.0 document and TypeScript types.",
    )
    parser.add_argument("target", help="module:attribute of a RealtimeRouter or a list of endpoint classes")
    parser.add_argument("--out", type=Path, help="where to write the AsyncAPI document (JSON); - for stdout")
    parser.add_argument("--types", type=Path, help="where to write the TypeScript declarations; - for stdout")
    parser.add_argument("--title", default="starlette-realtime app", help="info.title")
    parser.add_argument("--version", default="0.0.0", help="info.version, the app's version")
    parser.add_argument("--server", help="the router's WebSocket URL, e.g. wss://chat.example/realtime/")
    parser.add_argument("--client-module", default="./client.js",
                        help="module the types import the browser client's declarations from (default ./client.js)")
    args = parser.parse_args(argv)
    if args.out is None and args.types is None:
        parser.error("give --out, --types or both")
    sys.path.insert(0, str(Path.cwd()))
    try:
        source = load(args.target)
        outputs: list[tuple[Path, bytes]] = []
        if args.out is not None:
            outputs.append((args.out, asyncapi_json(source, title=args.title, version=args.version,
                                                    server=args.server)))
        if args.types is not None:
            outputs.append((args.types, typescript_types_of(source, client_module=args.client_module).encode()))
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, data in outputs:
        if str(path) == "-":
            sys.stdout.buffer.write(data)
        else:
            path.write_bytes(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
