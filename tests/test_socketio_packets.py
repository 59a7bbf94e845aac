"""Socket.IO v5 packet conformance, sans-I/O: the encoding examples and validity rules of the published description."""

from __future__ import annotations

from typing import Any

import pytest

from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.socketio import packets
from starlette_realtime.socketio.packets import Decoder, Packet, PacketType

T = PacketType


@pytest.mark.parametrize(
    ("packet", "encoded"),
    [
        (Packet(T.CONNECT), ["0"]),
        (Packet(T.CONNECT, "/admin", {"sid": "oSO0"}), ['0/admin,{"sid":"oSO0"}']),
        (Packet(T.CONNECT_ERROR, "/", {"message": "Not authorized"}), ['4{"message":"Not authorized"}']),
        (
            Packet(T.CONNECT_ERROR, "/x", {"message": "m", "data": {"code": "c"}}),
            ['4/x,{"message":"m","data":{"code":"c"}}'],
        ),
        (Packet(T.EVENT, "/", ["foo"]), ['2["foo"]']),
        (Packet(T.EVENT, "/admin", ["bar"]), ['2/admin,["bar"]']),
        (Packet(T.EVENT, "/", ["foo"], 12), ['212["foo"]']),
        (Packet(T.ACK, "/admin", ["bar"], 13), ['3/admin,13["bar"]']),
        (Packet(T.ACK, "/", [], 12), ["312[]"]),
        (Packet(T.DISCONNECT), ["1"]),
        (Packet(T.DISCONNECT, "/admin"), ["1/admin,"]),
        (
            Packet(T.EVENT, "/", ["baz", b"\x01\x02\x03\x04"]),
            ['51-["baz",{"_placeholder":true,"num":0}]', b"\x01\x02\x03\x04"],
        ),
        (
            Packet(T.EVENT, "/admin", ["baz", b"\x01\x02", b"\x03\x04"]),
            ['52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', b"\x01\x02", b"\x03\x04"],
        ),
        (
            Packet(T.ACK, "/", ["bar", b"\x01\x02\x03\x04"], 15),
            ['61-15["bar",{"_placeholder":true,"num":0}]', b"\x01\x02\x03\x04"],
        ),
        (
            Packet(T.EVENT, "/", ["nested", {"a": [b"\x00"]}]),
            ['51-["nested",{"a":[{"_placeholder":true,"num":0}]}]', b"\x00"],
        ),
    ],
)
def test_encoding_examples(packet: Packet, encoded: list[str | bytes]) -> None:
    assert packets.encode(packet) == encoded


@pytest.mark.parametrize(
    ("messages", "packet"),
    [
        (["0"], Packet(T.CONNECT)),
        (['0{"token":"123"}'], Packet(T.CONNECT, "/", {"token": "123"})),
        (["0/admin,"], Packet(T.CONNECT, "/admin")),
        (["0/custom"], Packet(T.CONNECT, "/custom")),
        (['0/admin,{"token":"abc"}'], Packet(T.CONNECT, "/admin", {"token": "abc"})),
        (["1"], Packet(T.DISCONNECT)),
        (["1/custom"], Packet(T.DISCONNECT, "/custom")),
        (['2["message",1,"2",{"3":[true]}]'], Packet(T.EVENT, "/", ["message", 1, "2", {"3": [True]}])),
        (['2456["message-with-ack",1]'], Packet(T.EVENT, "/", ["message-with-ack", 1], 456)),
        (['2/admin,7["x"]'], Packet(T.EVENT, "/admin", ["x"], 7)),
        (["3/admin,13[]"], Packet(T.ACK, "/admin", [], 13)),
        (['313["a","b"]'], Packet(T.ACK, "/", ["a", "b"], 13)),
        (
            [
                '52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
                b"\x01\x02\x03",
                b"\x04\x05\x06",
            ],
            Packet(T.BINARY_EVENT, "/", ["message", b"\x01\x02\x03", b"\x04\x05\x06"]),
        ),
        (
            ['52-789["m",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]', b"a", b"b"],
            Packet(T.BINARY_EVENT, "/", ["m", b"b", b"a"], 789),
        ),
        (['61-/x,15["bar",{"_placeholder":true,"num":0}]', b"\x01"], Packet(T.BINARY_ACK, "/x", ["bar", b"\x01"], 15)),
    ],
)
def test_decoding_what_a_client_sends(messages: list[str | bytes], packet: Packet) -> None:
    decoder = Decoder()
    *head, last = messages
    for m in head:
        assert decoder.feed(m) is None
        assert decoder.waiting
    assert decoder.feed(last) == packet
    assert not decoder.waiting


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "abc",  # unknown packet type (the reference test suite's "4abc")
        "7",  # unknown packet type
        "8[]",
        "2{}",  # EVENT payload must be an array ("42{}")
        "2[]",  # ... non-empty
        "2",  # ... present
        "2[1]",  # ... whose first element is the event name
        '2abc["message-with-ack",1]',  # invalid ack id ("42abc[...]")
        '2["connect"]',  # reserved event names
        '2["disconnect",1]',
        '2["connect_error"]',
        "0[]",  # CONNECT payload must be an object
        '0"x"',
        "1{}",  # DISCONNECT carries nothing
        "3[]",  # ACK needs an id
        "31{}",  # ACK payload must be an array
        '4{"message":"x"}',  # CONNECT_ERROR only goes to clients
        '5["a",{"_placeholder":true,"num":0}]',  # binary without an attachment count
        '5x-["a"]',
        '50-["a"]',  # binary with zero attachments
        '2["a",',  # truncated JSON
        '2["a"]x',  # trailing garbage
        '299999999999["a"]',  # ack id out of range
        "01[]",  # CONNECT with an ack id
        '51001-["a"]',  # too many attachments
    ],
)
def test_invalid_packets_are_protocol_errors(text: str) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(text)


def test_a_placeholder_out_of_range_is_a_protocol_error() -> None:
    decoder = Decoder()
    assert decoder.feed('51-["a",{"_placeholder":true,"num":1}]') is None
    with pytest.raises(ProtocolError):
        decoder.feed(b"x")


def test_binary_without_an_announcing_packet_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(b"\x01")


def test_text_while_attachments_are_expected_is_a_protocol_error() -> None:
    decoder = Decoder()
    decoder.feed('51-["a",{"_placeholder":true,"num":0}]')
    with pytest.raises(ProtocolError):
        decoder.feed('2["b"]')


def test_deeply_nested_payload_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed('2["a",' + "[" * 5000 + "]" * 5000 + "]")


@pytest.mark.parametrize(
    "packet",
    [
        Packet(T.EVENT, "/chat", ["ev", 1, None, {"k": [b"\x00\xff", "s"]}], 3),
        Packet(T.ACK, "/", [b"one", b"two", 3], 0),
        Packet(T.EVENT, "/", ["only"]),
        Packet(T.CONNECT, "/a", {"pid": "p", "offset": "o"}),
    ],
)
def test_encode_then_decode_is_identity(packet: Packet) -> None:
    decoder = Decoder()
    out: Any = None
    for message in packets.encode(packet):
        out = decoder.feed(message)
    expected = packet
    if any(isinstance(x, bytes) for x in packets.encode(packet)[1:]):
        expected = Packet(
            T.BINARY_EVENT if packet.type is T.EVENT else T.BINARY_ACK, packet.nsp, packet.data, packet.id
        )
    assert out == expected


def test_the_reassembler_groups_a_binary_packet_and_passes_text_through() -> None:
    r = packets.Reassembler()
    assert r.feed('42["a"]') == '42["a"]'
    assert r.feed("3") == "3"
    head = '452-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert r.feed(head) is None
    assert r.feed(b"\x01") is None
    assert r.feed(b"\x02") == [head, b"\x01", b"\x02"]
    assert r.feed("461-/x,3[{}]") is None
    assert r.feed(b"z") == ["461-/x,3[{}]", b"z"]


@pytest.mark.parametrize("messages", [[b"\x01"], ['451-["a"]', '42["b"]'], ["45-[]"], ["450-[]"], ["45x-[]"]])
def test_the_reassembler_refuses_what_does_not_fit(messages: list[str | bytes]) -> None:
    r = packets.Reassembler()
    with pytest.raises(ProtocolError):
        for m in messages:
            r.feed(m)
