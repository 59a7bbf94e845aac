"""The Socket.IO wire, sans-I/O: Socket.IO packets to and from the core's frames."""

from __future__ import annotations

import msgspec
import pytest

from starlette_realtime.backends.base import Publication
from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.frames import (
    Ack,
    Connect,
    Connected,
    ConnectError,
    Disconnect,
    Error,
    ErrorInfo,
    Event,
    Hello,
    Ping,
    Pong,
    Position,
)
from starlette_realtime.socketio.packets import pack_unit
from starlette_realtime.socketio.recovery import decode_offset, encode_offset
from starlette_realtime.socketio.wire import Args, SocketIOWire

W = SocketIOWire(recovery=True)
R = msgspec.Raw


def raw(frame_data: object) -> bytes:
    assert isinstance(frame_data, msgspec.Raw)
    return bytes(frame_data)


def test_pong() -> None:
    assert W.receive("3", None) == Pong()


def test_connect_without_and_with_auth() -> None:
    c = W.receive("40", None)
    assert isinstance(c, Connect) and (c.ns, raw(c.auth), c.session) == ("/", b"null", None)
    c = W.receive('40/admin,{"token":"123"}', None)
    assert isinstance(c, Connect) and (c.ns, raw(c.auth)) == ("/admin", b'{"token":"123"}')


def test_connect_with_recovery_fields_takes_them_out_of_the_auth() -> None:
    c = W.receive('40{"token":"t","pid":"sess","offset":"7:e1:room"}', None)
    assert isinstance(c, Connect)
    assert msgspec.json.decode(raw(c.auth)) == {"token": "t"}
    assert c.session == "sess"
    assert c.positions == {"room": Position("e1", 7)}


def test_offsets_round_trip_and_foreign_strings_are_ignored() -> None:
    assert decode_offset(encode_offset("a:b", "ep", 3)) == {"a:b": Position("ep", 3)}
    assert decode_offset("hello") is None
    assert decode_offset("x:e:r") is None


@pytest.mark.parametrize(
    ("text", "event", "payload", "ack_id"),
    [
        ('42["ev"]', "ev", b"null", None),
        ('42["ev",{"a":1}]', "ev", b'{"a":1}', None),
        ('42["ev",1,"2",[3]]', "ev", b'[1,"2",[3]]', None),
        ('42/chat,5["ev",1]', "ev", b"1", 5),
    ],
)
def test_events_zero_one_or_several_arguments(text: str, event: str, payload: bytes, ack_id: int | None) -> None:
    e = W.receive(text, None)
    assert isinstance(e, Event) and e.event == event and raw(e.data) == payload and e.id == ack_id


def test_acks_from_a_client() -> None:
    a = W.receive('43/chat,9["x","y"]', None)
    assert isinstance(a, Ack) and (a.ns, a.id, raw(a.data)) == ("/chat", 9, b'["x","y"]')
    a = W.receive("431[]", None)
    assert isinstance(a, Ack) and raw(a.data) == b"null"


def test_disconnect() -> None:
    assert W.receive("41/chat,", None) == Disconnect("/chat")


def test_binary_event_from_a_client_carries_bytes_as_base64() -> None:
    unit = pack_unit(['452-3["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', b"\x01\x02", b"\x03"])
    e = W.receive(None, unit)
    assert isinstance(e, Event) and e.id == 3
    assert msgspec.json.decode(raw(e.data), type=tuple[bytes, bytes]) == (b"\x01\x02", b"\x03")


@pytest.mark.parametrize(
    "text",
    [
        "4abc",
        "42{}",
        '42abc["a"]',
        "4",
        "2",
        "5",
        '42["connect"]',
        '44{"message":"x"}',
        "41{}",
        '40"x"',
        "40[]",
        '451-["a",{"_placeholder":true,"num":0}]',
        "42[1]",
        "42[]",
        "401{}",
        "43[]",
    ],
)
def test_invalid_packets(text: str) -> None:
    with pytest.raises(ProtocolError):
        W.receive(text, None)


def test_a_unit_whose_attachments_do_not_match_is_invalid() -> None:
    with pytest.raises(ProtocolError):
        W.receive(None, pack_unit(['452-["a",{"_placeholder":true,"num":0}]', b"x"]))
    with pytest.raises(ProtocolError):
        W.receive(None, b"garbage")


# -- server -> client --------------------------------------------------------------------


def test_connected_and_connect_error() -> None:
    assert W.encode(Connected("/", "s1", "sess")) == b'40{"sid":"s1","pid":"sess"}'
    assert SocketIOWire().encode(Connected("/a", "s1", "sess")) == b'40/a,{"sid":"s1"}'
    unknown = SocketIOWire().encode(ConnectError("/random", "UNKNOWN_NAMESPACE", "no endpoint"))
    assert unknown.startswith(b'44/random,{"message":"Invalid namespace"')
    out = W.encode(ConnectError("/a", "INVALID_TOKEN", "bad token"))
    assert out == b'44/a,{"message":"bad token","data":{"code":"INVALID_TOKEN","retryable":false}}'


def test_events_from_the_server() -> None:
    assert W.encode(Event("/", "ev", W.encode_payload({"a": 1}))) == b'42["ev",{"a":1}]'
    assert W.encode(Event("/", "ev", W.null)) == b'42["ev"]'
    assert W.encode(Event("/x", "ev", W.encode_payload(Args(1, "b")), 4)) == b'42/x,4["ev",1,"b"]'
    assert W.encode(Event("/", "ev", W.encode_payload(Args()))) == b'42["ev"]'


def test_acks_from_the_server() -> None:
    assert W.encode(Ack("/", 3, W.encode_payload("ok"))) == b'433["ok"]'
    assert W.encode(Ack("/", 3, W.null)) == b"433[]"
    assert W.encode(Ack("/c", 3, W.encode_payload(Args(1, 2)))) == b"43/c,3[1,2]"
    err = W.encode(Ack("/", 3, W.null, ErrorInfo("forbidden", "no")))
    assert err == b'433[{"error":{"code":"forbidden","message":"no"}}]'


def test_bytes_sent_by_the_server_become_attachments() -> None:
    out = W.encode(Event("/", "file", W.encode_payload({"name": "a", "body": b"\x01\x02"})))
    assert out == b'451-["file",{"name":"a","body":{"_placeholder":true,"num":0}}]\x1ebAQI='
    out = W.encode(Ack("/", 7, W.encode_payload(Args(b"\xff", "x"))))
    assert out == b'461-7[{"_placeholder":true,"num":0},"x"]\x1eb/w=='


def test_to_json_unmarks_bytes_and_args() -> None:
    assert bytes(W.to_json(W.encode_payload({"b": b"\x01"}))) == b'{"b":"AQ=="}'
    assert bytes(W.to_json(W.encode_payload(Args(1, 2)))) == b"[1,2]"
    plain = W.encode_payload({"a": 1})
    assert W.to_json(plain) is plain


def test_ping_disconnect_and_frames_without_a_socketio_form() -> None:
    assert W.encode(Ping()) == b"2"
    assert W.encode(Disconnect("/")) == b"41"
    assert W.encode(Disconnect("/chat")) == b"41/chat,"
    assert W.encode(Hello(1, "n", 25.0, 20.0, 1000)) == b""
    assert W.encode(Error("bad_frame", "x")) == b""


def test_room_publications_carry_their_position_as_a_last_argument() -> None:
    pub = Publication("/", "lobby", "said", b'{"t":"hi"}', epoch="e1", offset=12)
    message, size = W.publication(pub)
    assert message == {"type": "websocket.send", "text": '42["said",{"t":"hi"},"12:e1:lobby"]'}
    assert size == len(message["text"])
    message, _ = SocketIOWire(recovery=False).publication(pub)
    assert message["text"] == '42["said",{"t":"hi"}]'
    volatile = Publication("/chat", "lobby", "said", b"null")
    assert W.publication(volatile)[0]["text"] == '42/chat,["said"]'


def test_payload_decoders_are_cached() -> None:
    assert W.payload_decoder(int) is W.payload_decoder(int)
    assert W.payload_decoder(tuple[int, str])(b'[1,"a"]') == (1, "a")


@pytest.mark.parametrize(
    "text",
    ['42["ev",1]', '4212["ev",1,2]', '42["ev"]', "4312[]", '4312["a"]', '42/x,3["ev"]', '4299999999999["ev"]', "43[1]"],
)
def test_the_main_namespace_shortcut_decodes_as_the_general_path(text: str) -> None:
    from starlette_realtime.socketio import packets

    def outcome(fn: object) -> object:
        try:
            frame = fn()  # type: ignore[operator]
        except ProtocolError:
            return "protocol error"
        return (type(frame).__name__, frame.ns, getattr(frame, "event", None), bytes(frame.data), frame.id)

    def general_path() -> object:
        head = packets.parse_header(text, 1)
        return W._frame(head, text[head.end :].encode())

    general = outcome(general_path)
    assert outcome(lambda: W.receive(text, None)) == general
