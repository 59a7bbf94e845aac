"""The Python client's pure parts: backoff, the outgoing queue, positions; and its behaviour offline."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from apps import make_app
from conftest import free_port, serve
from starlette.applications import Starlette

from starlette_realtime import Connection, RealtimeEndpoint, RealtimeRouter, Rejected
from starlette_realtime.client import AckTimeout, ClientClosed, RealtimeClient
from starlette_realtime.client.backoff import backoff
from starlette_realtime.client.outgoing import Outgoing, Positions


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff(first=1, maximum=8, randomization=0), 6))
    assert delays == [1, 2, 4, 8, 8, 8]


def test_backoff_jitter_stays_within_the_randomization_factor() -> None:
    low = list(itertools.islice(backoff(first=2, maximum=30, randomization=0.5, rand=lambda: 0.0), 3))
    high = list(itertools.islice(backoff(first=2, maximum=30, randomization=0.5, rand=lambda: 0.999999), 3))
    assert low == [1.0, 2.0, 4.0]
    assert high == pytest.approx([3.0, 6.0, 12.0], rel=1e-5)


def test_outgoing_keeps_events_until_acked_and_expires_unsent_ones() -> None:
    out = Outgoing(ttl=10, maximum=100)
    a = out.add("a", 1, now=0)
    b = out.add("b", 2, now=5)
    a.sent = True
    assert [p.id for p in out.to_send(now=12)] == [a.id, b.id]  # a was sent: kept for resend
    assert [p.id for p in out.to_send(now=16)] == [a.id]  # b expired unsent
    assert out.dropped == 1
    assert out.acked(a.id) is a and len(out) == 0


def test_outgoing_drops_the_oldest_over_the_maximum() -> None:
    out = Outgoing(ttl=10, maximum=2)
    for i in range(4):
        out.add("e", i, now=0)
    assert [p.data for p in out.pending.values()] == [2, 3]
    assert out.dropped == 2


def test_positions_drop_duplicates_by_offset_within_an_epoch() -> None:
    pos = Positions()
    assert pos.accept("r", "e1", 1)
    assert pos.accept("r", "e1", 2)
    assert not pos.accept("r", "e1", 2)
    assert not pos.accept("r", "e1", 1)
    assert pos.accept("r", "e2", 1)  # a new epoch starts over
    pos.reset("r")
    assert pos.accept("r", "e2", 1)


async def test_emits_made_offline_are_delivered_after_the_reconnect() -> None:
    app, _ = make_app(secret_key="k")
    with serve(app) as srv:
        got: list[Any] = []
        url = srv.url + "/realtime"
        async with RealtimeClient(url, namespaces=["/chat"], reconnection_delay=0.3, randomization_factor=0) as a, \
                RealtimeClient(url, namespaces=["/chat"]) as b:
            b.on("said", got.append, namespace="/chat")
            await b.call("join", "q", namespace="/chat", timeout=5)
            a.kill_transport()
            await asyncio.sleep(0.05)
            assert a.state.value == "reconnecting"
            for i in range(5):
                await a.emit("say", {"room": "q", "text": str(i)}, namespace="/chat")
            assert a.queued == 5
            await a.wait_connected(5)
            await a.drain(5)
            async with asyncio.timeout(5):
                while len(got) < 5:
                    await asyncio.sleep(0.01)
        assert [m["text"] for m in got] == ["0", "1", "2", "3", "4"]


async def test_call_timeout_raises_and_the_event_is_not_sent_later() -> None:
    app, _ = make_app()
    with serve(app) as srv:
        async with RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], reconnection_delay=5) as a:
            a.kill_transport()
            await asyncio.sleep(0.05)
            with pytest.raises(AckTimeout):
                await a.call("echo", 1, namespace="/chat", timeout=0.1)
            assert a.queued == 0


async def test_a_refused_handshake_stops_the_client() -> None:
    app, _ = make_app(allowed_origins=["https://good.example"])
    with serve(app) as srv:
        client = RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], origin="https://evil.example")
        with pytest.raises(ClientClosed, match="HTTP 403"):
            await client.connect()
        await client.close()


async def test_states_are_observable() -> None:
    app, _ = make_app()
    with serve(app) as srv:
        states: list[str] = []
        client = RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], reconnection_delay=0.05)
        client.on_state(lambda s: states.append(s.value))
        await client.connect()
        client.kill_transport()
        await client.wait_connected(5)
        await client.close()
        assert states == ["connecting", "connected", "reconnecting", "connected", "closed"]


def test_a_list_of_urls_is_kept_in_order_with_trailing_slashes() -> None:
    client = RealtimeClient(["ws://a.example/realtime", "ws://b.example/realtime/"])
    assert client.urls == ["ws://a.example/realtime/", "ws://b.example/realtime/"]
    assert client.url == "ws://a.example/realtime/"  # the first connection goes to the first
    assert RealtimeClient("ws://a.example/realtime").urls == ["ws://a.example/realtime/"]
    with pytest.raises(ValueError):
        RealtimeClient([])


async def test_each_reconnect_goes_to_the_next_url_in_turn() -> None:
    (app_a, rt_a), (app_b, rt_b) = make_app(), make_app()
    dead = f"ws://127.0.0.1:{free_port()}/realtime"  # nothing listens there
    with serve(app_a) as a, serve(app_b) as b:
        urls = [a.url + "/realtime", dead, b.url + "/realtime"]
        async with RealtimeClient(urls, namespaces=["/chat"], reconnection_delay=0.05) as client:
            reached: list[str] = []
            for _ in range(3):
                async with asyncio.timeout(5):
                    while len(rt_a.links) + len(rt_b.links) != 1:  # the old link is gone, the new one open
                        await asyncio.sleep(0.01)
                reached.append("a" if rt_a.links else "b")
                client.kill_transport()
                await client.wait_connected(5)
            assert reached == ["a", "b", "a"]  # the dead one was skipped: the attempt after it went on
            await client.wait_connected(5)
            assert client.reconnects == 5 and client.url == urls[2] + "/"  # a, (dead), b, a, (dead), b


async def test_the_backoff_starts_over_after_a_connection_that_was_open() -> None:
    app, _ = make_app()
    with serve(app) as srv:
        # The first delay is short and the next ones long: each drop of an open connection must
        # start over from the first (kill_transport() used to make the client believe that the
        # connection had never opened, so the delays grew from drop to drop).
        def delays() -> Any:
            return itertools.chain([0.05], itertools.repeat(30.0))

        async with RealtimeClient(srv.url + "/realtime", namespaces=["/chat"], backoff=delays) as client:
            for _ in range(3):
                client.kill_transport()
                await client.wait_connected(2)
            assert client.reconnects == 3


class _Busy(RealtimeEndpoint):
    """Refuses the next ``refusals`` CONNECTs with a retryable error (a server that is busy for a moment)."""

    namespace = "/busy"
    refusals = 0

    async def on_connect(self, conn: Connection) -> None:
        if _Busy.refusals:
            _Busy.refusals -= 1
            raise Rejected("BUSY", "try again later", retryable=True)


async def test_a_retryable_connect_error_keeps_the_session() -> None:
    realtime = RealtimeRouter([_Busy], secret_key="k")
    app = Starlette(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
    with serve(app) as srv:
        infos: list[dict[str, Any]] = []
        async with RealtimeClient(srv.url + "/realtime", namespaces=["/busy"], reconnection_delay=0.05) as client:
            client.on("connect", infos.append, namespace="/busy")
            _Busy.refusals = 2
            client.kill_transport()
            await client.wait_connected(5)
            # Refused twice, then resumed: the client did not throw its session away meanwhile.
            assert _Busy.refusals == 0 and client.reconnects == 3
            assert infos == [{"sid": client.sid("/busy"), "recovered": True, "recovery_failed": False}]


async def test_a_silent_server_is_detected_and_the_client_reconnects() -> None:
    import json

    import websockets
    from conftest import free_port

    opened: list[int] = []

    async def silent(ws: Any) -> None:
        # A server that greets, accepts the namespace, then never sends another frame.
        opened.append(1)
        await ws.send(json.dumps([0, 1, "silent", 0.2, 0.2, 1 << 20]))
        frame = json.loads(await ws.recv())
        await ws.send(json.dumps([2, frame[1], "sid", "session"]))
        await ws.wait_closed()

    port = free_port()
    async with websockets.serve(silent, "127.0.0.1", port, subprotocols=["rt.v1.json"]):  # type: ignore[list-item]
        client = RealtimeClient(f"ws://127.0.0.1:{port}/rt", namespaces=["/chat"], reconnection_delay=0.05)
        await client.connect()
        async with asyncio.timeout(5):
            while len(opened) < 2:
                await asyncio.sleep(0.01)
        await client.close()
    assert client.reconnects >= 1
