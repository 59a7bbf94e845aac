"""Engine.IO v4 conformance, sans-I/O: packets, polling payloads, handshake and its errors.

One or more tests per rule of the published description (socketio/engine.io-protocol, v4).
"""

from __future__ import annotations

import msgspec
import pytest

from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.socketio import engineio
from starlette_realtime.socketio.engineio import Packet, PacketType, Request, RequestError


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("0", Packet(PacketType.OPEN)),
        ("1", Packet(PacketType.CLOSE)),
        ("2", Packet(PacketType.PING)),
        ("2probe", Packet(PacketType.PING, "probe")),
        ("3", Packet(PacketType.PONG)),
        ("3probe", Packet(PacketType.PONG, "probe")),
        ("4hello", Packet(PacketType.MESSAGE, "hello")),
        ("4", Packet(PacketType.MESSAGE, "")),
        ("5", Packet(PacketType.UPGRADE)),
        ("6", Packet(PacketType.NOOP)),
    ],
)
def test_the_seven_packet_types_round_trip_on_a_websocket(text: str, packet: Packet) -> None:
    assert engineio.decode_ws(text, None) == packet
    assert engineio.encode_ws(packet) == text


def test_a_binary_websocket_frame_is_a_message_sent_as_is() -> None:
    packet = engineio.decode_ws(None, b"\x01\x02\x03\x04")
    assert packet == Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")
    assert engineio.encode_ws(packet) == b"\x01\x02\x03\x04"


@pytest.mark.parametrize("text", ["", "7", "abc", "x4hello", "\u0664"])
def test_an_unknown_or_empty_packet_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        engineio.decode_ws(text, None)


def test_a_polling_payload_separates_packets_with_the_record_separator() -> None:
    body = b"4hello\x1e2\x1e4world"
    packets = engineio.decode_payload(body)
    assert packets == [
        Packet(PacketType.MESSAGE, "hello"),
        Packet(PacketType.PING),
        Packet(PacketType.MESSAGE, "world"),
    ]
    assert engineio.encode_payload(packets) == body


def test_binary_in_a_polling_payload_is_b_plus_base64() -> None:
    body = b"4hello\x1ebAQIDBA=="
    packets = engineio.decode_payload(body)
    assert packets == [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")]
    assert engineio.encode_payload(packets) == body


def test_a_polling_payload_is_utf8_text() -> None:
    packets = engineio.decode_payload("4€\x1e4é".encode())
    assert [p.data for p in packets] == ["€", "é"]
    assert engineio.encode_payload(packets) == "4€\x1e4é".encode()


@pytest.mark.parametrize("body", [b"", b"abc", b"4a\x1e", b"bnot base64!", b"\xff\xfe", b"4a\x1e\x1e4b"])
def test_a_malformed_polling_payload_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        engineio.decode_payload(body)


def test_the_open_packet_carries_the_handshake_in_milliseconds() -> None:
    packet = engineio.open_packet("abc", upgrades=["websocket"], ping_interval=0.3, ping_timeout=0.2, max_payload=10**6)
    assert packet.type is PacketType.OPEN
    text = engineio.encode_ws(packet)
    assert isinstance(text, str) and text[0] == "0"
    assert msgspec.json.decode(text[1:]) == {
        "sid": "abc",
        "upgrades": ["websocket"],
        "pingInterval": 300,
        "pingTimeout": 200,
        "maxPayload": 1000000,
    }


def _check(
    method: str = "GET", websocket: bool = False, sessions: dict[str, str] | None = None, **query: str
) -> object:
    known = sessions or {}
    return engineio.check_request(method, query, websocket=websocket, session_transport=known.get)


def test_a_handshake_with_the_right_parameters_is_accepted() -> None:
    assert _check(EIO="4", transport="polling") == Request("polling", None)
    assert _check(EIO="4", transport="websocket", websocket=True) == Request("websocket", None)


@pytest.mark.parametrize(
    "query", [{"transport": "polling"}, {"EIO": "abc", "transport": "polling"}, {"EIO": "3", "transport": "polling"}]
)
def test_a_missing_or_bad_eio_is_refused(query: dict[str, str]) -> None:
    assert _check(**query) is RequestError.UNSUPPORTED_PROTOCOL_VERSION


@pytest.mark.parametrize("query", [{"EIO": "4"}, {"EIO": "4", "transport": "abc"}])
def test_a_missing_or_unknown_transport_is_refused(query: dict[str, str]) -> None:
    assert _check(**query) is RequestError.UNKNOWN_TRANSPORT


def test_a_transport_that_does_not_match_the_request_is_refused() -> None:
    assert _check(EIO="4", transport="websocket") is RequestError.UNKNOWN_TRANSPORT
    assert _check(EIO="4", transport="polling", websocket=True) is RequestError.UNKNOWN_TRANSPORT


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_handshake_is_a_get(method: str) -> None:
    assert _check(method, EIO="4", transport="polling") is RequestError.BAD_HANDSHAKE_METHOD


def test_an_unknown_sid_is_refused() -> None:
    assert _check(EIO="4", transport="polling", sid="nope") is RequestError.UNKNOWN_SID
    assert _check(EIO="4", transport="websocket", sid="nope", websocket=True) is RequestError.UNKNOWN_SID


def test_a_known_sid_is_accepted_and_a_websocket_may_upgrade_a_polling_session() -> None:
    sessions = {"p": "polling", "w": "websocket"}
    assert _check("POST", sessions=sessions, EIO="4", transport="polling", sid="p") == Request("polling", "p")
    assert _check(sessions=sessions, EIO="4", transport="websocket", sid="p", websocket=True) == Request(
        "websocket", "p"
    )


def test_polling_with_the_sid_of_an_upgraded_session_is_a_bad_request() -> None:
    sessions = {"w": "websocket"}
    assert _check(sessions=sessions, EIO="4", transport="polling", sid="w") is RequestError.BAD_REQUEST


def test_other_methods_on_a_session_are_bad_requests() -> None:
    assert _check("PUT", sessions={"p": "polling"}, EIO="4", transport="polling", sid="p") is RequestError.BAD_REQUEST


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (RequestError.UNKNOWN_TRANSPORT, 400, {"code": 0, "message": "Transport unknown"}),
        (RequestError.UNKNOWN_SID, 400, {"code": 1, "message": "Session ID unknown"}),
        (RequestError.BAD_HANDSHAKE_METHOD, 400, {"code": 2, "message": "Bad handshake method"}),
        (RequestError.BAD_REQUEST, 400, {"code": 3, "message": "Bad request"}),
        (RequestError.FORBIDDEN, 403, {"code": 4, "message": "Forbidden"}),
        (RequestError.UNSUPPORTED_PROTOCOL_VERSION, 400, {"code": 5, "message": "Unsupported protocol version"}),
    ],
)
def test_refusals_carry_the_reference_servers_code_and_message(error: RequestError, status: int, body: object) -> None:
    assert error.http_status == status
    assert msgspec.json.decode(error.body()) == body
