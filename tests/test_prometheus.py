"""Prometheus metrics over a real uvicorn server: scripted traffic, then a scrape of /metrics over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from apps import Chat
from conftest import ServerThread, free_port, serve
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from websockets.exceptions import ConnectionClosed

from starlette_realtime import AckError, Overflow, RealtimeRouter
from starlette_realtime.client import RealtimeClient
from starlette_realtime.outbox import Outbox
from starlette_realtime.prometheus import PrometheusMetrics, code_label, metrics_app, reason_label

TESTS = Path(__file__).resolve().parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_app(**options: Any) -> tuple[Starlette, RealtimeRouter, PrometheusMetrics]:
    metrics = PrometheusMetrics()
    realtime = RealtimeRouter([Chat], metrics=metrics, **options)
    app = Starlette(
        routes=[Route("/metrics", metrics_app(metrics)), Mount("/realtime", realtime)], lifespan=realtime.lifespan
    )
    return app, realtime, metrics


def multiproc_app() -> Starlette:
    """The app each worker of the multi-process test builds (``uvicorn --factory``)."""
    return make_app()[0]


@pytest.fixture
def server() -> Iterator[ServerThread]:
    app, _, _ = make_app()
    with serve(app) as srv:
        yield srv


def client(srv: ServerThread | str, **kw: Any) -> RealtimeClient:
    url = srv if isinstance(srv, str) else srv.url
    return RealtimeClient(url + "/realtime", namespaces=["/chat"], **kw)


async def scrape(http: str) -> Samples:
    async with httpx.AsyncClient(timeout=5) as h:
        reply = await h.get(http + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def until_scraped(http: str, predicate: Any, timeout: float = 5.0) -> Samples:
    """Scrape until ``predicate(samples)`` holds (the server counts a close once it has seen it)."""
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(http)
            if predicate(samples):
                return samples
            await asyncio.sleep(0.02)


P = "starlette_realtime_"


async def test_connects_and_disconnects_move_the_gauge(server: ServerThread) -> None:
    clients = [client(server) for _ in range(3)]
    for c in clients:
        await c.connect()
    samples = await scrape(server.http)
    assert value(samples, P + "connections", namespace="/chat") == 3
    assert value(samples, P + "connects_total", namespace="/chat") == 3
    await clients[0].close()
    await clients[1].close()
    samples = await until_scraped(server.http, lambda s: value(s, P + "connections", namespace="/chat") == 1)
    assert value(samples, P + "connects_total", namespace="/chat") == 3
    # A client that closes on purpose says so (DISCONNECT "client disconnect") before it closes with 1000.
    assert value(samples, P + "disconnects_total", namespace="/chat", reason="client_disconnect", code="none") == 2
    await clients[2].close()
    await until_scraped(server.http, lambda s: value(s, P + "connections", namespace="/chat") == 0)


async def test_events_in_and_out_bytes_and_handler_histogram(server: ServerThread) -> None:
    said: list[str] = []
    async with client(server) as a, websockets.connect(
        server.url + "/realtime/", subprotocols=["rt.v1.json"]  # type: ignore[list-item]
    ) as raw:
        async with asyncio.timeout(5):
            await raw.recv()  # HELLO
            await raw.send(json.dumps([1, "/chat", None]))
            await raw.recv()  # CONNECTED
            await raw.send(json.dumps([5, "/chat", "join", "lobby", 1]))
            await raw.recv()  # ack
            assert await a.call("join", "lobby", namespace="/chat", timeout=5) == ["lobby"]
            await a.call("shout", {"room": "lobby", "text": "hi"}, namespace="/chat", timeout=5)
            await a.call("shout", {"room": "lobby", "text": "there"}, namespace="/chat", timeout=5)
            while len(said) < 2:
                frame = await raw.recv()
                assert isinstance(frame, str)
                if json.loads(frame)[2] == "said":
                    said.append(frame)
        samples = await scrape(server.http)
    ev = {"namespace": "/chat"}
    assert value(samples, P + "events_received_total", event="join", **ev) == 2
    assert value(samples, P + "events_received_total", event="shout", **ev) == 2
    # Two publications (the lag histogram counts them), each delivered to both members of the room.
    assert value(samples, P + "events_sent_total", event="said", **ev) == 4
    # Bytes out: each frame's size times its deliveries (both receivers speak JSON).
    frame_bytes = sum(len(f.encode()) for f in said)
    assert value(samples, P + "sent_bytes_total", **ev) == 2 * frame_bytes
    assert value(samples, P + "received_bytes_total") > 0
    assert value(samples, P + "messages_received_total") >= 6
    # The handler histogram: one observation per handled event, every one under +Inf.
    assert value(samples, P + "handler_duration_seconds_count", event="join", **ev) == 2
    assert value(samples, P + "handler_duration_seconds_bucket", event="join", le="+Inf", **ev) == 2
    assert 0 < value(samples, P + "handler_duration_seconds_sum", event="join", **ev) < 1
    # The publish-to-receive lag: one observation per publication.
    assert value(samples, P + "backend_lag_seconds_count") == 2
    assert 0 <= value(samples, P + "backend_lag_seconds_sum") < 1


async def test_errors_are_counted_by_event_and_code(server: ServerThread) -> None:
    async with client(server) as a:
        for event, data in (("fail", None), ("fail", None), ("refuse", None), ("say", {"room": 7}), ("nope", None)):
            with pytest.raises(AckError):
                await a.call(event, data, namespace="/chat", timeout=5)
        samples = await scrape(server.http)
    ev = {"namespace": "/chat"}
    assert value(samples, P + "event_errors_total", event="fail", code="internal_error", **ev) == 2
    assert value(samples, P + "event_errors_total", event="refuse", code="nope", **ev) == 1
    assert value(samples, P + "event_errors_total", event="say", code="invalid_payload", **ev) == 1
    # An unknown event is counted without its name (the client chose it).
    assert value(samples, P + "event_errors_total", event="", code="unknown_event", **ev) == 1
    assert value(samples, P + "events_received_total", event="fail", **ev) == 2
    assert value(samples, P + "handler_duration_seconds_count", event="fail", **ev) == 2
    assert value(samples, P + "handler_duration_seconds_count", event="say", **ev) == 0


async def test_refused_namespaces_and_recovered_sessions(server: ServerThread) -> None:
    async with websockets.connect(server.url + "/realtime/", subprotocols=["rt.v1.json"]) as raw:  # type: ignore[list-item]
        async with asyncio.timeout(5):
            await raw.recv()
            await raw.send(json.dumps([1, "/nowhere", None]))
            assert json.loads(await raw.recv())[0] == 3  # CONNECT_ERROR
    async with client(server, reconnection_delay=0.05, reconnection_delay_max=0.1) as a:
        a.kill_transport()
        async with asyncio.timeout(5):
            while a.reconnects < 1 or a.sid("/chat") is None or not a.recovered("/chat"):
                await asyncio.sleep(0.01)
        await a.wait_connected(5)
        samples = await until_scraped(
            server.http, lambda s: value(s, P + "reconnections_total", namespace="/chat") == 1
        )
    assert value(samples, P + "connect_errors_total", namespace="", code="UNKNOWN_NAMESPACE") == 1
    assert value(samples, P + "recovered_sessions_total", namespace="/chat") == 1
    # A dropped transport: no close frame reached the server (1005 or 1006, depending on the ASGI server).
    dropped = {dict(k[1])["code"]: v for k, v in samples.items() if k[0] == P + "disconnects_total"}
    assert dropped in ({"1005": 1}, {"1006": 1})


async def test_a_slow_consumer_disconnect_is_counted() -> None:
    app, realtime, _ = make_app(max_queue_bytes=64 * 1024, max_queue_messages=10_000)
    with serve(app) as srv:
        async with client(srv) as sender:
            # websockets stops reading from the socket once one message waits: the outbox fills up.
            slow = await websockets.connect(
                srv.url + "/realtime/", subprotocols=["rt.v1.json"], max_queue=1, compression=None  # type: ignore[list-item]
            )
            async with asyncio.timeout(5):
                await slow.recv()
                await slow.send(json.dumps([1, "/chat", None]))
                await slow.recv()
                await slow.send(json.dumps([5, "/chat", "join", "flood", 1]))
                await slow.recv()
            text = "x" * 4096
            for i in range(2000):
                await sender.emit("shout", {"room": "flood", "text": text}, namespace="/chat")
                if i % 200 == 0:
                    await sender.drain(10)
                if realtime.stats()["links"] == 1:
                    break
            await sender.drain(20)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await slow.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
            samples = await until_scraped(
                srv.http, lambda s: value(s, P + "server_closes_total", reason="slow_consumer") == 1
            )
    assert value(samples, P + "dropped_messages_total", reason="overflow") == 1
    assert value(samples, P + "disconnects_total", namespace="/chat", reason="slow_consumer", code="4004") == 1


async def test_a_heartbeat_timeout_is_counted() -> None:
    app, _, _ = make_app(ping_interval=0.2, ping_timeout=0.3)
    with serve(app) as srv:
        async with websockets.connect(srv.url + "/realtime/", subprotocols=["rt.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps([1, "/chat", None]))
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()  # reads, but never answers a PING
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4005
        samples = await until_scraped(
            srv.http, lambda s: value(s, P + "server_closes_total", reason="heartbeat_timeout") == 1
        )
    assert value(samples, P + "disconnects_total", namespace="/chat", reason="heartbeat_timeout", code="4005") == 1
    assert value(samples, P + "connections", namespace="/chat") == 0


def test_outbox_drops_are_reported_by_reason() -> None:
    metrics = PrometheusMetrics()

    async def never(message: dict[str, Any]) -> None:
        raise AssertionError("no send outside a loop")

    # Outside a running loop the outbox only queues, so that the policies apply at once.
    outbox = Outbox(never, max_messages=1, max_bytes=1 << 20, overflow=Overflow.DROP_NEWEST,
                    on_overflow=lambda: None, on_drop=metrics.dropped)
    assert outbox.push({}, 1)
    assert not outbox.push({}, 1)
    assert not outbox.push({}, 1, volatile=True)
    oldest = Outbox(never, max_messages=1, max_bytes=1 << 20, overflow=Overflow.DROP_OLDEST,
                    on_overflow=lambda: None, on_drop=metrics.dropped)
    assert oldest.push({}, 1) and oldest.push({}, 1)
    samples = next(iter(metrics.dropped_messages.collect())).samples
    got = {s.labels["reason"]: s.value for s in samples if s.name.endswith("_total")}
    assert got == {"drop_newest": 1, "volatile": 1, "drop_oldest": 1}


def test_registries_are_per_instance_and_labels_stay_bounded() -> None:
    a, b = PrometheusMetrics(), PrometheusMetrics()  # no clash: nothing is global
    a.connection_opened("/chat")
    assert b.sample().events_received == 0
    assert a.registry is not b.registry
    assert reason_label("client disconnect") == "client_disconnect"
    assert reason_label("banned for saying ni") == "other"
    assert [code_label(c) for c in (None, 1000, 4004, 4321, 65000)] == ["none", "1000", "4004", "other", "other"]
    a.handler_finished("/chat", "join", a.handler_started(), None)
    a.broadcast("/chat", "said", 3, 300, time.time())
    sample = a.sample()
    assert (sample.events_received, sample.events_sent, sample.sent_bytes) == (1, 3, 300)
    assert sample.handler_buckets[-1] == 1 and sample.lag_buckets[-1] == 1
    assert "PrometheusMetrics" in repr(a)


async def test_metrics_app_answers_get_only(server: ServerThread) -> None:
    async with httpx.AsyncClient(timeout=5) as h:
        assert (await h.post(server.http + "/metrics")).status_code == 405
        gz = await h.get(server.http + "/metrics", headers={"accept-encoding": "gzip"})
    assert gz.status_code == 200 and "starlette_realtime_connections" in gz.text


async def test_log_records_carry_stable_fields_and_no_token(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-5ecret-never-logged"
    with caplog.at_level(logging.DEBUG, logger="starlette_realtime"):
        async with client(server, auth=secret) as a:
            with pytest.raises(AckError):
                await a.call("fail", namespace="/chat", timeout=5)
        async with asyncio.timeout(5):  # the server logs the close once it has seen it
            while not any(r.getMessage().startswith("connection closed") for r in caplog.records):
                await asyncio.sleep(0.01)
    records = [r for r in caplog.records if r.name.startswith("starlette_realtime")]
    messages = {r.getMessage().split(" (")[0] for r in records}
    assert {"connection opened", "handler 'fail' failed", "connection closed: client disconnect"} <= messages
    fields = ("link_id", "sid", "namespace", "user", "reason", "close_code")
    for r in records:
        if r.name in ("starlette_realtime.link", "starlette_realtime.invoke"):
            assert all(hasattr(r, f) for f in fields), r.getMessage()
        assert secret not in r.getMessage() and secret not in repr(r.__dict__)
    closed = next(r for r in records if r.getMessage().startswith("connection closed"))
    # The client said it was closing (DISCONNECT) before the WebSocket closed: no close code yet.
    assert (closed.namespace, closed.reason, closed.close_code) == ("/chat", "client disconnect", None)  # type: ignore[attr-defined]


async def test_several_worker_processes_share_one_view(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR: every worker writes there; any worker serves the sum."""
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "test_prometheus:multiproc_app", "--workers", "2",
           "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio", "--log-level", "warning"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=TESTS, env=env)
    http, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    await scrape(http)
                    break
                except (httpx.HTTPError, AssertionError):
                    await asyncio.sleep(0.1)
        clients = [client(url) for _ in range(6)]
        for c in clients:
            await c.connect()
        samples = await until_scraped(http, lambda s: value(s, P + "connections", namespace="/chat") == 6, 10)
        assert value(samples, P + "connects_total", namespace="/chat") == 6
        for c in clients:
            await c.close()
        await until_scraped(http, lambda s: value(s, P + "connections", namespace="/chat") == 0, 10)
        files = await asyncio.to_thread(lambda: list(tmp_path.glob("*.db")))
        assert len(files) >= 2  # one set of files per worker
    finally:
        proc.terminate()
        async with asyncio.timeout(15):
            await proc.wait()


def test_bytes_out_are_exact_with_mixed_encodings() -> None:
    """Hub.deliver sums frame size x receivers per run of one encoding, not per receiver."""
    from starlette_realtime.backends.base import Publication
    from starlette_realtime.codec import codecs
    from starlette_realtime.hub import Hub

    pushed: list[int] = []

    class Out:
        def push(self, message: Any, size: int, volatile: bool = False) -> bool:
            pushed.append(size)
            return True

        def push_frame(self, frame: bytes, message: Any, size: int, volatile: bool = False) -> bool:
            return self.push(message, size, volatile)

    class Receiver:
        def __init__(self, sid: str, codec: Any) -> None:
            self.sid, self.codec, self.outbox, self.rooms, self.buffer = sid, codec, Out(), {"r"}, None

    metrics = PrometheusMetrics()
    hub = Hub(metrics)
    json_codec, msgpack_codec = codecs()["rt.v1.json"], codecs()["rt.v1.msgpack"]
    for i, codec in enumerate([json_codec] * 3 + [msgpack_codec] * 2 + [json_codec] + [msgpack_codec]):
        hub.rooms.add(("/chat", "r"), str(i), Receiver(str(i), codec))
    hub.deliver(Publication("/chat", "r", "said", b'{"text":"hello, world"}', ts=time.time()))
    sample = metrics.sample()
    assert len(pushed) == 7 and len(set(pushed)) == 2
    assert (sample.events_sent, sample.sent_bytes) == (7, sum(pushed))


def test_hot_path_counts_are_buffered_until_a_flush() -> None:
    metrics = PrometheusMetrics()
    metrics.message_in(10)
    metrics.broadcast("/c", "e", 3, 30, time.time())
    metrics.handler_finished("/c", "h", metrics.handler_started(), None)
    get = metrics.registry.get_sample_value
    # Read from a thread without an event loop: no flush (the hot paths take no lock).
    assert get(P + "received_bytes_total") == 0
    metrics.tick()  # what the router's scheduler calls about once a second
    assert get(P + "received_bytes_total") == 10 and get(P + "messages_received_total") == 1
    assert get(P + "events_sent_total", {"namespace": "/c", "event": "e"}) == 3
    assert get(P + "sent_bytes_total", {"namespace": "/c"}) == 30
    assert get(P + "events_received_total", {"namespace": "/c", "event": "h"}) == 1
    assert get(P + "handler_duration_seconds_count", {"namespace": "/c", "event": "h"}) == 1
    assert get(P + "backend_lag_seconds_count") == 1
    metrics.tick()  # nothing new: nothing added twice
    assert get(P + "events_sent_total", {"namespace": "/c", "event": "e"}) == 3
