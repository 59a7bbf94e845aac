"""The chat demo as ``demo_app:app`` for uvicorn subprocesses (tests/procs.Node); settings from the environment."""

from __future__ import annotations

import os

from starlette_realtime.demo import create_app

app, realtime = create_app(
    ping_interval=float(os.environ.get("DEMO_PING_INTERVAL", "25")),
    ping_timeout=float(os.environ.get("DEMO_PING_TIMEOUT", "20")),
)
