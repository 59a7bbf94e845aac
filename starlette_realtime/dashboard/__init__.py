"""A live dashboard page for operators: connections, rooms, throughput and latency, updated each second.

Off by default.  To turn it on, add :class:`DashboardEndpoint` to the router and
mount :func:`dashboard_app` behind an auth check::

    from starlette_realtime.dashboard import DashboardEndpoint, dashboard_app

    realtime = RealtimeRouter([Chat, DashboardEndpoint], metrics=PrometheusMetrics())
    app.mount("/realtime", realtime)
    app.mount("/dashboard", dashboard_app(realtime, auth=lambda request: is_admin(request)))

The page is one static HTML file with hand-drawn canvas charts (no CDN, no
network beyond this server).  It talks to the server through the library's own
WebSocket: it loads the browser client from ``<realtime_path>/client.js`` and
opens the reserved namespace ``/_dashboard``, whose endpoint pushes a
:class:`~starlette_realtime.dashboard.stats.Snapshot` every second to each open
page.  The WebSocket is authorized by a short-lived token that only
``dashboard_app`` hands out, after ``auth(request)`` agreed, so the namespace is
closed to anyone the page would refuse.

Each page shows the node (process) that serves its WebSocket; for a fleet-wide
view, scrape the Prometheus metrics.
"""

from __future__ import annotations

import inspect
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Final

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .. import status
from ..connection import Connection, ConnectionState
from ..endpoint import RealtimeEndpoint
from ..exceptions import BackendUnavailable, ConnectionClosed, Rejected
from .stats import Snapshot, StatsSampler, histogram_quantile

if TYPE_CHECKING:
    from ..routing import RealtimeRouter

#: The reserved namespace of the dashboard's WebSocket.
DASHBOARD_NAMESPACE: Final = "/_dashboard"
# What dashboard tokens sign in place of a namespace: without a leading slash it
# can never be a namespace, so no session string of any namespace passes as one.
_TOKEN_SCOPE: Final = "dashboard-token"
# Nodes' clocks may differ a little: a token may look this many seconds from the future.
_CLOCK_SKEW: Final = 30.0

AuthCheck = Callable[[Request], "bool | Awaitable[bool]"]


class DashboardEndpoint(RealtimeEndpoint):
    """The ``/_dashboard`` namespace: pushes a stats snapshot to each open page every second.

    Pages receive ``history`` (the recent snapshots, once, on connect) and then
    ``stats`` (one snapshot per second).  Connecting needs a token from
    :func:`dashboard_app`.
    """

    namespace: ClassVar[str] = DASHBOARD_NAMESPACE
    #: Seconds between snapshots.
    interval: ClassVar[float] = 1.0
    #: Seconds a token is accepted after it was issued (the page fetches one for every (re)connect).
    token_max_age: ClassVar[float] = 120.0

    def __init__(self) -> None:
        super().__init__()
        self._sampler: StatsSampler | None = None

    @property
    def sampler(self) -> StatsSampler:
        """The sampler shared by every page of this node."""
        if self._sampler is None:
            self._sampler = StatsSampler(self.router, exclude=(self.namespace,), interval=self.interval)
        return self._sampler

    async def authenticate(self, conn: Connection) -> Any:
        """Accept only a valid token from :func:`dashboard_app` (``{"token": ...}``).

        Raises:
            Rejected: ``AUTHENTICATION_REQUIRED`` without a token, ``INVALID_TOKEN`` with a bad or old one.
        """
        token = conn.auth.get("token") if isinstance(conn.auth, dict) else None
        if not isinstance(token, str):
            raise Rejected(status.AUTHENTICATION_REQUIRED, "the dashboard needs a token from its page")
        if not self.token_valid(token):
            raise Rejected(status.INVALID_TOKEN, "invalid or expired dashboard token")
        return None

    def issue_token(self) -> str:
        """A token for one page: signed with the router's secret key, stamped with the time.

        Returns:
            The token, for ``{"token": ...}`` in the CONNECT frame's auth payload.
        """
        return str(self.router.signer.sign(_TOKEN_SCOPE, f"{time.time():.0f}.{secrets.token_urlsafe(8)}"))

    def token_valid(self, token: str) -> bool:
        """Tell whether ``token`` came from :meth:`issue_token` less than ``token_max_age`` seconds ago.

        Args:
            token: what the page sent.

        Returns:
            ``True`` for a genuine, recent token.
        """
        # The age is checked here, from the signed time stamp: the router's signer may
        # have no age limit of its own (session strings live as long as their connection).
        value = self.router.signer.verify(_TOKEN_SCOPE, token)
        if value is None:
            return False
        issued, _, _ = value.partition(".")
        try:
            age = time.time() - int(issued)
        except ValueError:
            return False
        return -_CLOCK_SKEW <= age <= self.token_max_age

    async def on_connect(self, conn: Connection) -> None:
        """Start pushing snapshots to this page (the loop dies with its WebSocket)."""
        conn.link.spawn(self._push, conn)

    async def _push(self, conn: Connection) -> None:
        # Wait for CONNECTED, send the history once, then one snapshot per interval.
        while conn.state is ConnectionState.CONNECTING:
            await anyio.sleep(0.01)
        if conn.state is not ConnectionState.OPEN:
            return
        sampler = self.sampler
        sent = sampler.latest().t
        try:
            await conn.emit("history", list(sampler.history))
            while True:
                await anyio.sleep(self.interval - (anyio.current_time() % self.interval))
                if conn.state is not ConnectionState.OPEN:
                    return
                snap = sampler.latest()
                if snap.t > sent:
                    sent = snap.t
                    try:
                        # Volatile: a page that is behind skips a snapshot rather than queue it.
                        await conn.emit("stats", snap, volatile=True)
                    except BackendUnavailable:
                        continue
        except (ConnectionClosed, BackendUnavailable):
            return


class DashboardApp:
    """The ASGI app of :func:`dashboard_app`: the page at its root and a token at ``token``."""

    def __init__(self, router: RealtimeRouter, *, auth: AuthCheck, realtime_path: str, title: str) -> None:
        endpoint = router.endpoints.get(DASHBOARD_NAMESPACE)
        if not isinstance(endpoint, DashboardEndpoint):
            raise ValueError(f"add DashboardEndpoint to the router's endpoints to serve {DASHBOARD_NAMESPACE!r}")
        if not callable(auth):
            raise TypeError("auth must be a callable taking the request and returning whether to allow it")
        self.router = router
        self._endpoint = endpoint
        self.auth = auth
        self.realtime_path = "/" + realtime_path.strip("/")
        self.title = title
        self._page = resources.files(__name__).joinpath("dashboard.html").read_text("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        root = scope.get("root_path", "")
        path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
        response = await self._respond(request, root, path)
        await response(scope, receive, send)

    async def _respond(self, request: Request, root: str, path: str) -> Response:
        if path not in ("", "/", "/token"):
            return PlainTextResponse("not found\n", status_code=404)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed\n", status_code=405, headers={"allow": "GET, HEAD"})
        allowed = self.auth(request)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            return PlainTextResponse("forbidden\n", status_code=403, headers={"cache-control": "no-store"})
        if path == "/token":
            token = self._endpoint.issue_token()
            return JSONResponse({"token": token}, headers={"cache-control": "no-store"})
        return self._html(root)

    def _html(self, root: str) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        config = {
            "namespace": DASHBOARD_NAMESPACE,
            "realtimePath": self.realtime_path,
            "clientUrl": self.realtime_path + "/client.js",
            "tokenUrl": root + "/token",
            "title": self.title,
        }
        # JSON inside <script>: "<" escaped, so that no value can close the element.
        text = json.dumps(config).replace("<", "\\u003c")
        page = self._page.replace("__CONFIG__", text).replace("__NONCE__", nonce)
        page = page.replace("__TITLE__", _escape(self.title))
        csp = (
            f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        headers = {
            "content-security-policy": csp,
            "cache-control": "no-store",
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
        }
        return HTMLResponse(page, headers=headers)

    def __repr__(self) -> str:
        return f"DashboardApp(realtime_path={self.realtime_path!r})"


def dashboard_app(
    router: RealtimeRouter, *, auth: AuthCheck, realtime_path: str = "/realtime", title: str = "starlette-realtime"
) -> DashboardApp:
    """The mountable dashboard: the page, behind ``auth``.

    Args:
        router: the router to show; its endpoints must include :class:`DashboardEndpoint`.
        auth: called with each request for the page or a WebSocket token; return
            ``True`` (or an awaitable of it) to allow it.  There is no default:
            pass ``lambda request: True`` only if the whole app is private.
        realtime_path: the path where the router is mounted, as the browser sees it.
        title: the page's title.

    Returns:
        An ASGI app to mount (``app.mount("/dashboard", ...)``).

    Raises:
        ValueError: the router has no :class:`DashboardEndpoint`.
        TypeError: ``auth`` is not callable.
    """
    return DashboardApp(router, auth=auth, realtime_path=realtime_path, title=title)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


__all__ = [
    "DASHBOARD_NAMESPACE",
    "DashboardApp",
    "DashboardEndpoint",
    "Snapshot",
    "StatsSampler",
    "dashboard_app",
    "histogram_quantile",
]
