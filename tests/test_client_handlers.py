"""The Python client's handler table, without a socket: several per event, decorators, catch-all, metadata."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import pytest

from starlette_realtime.client import EventMeta, NamespaceNotOpen, RealtimeClient
from starlette_realtime.client.handlers import Handlers
from starlette_realtime.client.stats import WireStats
from starlette_realtime.frames import Event

META = EventMeta("/chat", "said", room="lobby", epoch="e1", offset=7)


def test_every_handler_of_an_event_runs_in_the_order_added() -> None:
    handlers, calls = Handlers(), []
    handlers.add("/chat", "said", lambda data: calls.append(("first", data)))
    handlers.add("/chat", "said", lambda data: calls.append(("second", data)))
    handlers.notify(META, "hi")
    assert calls == [("first", "hi"), ("second", "hi")]


def test_a_handler_that_takes_a_second_parameter_gets_the_metadata() -> None:
    handlers, calls = Handlers(), []

    def with_meta(data: Any, meta: EventMeta) -> None:
        calls.append((data, meta.namespace, meta.room, meta.offset))

    def meta_by_name(data: Any, meta: EventMeta | None = None) -> None:
        calls.append(("by name", meta is not None))

    handlers.add("/chat", "said", with_meta)
    handlers.add("/chat", "said", calls.append)  # one parameter: the payload only
    handlers.add("/chat", "said", meta_by_name)
    for event in ("a", "b"):  # a defaulted second parameter binds a loop variable: it is not the metadata
        handlers.add("/chat", "said", lambda data, event=event: calls.append((event, data)))
    handlers.notify(META, "hi")
    assert calls == [("hi", "/chat", "lobby", 7), "hi", ("by name", True), ("a", "hi"), ("b", "hi")]


def test_the_catch_all_gets_events_without_a_handler_of_their_own() -> None:
    handlers, calls = Handlers(), []
    handlers.add("/chat", "said", lambda data: calls.append(("said", data)))
    handlers.add("/chat", "*", lambda event, data: calls.append(("any", event, data)))
    handlers.add("/chat", "*", lambda event, data, meta: calls.append(("any+meta", event, meta.room)))
    handlers.notify(META, 1)
    handlers.notify(EventMeta("/chat", "typing", room="lobby"), 2)
    handlers.notify(EventMeta("/chat", "disconnect"), 3)  # the client's own events are not caught
    handlers.notify(EventMeta("/other", "typing"), 4)  # another namespace
    assert calls == [("said", 1), ("any", "typing", 2), ("any+meta", "typing", "lobby")]


async def test_a_call_from_the_server_is_answered_by_the_first_handler() -> None:
    handlers, calls = Handlers(), []

    async def first(question: str) -> str:
        return question.upper()

    handlers.add("/chat", "question", first)
    handlers.add("/chat", "question", calls.append)
    with anyio.fail_after(5):
        assert await handlers.answer(EventMeta("/chat", "question"), "ok?") == (True, "OK?")
        assert await handlers.answer(EventMeta("/chat", "unknown"), None) == (False, None)
    assert calls == ["ok?"]
    handlers.add("/chat", "*", lambda event, data: f"{event}:{data}")
    with anyio.fail_after(5):
        assert await handlers.answer(EventMeta("/chat", "unknown"), 1) == (True, "unknown:1")


async def test_handler_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    handlers, calls = Handlers(), []

    def broken(data: Any) -> None:
        raise ValueError("sync bug")

    async def broken_async(data: Any) -> None:
        raise ValueError("async bug")

    handlers.add("/", "e", broken)
    handlers.add("/", "e", broken_async)
    handlers.add("/", "e", calls.append)
    with caplog.at_level(logging.ERROR, logger="starlette_realtime.client.handlers"):
        handlers.notify(EventMeta("/", "e"), 1)
        with anyio.fail_after(5):
            while handlers.tasks:
                await asyncio.sleep(0.001)
    assert calls == [1]
    assert [r.exc_info[1].args[0] for r in caplog.records if r.exc_info and r.exc_info[1]] == ["sync bug", "async bug"]


def test_on_registers_several_handlers_and_works_as_a_decorator() -> None:
    client = RealtimeClient("ws://example/realtime", namespaces=["/chat"])

    @client.on("said", namespace="/chat")
    def first(data: Any) -> None:
        pass

    assert callable(first) and first.__name__ == "first"  # the decorator returns the function
    second = client.on("said", print, namespace="/chat")
    assert second is print
    with pytest.raises(NamespaceNotOpen, match="'/' is not open on this client"):
        client.on("said", print)  # "/" is not one of its namespaces: a clear error, not a handler never called
    client.off("said", print, namespace="/chat")


def test_wire_stats_count_duplicates_and_gaps_per_stream() -> None:
    stats = WireStats()
    raw = b"null"
    for offset in (1, 2, 2, 3, 5, 4):
        stats.record_event(Event("/chat", "said", raw, None, "lobby", "e1", offset))  # type: ignore[arg-type]
    stats.record_event(Event("/chat", "said", raw, None, "lobby", "e2", 1))  # type: ignore[arg-type]  # new epoch
    stats.record_event(Event("/chat", "typing", raw))  # type: ignore[arg-type]  # no position: counted as an event only
    lobby = stats.stream("lobby", "/chat")
    assert (lobby.received, lobby.duplicates, lobby.gaps, lobby.epochs) == (7, 2, 1, 2)
    assert (stats.events, stats.duplicates, stats.gaps) == (8, 2, 1)
    assert stats.stream("elsewhere").received == 0
