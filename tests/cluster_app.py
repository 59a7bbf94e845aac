"""A cluster node for end-to-end tests: ``uvicorn cluster_app:app`` with REDIS_URL, NODE_ID and SECRET set.

Besides the WebSocket endpoints (the ``Chat`` and ``Feed`` endpoints of tests/apps.py,
at /realtime; RECOVERY_WINDOW sets the router's recovery_window) it exposes the
router's cluster-wide operations and the backend's health over plain HTTP, so
that tests can drive and observe each node.
"""

from __future__ import annotations

import os
from typing import Any

from apps import Chat, Feed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from starlette_realtime import RealtimeRouter
from starlette_realtime.backends.redis import RedisBackend

NODE_ID = os.environ.get("NODE_ID", "node")
backend = RedisBackend(
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    node_id=NODE_ID,
    prefix=os.environ.get("REDIS_PREFIX", "rt"),
)
realtime = RealtimeRouter(
    [Chat, Feed], backend=backend, secret_key=os.environ.get("SECRET", "cluster-secret"), node_id=NODE_ID,
    recovery_window=float(os.environ.get("RECOVERY_WINDOW", "120")),
)


def _ns(request: Request) -> str:
    return request.query_params.get("ns", "/chat")


async def health(request: Request) -> JSONResponse:
    report: dict[str, Any] = backend.health()
    return JSONResponse(report, status_code=200 if report["healthy"] else 503)


async def members(request: Request) -> JSONResponse:
    return JSONResponse(await realtime.members(request.query_params["room"], namespace=_ns(request)))


async def rooms(request: Request) -> JSONResponse:
    found = await realtime.rooms_of(request.query_params["sid"], namespace=_ns(request))
    return JSONResponse(None if found is None else sorted(found))


async def join(request: Request) -> JSONResponse:
    q = request.query_params
    return JSONResponse(await realtime.join(q["sid"], q["room"], namespace=_ns(request)))


async def leave(request: Request) -> JSONResponse:
    q = request.query_params
    return JSONResponse(await realtime.leave(q["sid"], q["room"], namespace=_ns(request)))


async def disconnect(request: Request) -> JSONResponse:
    return JSONResponse(await realtime.disconnect(request.query_params["sid"], namespace=_ns(request)))


async def emit(request: Request) -> JSONResponse:
    q = request.query_params
    data = await request.json()
    room = q.get("room")
    if room:
        await realtime.to(room).emit(q.get("event", "said"), data, namespace=_ns(request))
    else:
        await realtime.emit(q.get("event", "said"), data, namespace=_ns(request))
    return JSONResponse(True)


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/members", members),
        Route("/rooms", rooms),
        Route("/join", join, methods=["POST"]),
        Route("/leave", leave, methods=["POST"]),
        Route("/disconnect", disconnect, methods=["POST"]),
        Route("/emit", emit, methods=["POST"]),
        Mount("/realtime", realtime),
    ],
    lifespan=realtime.lifespan,
)
