"""The chat demo: its server side in-process, and its page's features in a real headless Chromium.

test_browser.py covers the browser client through the same page (reconnection, recovery, restarts);
here the page's own features are checked in the DOM: presence online and offline (this page's own
connection included), messages grouped by day and by author, initials avatars and the empty-room hint;
and the page on the official socket.io-client (``?wire=socketio``, the bundle given to the demo's
command line) chatting with a page on ours.

Set ``DEMO_SCREENSHOT=<path>`` to save the screenshot of the docs (``scripts/screenshots`` does).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import free_port, need, wait_until
from procs import Node
from starlette.testclient import TestClient

from starlette_realtime.demo import ChatEndpoint, History, create_app
from starlette_realtime.demo import __main__ as demo_main
from starlette_realtime.demo.app import Message
from starlette_realtime.exceptions import AckError
from starlette_realtime.testing import RealtimeTester


def chat_of(realtime: Any) -> ChatEndpoint:
    endpoint = realtime.endpoints["/chat"]
    assert isinstance(endpoint, ChatEndpoint)
    return endpoint


async def test_token_endpoint_issues_tokens_for_reasonable_names() -> None:
    app, realtime = create_app()
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            ok = await http.post("/token", json={"name": "  ada  "})
            assert ok.status_code == 200
            assert ok.headers["cache-control"] == "no-store"
            assert ok.json()["user"] == "ada"
            assert chat_of(realtime).tokens.verify(ok.json()["token"]).id == "ada"
            for body in ({"name": ""}, {"name": "x" * 25}, {"name": "<b>"}, {"name": 7}, ["ada"], {}):
                assert (await http.post("/token", json=body)).status_code == 422, body
            assert (await http.post("/token", content=b"not json")).status_code == 400
            assert (await http.get("/token")).status_code == 405


async def test_page_and_client_are_served_with_a_strict_policy() -> None:
    app, _ = create_app()
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert 'src="static/chat.js"' in page.text
            script = await http.get("/static/chat.js")
            assert "import(`./wire-${kind}.js`)" in script.text
            assert 'from "../realtime/client.js"' in (await http.get("/static/wire-realtime.js")).text
            assert (await http.get("/static/wire-socketio.js")).status_code == 200
            assert (await http.get("/static/chat.css")).status_code == 200
            client = await http.get("/realtime/client.js")
            assert client.headers["content-type"].startswith("text/javascript")
            # Without a socket.io-client bundle the page is told so (its switch is disabled), and none is served.
            assert (await http.get("/config.json")).json() == {"socketioClient": False}
            missing = await http.get("/vendor/socket.io.min.js")
            assert missing.status_code == 404 and "--socketio-client" in missing.text


async def test_the_page_links_to_the_contract_the_router_serves() -> None:
    app, _ = create_app()
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            page = (await http.get("/")).text
            assert 'href="realtime/asyncapi.json"' in page and 'href="realtime/types.d.ts"' in page
            document = await http.get("/realtime/asyncapi.json")
            assert document.headers["content-type"].startswith("application/json")
            assert_chat_asyncapi(document.json())
            types = await http.get("/realtime/types.d.ts")
            assert "export interface ChatClientEvents" in types.text
            assert "export interface TypingNotice" in types.text


def assert_chat_asyncapi(document: Any) -> None:
    """An AsyncAPI 3.0 document of the demo's ``/chat``: what it receives, and what it emits (``@emits``)."""
    assert document["asyncapi"] == "3.0.0"
    assert [channel["address"] for channel in document["channels"].values()] == ["/chat"]
    for operation in ("chat.receive.join", "chat.receive.say", "chat.send.message", "chat.send.typing"):
        assert operation in document["operations"], operation


async def test_the_socketio_client_bundle_is_served_from_the_file_given(tmp_path: Path) -> None:
    bundle = tmp_path / "socket.io.min.js"
    bundle.write_text("/* not ours: the user's copy of socket.io-client */")
    app, realtime = create_app(socketio_client=bundle)
    assert realtime.socketio is not None  # the router serves Socket.IO clients at /realtime/socket.io/
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            assert (await http.get("/config.json")).json() == {"socketioClient": True}
            served = await http.get("/vendor/socket.io.min.js")
            assert served.status_code == 200 and served.text == bundle.read_text()
            assert served.headers["content-type"].startswith("text/javascript")
    with pytest.raises(FileNotFoundError, match=r"socket\.io\.min\.js"):
        create_app(socketio_client=tmp_path / "missing" / "socket.io.min.js")


async def test_chat_rooms_history_presence_and_typing() -> None:
    _, realtime = create_app(history=3)
    tokens = chat_of(realtime).tokens
    with anyio.fail_after(20):
        async with RealtimeTester(realtime) as tester:
            ada = await tester.connect("/chat", auth={"token": tokens.issue("ada")})
            joined = await ada.call("join", "lobby")
            assert joined["room"] == "lobby" and joined["history"] == []
            assert [m["user"] for m in joined["presence"]["members"]] == ["ada"]
            for n in range(4):
                said = await ada.call("say", {"room": "lobby", "text": f" hello {n} "})
                assert said["user"] == "ada" and said["text"] == f"hello {n}"
            await ada.assert_pushed("message", said)  # the sender sees its own message through the room

            grace = await tester.connect("/chat", auth={"token": tokens.issue("grace")})
            joined = await grace.call("join", "lobby")
            assert [m["text"] for m in joined["history"]] == ["hello 1", "hello 2", "hello 3"]  # the last 3
            assert [m["user"] for m in joined["presence"]["members"]] == ["ada", "grace"]
            online = {"room": "lobby", "user": "grace", "status": "online"}
            await ada.wait_for(lambda: any(e == "$presence" and online.items() <= d.items() for e, d in ada.pushed))

            await grace.emit("typing", {"room": "lobby"})
            assert await ada.assert_pushed("typing") == {"room": "lobby", "user": "grace", "typing": True}
            grace.assert_not_pushed("typing")
            await grace.emit("typing", {"room": "elsewhere"})  # not a member: ignored

            # "say" joins the room first: a message queued offline is resent before the page re-joins.
            await grace.call("say", {"room": "ops", "text": "first"})
            assert [m["text"] for m in (await grace.call("join", "ops"))["history"]] == ["first"]

            for bad, code in (({"room": "lobby", "text": "   "}, "bad_text"), ({"room": "lobby", "text": "x" * 2001},
                              "bad_text"), ({"room": "Not A Room", "text": "hi"}, "bad_room")):
                with pytest.raises(AckError) as err:
                    await ada.call("say", bad)
                assert err.value.code == code
            with pytest.raises(AckError) as err:
                await ada.call("say", {"room": "lobby", "text": "hi", "extra": 1})
            assert err.value.code == "invalid_payload"

            await grace.close(1000)
            offline = {"room": "lobby", "user": "grace", "status": "offline"}
            await ada.wait_for(lambda: any(e == "$presence" and offline.items() <= d.items() for e, d in ada.pushed))
            anonymous = await tester.connect("/chat", expect_error=True)
            assert anonymous.connect_error is not None


def test_history_keeps_the_last_messages_of_the_most_recent_rooms() -> None:
    history = History(size=2, max_rooms=2)
    for room in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        for n in range(3):
            history.add(Message(f"{room}{n}", room, "u", str(n), float(n)))
    assert [m.id for m in history.get("a")] == ["a1", "a2"]
    assert history.get("b") == []
    assert [m.id for m in history.get("c")] == ["c1", "c2"]
    assert repr(history) == "History(size=2, rooms=2)"


def test_command_line_runs_the_demo_with_a_graceful_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(demo_main, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setattr(demo_main.logging, "basicConfig", lambda **kw: None)
    monkeypatch.delenv("STARLETTE_REALTIME_DEMO_SOCKETIO_CLIENT", raising=False)
    demo_main.main(["--port", "9001", "--backend", "memory://", "--log-level", "warning"])
    demo_main.main(["--dashboard"])
    bundle = tmp_path / "socket.io.min.js"
    bundle.write_text("/* socket.io-client */")
    demo_main.main(["--socketio-client", str(bundle)])
    monkeypatch.setenv("STARLETTE_REALTIME_DEMO_SOCKETIO_CLIENT", str(bundle))
    demo_main.main([])
    (call, with_dashboard, with_flag, with_env) = calls
    assert (call["host"], call["port"], call["log_level"]) == ("127.0.0.1", 9001, "warning")
    assert call["routers"][0].endpoints["/chat"].namespace == "/chat"
    assert sorted(call["routers"][0].endpoints) == ["/chat"]
    assert sorted(with_dashboard["routers"][0].endpoints) == ["/_dashboard", "/chat"]
    for run, served in ((call, False), (with_flag, True), (with_env, True)):
        assert TestClient(run["app"]).get("/config.json").json() == {"socketioClient": served}
    assert "?wire=socketio" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        demo_main.main(["--socketio-client", str(tmp_path / "nothing.js")])
    assert "--socketio-client: no file" in capsys.readouterr().err


async def test_the_dashboard_is_served_to_this_machine_only() -> None:
    app, _ = create_app(dashboard=True)
    with anyio.fail_after(10):
        for client, code in ((("127.0.0.1", 50000), 200), (("::1", 50000), 200), (("203.0.113.7", 50000), 403)):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
                assert (await http.get("/dashboard/")).status_code == code, client
                assert (await http.get("/dashboard/token")).status_code == code, client
    plain, _ = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plain), base_url="http://demo") as http:
        with anyio.fail_after(10):
            assert (await http.get("/dashboard/")).status_code == 404


# In Chromium -------------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
TIMEOUT = 15_000  # ms, for every Playwright wait
ROOT = Path(__file__).resolve().parent.parent
GREEN = "rgb(31, 157, 85)"  # --ok in chat.css
# socket.io-client's browser bundle, from the npm package pinned in tests/socketio (never copied into the repository).
BUNDLE = ROOT / "tests" / "socketio" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"

# The browser marker's guard (conftest.need) fails these tests in CI, or skips them, when Chromium or
# Playwright is missing: the import must not skip the module before that guard runs.
async_api: Any = importlib.import_module("playwright.async_api") if importlib.util.find_spec("playwright") else None
if async_api is not None:
    async_api.expect.set_options(timeout=TIMEOUT)


def expect(*args: Any) -> Any:
    return async_api.expect(*args)


@contextlib.contextmanager
def seeded_demo() -> Iterator[Node]:
    node = Node("demo_app:app", env={"DEMO_SEED": "1", "DEMO_PING_INTERVAL": "1", "DEMO_PING_TIMEOUT": "1"}).start()
    try:
        yield node
    finally:
        node.kill()


@contextlib.contextmanager
def demo_command(*args: str) -> Iterator[str]:
    """``python -m starlette_realtime.demo`` itself, with ``args``, on a free port; yields its address."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        command = [sys.executable, "-m", "starlette_realtime.demo", "--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen([*command, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
            return proc.poll() is not None  # exited: said below

        try:
            wait_until(listening, timeout=60, message="the demo to listen")
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the demo exited with {proc.returncode}: {log.read().decode(errors='replace')}")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_chat(browser: Any, base: str, name: str) -> Any:
    """A page of its own (own storage) signed in as ``name`` and connected; CSP reports count as errors.

    ``page.requests`` and ``page.sockets`` list the addresses of its HTTP requests and WebSockets.
    """
    context = await browser.new_context(viewport={"width": 1100, "height": 640})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.errors = errors
    page.requests, page.sockets = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("websocket", lambda ws: page.sockets.append(ws.url))
    await page.goto(base + "/")
    await page.fill("#name", name)
    await page.click("#login-form button")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


async def say(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


def message(page: Any, text: str) -> Any:
    return page.locator("#messages .msg", has=page.locator(".text", has_text=text))


def person(page: Any, listing: str, user: str) -> Any:
    return page.locator(f'#{listing} li[data-user="{user}"]')


async def dot_colour(item: Any) -> str:
    return str(await item.locator(".dot").evaluate("(d) => getComputedStyle(d).backgroundColor"))


@pytest.mark.browser  # conftest.need: fails in CI, else skips, without Chromium and Playwright
async def test_the_page_groups_messages_draws_avatars_and_shows_who_is_offline() -> None:
    with anyio.fail_after(90), seeded_demo() as node:
        async with chromium() as browser:
            ada = await open_chat(browser, node.http, "Ada Lovelace")
            # Yesterday's messages (seeded) under their day, grouped: one head with the author, one follower.
            lin = ada.locator('#messages .msg[data-user="Lin Chen"]')
            await expect(lin).to_have_count(2)
            await expect(ada.locator("#messages .day")).to_have_text(["Yesterday"])
            assert [await m.get_attribute("data-group") for m in await lin.all()] == ["head", "next"]
            await expect(lin.first.locator(".avatar")).to_have_attribute("data-initials", "LC")
            await expect(lin.first.locator(".who")).to_be_visible()
            await expect(lin.nth(1).locator(".who")).to_be_hidden()
            await expect(lin.nth(1).locator(".avatar")).to_be_hidden()
            await expect(ada.locator("#empty")).to_be_hidden()
            # An author who is not here is listed offline, with a grey dot; this page's user is online.
            await expect(ada.locator("#members li")).to_have_text(["Ada Lovelace"])
            await expect(person(ada, "members", "Ada Lovelace")).to_have_attribute("data-status", "online")
            await expect(person(ada, "offline", "Lin Chen")).to_have_attribute("data-status", "offline")
            await expect(person(ada, "offline", "Lin Chen").locator(".avatar")).to_have_attribute("data-initials", "LC")
            assert await dot_colour(person(ada, "members", "Ada Lovelace")) == GREEN
            assert await dot_colour(person(ada, "offline", "Lin Chen")) != GREEN
            # No socket.io-client bundle was given: the switch to it is disabled and says how to turn it on.
            switch = ada.locator('#wire button[data-wire="socketio"]')
            await expect(switch).to_have_attribute("aria-disabled", "true")
            await expect(ada.locator('#wire button[data-wire="realtime"]')).to_have_attribute("aria-pressed", "true")
            await switch.click(force=True)  # aria-disabled: Playwright would wait for it to be enabled
            await expect(ada.locator("#notice")).to_contain_text("start the demo with --socketio-client")
            assert "wire=" not in ada.url
            # The schema links: the AsyncAPI document and the TypeScript types the router serves.
            asyncapi = ada.locator("#contract a", has_text="AsyncAPI")
            await expect(asyncapi).to_be_visible()
            document = await ada.context.request.get(await asyncapi.evaluate("(a) => a.href"))
            assert document.ok and document.headers["content-type"].startswith("application/json")
            assert_chat_asyncapi(await document.json())
            types = await ada.context.request.get(await ada.locator("#contract a", has_text="types.d.ts").evaluate(
                "(a) => a.href"))
            assert types.ok and "export interface ChatServerEvents" in await types.text()
            login = await ada.context.new_page()  # a tab of its own: not signed in
            await login.goto(node.http + "/?wire=socketio")
            await expect(login.locator("#wire-note")).to_contain_text("--socketio-client")
            await expect(login.locator("#wire-note")).to_contain_text("This page uses starlette-realtime")
            await expect(login.locator('#wire button[data-wire="realtime"]')).to_have_attribute("aria-pressed", "true")
            await login.close()

            # Today's messages get a day of their own; two in a row by one author make one group.
            await say(ada, "Morning! Release is today.")
            await say(ada, "I will tag it after lunch.")
            await expect(ada.locator("#messages .day")).to_have_text(["Yesterday", "Today"])
            await expect(message(ada, "after lunch")).to_have_attribute("data-source", "live")
            await expect(message(ada, "Release is today")).to_have_attribute("data-group", "head")
            await expect(message(ada, "after lunch")).to_have_attribute("data-group", "next")

            grace = await open_chat(browser, node.http, "grace")
            await expect(grace.locator("#messages .day")).to_have_text(["Yesterday", "Today"])
            await expect(message(grace, "Release is today").locator(".avatar")).to_have_attribute("data-initials", "AL")
            await expect(message(grace, "Release is today").locator(".who")).to_have_text("Ada Lovelace")
            await expect(ada.locator("#members li")).to_have_text(["Ada Lovelace", "grace"])
            await expect(person(ada, "members", "grace").locator(".avatar")).to_have_attribute("data-initials", "G")
            await say(grace, "Great, I will write the notes.")
            await expect(message(ada, "write the notes")).to_have_attribute("data-group", "head")
            await expect(message(ada, "write the notes").locator(".avatar")).to_have_attribute("data-initials", "G")
            # Avatars keep their colour from one page to the other (a class picked from the name).
            classes = await message(ada, "write the notes").locator(".avatar").get_attribute("class")
            assert classes == await person(grace, "members", "grace").locator(".avatar").get_attribute("class")

            if os.environ.get("DEMO_SCREENSHOT"):
                await grace.type("#text", "One more thing", delay=10)
                await expect(ada.locator("#typing")).to_have_text("grace is typing…")
                # caret="initial": Playwright would otherwise hide the caret with a style attribute.
                await ada.screenshot(path=str(ROOT / os.environ["DEMO_SCREENSHOT"]), caret="initial")

            # This page offline: its own user turns offline and the others' presence unknown, not green.
            await ada.context.set_offline(True)
            await expect(ada.locator("#status")).not_to_have_attribute("data-state", "connected")
            await expect(ada.locator("#people")).to_have_attribute("data-stale", "true")
            await expect(person(ada, "members", "Ada Lovelace")).to_have_attribute("data-status", "offline")
            await expect(person(ada, "members", "grace")).to_have_attribute("data-status", "unknown")
            for user in ("Ada Lovelace", "grace"):
                assert await dot_colour(person(ada, "members", user)) != GREEN, user
            # ...and for grace, Ada went offline (the server noticed the dead socket).
            await expect(person(grace, "offline", "Ada Lovelace")).to_have_attribute("data-status", "offline")
            await expect(grace.locator("#members li")).to_have_text(["grace"])
            await ada.context.set_offline(False)
            await expect(ada.locator("#status")).to_have_attribute("data-state", "connected", timeout=30_000)
            await expect(ada.locator("#people")).to_have_attribute("data-stale", "false")
            await expect(person(ada, "members", "grace")).to_have_attribute("data-status", "online")
            await expect(grace.locator("#members li")).to_have_text(["Ada Lovelace", "grace"])
            assert await dot_colour(person(ada, "members", "grace")) == GREEN

            # Closing grace's page moves her to the offline list of Ada's.
            await grace.context.close()
            await expect(ada.locator("#members li")).to_have_text(["Ada Lovelace"])
            await expect(person(ada, "offline", "grace")).to_have_attribute("data-status", "offline")
            await expect(ada.locator("#offline li")).to_have_text(["grace", "Lin Chen"])

            # A room nobody wrote in yet: a hint, gone with the first message.
            await ada.fill("#room-name", "fresh")
            await ada.press("#room-name", "Enter")
            await expect(ada.locator("#empty")).to_be_visible()
            await expect(ada.locator("#empty")).to_contain_text("No messages in #fresh yet")
            await expect(ada.locator("#messages li")).to_have_count(0)
            await say(ada, "first!")
            await expect(ada.locator("#empty")).to_be_hidden()

            # A $presence event newer than a listing may arrive before it (the join answer follows the room's
            # events): the listing must not undo it, or a user gone offline meanwhile would stay listed online.
            merge = """([user, first, then]) => {
              const r = demo.rooms.get(demo.current), s = r.presenceSeq, room = r.name;
              demo.presence.onPresence({ room, user, status: first, seq: s + 2 });
              demo.presence.setMembers({ room, seq: s + 1, members: [{ user: "Ada Lovelace" }, { user: then }] });
            }"""
            await ada.evaluate(merge, ["zed", "online", "nobody"])
            await expect(person(ada, "members", "zed")).to_have_attribute("data-status", "online")
            await expect(ada.locator("#members li")).to_have_text(["Ada Lovelace", "nobody", "zed"])
            await ada.evaluate(merge, ["zed", "offline", "zed"])  # the listing still has zed: the event is newer
            await expect(ada.locator("#members li")).to_have_text(["Ada Lovelace"])
            await expect(person(ada, "offline", "zed")).to_have_attribute("data-status", "offline")

            # CSP-strict: no inline style or script anywhere in the rendered page, and no CSP report.
            inline = "[...document.querySelectorAll('[style], script:not([src])')].map((e) => e.outerHTML.slice(0, 80))"
            assert await ada.evaluate(inline) == []
            assert ada.errors == []


@pytest.mark.browser  # conftest.need: fails in CI, else skips, without Chromium and Playwright
async def test_a_page_on_socketio_client_chats_with_a_page_on_ours() -> None:
    need("socket.io-client")  # fails in CI, else skips, without tests/socketio/node_modules
    with anyio.fail_after(180), demo_command("--socketio-client", str(BUNDLE)) as base:
        async with chromium() as browser:
            ada = await open_chat(browser, base, "ada")  # on our client, the default
            grace = await open_chat(browser, base, "grace")
            assert await grace.evaluate("demo.wire.kind") == "realtime"
            # The switch reloads grace's page on socket.io-client, which signs in again by itself.
            switch = grace.locator('#wire button[data-wire="socketio"]')
            await expect(switch).to_have_attribute("aria-disabled", "false")
            await expect(grace.locator("#wire-note")).to_be_hidden()
            grace.requests.clear()
            grace.sockets.clear()
            await switch.click()
            await grace.wait_for_url(re.compile(r"\?wire=socketio$"))
            await expect(switch).to_have_attribute("aria-pressed", "true")
            await expect(grace.locator("#status")).to_have_attribute("data-state", "connected")
            assert await grace.evaluate("demo.wire.kind") == "socketio"
            assert await grace.evaluate("demo.client.connected === true && typeof demo.client.io.engine === 'object'")
            # Each page on its own wire: grace's traffic is Engine.IO's (polling, then maybe its WebSocket), with
            # the bundle the demo was given; ada's is our one WebSocket.
            assert f"{base}/vendor/socket.io.min.js" in grace.requests
            assert any(url.startswith(f"{base}/realtime/socket.io/?EIO=4") for url in grace.requests)
            assert all("/realtime/socket.io/" in url for url in grace.sockets), grace.sockets
            assert ada.sockets == [base.replace("http:", "ws:") + "/realtime/"]

            # Presence across the wires, in #lobby.
            for page in (ada, grace):
                await expect(page.locator("#members li")).to_have_text(["ada", "grace"])
            # Messages both ways; each page shows the other's as it came through the room.
            await say(grace, "hello from socket.io-client")
            await expect(message(ada, "hello from socket.io-client")).to_have_attribute("data-source", "live")
            await expect(message(grace, "hello from socket.io-client")).not_to_have_attribute("data-source", "pending")
            await say(ada, "hello from our client")
            await expect(message(grace, "hello from our client")).to_have_attribute("data-source", "live")

            # Another room: ada writes first; grace's join (an ACK over Socket.IO) brings the history and members.
            await ada.fill("#room-name", "ops")
            await ada.press("#room-name", "Enter")
            await expect(ada.locator("#members li")).to_have_text(["ada"])
            await say(ada, "deploy at noon")
            await expect(message(ada, "deploy at noon")).not_to_have_attribute("data-source", "pending")
            await grace.fill("#room-name", "ops")
            await grace.press("#room-name", "Enter")
            await expect(message(grace, "deploy at noon")).to_have_attribute("data-source", "history")
            for page in (ada, grace):
                await expect(page.locator("#room-title")).to_have_text("ops")
                await expect(page.locator("#members li")).to_have_text(["ada", "grace"])
            await say(grace, "ack")
            await expect(message(ada, "ack")).to_have_attribute("data-source", "live")
            # Typing notices (volatile emits) both ways.
            await grace.type("#text", "one more", delay=10)
            await expect(ada.locator("#typing")).to_have_text("grace is typing…")
            await ada.type("#text", "yes?", delay=10)
            await expect(grace.locator("#typing")).to_have_text("ada is typing…")

            # Ada leaves: the socket.io-client page sees her offline.
            await ada.context.close()
            await expect(grace.locator("#members li")).to_have_text(["grace"])
            await expect(person(grace, "offline", "ada")).to_have_attribute("data-status", "offline")
            assert grace.errors == []
            assert ada.errors == []
