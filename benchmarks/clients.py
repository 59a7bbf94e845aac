"""The orchestrator's side of the client processes: start them (fork), send them commands, collect replies."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from .worker import worker_main


class WorkerError(RuntimeError):
    pass


class WorkerHandle:
    _ctx = mp.get_context("fork")

    def __init__(self, index: int):
        self.index = index
        cmd_r, self.cmd = self._ctx.Pipe(duplex=False)
        self.res, res_w = self._ctx.Pipe(duplex=False)
        self.proc = self._ctx.Process(target=worker_main, args=(cmd_r, res_w, index), daemon=True,
                                      name=f"bench-client-{index}")
        self.proc.start()
        cmd_r.close()
        res_w.close()

    def send(self, op: str, **kw: Any) -> None:
        self.cmd.send({"op": op, **kw})

    def recv(self, timeout: float) -> dict[str, Any]:
        if not self.res.poll(timeout):
            raise TimeoutError(f"client process {self.index} did not answer within {timeout:.0f}s")
        res = self.res.recv()
        if "error" in res:
            raise WorkerError(res["error"])
        return res

    def call(self, op: str, timeout: float, **kw: Any) -> dict[str, Any]:
        self.send(op, **kw)
        return self.recv(timeout)

    def close(self) -> None:
        try:
            self.send("close")
            self.res.poll(5)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.cmd.close()
        self.res.close()


class Clients:
    def __init__(self, n: int):
        self.workers = [WorkerHandle(i) for i in range(n)]

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.close()


def call_all(calls: list[tuple[WorkerHandle, str, dict[str, Any]]], timeout: float) -> list[dict[str, Any]]:
    for w, op, kw in calls:
        w.send(op, **kw)
    deadline = time.monotonic() + timeout
    return [w.recv(max(0.1, deadline - time.monotonic())) for w, _, _ in calls]

