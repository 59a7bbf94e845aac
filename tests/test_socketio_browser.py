"""socket.io-client's browser bundle in a real headless Chromium against our endpoints (polling, then the upgrade)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route

from starlette_realtime import RealtimeRouter
from tests.conftest import CHROMIUM, ROOT, ServerThread, need, serve
from tests.socketio.app import Admin, Main

pytestmark = pytest.mark.browser

BUNDLE = ROOT / "tests" / "socketio" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-sync"]
# Imported here, not at the top: the browser marker's guard must run first (it fails in CI, or skips, without it).
async_api: Any = importlib.import_module("playwright.async_api") if importlib.util.find_spec("playwright") else None

PAGE = """<!doctype html>
<script src="/sio-client.js"></script>
<script>
function call(socket, event, ...args) {
  return new Promise((resolve, reject) =>
    socket.timeout(5000).emit(event, ...args, (err, ...reply) => (err ? reject(err) : resolve(reply))));
}
window.result = (async () => {
  const socket = io({ auth: { token: "browser" } });
  await new Promise((resolve) => socket.once("connect", resolve));
  const [auth] = await call(socket, "handshake");
  const [echo] = await call(socket, "echo", { a: [1, "b"] });
  const sums = await call(socket, "sum", 2, 3);
  const [name, size, back] = await call(socket, "upload", "x.bin", new Uint8Array([1, 2, 3]));
  for (let i = 0; i < 100 && socket.io.engine.transport.name !== "websocket"; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const [after] = await call(socket, "echo", "after upgrade");
  const refused = io("/admin", { auth: { token: "no" }, forceNew: true });
  const error = await new Promise((resolve) => refused.once("connect_error", resolve));
  return { auth, echo, sums, name, size, back: Array.from(new Uint8Array(back)), after,
           transport: socket.io.engine.transport.name, refused: error.message };
})();
</script>
"""


async def page(request: Any) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def bundle(request: Any) -> FileResponse:
    return FileResponse(BUNDLE, media_type="text/javascript")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    realtime = RealtimeRouter([Main, Admin], socketio=True)
    app = Starlette(
        routes=[Route("/sio.html", page), Route("/sio-client.js", bundle), Mount("/", realtime)],
        lifespan=realtime.lifespan,
    )
    with serve(app) as srv:
        yield srv


async def test_socketio_client_in_chromium(server: ServerThread) -> None:
    need("socket.io-client")
    with anyio.fail_after(60):
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                tab = await browser.new_page()
                await tab.goto(server.http + "/sio.html")
                result = await tab.evaluate("window.result")
            finally:
                await browser.close()
    assert result == {
        "auth": {"token": "browser"},
        "echo": {"a": [1, "b"]},
        "sums": [5, 6],
        "name": "x.bin",
        "size": 3,
        "back": [3, 2, 1],
        "after": "after upgrade",
        "transport": "websocket",
        "refused": "admin only",
    }
