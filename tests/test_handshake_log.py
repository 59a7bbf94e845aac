"""Refused handshakes leave the error log empty (docs/security.md): a peer cannot fill an operator's log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator

import anyio
import websockets
from apps import make_app
from conftest import serve
from websockets.exceptions import InvalidStatus

from starlette_realtime.logs import RefusedHandshakeFilter, refused_handshake


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_log() -> Iterator[Capture]:
    """Capture uvicorn's error log (attach once the server started: its dictConfig resets handlers)."""
    capture = Capture()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)


async def refuse(url: str, **kw: object) -> int:
    try:
        async with websockets.connect(url, **kw):  # type: ignore[arg-type]
            pass
    except InvalidStatus as exc:
        return exc.response.status_code
    raise AssertionError("the handshake was accepted")


async def test_a_thousand_refused_handshakes_log_no_error() -> None:
    app, realtime = make_app(allowed_origins=["https://app.example"])
    with serve(app) as srv, error_log() as log:
        url = srv.url + "/realtime/"
        with anyio.fail_after(120):
            statuses: list[int] = []
            for start in range(0, 1000, 50):  # 50 at a time, 1,000 in all
                batch = [refuse(url, subprotocols=["nope.v9"], origin="https://app.example")
                         for _ in range(start, start + 25)]
                batch += [refuse(url, subprotocols=["rt.v1.json"], origin="https://evil.example")
                          for _ in range(start + 25, start + 50)]
                statuses += await asyncio.gather(*batch)
        assert statuses.count(400) == 500 and statuses.count(403) == 500
        # ... and the server is healthy: a proper client still gets in.
        async with websockets.connect(url, subprotocols=["rt.v1.json"], origin="https://app.example") as ws:  # type: ignore[list-item, arg-type]
            with anyio.fail_after(5):
                assert json.loads(await ws.recv())[0] == 0
        assert realtime.stats()["links"] <= 1
    errors = [r for r in log.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_the_filter_keeps_the_same_message_from_other_applications() -> None:
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, RefusedHandshakeFilter.MESSAGE, (), None)
    assert RefusedHandshakeFilter().filter(record)  # not refused by us: kept
    token = refused_handshake.set(True)
    try:
        assert not RefusedHandshakeFilter().filter(record)
    finally:
        refused_handshake.reset(token)
