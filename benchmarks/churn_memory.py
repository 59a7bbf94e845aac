"""What sessions that came and went leave behind: the soak's churn in-process, under tracemalloc.

    python -m benchmarks.churn_memory [--sessions 6000] [--warmup 1000] [--json PATH]

The soak (benchmarks/soak.py) reports the server's RSS, which also moves with the allocator; this tells a leak from
that. ``RealtimeTester`` drives the soak's endpoint (benchmarks/servers/soak_app.py) on ``memory://`` with a 1 s
recovery window: rounds of 200 connections each connect, join one of 20 rooms, send an acked emit, and leave, two
thirds with a close frame and a third dropped (close code 1006, so their sessions are saved for recovery). After
``--warmup`` sessions the collector runs and a snapshot is taken; after ``--sessions`` more, the window is let pass,
the memory backend sweeps its expired sessions, the collector runs again and a second snapshot is compared with the
first. Allocations made by the tester and this
driver are left out; what remains is grouped by file: the bytes still held per session that came and went.

A leak shows as bytes per session in the library's files that stay when ``--sessions`` grows; a one-off (a dict that
grew once) shrinks per session: the ~0.5 MB that stays here is ~80 B per session after 6,000 and ~35 after 18,000.
The app's per-slot counters are bounded by its 2,000 slots. Exit status 1 when the library's own files hold more
than ``--max-bytes`` per session.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROUND = 200
ROOMS = 20


async def churn(sessions: int, warmup: int) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH / "servers"))
    from soak_app import Soak

    from starlette_realtime import RealtimeRouter
    from starlette_realtime.testing import RealtimeTester

    router = RealtimeRouter([Soak], recovery_window=1.0)
    async with RealtimeTester(router) as tester:
        slot = 0

        async def one_round() -> None:
            nonlocal slot
            conns = []
            for i in range(ROUND):
                slot += 1
                conn = await tester.connect("/soak", auth={"slot": slot % 2000})
                await conn.call("join", f"room{i % ROOMS}")
                await conn.call("work", 1)
                conns.append(conn)
            for i, conn in enumerate(conns):
                await conn.close(1006 if i % 3 == 0 else 1000)

        for _ in range(max(1, warmup // ROUND)):
            await one_round()
        await asyncio.sleep(1.5)
        gc.collect()
        tracemalloc.start(10)
        before = tracemalloc.take_snapshot()
        rounds = max(1, sessions // ROUND)
        for _ in range(rounds):
            await one_round()
        await asyncio.sleep(1.5)  # the recovery window passes
        # The memory backend drops expired sessions on its own schedule (a sweep every few
        # seconds); a benchmark may call it now rather than wait.
        backend = router.backend
        backend._sweep(backend._clock())  # type: ignore[attr-defined]
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        counts = router.stats()
    # The tester keeps what it needs to drive its connections, and this driver its own: not the server's.
    drop = [tracemalloc.Filter(False, "*/starlette_realtime/testing.py", all_frames=True),
            tracemalloc.Filter(False, __file__, all_frames=True)]
    diff = after.filter_traces(drop).compare_to(before.filter_traces(drop), "traceback")
    per_file: dict[str, int] = defaultdict(int)
    for stat in diff:
        # The innermost frame of ours (or the innermost of all) names who holds the memory.
        frames = list(stat.traceback)
        ours = [f for f in frames if "starlette_realtime" in f.filename or "soak_app" in f.filename]
        where = ours[-1] if ours else frames[-1]
        per_file[f"{Path(where.filename).name}:{where.lineno}"] += stat.size_diff
    total = rounds * ROUND
    return {"sessions": total, "router_after": counts,
            "bytes_per_session": sum(per_file.values()) / total,
            "by_site": dict(sorted(per_file.items(), key=lambda kv: -kv[1])[:15])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.churn_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=6000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--max-bytes", type=float, default=128.0,
                   help="most bytes per session the library's files may hold")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    result = asyncio.run(churn(args.sessions, args.warmup))
    library = sum(size for site, size in result["by_site"].items() if not site.startswith("soak_app.py") and size > 0)
    result["library_bytes_per_session"] = library / result["sessions"]
    print(f"{result['sessions']:,} sessions: {result['bytes_per_session']:.0f} bytes held per session in all, "
          f"{result['library_bytes_per_session']:.1f} by the library; "
          f"router after: {result['router_after']}")
    for site, size in result["by_site"].items():
        print(f"  {size / result['sessions']:8.1f} B/session  {site}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["library_bytes_per_session"] <= args.max_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
