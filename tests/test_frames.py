import msgspec
import pytest

from starlette_realtime.frames import MAX_ACK_ID, Ack, ClientFrame, Connect, ErrorInfo, Event, Hello, Position

json_dec = msgspec.json.Decoder(ClientFrame)


def test_event_is_a_tagged_array() -> None:
    raw = msgspec.json.encode(Event("/chat", "say", msgspec.Raw(b'{"a":1}'), 3))
    assert raw == b'[5,"/chat","say",{"a":1},3,null,null,null]'


def test_trailing_fields_may_be_omitted_by_senders() -> None:
    frame = json_dec.decode(b'[5,"/chat","say",null]')
    assert isinstance(frame, Event)
    assert frame.id is None and frame.room is None


def test_connect_with_positions_round_trips() -> None:
    frame = Connect("/chat", msgspec.Raw(b"null"), "sess", {"lobby": Position("e.1", 4)})
    back = json_dec.decode(msgspec.json.encode(frame))
    assert isinstance(back, Connect)
    assert back.positions == {"lobby": Position("e.1", 4)}


@pytest.mark.parametrize("ack_id", [-1, MAX_ACK_ID + 1, 2**64])
def test_ack_ids_are_range_checked(ack_id: int) -> None:
    with pytest.raises(msgspec.ValidationError):
        json_dec.decode(msgspec.json.encode([5, "/chat", "x", None, ack_id]))


def test_server_only_frames_are_not_client_frames() -> None:
    with pytest.raises(msgspec.ValidationError):
        json_dec.decode(msgspec.json.encode(Hello(1, "n", 1.0, 1.0, 10)))


def test_ack_error_shape() -> None:
    raw = msgspec.json.encode(Ack("/chat", 1, msgspec.Raw(b"null"), ErrorInfo("invalid_payload", "bad")))
    assert raw == b'[6,"/chat",1,null,["invalid_payload","bad"]]'


def test_msgpack_and_json_carry_the_same_frames() -> None:
    frame = Event("/c", "e", msgspec.Raw(msgspec.msgpack.encode([1, 2])), 7)
    back = msgspec.msgpack.Decoder(ClientFrame).decode(msgspec.msgpack.encode(frame))
    assert isinstance(back, Event)
    assert (back.ns, back.event, back.id) == ("/c", "e", 7)
    assert msgspec.msgpack.decode(back.data) == [1, 2]
