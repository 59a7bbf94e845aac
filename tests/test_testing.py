"""The in-process test helper, used the way an application's own test suite would."""

from __future__ import annotations

import pytest
from apps import Chat

from starlette_realtime import AckError, RealtimeRouter
from starlette_realtime.testing import RealtimeTester


async def test_pushes_sends_and_acks() -> None:
    async with RealtimeTester(RealtimeRouter([Chat])) as tester:
        alice = await tester.connect("/chat")
        bob = await tester.connect("/chat", encoding="msgpack")
        assert await alice.call("join", "lobby") == ["lobby"]
        assert await bob.call("join", "lobby") == ["lobby"]
        await alice.call("say", {"room": "lobby", "text": "hi"})
        tester.assert_sent("lobby", "said", {"room": "lobby", "text": "hi"}, namespace="/chat")
        await bob.assert_pushed("said", {"room": "lobby", "text": "hi"})
        alice.assert_not_pushed("said")
        with pytest.raises(AckError) as err:
            await alice.call("say", {"room": 1})
        assert err.value.code == "invalid_payload"


async def test_server_calls_reach_the_test_client() -> None:
    async with RealtimeTester(RealtimeRouter([Chat])) as tester:
        conn = await tester.connect("/chat")
        conn.handlers["question"] = lambda q: f"answer to {q}"
        assert await conn.call("ask", "life") == "answer to life"


async def test_assertions_fail_when_nothing_was_pushed() -> None:
    async with RealtimeTester(RealtimeRouter([Chat])) as tester:
        conn = await tester.connect("/chat")
        with pytest.raises(AssertionError, match="was not pushed"):
            await conn.assert_pushed("said", timeout=0.05)
        with pytest.raises(AssertionError, match="was not sent"):
            tester.assert_sent("lobby", "said", namespace="/chat")


async def test_unknown_namespace_is_refused() -> None:
    async with RealtimeTester(RealtimeRouter([Chat])) as tester:
        conn = await tester.connect("/nope", expect_error=True)
        assert conn.connect_error is not None and conn.connect_error.code == "UNKNOWN_NAMESPACE"
