"""Table tests of the sans-I/O session core: no event loop, an injected clock."""

from __future__ import annotations

import msgspec
import pytest

from starlette_realtime import status
from starlette_realtime.core import (
    Close,
    CloseNamespace,
    DedupWindow,
    Dispatch,
    Open,
    Refuse,
    Resolve,
    Seen,
    Send,
    SessionCore,
    TokenBucket,
)
from starlette_realtime.frames import Ack, Connect, ConnectError, Disconnect, Error, ErrorInfo, Event, Ping, Pong
from starlette_realtime.limits import Limits

NULL = msgspec.Raw(b"null")
RULES = {"/chat": {"say": None, "slow": (1.0, 1)}}


def make(limits: Limits | None = None, now: float = 0.0, **kw: float) -> SessionCore:
    opts = {"ping_interval": 10.0, "ping_timeout": 5.0, "connect_timeout": 3.0, **kw}
    return SessionCore(RULES, limits or Limits(), now=now, binary=False, null=NULL, **opts)


def opened(**kw: float) -> SessionCore:
    core = make(**kw)
    action = core.frame_in(Connect("/chat", NULL), 0.0)
    assert isinstance(action, Open)
    core.opened("/chat")
    return core


def event(ack_id: int | None = None, name: str = "say", ns: str = "/chat", data: bytes = b'"x"') -> Event:
    return Event(ns, name, msgspec.Raw(data), ack_id)


def reply(ack_id: int, value: bytes = b"1", error: ErrorInfo | None = None) -> Ack:
    return Ack("/chat", ack_id, msgspec.Raw(value), error)


# Handshake ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "ns", "expected_code"),
    [
        (None, "/nope", status.UNKNOWN_NAMESPACE),
        ("/chat", "/chat", status.ALREADY_CONNECTED),
    ],
)
def test_connect_refusals(first: str | None, ns: str, expected_code: str) -> None:
    core = make()
    if first is not None:
        assert isinstance(core.frame_in(Connect(first, NULL), 0.0), Open)
    action = core.frame_in(Connect(ns, NULL), 0.0)
    assert isinstance(action, Send) and isinstance(action.frame, ConnectError)
    assert action.frame.code == expected_code


def test_too_many_namespaces() -> None:
    core = SessionCore({"/a": {}, "/b": {}}, Limits(max_namespaces=1), now=0.0, ping_interval=10, ping_timeout=5,
                       connect_timeout=3, binary=False, null=NULL)
    assert isinstance(core.frame_in(Connect("/a", NULL), 0.0), Open)
    action = core.frame_in(Connect("/b", NULL), 0.0)
    assert isinstance(action, Send) and action.frame.code == status.TOO_MANY_NAMESPACES  # type: ignore[union-attr]


def test_refused_namespace_can_be_retried() -> None:
    core = make()
    core.frame_in(Connect("/chat", NULL), 0.0)
    core.refused("/chat", 0.0)
    assert isinstance(core.frame_in(Connect("/chat", NULL), 0.0), Open)


def test_events_before_connected_are_not_connected() -> None:
    core = make()
    core.frame_in(Connect("/chat", NULL), 0.0)  # still CONNECTING
    with_id = core.frame_in(event(1), 0.0)
    assert isinstance(with_id, Send) and isinstance(with_id.frame, Ack)
    assert with_id.frame.error == ErrorInfo(status.NOT_CONNECTED, "namespace not connected")
    without = core.frame_in(event(), 0.0)
    assert isinstance(without, Send) and isinstance(without.frame, Error)
    assert without.frame.code == status.NOT_CONNECTED


def test_disconnect_closes_an_open_namespace_without_reply() -> None:
    core = opened()
    action = core.frame_in(Disconnect("/chat"), 0.0)
    assert isinstance(action, CloseNamespace) and action.reason == "client disconnect"
    assert core.frame_in(Disconnect("/other"), 0.0) is None
    assert core.frame_in(Pong(), 0.0) is None


def test_stray_ack_is_bad_frame_and_does_not_close() -> None:
    core = opened()
    action = core.frame_in(Ack("/chat", 7, NULL), 0.0)
    assert isinstance(action, Send) and isinstance(action.frame, Error) and action.frame.code == status.BAD_FRAME
    assert core.closing is None
    call_id = core.call("/chat")
    resolved = core.frame_in(Ack("/chat", call_id, NULL), 0.0)
    assert isinstance(resolved, Resolve) and resolved.frame.id == call_id
    again = core.frame_in(Ack("/chat", call_id, NULL), 0.0)
    assert isinstance(again, Send) and again.frame.code == status.BAD_FRAME  # type: ignore[union-attr]


def test_unknown_event() -> None:
    core = opened()
    action = core.frame_in(event(0, name="nope"), 0.0)
    assert isinstance(action, Refuse) and action.event == "" and action.code == status.UNKNOWN_EVENT
    assert action.reply is not None and action.reply.error is not None
    assert isinstance(core.frame_in(event(1), 0.0), Dispatch)


# Dedup ------------------------------------------------------------------------------------------


def test_dedup_replays_values_and_errors() -> None:
    core = opened()
    assert isinstance(core.frame_in(event(0), 0.0), Dispatch)
    assert isinstance(core.frame_in(event(1), 0.0), Dispatch)
    core.answered("/chat", reply(0, b"42"))
    core.answered("/chat", reply(1, b"null", ErrorInfo("nope", "no")))
    for ack_id, expected in ((0, b"42"), (1, b"null")):
        action = core.frame_in(event(ack_id), 0.0)
        assert isinstance(action, Send) and isinstance(action.frame, Ack)
        assert bytes(action.frame.data) == expected
    err = core.frame_in(event(1), 0.0)
    assert err.frame.error == ErrorInfo("nope", "no")  # type: ignore[union-attr]


def test_resend_while_in_flight_waits_for_the_answer() -> None:
    core = opened()
    assert isinstance(core.frame_in(event(0), 0.0), Dispatch)
    assert core.frame_in(event(0), 0.0) is None  # in flight: no "duplicate"
    assert core.answered("/chat", reply(0, b"7"))
    again = core.frame_in(event(0), 0.0)
    assert isinstance(again, Send) and bytes(again.frame.data) == b"7"  # type: ignore[union-attr]


def test_evicted_answer_is_duplicate_never_success() -> None:
    window = DedupWindow(size=2)
    for i in range(4):
        assert window.check(i) is Seen.NEW
        window.answered(i, reply(i))
    assert window.check(0) is Seen.DUPLICATE
    assert window.check(3) is Seen.REPLAY
    core = opened()
    core.windows["/chat"] = window
    action = core.frame_in(event(0), 0.0)
    assert isinstance(action, Send) and action.frame.error.code == status.DUPLICATE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([0, 1, 2], [Seen.NEW] * 3),
        ([0, 2, 1], [Seen.NEW, Seen.NEW, Seen.NEW]),  # out of order within the span
        ([0, 2, 1, 1], [Seen.NEW, Seen.NEW, Seen.NEW, Seen.DUPLICATE]),
        ([5, 3, 3], [Seen.NEW, Seen.NEW, Seen.DUPLICATE]),
        ([2000, 10], [Seen.NEW, Seen.DUPLICATE]),  # more than span below the highest: handled
    ],
)
def test_out_of_order_ids(ids: list[int], expected: list[Seen]) -> None:
    window = DedupWindow(span=1024)
    assert [window.check(i) for i in ids] == expected


def test_window_survives_export_and_restore_with_errors_and_interrupted() -> None:
    window = DedupWindow()
    for i in range(3):
        window.check(i)
    window.answered(0, reply(0, b"[1]"))
    window.answered(1, reply(1, b"null", ErrorInfo("boom", "x")))
    window.started(2)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(window.export()), type=type(window.export()))
    back = DedupWindow.restore(state, "/chat")
    assert back.check(0) is Seen.REPLAY and bytes(back.reply(0).data) == b"[1]"  # type: ignore[union-attr]
    assert back.reply(1).error == ErrorInfo("boom", "x")  # type: ignore[union-attr]
    assert back.reply(2).error.code == status.INTERRUPTED  # type: ignore[union-attr]
    assert back.check(3) is Seen.NEW


# Limits with an injected clock ------------------------------------------------------------------


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5)  # one token back after half a second


def test_rate_limits_answer_then_close_with_4006() -> None:
    core = opened(limits=Limits(rate=1.0, burst=2, abuse_threshold=3))  # CONNECT took one token
    assert isinstance(core.frame_in(event(0), 0.0), Dispatch)
    refused = core.frame_in(event(1), 0.0)
    assert isinstance(refused, Refuse) and refused.code == status.RATE_LIMITED
    assert isinstance(core.frame_in(event(2), 0.0), Refuse)
    close = core.frame_in(event(3), 0.0)
    assert isinstance(close, Close) and close.code == status.WS_4006_RATE_LIMITED
    assert core.frame_in(event(4), 10.0) is None  # closing: nothing more


def test_per_event_rate_and_recovery_of_tokens() -> None:
    core = opened()
    assert isinstance(core.frame_in(event(0, name="slow"), 0.0), Dispatch)
    assert isinstance(core.frame_in(event(1, name="slow"), 0.1), Refuse)
    assert isinstance(core.frame_in(event(2, name="say"), 0.1), Dispatch)  # other events: shared bucket
    assert isinstance(core.frame_in(event(3, name="slow"), 1.2), Dispatch)


def test_payload_limits_before_decoding() -> None:
    core = opened(limits=Limits(max_payload_bytes=4, max_depth=2))
    big = core.frame_in(event(0, data=b'"xxxxxxxx"'), 0.0)
    assert isinstance(big, Refuse) and big.code == status.LIMIT_EXCEEDED
    deep = core.frame_in(event(1, data=b"[[[1]]]"), 0.0)
    assert isinstance(deep, Refuse) and deep.code == status.LIMIT_EXCEEDED


def test_oversized_message_closes_with_1009() -> None:
    core = opened()
    close = core.message_in(11, 0.0, 10)
    assert isinstance(close, Close) and close.code == status.WS_1009_MESSAGE_TOO_BIG


# Heartbeat and CONNECT deadline ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "now", "expected"),
    [
        ([], 9.9, None),
        ([], 10.0, "ping"),
        (["ping@10", "pong@11"], 19.9, None),
        (["ping@10", "pong@11"], 20.0, "ping"),
        (["ping@10"], 14.9, None),
        (["ping@10"], 15.0, status.WS_4005_HEARTBEAT_TIMEOUT),
    ],
)
def test_heartbeat(events: list[str], now: float, expected: str | int | None) -> None:
    core = opened(connect_timeout=1000.0)
    for ev in events:
        kind, at = ev.split("@")
        if kind == "ping":
            assert isinstance(core.tick(float(at)), Send)
        else:
            core.message_in(2, float(at), 100)
    action = core.tick(now)
    if expected is None:
        assert action is None
    elif expected == "ping":
        assert isinstance(action, Send) and isinstance(action.frame, Ping)
    else:
        assert isinstance(action, Close) and action.code == expected


def test_connect_deadline_is_not_kept_open_by_pongs() -> None:
    core = make(connect_timeout=3.0, ping_interval=1.0, ping_timeout=5.0)
    assert isinstance(core.tick(1.0), Send)
    core.message_in(2, 1.5, 100)  # the pong
    close = core.tick(3.0)
    assert isinstance(close, Close) and close.code == status.WS_4007_CONNECT_TIMEOUT


def test_connect_deadline_stops_once_open_and_rearms_when_empty() -> None:
    core = make(connect_timeout=3.0, ping_interval=100.0)
    core.frame_in(Connect("/chat", NULL), 1.0)
    core.opened("/chat")
    assert core.tick(50.0) is None
    core.closed("/chat", 60.0)
    assert core.tick(62.9) is None
    close = core.tick(63.0)
    assert isinstance(close, Close) and close.code == status.WS_4007_CONNECT_TIMEOUT


def test_next_visit_is_the_next_ping_once_answered_even_with_a_longer_timeout() -> None:
    core = opened(ping_interval=1.0, ping_timeout=5.0, connect_timeout=1000.0)
    assert core.next_visit() == 1.0
    assert isinstance(core.tick(1.0), Send)  # PING at 1.0
    assert core.next_visit() == 2.0  # not 6.0 (the deadline): the PONG may come first
    core.message_in(2, 1.5, 100)  # the PONG
    assert core.next_visit() == 2.0
    assert isinstance(core.tick(2.0), Send)
