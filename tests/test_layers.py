"""The layers hold: the client loads no server module, and import-linter's contracts are kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULES = {"routing", "link", "core", "endpoint", "connection", "hub", "lifecycle", "invoke", "recovery",
                  "membership", "backends", "backends.memory", "backends.presence_redis", "socketio", "presence"}


def loaded_after(statement: str) -> set[str]:
    names = "sorted(m for m in sys.modules if m.startswith('starlette_realtime'))"
    code = f"import sys, json\n{statement}\nprint(json.dumps({names}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return {m.removeprefix("starlette_realtime.") for m in json.loads(out.stdout)}


def test_the_client_loads_no_server_module() -> None:
    loaded = loaded_after("import starlette_realtime.client")
    assert "client" in loaded
    assert not loaded & SERVER_MODULES, sorted(loaded & SERVER_MODULES)


def test_the_package_root_imports_lazily() -> None:
    assert not loaded_after("import starlette_realtime") & SERVER_MODULES
    loaded = loaded_after("from starlette_realtime import RealtimeRouter")
    assert {"routing", "core", "link"} <= loaded


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' (import-linter)")
    proc = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
