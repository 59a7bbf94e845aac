import msgspec
import pytest

from starlette_realtime.codec import JsonCodec, MsgpackCodec, codecs
from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.frames import Event


class Point(msgspec.Struct):
    x: int
    y: int


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()])
def test_two_step_decoding(codec: JsonCodec) -> None:
    raw = codec.encode(Event("/g", "move", codec.encode_payload(Point(1, 2)), 5))
    frame = codec.decode(raw)
    assert isinstance(frame, Event)
    assert codec.payload_decoder(Point)(frame.data) == Point(1, 2)


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()])
def test_payload_decoders_are_cached(codec: JsonCodec) -> None:
    assert codec.payload_decoder(Point) is codec.payload_decoder(Point)


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()])
@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[99]", b"{}", b"[5]"])
def test_garbage_is_a_protocol_error(codec: JsonCodec, data: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(data)


def test_deep_nesting_is_a_protocol_error_not_a_crash() -> None:
    codec = JsonCodec()
    with pytest.raises(ProtocolError, match="nested too deeply"):
        codec.decode(b'[5,"/c","e",' + b"[" * 10000 + b"]" * 10000 + b"]")


def test_codecs_per_subprotocol() -> None:
    table = codecs()
    assert set(table) == {"rt.v1.json", "rt.v1.msgpack"}
    assert table["rt.v1.json"].message(b"[7]") == {"type": "websocket.send", "text": "[7]"}
    assert table["rt.v1.msgpack"].message(b"\x91\x07") == {"type": "websocket.send", "bytes": b"\x91\x07"}
