"""The fenced Python blocks of README.md and docs/*.md, with their ``docs-test`` markers (see docs/testing.md).

A marker is an HTML comment on the line before a block's fence (blank lines may sit
between them); markdown renderers hide it::

    <!-- docs-test: skip (why it cannot run) -->
    <!-- docs-test: continue -->
    <!-- docs-test: continue in=chat.py -->
    <!-- docs-test: server -->
    <!-- docs-test: client copies=2 stop=3 expect="said" -->
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("run", "skip", "continue", "server", "client")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.+)\)$")


@dataclass
class Block:
    """One fenced ``python`` block and what its marker asks for."""

    page: str
    line: int  # 1-based line of the opening fence
    source: str
    mode: str = "run"
    reason: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The file the block says it is, by a first-line comment such as ``# chat.py``."""
        first = self.source.lstrip().split("\n", 1)[0]
        m = re.match(r"^#\s*([A-Za-z_]\w*\.py)\s*$", first)
        return m.group(1) if m else None

    @property
    def module_name(self) -> str:
        """The module a ``server`` block is served as: its file's name, else ``app``."""
        return self.file_name[:-3] if self.file_name else "app"


def pages() -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse_marker(body: str, where: str) -> tuple[str, str, dict[str, str]]:
    """Split a marker's text into (mode, skip reason, options).

    Raises:
        ValueError: an unknown mode, a skip without a reason, or a malformed option.
    """
    skip = _SKIP.match(body)
    if skip:
        return "skip", skip.group("reason").strip(), {}
    if re.match(r"^skip\b", body):
        raise ValueError(f"{where}: a skipped block says why: <!-- docs-test: skip (reason) -->")
    words = shlex.split(body)
    if not words or words[0] not in MODES:
        raise ValueError(f"{where}: unknown docs-test marker {body!r}; one of {', '.join(MODES)}")
    options: dict[str, str] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"{where}: option {word!r} is not key=value")
        options[key] = value
    return words[0], "", options


def blocks(path: Path) -> list[Block]:
    """Every fenced ``python`` block of a page, with its marker read."""
    name = str(path.relative_to(ROOT))
    lines = path.read_text().split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = fence.group("indent")
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if fence.group("lang") in ("python", "py"):
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
            block = Block(name, i + 1, "\n".join(body) + "\n")
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            marker = _MARKER.match(lines[j]) if j >= 0 else None
            if marker is not None:
                block.mode, block.reason, block.options = parse_marker(marker.group("body"), block.where)
            found.append(block)
        i = end + 1
    return found
