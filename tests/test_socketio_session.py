"""The Engine.IO session state machine, table-tested with an injected clock (no event loop)."""

from __future__ import annotations

import msgspec
import pytest

from starlette_realtime import status
from starlette_realtime.socketio.session import EngineSession, Transport, Verdict

PI, PT = 0.3, 0.2


def polling(now: float = 0.0, **kw: object) -> EngineSession:
    s = EngineSession("sid1", transport=Transport.POLLING, now=now, ping_interval=PI, ping_timeout=PT, **kw)  # type: ignore[arg-type]
    assert s.begin_get() is Verdict.OK
    body = s.take_get_body()
    assert body is not None and body.startswith(b"0")
    return s


def websocket(now: float = 0.0) -> EngineSession:
    s = EngineSession("sid2", transport=Transport.WEBSOCKET, now=now, ping_interval=PI, ping_timeout=PT)
    [hello] = s.ws_frames()
    assert isinstance(hello, str) and hello.startswith("0")
    return s


def get(s: EngineSession) -> bytes | None:
    assert s.begin_get() is Verdict.OK
    return s.take_get_body()


def post(s: EngineSession, body: bytes, now: float = 0.0) -> Verdict:
    verdict = s.begin_post(len(body))
    if verdict is not Verdict.OK:
        return verdict
    return s.receive_post(body, now)


def test_the_handshake_offers_the_upgrade_on_polling_only() -> None:
    s = EngineSession("a", transport=Transport.POLLING, now=0, ping_interval=PI, ping_timeout=PT)
    s.begin_get()
    body = s.take_get_body()
    assert body is not None
    assert msgspec.json.decode(body[1:])["upgrades"] == ["websocket"]
    w = EngineSession("b", transport=Transport.WEBSOCKET, now=0, ping_interval=PI, ping_timeout=PT)
    [frame] = w.ws_frames()
    assert isinstance(frame, str) and msgspec.json.decode(frame[1:])["upgrades"] == []


def test_messages_posted_come_out_in_order_and_the_post_is_ok() -> None:
    s = polling()
    assert post(s, b"4test1\x1e4test2\x1ebAQIDBA==") is Verdict.OK
    assert s.messages() == ["4test1", "4test2", b"\x01\x02\x03\x04"]
    assert s.messages() == []


def test_a_get_waits_until_something_is_sent_then_gets_everything_buffered() -> None:
    s = polling()
    assert get(s) is None
    s.send("hello")
    s.send(b"\x01\x02")
    assert s.take_get_body() == b"4hello\x1ebAQI="
    assert s.take_get_body() is None  # answered: no GET is waiting any more


def test_a_second_waiting_get_is_refused_and_closes_the_session() -> None:
    s = polling()
    assert get(s) is None
    assert s.begin_get() is Verdict.BAD_REQUEST
    assert s.take_get_body() == b"1"  # the first GET learns the session closed
    assert s.closed and s.close_reason == "duplicate request"


def test_a_second_post_in_flight_is_refused_and_closes_the_session() -> None:
    s = polling()
    assert s.begin_post(None) is Verdict.OK
    assert s.begin_post(None) is Verdict.BAD_REQUEST
    assert s.closed


@pytest.mark.parametrize("body", [b"abc", b"", b"0", b"2", b"5", b"4a\x1ezz"])
def test_a_malformed_or_forbidden_packet_in_a_post_closes_the_session(body: bytes) -> None:
    s = polling()
    assert post(s, body) is Verdict.BAD_REQUEST
    assert s.close_reason == "parse error"


def test_a_post_over_max_payload_is_refused_whether_announced_or_not() -> None:
    s = polling(max_payload=10)
    assert s.begin_post(11) is Verdict.TOO_LARGE
    assert s.close_reason == "payload too large"
    t = polling(max_payload=10)
    assert t.begin_post(None) is Verdict.OK
    assert t.receive_post(b"4" + b"x" * 10, 0.0) is Verdict.TOO_LARGE
    assert t.closed


def test_a_close_packet_ends_the_session_and_the_waiting_get_gets_noop() -> None:
    s = polling()
    assert get(s) is None
    assert post(s, b"1") is Verdict.OK
    assert s.close_reason == "client close"
    assert s.take_get_body() == b"6"


def test_a_server_close_sends_what_is_buffered_then_close_to_the_next_get() -> None:
    s = polling()
    s.send("last words")
    s.close()
    assert s.owes_get
    assert get(s) == b"4last words\x1e1"
    assert not s.owes_get
    assert s.close_code == status.WS_1000_NORMAL_CLOSURE


def test_a_close_the_client_caused_drops_what_is_buffered() -> None:
    s = polling(heartbeat=True)
    s.send("never read")
    s.tick(PI)  # the ping
    s.tick(PI + PT)  # no pong: the client is gone
    assert s.close_reason == "ping timeout"
    assert not s.owes_get  # dropped at once
    assert get(s) == b"1"
    t = polling()
    t.send("never read")
    assert post(t, b"1") is Verdict.OK
    assert not t.owes_get and get(t) == b"6"


def test_a_get_that_goes_away_closes_the_session() -> None:
    s = polling()
    assert get(s) is None
    s.abort_get()
    assert s.close_reason == "transport error"


# -- heartbeat, with the clock injected -----------------------------------


def test_polling_heartbeat_pings_every_interval_and_a_pong_rearms_it() -> None:
    s = polling(now=0.0)
    assert s.deadline() == PI
    s.tick(0.1)
    assert get(s) is None  # nothing due yet
    for round_ in range(3):
        now = s.deadline()
        assert now is not None
        s.tick(now)
        assert s.take_get_body() == b"2", round_
        assert s.deadline() == pytest.approx(now + PT)
        assert post(s, b"3", now + 0.05) is Verdict.OK
        assert s.deadline() == pytest.approx(now + 0.05 + PI)
        assert s.begin_get() is Verdict.OK
    assert not s.closed


def test_polling_session_closes_when_no_pong_comes_within_ping_timeout() -> None:
    s = polling(now=0.0)
    s.tick(PI)
    s.tick(PI + PT - 0.01)
    assert not s.closed
    s.tick(PI + PT)
    assert s.close_reason == "ping timeout"
    assert s.deadline() is None


def test_websocket_heartbeat_and_timeout() -> None:
    s = websocket()
    s.tick(PI)
    assert s.ws_frames() == ["2"]
    s.receive_ws("3", None, PI + 0.1)
    s.tick(PI + PT + 0.05)
    assert not s.closed
    s.tick(2 * PI + 0.1)
    assert s.ws_frames() == ["2"]
    s.tick(2 * PI + 0.1 + PT)
    assert s.closed and s.close_code == status.WS_4005_HEARTBEAT_TIMEOUT


def test_without_its_own_heartbeat_a_session_pings_only_when_told() -> None:
    s = EngineSession("a", transport=Transport.WEBSOCKET, now=0, ping_interval=PI, ping_timeout=PT, heartbeat=False)
    s.ws_frames()
    assert s.deadline() is None
    s.tick(100.0)
    assert s.ws_frames() == []
    s.send_ping(100.0)
    assert s.ws_frames() == ["2"]
    assert s.deadline() == pytest.approx(100.0 + PT)
    s.receive_ws("3", None, 100.1)
    assert s.deadline() is None
    assert s.messages() == ["3"]  # forwarded to the layer that drives the heartbeat


def test_pre_encoded_payloads_go_to_the_get_or_split_into_frames() -> None:
    s = polling()
    s.send_payload('42["a"]\x1ebAQI=')
    s.send("x")
    assert get(s) == b'42["a"]\x1ebAQI=\x1e4x'
    w = websocket()
    w.send_payload('451-["a",{"_placeholder":true,"num":0}]\x1ebAQI=')
    w.send_payload("2")
    assert w.ws_frames() == ['451-["a",{"_placeholder":true,"num":0}]', b"\x01\x02", "2"]


def test_payloads_buffered_during_the_probe_are_split_into_frames_on_upgrade() -> None:
    s = polling()
    assert s.begin_upgrade()
    s.receive_ws("2probe", None, 0.0)
    s.ws_frames()
    s.send_payload('42["a"]\x1ebAQI=')
    s.receive_ws("5", None, 0.0)
    assert s.ws_frames() == ['42["a"]', b"\x01\x02"]


# -- WebSocket --------------------------------------------------------------


def test_websocket_messages_text_and_binary() -> None:
    s = websocket()
    s.receive_ws("4hello", None, 0.0)
    s.receive_ws(None, b"\x01\x02", 0.0)
    assert s.messages() == ["4hello", b"\x01\x02"]
    s.send("back")
    s.send(b"\x03")
    assert s.ws_frames() == ["4back", b"\x03"]


@pytest.mark.parametrize("text", ["abc", "", "0", "2", "5", "2probe"])
def test_a_malformed_or_forbidden_websocket_packet_closes(text: str) -> None:
    s = websocket()
    s.receive_ws(text, None, 0.0)
    assert s.close_reason == "parse error"
    assert s.close_code == status.WS_4501_PROTOCOL_ERROR


def test_a_websocket_frame_over_max_payload_closes_with_1009() -> None:
    s = EngineSession("a", transport=Transport.WEBSOCKET, now=0, max_payload=8)
    s.receive_ws("4" + "x" * 8, None, 0.0)
    assert s.close_code == status.WS_1009_MESSAGE_TOO_BIG


def test_a_close_packet_on_a_websocket_closes_normally() -> None:
    s = websocket()
    s.receive_ws("1", None, 0.0)
    assert s.closed and s.close_code == status.WS_1000_NORMAL_CLOSURE


# -- upgrade ------------------------------------------------------------------


def test_upgrade_probe_releases_the_waiting_get_with_noop_then_5_switches() -> None:
    s = polling()
    s.send("early")
    assert get(s) == b"4early"
    assert get(s) is None
    assert s.begin_upgrade()
    s.receive_ws("2probe", None, 0.0)
    assert s.ws_frames() == ["3probe"]
    s.send("during")  # buffered for the WebSocket, not the GET
    assert s.take_get_body() == b"6"
    s.receive_ws("5", None, 0.0)
    assert s.transport is Transport.WEBSOCKET
    assert s.ws_frames() == ["4during"]
    s.receive_ws("4hello", None, 0.0)
    assert s.messages() == ["4hello"]
    s.send("after")
    assert s.ws_frames() == ["4after"]


def test_after_the_upgrade_polling_requests_and_a_second_websocket_are_refused() -> None:
    s = polling()
    assert s.begin_upgrade()
    s.receive_ws("2probe", None, 0.0)
    s.receive_ws("5", None, 0.0)
    assert s.begin_get() is Verdict.BAD_REQUEST
    assert s.begin_post(None) is Verdict.BAD_REQUEST
    assert not s.begin_upgrade()
    assert not s.closed


def test_a_second_probing_websocket_is_refused() -> None:
    s = polling()
    assert s.begin_upgrade()
    assert not s.begin_upgrade()


def test_an_aborted_upgrade_stays_on_polling() -> None:
    s = polling()
    assert s.begin_upgrade()
    s.receive_ws("2probe", None, 0.0)
    s.abort_upgrade()
    s.send("x")
    assert get(s) == b"4x"
    assert s.begin_upgrade()


def test_a_message_on_the_probing_websocket_before_5_closes() -> None:
    s = polling()
    assert s.begin_upgrade()
    s.receive_ws("4hello", None, 0.0)
    assert s.close_reason == "parse error"


def test_a_websocket_only_session_cannot_be_upgraded_or_polled() -> None:
    s = websocket()
    assert not s.begin_upgrade()
    assert s.begin_get() is Verdict.BAD_REQUEST


def test_an_empty_payload_sends_nothing() -> None:
    s = polling()
    s.send_payload("")
    assert get(s) is None
    w = websocket()
    w.send_payload("")
    assert w.ws_frames() == []


def test_a_server_close_may_name_its_websocket_code() -> None:
    s = websocket()
    s.close("server close", 4005)
    assert s.close_code == 4005
    s.close("again", 1000)
    assert s.close_code == 4005
