"""A chat demo of starlette-realtime: ``python -m starlette_realtime.demo``, then open http://127.0.0.1:8000.

Pick a name, join rooms, chat, see who is online and who is typing, and watch the
connection state while you stop and restart the server (docs/browser.md).
"""

from __future__ import annotations

from .app import ChatEndpoint, History, create_app

__all__ = ["ChatEndpoint", "History", "create_app"]
