"""The chat demo's server side, in-process (its page is tested in Chromium by test_browser.py)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

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
            assert 'from "../realtime/client.js"' in script.text
            assert (await http.get("/static/chat.css")).status_code == 200
            client = await http.get("/realtime/client.js")
            assert client.headers["content-type"].startswith("text/javascript")


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


def test_command_line_runs_the_demo_with_a_graceful_server(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(demo_main, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setattr(demo_main.logging, "basicConfig", lambda **kw: None)
    demo_main.main(["--port", "9001", "--backend", "memory://", "--log-level", "warning"])
    (call,) = calls
    assert (call["host"], call["port"], call["log_level"]) == ("127.0.0.1", 9001, "warning")
    assert call["routers"][0].endpoints["/chat"].namespace == "/chat"
