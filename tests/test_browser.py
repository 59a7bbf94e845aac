"""The browser client and the chat demo in a real headless Chromium (Debian's, driven by Playwright).

The demo app runs in a uvicorn subprocess (``demo_app:app``) on a fixed port, so that a test
can stop, freeze or restart it; Python clients (``starlette_realtime.client``) talk to the
same server.  Chromium's network emulation (``context.set_offline``) keeps a page from
reconnecting while a test arranges what happens in its absence.

Set ``DEMO_SCREENSHOT=<path>`` to save the screenshot of the docs (``scripts/screenshots`` does).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import eventually
from procs import Node

from starlette_realtime.client import RealtimeClient

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
TIMEOUT = 15_000  # ms, for every Playwright wait
ROOT = Path(__file__).resolve().parent.parent
# One's own message shows as "live" (back through the room) or "sent" (its ACK came first), never stays "pending".
SENT = re.compile("^(live|sent)$")

# The browser marker's guard (conftest.need) fails these tests in CI, or skips them, when
# Chromium or Playwright is missing: the import must not skip the module before it runs.
async_api: Any = importlib.import_module("playwright.async_api") if importlib.util.find_spec("playwright") else None
if async_api is not None:
    async_api.expect.set_options(timeout=TIMEOUT)


def expect(*args: Any) -> Any:
    return async_api.expect(*args)


@contextlib.contextmanager
def demo_server(**env: str) -> Iterator[Node]:
    node = Node("demo_app:app", env=env).start()
    try:
        yield node
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)  # in case a test froze it
        node.kill()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_chat(browser: Any, node: Node, name: str) -> Any:
    """A page of its own (own storage) signed in as ``name`` and connected."""
    context = await browser.new_context(viewport={"width": 1100, "height": 620})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(node.http + "/")
    await page.fill("#name", name)
    await page.click("#login-form button")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


async def say(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def python_client(node: Node, name: str, room: str, received: list[dict[str, Any]]) -> RealtimeClient:
    async with httpx.AsyncClient() as http:
        token = (await http.post(node.http + "/token", json={"name": name})).json()["token"]
    client = RealtimeClient(node.url + "/realtime", namespaces=["/chat"], auth=token, reconnection_delay=0.2)
    client.on("message", received.append, namespace="/chat")
    await client.connect()
    await client.call("join", room, namespace="/chat")
    return client


def message(page: Any, text: str) -> Any:
    return page.locator("#messages .msg", has=page.locator(".text", has_text=text))


async def test_two_pages_chat_with_presence_and_typing() -> None:
    with anyio.fail_after(60), demo_server() as node:
        async with chromium() as browser:
            ada = await open_chat(browser, node, "ada")
            grace = await open_chat(browser, node, "grace")
            # Presence: each page lists both users, its own marked.
            for page in (ada, grace):
                await expect(page.locator("#members li")).to_have_text(["ada", "grace"])
            await expect(ada.locator("#members li.me")).to_have_text("ada")

            await say(ada, "Hi Grace! Is the build green?")
            await expect(message(grace, "Is the build green?")).to_have_attribute("data-user", "ada")
            await say(grace, "All green. Shipping it after lunch.")
            await expect(message(ada, "Shipping it after lunch")).to_have_attribute("data-source", "live")
            await expect(message(grace, "Shipping it after lunch")).to_have_class("msg mine")

            # Typing notices are volatile emits, shown to the others only.
            await grace.type("#text", "one more thing", delay=10)
            await expect(ada.locator("#typing")).to_have_text("grace is typing…")
            await expect(grace.locator("#typing")).to_have_text("")

            # A second room: only its members see its messages.
            for page in (ada, grace):
                await page.fill("#room-name", "ops")
                await page.press("#room-name", "Enter")
                await expect(page.locator("#room-title")).to_have_text("ops")
            await expect(ada.locator("#members li")).to_have_text(["ada", "grace"])
            await say(ada, "Deploy window opens at 14:00")
            await expect(message(grace, "Deploy window opens")).to_be_visible()
            await expect(message(grace, "Is the build green?")).to_have_count(0)  # that was in #lobby

            if os.environ.get("DEMO_SCREENSHOT"):
                await ada.click('#rooms li[data-room="lobby"]')
                await say(ada, "Great, thanks!")
                await expect(message(ada, "Great, thanks!")).to_have_class("msg mine")
                await grace.click('#rooms li[data-room="lobby"]')
                await grace.type("#text", "See you", delay=10)
                await expect(ada.locator("#typing")).to_have_text("grace is typing…")
                await ada.screenshot(path=str(ROOT / os.environ["DEMO_SCREENSHOT"]))

            # Closing a page takes its user offline for the other one.
            await grace.context.close()
            await expect(ada.locator("#members li")).to_have_text(["ada"])
            assert ada.errors == []


MSGPACK_ROUND_TRIP = """async () => {
  const { RealtimeClient } = await import("/realtime/client.js");
  const res = await fetch("/token", { method: "POST", headers: { "content-type": "application/json" },
                                     body: JSON.stringify({ name: "mp" }) });
  const { token } = await res.json();
  // A relative URL without the trailing slash: the client adds it.
  const client = new RealtimeClient("/realtime", { namespaces: ["/chat"], encoding: "msgpack", auth: token });
  const received = new Promise((resolve) => client.on("message", (msg, meta) => resolve([msg, meta])));
  await client.connect();
  await client.call("join", "lobby");
  const sent = await client.call("say", { room: "lobby", text: "binary ✓" });
  const [msg, meta] = await received;
  client.close();
  return { url: client.url, sent: sent.text, received: msg.text, same: msg.id === sent.id, room: meta.room };
}"""


async def test_msgpack_client_in_chromium_talks_to_the_real_server() -> None:
    with anyio.fail_after(60), demo_server() as node:
        async with chromium() as browser:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT)
            await page.goto(node.http + "/")
            result = await page.evaluate(MSGPACK_ROUND_TRIP)
            assert result == {"url": "/realtime/", "sent": "binary ✓", "received": "binary ✓", "same": True,
                              "room": "lobby"}


async def test_page_answers_heartbeats_and_detects_a_frozen_server() -> None:
    with anyio.fail_after(60), demo_server(DEMO_PING_INTERVAL="0.5", DEMO_PING_TIMEOUT="0.5") as node:
        async with chromium() as browser:
            page = await open_chat(browser, node, "ada")
            assert await page.evaluate("demo.client.server.pingInterval") == 0.5
            await page.evaluate("() => { window.seen = []; demo.client.onState((s) => seen.push(s)); }")
            # The server closes a silent client after 0.5 + 0.5 s: the page's PONGs keep it open.
            await anyio.sleep(3)
            assert await page.evaluate("seen") == []

            assert node.proc is not None
            node.proc.send_signal(signal.SIGSTOP)
            try:
                # Nothing arrives from the frozen server: the page gives up on it (offline, then reconnecting).
                await page.wait_for_function("() => seen.includes('offline')")
                state = page.locator("#status")
                await expect(state).to_have_attribute("data-state", re.compile("offline|reconnecting"))
            finally:
                node.proc.send_signal(signal.SIGCONT)
            await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
            assert await page.evaluate("seen") == ["offline", "reconnecting", "connected"]
            assert page.errors == []


async def test_dropped_page_recovers_missed_messages_and_sends_its_queue() -> None:
    with anyio.fail_after(60), demo_server() as node:
        async with chromium() as browser:
            page = await open_chat(browser, node, "ada")
            received: list[dict[str, Any]] = []
            bot = await python_client(node, "bot", "lobby", received)
            try:
                await expect(page.locator("#members li")).to_have_text(["ada", "bot"])
                await page.context.set_offline(True)  # no reconnecting until the test says so
                await page.evaluate("demo.dropConnection()")
                status = page.locator("#status")
                await expect(status).to_have_attribute("data-state", "offline")
                for n in range(3):
                    await bot.call("say", {"room": "lobby", "text": f"while you were away {n}"}, namespace="/chat")
                await say(page, "typed while offline")
                await expect(status).to_have_attribute("data-queued", "1")
                await expect(status.locator(".label")).to_contain_text("1 message queued")
                await expect(message(page, "typed while offline")).to_have_attribute("data-source", "pending")

                await page.context.set_offline(False)
                await expect(status).to_have_attribute("data-state", "connected")
                assert await page.evaluate("demo.client.recovered('/chat')") is True
                # Its members were refreshed with the built-in $presence.list call.
                await expect(page.locator("#members li")).to_have_text(["ada", "bot"])
                listing = await page.evaluate("async () => await demo.client.call('$presence.list', {room: 'lobby'})")
                assert [m["user"] for m in listing["members"]] == ["ada", "bot"]
                # Replayed by the protocol (events), not reloaded from the app's history.
                for n in range(3):
                    await expect(message(page, f"while you were away {n}")).to_have_attribute("data-source", "live")
                await expect(message(page, "typed while offline")).to_have_attribute("data-source", SENT)
                await expect(status).to_have_attribute("data-queued", "0")
                texts = await page.locator("#messages .msg .text").all_inner_texts()
                assert texts == [f"while you were away {n}" for n in range(3)] + ["typed while offline"]
                await eventually(lambda: any(m["text"] == "typed while offline" for m in received),
                                 message="the Python client to receive 'typed while offline'")
                assert [m["text"] for m in received].count("typed while offline") == 1
                assert page.errors == []
            finally:
                await bot.close()


async def test_page_reconnects_to_a_restarted_server_and_shows_what_it_missed() -> None:
    with anyio.fail_after(90), demo_server() as node:
        async with chromium() as browser:
            page = await open_chat(browser, node, "ada")
            await say(page, "before the restart")
            await expect(message(page, "before the restart")).to_have_attribute("data-source", SENT)
            status = page.locator("#status")

            node.terminate()
            await expect(status).to_have_attribute("data-state", "offline")
            await expect(status.locator(".label")).to_contain_text("retrying")
            await page.context.set_offline(True)  # hold the page off while the server comes back
            await say(page, "queued across the restart")
            await expect(status).to_have_attribute("data-queued", "1")

            node.start()  # same port, empty memory: every session is gone
            received: list[dict[str, Any]] = []
            bot = await python_client(node, "bot", "lobby", received)
            try:
                for n in range(3):
                    await bot.call("say", {"room": "lobby", "text": f"said during your absence {n}"}, namespace="/chat")
                await page.context.set_offline(False)
                await expect(status).to_have_attribute("data-state", "connected")
                assert await page.evaluate("demo.client.recovered('/chat')") is False
                await expect(page.locator("#notice")).to_contain_text("reloaded the rooms")
                # The new server cannot replay them: they come from the demo's per-room history.
                for n in range(3):
                    await expect(message(page, f"said during your absence {n}")).to_have_attribute(
                        "data-source", "history"
                    )
                await expect(message(page, "queued across the restart")).to_have_attribute("data-source", SENT)
                await expect(message(page, "before the restart")).to_have_count(1)
                await expect(page.locator("#members li")).to_have_text(["ada", "bot"])
                await eventually(lambda: any(m["text"] == "queued across the restart" for m in received),
                                 message="the Python client to receive 'queued across the restart'")
                assert page.errors == []
            finally:
                await bot.close()
