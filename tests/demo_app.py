"""The chat demo as ``demo_app:app`` for uvicorn subprocesses (tests/procs.Node); settings from the environment.

``DEMO_SEED=1`` puts two messages from yesterday by "Lin Chen" (who is never online) in #lobby, so that
the page has a day to separate, a group of messages by one author and an author who is offline.
``DEMO_BACKEND`` (default ``memory://``), ``STARLETTE_REALTIME_DEMO_SECRET`` (the same on every node of a
cluster) and ``DEMO_DASHBOARD=1`` (the live dashboard, with Prometheus metrics) make cluster nodes of it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from starlette_realtime.demo import ChatEndpoint, create_app
from starlette_realtime.demo.app import Message

options: dict[str, Any] = {}
if os.environ.get("DEMO_DASHBOARD"):
    from starlette_realtime.prometheus import PrometheusMetrics

    options = {"dashboard": True, "metrics": PrometheusMetrics()}

app, realtime = create_app(
    backend=os.environ.get("DEMO_BACKEND", "memory://"),
    secret_key=os.environ.get("STARLETTE_REALTIME_DEMO_SECRET") or None,
    ping_interval=float(os.environ.get("DEMO_PING_INTERVAL", "25")),
    ping_timeout=float(os.environ.get("DEMO_PING_TIMEOUT", "20")),
    **options,
)

if os.environ.get("DEMO_SEED"):
    chat = realtime.endpoints["/chat"]
    assert isinstance(chat, ChatEndpoint)
    yesterday = time.time() - 86_400
    chat.history.add(Message("seed-1", "lobby", "Lin Chen", "Release notes are in the wiki.", yesterday))
    chat.history.add(Message("seed-2", "lobby", "Lin Chen", "Off until Monday, ping Ada if needed.", yesterday + 60))
