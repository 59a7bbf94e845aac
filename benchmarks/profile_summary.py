"""Summarize py-spy collapsed stacks (``harness --profile DIR`` writes them): where a server's CPU time goes.

    python -m benchmarks.profile_summary benchmarks/results/tmp/prof/ours-*.txt [--top 25] [--group]

Prints, per file, the share of samples by function *self* time (the frame at the top of the stack) and by
*inclusive* time (any frame of the stack), and with ``--group`` the share per area: the library
(starlette_realtime), uvicorn's WebSocket protocol, websockets/wsproto framing, asyncio/uvloop, Starlette, msgspec
or json, and "transport.write" (the socket send: in py-spy a frame whose self time is the ``send()`` syscall's).
py-spy samples only threads that are running, so an idle event loop does not count: the shares are shares of CPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")

# First matching rule wins: (area, substring of the file path or function name).
AREAS = [
    ("transport.write (socket send)", "write (uvloop"),
    ("transport.write (socket send)", "uvloop/handles/stream"),
    ("starlette_realtime", "starlette_realtime/"),
    ("benchmark server code", "benchmarks/servers/"),
    ("uvicorn ws protocol", "uvicorn/protocols/websockets"),
    ("websockets framing", "site-packages/websockets/"),
    ("wsproto framing", "site-packages/wsproto/"),
    ("starlette", "site-packages/starlette/"),
    ("socketio/engineio", "socketio/"),
    ("socketio/engineio", "engineio/"),
    ("anyio", "site-packages/anyio/"),
    ("asyncio/uvloop", "asyncio/"),
    ("asyncio/uvloop", "uvloop/"),
    ("json", "json/"),
]


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        stacks.append((frames, int(count)))
    return stacks


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    f = m["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    return f"{m['func']} ({f}{':' + m['line'] if m['line'] else ''})"


def func_key(frame: str) -> str:
    """A frame without its line number (a function accumulates over its lines)."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    return short(f"{m['func']} ({m['file']})")


def area_of(frames: list[str]) -> str:
    """The area of a sample: the innermost frame that belongs to a known area."""
    for frame in reversed(frames):
        for area, needle in AREAS:
            if needle in frame:
                return area
    return "other"


def summarize(path: Path, top: int, group: bool) -> str:
    stacks = parse(path)
    total = sum(c for _, c in stacks)
    if not total:
        return f"{path}: no samples"
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, c in stacks:
        if not frames:
            continue
        self_t[func_key(frames[-1])] += c
        for k in {func_key(f) for f in frames}:
            incl[k] += c
        areas[area_of(frames)] += c
    out = [f"== {path} ({total} samples)", "-- self time (top of stack)"]
    out += [f"{c / total * 100:6.1f}%  {k}" for k, c in self_t.most_common(top)]
    out.append("-- inclusive time")
    out += [f"{c / total * 100:6.1f}%  {k}" for k, c in incl.most_common(top)]
    if group:
        out.append("-- by area (innermost known frame)")
        out += [f"{c / total * 100:6.1f}%  {k}" for k, c in areas.most_common()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--group", action="store_true", help="also the share per area")
    args = p.parse_args(argv)
    for f in args.files:
        print(summarize(f, args.top, args.group))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
