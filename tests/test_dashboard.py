"""The live dashboard: its auth and session check, its WebSocket namespace, the cluster view, and the page in a
real Chromium over real uvicorn (one node, and two nodes on a real redis-server)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
import websockets
from apps import Chat
from conftest import CHROMIUM, ManualClock, ServerThread, serve
from procs import Node, RedisServer
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from starlette_realtime import AckError, RealtimeRouter
from starlette_realtime.client import RealtimeClient
from starlette_realtime.cluster import NodeStats
from starlette_realtime.dashboard import (
    ClusterSampler,
    DashboardEndpoint,
    SessionMiddlewareMissing,
    StatsSampler,
    dashboard_app,
    histogram_quantile,
)
from starlette_realtime.dashboard import stats as dashboard_stats
from starlette_realtime.dashboard.stats import node_rows
from starlette_realtime.prometheus import PrometheusMetrics, metrics_app
from starlette_realtime.testing import RealtimeTester

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"cookie": "admin=yes"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def is_admin(request: Request) -> bool:
    return request.cookies.get("admin") == "yes"


def make_app() -> tuple[Starlette, RealtimeRouter]:
    metrics = PrometheusMetrics()
    realtime = RealtimeRouter([Chat, DashboardEndpoint], metrics=metrics)
    app = Starlette(
        routes=[
            Route("/metrics", metrics_app(metrics)),
            Mount("/realtime", realtime),
            Mount("/dashboard", dashboard_app(realtime, auth=is_admin, realtime_path="/realtime")),
        ],
        lifespan=realtime.lifespan,
    )
    return app, realtime


@pytest.fixture
def served() -> Iterator[tuple[ServerThread, RealtimeRouter]]:
    app, realtime = make_app()
    with serve(app) as srv:
        yield srv, realtime


@pytest.fixture
def server(served: tuple[ServerThread, RealtimeRouter]) -> ServerThread:
    return served[0]


def chat(srv: ServerThread) -> RealtimeClient:
    return RealtimeClient(srv.url + "/realtime", namespaces=["/chat"])


# Without a browser -------------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = (0.001, 0.01, 0.1)
    assert histogram_quantile(0.5, bounds, (0, 0, 0, 0)) is None
    # 10 observations, all in (0.001, 0.01]: the median is halfway through that bucket.
    assert histogram_quantile(0.5, bounds, (0, 10, 10, 10)) == pytest.approx(0.0055)
    assert histogram_quantile(0.5, bounds, (10, 10, 10, 10)) == pytest.approx(0.0005)
    # Above the highest finite bound: that bound.
    assert histogram_quantile(0.99, bounds, (0, 0, 0, 5)) == 0.1


def test_the_dashboard_needs_its_endpoint_and_an_auth_check() -> None:
    bare = RealtimeRouter([Chat])
    with pytest.raises(ValueError, match="DashboardEndpoint"):
        dashboard_app(bare, auth=is_admin)
    with pytest.raises(TypeError):
        dashboard_app(RealtimeRouter([Chat, DashboardEndpoint]), auth=None)  # type: ignore[arg-type]


def is_admin_by_session(request: Request) -> bool:
    return bool(request.session.get("role") == "admin")


async def test_the_session_requirement_is_checked_at_mount_time() -> None:
    realtime = RealtimeRouter([Chat, DashboardEndpoint])
    dashboard = dashboard_app(realtime, auth=is_admin_by_session, needs_session=True)
    with pytest.raises(SessionMiddlewareMissing) as err:
        dashboard.mount(Starlette(), "/dashboard")
    assert isinstance(err.value, RuntimeError)
    assert "Middleware(SessionMiddleware, secret_key=...)" in str(err.value)
    assert "needs_session=True" in str(err.value)

    async def login(request: Request) -> PlainTextResponse:
        request.session["role"] = "admin"
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/login", login)], middleware=[Middleware(SessionMiddleware, secret_key="s")])
    dashboard.mount(app, "/dashboard")  # with the middleware: mounted
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            assert (await http.get("/dashboard/")).status_code == 403
            assert (await http.get("/login")).status_code == 200
            assert (await http.get("/dashboard/")).status_code == 200
            assert (await http.get("/dashboard/token")).json()["token"]


async def test_a_request_without_a_session_names_the_fix() -> None:
    realtime = RealtimeRouter([Chat, DashboardEndpoint])
    # Mounted as a plain route, past the mount-time check: the first request says what is missing...
    checked = Starlette(routes=[Mount("/d", dashboard_app(realtime, auth=is_admin_by_session, needs_session=True))])
    # ...and so does an auth check that reads the session without saying so (Starlette's AssertionError).
    unsaid = Starlette(routes=[Mount("/d", dashboard_app(realtime, auth=is_admin_by_session))])
    for app in (checked, unsaid):
        transport = httpx.ASGITransport(app=app)
        with anyio.fail_after(10):
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                with pytest.raises(SessionMiddlewareMissing, match="add Middleware\\(SessionMiddleware"):
                    await http.get("/d/")


def test_node_rows_turn_running_totals_into_rates() -> None:
    before = NodeStats("a", 100.0, 50.0, 2, {"/chat": 2, "/_dashboard": 1}, 2, 1, 100, 10, 40.0, 4000.0, 9000.0, 1.0)
    now = NodeStats("a", 102.0, 52.0, 3, {"/chat": 3, "/_dashboard": 1}, 3, 2, 300, 20, 60.0, 6000.0, 9000.0, 1.0)
    (first,) = node_rows([before], {}, exclude=frozenset({"/_dashboard"}))
    assert (first.connections, first.events_out, first.events_in) == (2, None, None)
    (row,) = node_rows([now], {"a": before}, exclude=frozenset({"/_dashboard"}))
    assert (row.node, row.connections, row.links, row.users, row.rooms) == ("a", 3, 3, 3, 2)
    assert (row.events_out, row.events_in, row.bytes_in, row.bytes_out, row.errors) == (100.0, 10.0, 1000.0, 0.0, 0.0)
    restarted = NodeStats("a", 103.0, 53.0, deliveries=5)  # counters went back: no rate, rather than a negative one
    (row,) = node_rows([restarted], {"a": now}, exclude=frozenset())
    assert row.events_out is None and row.connections == 0


async def test_every_node_answers_a_stats_request_on_one_node() -> None:
    metrics = PrometheusMetrics()
    realtime = RealtimeRouter([Chat, DashboardEndpoint], metrics=metrics, node_id="solo")
    with anyio.fail_after(20):
        async with RealtimeTester(realtime) as tester:
            (empty,) = await realtime.node_stats()
            assert (empty.node, empty.links, empty.connections, empty.rooms) == ("solo", 0, {}, 0)
            cluster = ClusterSampler(realtime, exclude=["/_dashboard"], interval=0.0)
            assert [r.node for r in await cluster.latest()] == ["solo"]
            a = await tester.connect("/chat")
            b = await tester.connect("/chat")
            await a.call("join", "lobby")
            await b.call("join", "ops")
            await a.call("shout", {"room": "lobby", "text": "hi"})
            (stats,) = await realtime.node_stats()
            assert stats.connections == {"/chat": 2} and stats.links == 2 and stats.rooms == 2
            assert stats.deliveries >= 1 and stats.events_in is not None and stats.events_in >= 3
            (row,) = await cluster.latest()
            assert row.connections == 2 and row.events_in is not None and row.events_in > 0
            assert "ClusterSampler" in repr(cluster)


async def test_page_and_token_are_behind_auth(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=5) as h:
        assert (await h.get("/dashboard/")).status_code == 403
        assert (await h.get("/dashboard/token")).status_code == 403
        assert (await h.get("/dashboard/nothing", headers=ADMIN)).status_code == 404
        assert (await h.post("/dashboard/token", headers=ADMIN)).status_code == 405
        page = await h.get("/dashboard/", headers=ADMIN)
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce and f'nonce="{nonce.group(1)}"' in page.text
        assert "default-src 'none'" in csp and page.headers["cache-control"] == "no-store"
        # Nothing from the network: no absolute URL in the page.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
        config = json.loads(re.search(r'<script type="application/json" id="config">(.*?)</script>', page.text)[1])  # type: ignore[index]
        assert config["tokenUrl"] == "/dashboard/token" and config["clientUrl"] == "/realtime/client.js"
        token = (await h.get("/dashboard/token", headers=ADMIN)).json()["token"]
    assert isinstance(token, str) and token


async def test_the_namespace_takes_only_dashboard_tokens(served: tuple[ServerThread, RealtimeRouter]) -> None:
    server, realtime = served
    async with httpx.AsyncClient(base_url=server.http, timeout=5) as h:
        token = (await h.get("/dashboard/token", headers=ADMIN)).json()["token"]
    async with websockets.connect(server.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
        async with asyncio.timeout(5):
            await ws.recv()  # HELLO
            await ws.send(json.dumps([1, "/_dashboard", None]))
            assert json.loads(await ws.recv())[2] == "AUTHENTICATION_REQUIRED"
            # A session string of another namespace is signed with the same key, but is no dashboard token.
            await ws.send(json.dumps([1, "/chat", None]))
            connected = json.loads(await ws.recv())
            await ws.send(json.dumps([1, "/_dashboard", {"token": connected[3]}]))
            assert json.loads(await ws.recv())[2] == "INVALID_TOKEN"
            # A genuine token from long ago: signed, but too old.
            old = realtime.signer.sign("dashboard-token", "1000000000.x")
            await ws.send(json.dumps([1, "/_dashboard", {"token": old}]))
            assert json.loads(await ws.recv())[2] == "INVALID_TOKEN"
            await ws.send(json.dumps([1, "/_dashboard", {"token": token}]))
            assert json.loads(await ws.recv())[0] == 2  # CONNECTED
            events: dict[str, Any] = {}
            while len(events) < 3:  # history once, then stats and cluster each second
                frame = json.loads(await ws.recv())
                if frame[0] == 5:
                    events.setdefault(frame[2], frame[3])
    assert isinstance(events["history"], list)
    assert events["stats"]["namespaces"] == {"/chat": 1, "/_dashboard": 1}
    assert events["stats"]["connections"] == 1  # the dashboard's own connection is left out
    (node,) = events["cluster"]  # the cluster view of a one-node router: this node
    assert node["node"] == realtime.node_id and node["connections"] == 1 and node["links"] == 1


async def test_the_sampler_computes_rates_and_quantiles(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sampler's interval rules run on a clock of the test's (the module's `time`, with the
    # wall clock left alone): no race between a 50 ms interval and a loaded machine.
    clock = ManualClock()
    monkeypatch.setattr(dashboard_stats, "time", SimpleNamespace(monotonic=clock, time=time.time))
    metrics = PrometheusMetrics()
    router = RealtimeRouter([Chat, DashboardEndpoint], metrics=metrics)
    sampler = StatsSampler(router, interval=0.05)
    first = sampler.latest()
    assert first.events_in is None and first.connections == 0
    for _ in range(20):
        metrics.handler_finished("/chat", "say", metrics.handler_started() - 0.003, None)
    metrics.broadcast("/chat", "said", 10, 1000, 0.0)
    clock.advance(0.06)
    second = sampler.latest()
    assert second.events_in is not None and second.events_in > 0
    assert second.bytes_out is not None and second.bytes_out > 0
    assert second.handler_p50 is not None and 2.5 <= second.handler_p50 <= 5.0
    clock.advance(0.04)
    assert sampler.latest() is second  # shared within an interval
    clock.advance(0.01)
    assert sampler.latest() is not second
    assert "StatsSampler" in repr(sampler)


# In Chromium -------------------------------------------------------------------------------------------------


@pytest.mark.browser  # conftest.need: fails in CI, else skips, without Chromium and Playwright
async def test_the_page_shows_live_figures(server: ServerThread, tmp_path: Path) -> None:
    """The page in Chromium; its screenshot goes to a temporary directory, or to ``$DASHBOARD_SCREENSHOT``
    (``scripts/screenshots`` sets it for the docs' image)."""
    from playwright.async_api import async_playwright, expect

    screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1360, "height": 800})
            await context.add_cookies([{"name": "admin", "value": "yes", "url": server.http}])
            page = await context.new_page()
            problems: list[str] = []
            foreign: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("request", lambda req: None if req.url.startswith(server.http) else foreign.append(req.url))
            await page.goto(server.http + "/dashboard/", timeout=10_000)
            await expect(page.locator("#status")).to_have_text("connected", timeout=10_000)
            connections = page.locator("#connections")
            await expect(connections).to_have_text("0", timeout=10_000)

            clients = [chat(server) for _ in range(3)]
            for c in clients:
                await c.connect()
            await expect(connections).to_have_text("3", timeout=10_000)
            await clients[0].close()
            await clients[1].close()
            await expect(connections).to_have_text("1", timeout=10_000)

            # Some traffic, so that the charts and tables have something to show.
            crowd = [chat(server) for _ in range(6)]
            for i, c in enumerate(crowd):
                await c.connect()
                await c.call("join", "lobby" if i < 4 else "ops", namespace="/chat", timeout=5)
            async with asyncio.timeout(30):
                for i in range(160):
                    sender = crowd[i % len(crowd)]
                    await sender.call("shout", {"room": "lobby", "text": f"message {i}"}, namespace="/chat", timeout=5)
                    if i % 25 == 0:
                        with pytest.raises(AckError):
                            await sender.call("fail", namespace="/chat", timeout=5)
                    await asyncio.sleep(0.04)  # traffic spread over the page's 1 s samples, so it draws rates
            await expect(connections).to_have_text("7", timeout=10_000)
            await expect(page.locator("#rooms")).to_have_text("2", timeout=10_000)
            await expect(page.locator("#top-rooms tbody tr")).to_have_count(2, timeout=10_000)
            await expect(page.locator("#top-rooms tbody tr").first).to_contain_text("lobby")
            assert await page.locator("#events_out").text_content() != "–"
            assert await page.locator("#handler_p95").text_content() != "–"
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(screenshot), full_page=True)
            assert (await anyio.Path(screenshot).stat()).st_size > 10_000
            for c in [*crowd, clients[2]]:
                await c.close()
            await expect(connections).to_have_text("0", timeout=10_000)
            assert problems == []
            assert foreign == []
        finally:
            await browser.close()


async def demo_client(node: Node, name: str, room: str) -> RealtimeClient:
    async with httpx.AsyncClient(timeout=5) as http:
        token = (await http.post(node.http + "/token", json={"name": name})).json()["token"]
    client = RealtimeClient(node.url + "/realtime", namespaces=["/chat"], auth=token)
    await client.connect()
    await client.call("join", room, namespace="/chat", timeout=5)
    return client


@pytest.mark.redis  # conftest.need: fails in CI, else skips, without redis-server, Chromium and Playwright
@pytest.mark.browser
async def test_the_cluster_view_lists_every_node_over_redis() -> None:
    """Two uvicorn nodes of the demo (with its dashboard) on a redis-server of the test's own: the page served by
    one node lists both, with each node's connections, rooms and rates, through the cluster control channel.
    ``$DASHBOARD_CLUSTER_SCREENSHOT`` (``scripts/screenshots``) saves a picture of the table for the docs."""
    from playwright.async_api import async_playwright, expect

    with anyio.fail_after(120), RedisServer() as redis:
        env = {"DEMO_BACKEND": redis.url, "STARLETTE_REALTIME_DEMO_SECRET": "one key for the cluster",
               "DEMO_DASHBOARD": "1"}
        with Node("demo_app:app", env=env) as a, Node("demo_app:app", env=env) as b:
            on_b = [await demo_client(b, f"b{i}", "lobby") for i in range(3)]
            on_a = [await demo_client(a, "a0", "ops")]
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1360, "height": 900})
                    problems: list[str] = []
                    foreign: list[str] = []
                    page.on("pageerror", lambda exc: problems.append(str(exc)))
                    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
                    page.on("request", lambda req: None if req.url.startswith(a.http) else foreign.append(req.url))
                    await page.goto(a.http + "/dashboard/", timeout=10_000)
                    await expect(page.locator("#status")).to_have_text("connected", timeout=10_000)
                    await expect(page.locator("#node-count")).to_have_text("2", timeout=15_000)
                    this = page.locator("#nodes tbody tr.self")
                    other = page.locator("#nodes tbody tr:not(.self)")
                    await expect(page.locator("#node")).not_to_have_text("–")
                    await expect(this).to_have_attribute("data-node", await page.locator("#node").inner_text())
                    # Columns: node, connections, WebSockets, users, rooms, events in, events out, bytes out, errors.
                    # This node: 1 chat connection, 2 WebSockets (the client's and this page's), 1 user, 1 room.
                    anything = re.compile(".*")
                    await expect(this.locator("td")).to_have_text([anything, "1", "2", "1", "1", *[anything] * 5])
                    await expect(other.locator("td").nth(1)).to_have_text("3", timeout=10_000)  # connections
                    await expect(other.locator("td").nth(2)).to_have_text("3")  # WebSockets
                    await expect(other.locator("td").nth(4)).to_have_text("1")  # rooms: lobby
                    assert await other.get_attribute("data-node") != await this.get_attribute("data-node")

                    # Traffic on node b only: its rates move, node a's events in stay at zero.
                    async with asyncio.timeout(30):
                        for i in range(60):
                            await on_b[i % 3].call("say", {"room": "lobby", "text": f"m{i}"}, namespace="/chat",
                                                   timeout=5)
                            await asyncio.sleep(0.03)
                    await expect(other.locator("td").nth(5)).not_to_have_text(re.compile("^(–|0)$"), timeout=5_000)
                    await expect(other.locator("td").nth(6)).not_to_have_text(re.compile("^(–|0)$"), timeout=5_000)
                    if os.environ.get("DASHBOARD_CLUSTER_SCREENSHOT"):  # scripts/screenshots, for the docs
                        await page.locator("#nodes").screenshot(path=os.environ["DASHBOARD_CLUSTER_SCREENSHOT"])
                    await expect(this.locator("td").nth(5)).to_have_text("0", timeout=10_000)

                    for c in on_b:
                        await c.close()
                    await expect(other.locator("td").nth(1)).to_have_text("0", timeout=10_000)
                    await expect(this.locator("td").nth(1)).to_have_text("1")
                    # A node that dies drops out of the view.
                    b.kill()
                    await expect(page.locator("#node-count")).to_have_text("1", timeout=30_000)
                    assert problems == [] and foreign == []
                finally:
                    await browser.close()
                    for c in on_a:
                        await c.close()
