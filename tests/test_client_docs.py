"""The Python blocks of docs/reference/client.md run as a reader would run them (the runner of tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

from docblocks import ROOT, blocks
from test_docs import PageRunner

PAGE = ROOT / "docs" / "reference" / "client.md"


def test_client_reference_blocks_run(tmp_path: Path) -> None:
    runner = PageRunner(PAGE, tmp_path)
    try:
        runner.run()
    finally:
        runner.close()
    assert runner.skipped == 0 and runner.ran == len(blocks(PAGE)) >= 5
