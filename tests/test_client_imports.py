"""The client imports only what it shares with the server: frames, codecs, status codes, exceptions."""

from __future__ import annotations

import ast
from pathlib import Path

import starlette_realtime.client

ALLOWED = {"frames", "codec", "status", "exceptions"}


def test_the_client_package_imports_no_server_module() -> None:
    package = Path(starlette_realtime.client.__file__).parent
    found: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..x import y / from .. import x
                names = {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
                found.setdefault(path.name, set()).update(names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(
                "starlette_realtime"
            ):
                found.setdefault(path.name, set()).add(str(node.module))
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("starlette_realtime") for a in node.names), path.name
    outside = {name: mods - ALLOWED for name, mods in found.items() if mods - ALLOWED}
    assert not outside, f"client modules import server modules: {outside}"
    assert found  # the walk did see the client's imports
