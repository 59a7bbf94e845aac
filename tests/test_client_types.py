"""client.d.ts declares what the browser client documents: tsc --strict compiles tests/js/types/use.ts against it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT, need

TSC = ROOT / "tests" / "contract" / "node_modules" / "typescript" / "bin" / "tsc"


def test_the_declarations_cover_the_documented_api(tmp_path: Path) -> None:
    need("node", "contract npm packages")
    shutil.copy(ROOT / "starlette_realtime" / "static" / "client.d.ts", tmp_path / "client.d.ts")
    shutil.copy(ROOT / "tests" / "js" / "types" / "use.ts", tmp_path / "use.ts")
    options = json.loads((ROOT / "tests" / "contract" / "ts" / "tsconfig.json").read_text())["compilerOptions"]
    (tmp_path / "tsconfig.json").write_text(json.dumps({"compilerOptions": options, "files": ["use.ts"]}))
    proc = subprocess.run(
        ["node", str(TSC), "-p", "tsconfig.json", "--pretty", "false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
