"""A live dashboard page for operators: connections, rooms, throughput and latency, updated each second.

Off by default.  To turn it on, add :class:`DashboardEndpoint` to the router and
mount :func:`dashboard_app` behind an auth check (docs/observability.md has a complete app)::

    from starlette_realtime.dashboard import DashboardEndpoint, dashboard_app

    realtime = RealtimeRouter([Chat, DashboardEndpoint], metrics=PrometheusMetrics())
    realtime.mount(app, "/realtime")
    dashboard_app(realtime, auth=is_admin, needs_session=True).mount(app, "/dashboard")

``needs_session=True`` says that ``auth`` reads ``request.session``: mounting then
raises :class:`SessionMiddlewareMissing` unless the app has Starlette's
``SessionMiddleware``.

The page is one static HTML file with hand-drawn canvas charts (no CDN, no
network beyond this server).  It talks to the server through the library's own
WebSocket: it loads the browser client from ``<realtime_path>/client.js`` and
opens the reserved namespace ``/_dashboard``, whose endpoint pushes a
:class:`~starlette_realtime.dashboard.stats.Snapshot` every second to each open
page.  The WebSocket is authorized by a short-lived token that only
``dashboard_app`` hands out, after ``auth(request)`` agreed, so the namespace is
closed to anyone the page would refuse.

Each page charts the node (process) that serves its WebSocket, and lists every
node of the cluster (connections, rooms, rates) in its *Nodes* table, gathered
through the cluster control channel (:meth:`RealtimeRouter.node_stats`).
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
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from .. import status
from ..connection import Connection, ConnectionState
from ..endpoint import RealtimeEndpoint
from ..exceptions import BackendUnavailable, ConnectionClosed, RealtimeError, Rejected
from .stats import ClusterSampler, NodeRow, Snapshot, StatsSampler, histogram_quantile

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

_SESSION_FIX = (
    "add Middleware(SessionMiddleware, secret_key=...) from starlette.middleware.sessions to the app's middleware "
    "(it needs the itsdangerous package) before mounting the dashboard, or give dashboard_app an auth check that "
    "does not read request.session"
)


class SessionMiddlewareMissing(RealtimeError, RuntimeError):
    """The dashboard's ``auth`` reads ``request.session`` but the app has no ``SessionMiddleware``.

    Raised by :meth:`DashboardApp.mount` (``needs_session=True``), and by a request for the page
    that reaches the dashboard without a session, with the fix in its message.
    """

    def __init__(self, detail: str = "the dashboard's auth reads request.session") -> None:
        super().__init__(f"{detail}, but the app has no SessionMiddleware: {_SESSION_FIX}")


def has_session_middleware(app: Any) -> bool | None:
    """Tell whether a Starlette (or FastAPI) app lists ``SessionMiddleware`` (or a subclass).

    Args:
        app: the application.

    Returns:
        ``True`` or ``False``; ``None`` when ``app`` keeps no middleware list (a bare router).
    """
    middleware = getattr(app, "user_middleware", None)
    if not isinstance(middleware, list):
        return None
    for item in middleware:
        cls = getattr(item, "cls", None)
        # By name through the MRO: importing starlette.middleware.sessions needs itsdangerous.
        if inspect.isclass(cls) and any(c.__name__ == "SessionMiddleware" for c in inspect.getmro(cls)):
            return True
    return False


class DashboardEndpoint(RealtimeEndpoint):
    """The ``/_dashboard`` namespace: pushes a stats snapshot to each open page every second.

    Pages receive ``history`` (the recent snapshots, once, on connect), then
    ``stats`` (one snapshot of this node per second) and ``cluster`` (a
    :class:`NodeRow` per node of the cluster, each second).  Connecting needs a
    token from :func:`dashboard_app`.
    """

    namespace: ClassVar[str] = DASHBOARD_NAMESPACE
    #: Seconds between snapshots.
    interval: ClassVar[float] = 1.0
    #: Seconds a token is accepted after it was issued (the page fetches one for every (re)connect).
    token_max_age: ClassVar[float] = 120.0

    def __init__(self) -> None:
        super().__init__()
        self._sampler: StatsSampler | None = None
        self._cluster: ClusterSampler | None = None

    @property
    def sampler(self) -> StatsSampler:
        """The sampler shared by every page of this node."""
        if self._sampler is None:
            self._sampler = StatsSampler(self.router, exclude=(self.namespace,), interval=self.interval)
        return self._sampler

    @property
    def cluster(self) -> ClusterSampler:
        """The cluster view shared by every page of this node."""
        if self._cluster is None:
            self._cluster = ClusterSampler(self.router, exclude=(self.namespace,), interval=self.interval)
        return self._cluster

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
        """Start pushing snapshots and the cluster view to this page (the loops die with its WebSocket)."""
        conn.link.spawn(self._push, conn)
        conn.link.spawn(self._push_cluster, conn)

    async def _push(self, conn: Connection) -> None:
        # Wait for CONNECTED, send the history once, then one snapshot per interval.
        if not await _opened(conn):
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


    async def _push_cluster(self, conn: Connection) -> None:
        # Its own loop: a node slow to answer delays this table, never the node's own snapshots.
        if not await _opened(conn):
            return
        cluster = self.cluster
        try:
            while True:
                try:
                    rows: list[NodeRow] | None = await cluster.latest()
                except BackendUnavailable:
                    rows = None
                if conn.state is not ConnectionState.OPEN:
                    return
                if rows is not None:
                    await conn.emit("cluster", rows, volatile=True)
                await anyio.sleep(self.interval - (anyio.current_time() % self.interval))
        except (ConnectionClosed, BackendUnavailable):
            return


async def _opened(conn: Connection) -> bool:
    while conn.state is ConnectionState.CONNECTING:
        await anyio.sleep(0.01)
    return conn.state is ConnectionState.OPEN


class DashboardApp:
    """The ASGI app of :func:`dashboard_app`: the page at its root and a token at ``token``."""

    def __init__(
        self, router: RealtimeRouter, *, auth: AuthCheck, realtime_path: str, title: str, needs_session: bool = False
    ) -> None:
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
        self.needs_session = needs_session
        self._page = resources.files(__name__).joinpath("dashboard.html").read_text("utf-8")

    def mount(self, app: Any, path: str = "/dashboard") -> None:
        """Serve the dashboard at ``path`` of a Starlette (or FastAPI) app, checking what ``auth`` needs.

        Args:
            app: the application; with ``needs_session=True`` it must have ``SessionMiddleware``
                already (add middleware first, then mount).
            path: the mount path.

        Raises:
            SessionMiddlewareMissing: ``needs_session=True`` and ``app`` has no ``SessionMiddleware``.
        """
        if self.needs_session and has_session_middleware(app) is False:
            raise SessionMiddlewareMissing("dashboard_app(..., needs_session=True): its auth reads request.session")
        getattr(app, "router", app).routes.append(Mount(path.rstrip("/") or "/", app=self))

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
        if self.needs_session and "session" not in request.scope:
            raise SessionMiddlewareMissing("dashboard_app(..., needs_session=True): its auth reads request.session")
        try:
            allowed = self.auth(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except AssertionError as exc:
            # Starlette's own words for a missing SessionMiddleware: say what to do instead of a bare 500.
            if "SessionMiddleware" in str(exc) and "session" not in request.scope:
                raise SessionMiddlewareMissing() from exc
            raise
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
    router: RealtimeRouter,
    *,
    auth: AuthCheck,
    realtime_path: str = "/realtime",
    title: str = "starlette-realtime",
    needs_session: bool = False,
) -> DashboardApp:
    """The mountable dashboard: the page, behind ``auth``.

    Args:
        router: the router to show; its endpoints must include :class:`DashboardEndpoint`.
        auth: called with each request for the page or a WebSocket token; return
            ``True`` (or an awaitable of it) to allow it.  There is no default:
            pass ``lambda request: True`` only if the whole app is private.
        realtime_path: the path where the router is mounted, as the browser sees it.
        title: the page's title.
        needs_session: ``auth`` reads ``request.session``: :meth:`DashboardApp.mount` then
            checks that the app has Starlette's ``SessionMiddleware``, and a request without a
            session fails with :class:`SessionMiddlewareMissing` (not a bare ``AssertionError``).

    Returns:
        An ASGI app: ``.mount(app, "/dashboard")`` (checked), or ``Mount("/dashboard", ...)``.

    Raises:
        ValueError: the router has no :class:`DashboardEndpoint`.
        TypeError: ``auth`` is not callable.
    """
    return DashboardApp(router, auth=auth, realtime_path=realtime_path, title=title, needs_session=needs_session)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


__all__ = [
    "DASHBOARD_NAMESPACE",
    "ClusterSampler",
    "DashboardApp",
    "DashboardEndpoint",
    "NodeRow",
    "SessionMiddlewareMissing",
    "Snapshot",
    "StatsSampler",
    "dashboard_app",
    "has_session_middleware",
    "histogram_quantile",
]
