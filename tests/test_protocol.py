import msgspec
import pytest

from starlette_realtime import status
from starlette_realtime.codec import JsonCodec, MsgpackCodec
from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.frames import Connect, Event
from starlette_realtime.protocol import DedupWindow, HeartbeatAction, ServerProtocol, heartbeat_action


def test_receive_decodes_client_frames() -> None:
    proto = ServerProtocol(JsonCodec(), max_message_size=100)
    frame = proto.receive('[1,"/chat",{"token":"t"}]', None)
    assert isinstance(frame, Connect)
    assert msgspec.json.decode(frame.auth) == {"token": "t"}


def test_oversized_message_closes_with_1009() -> None:
    proto = ServerProtocol(JsonCodec(), max_message_size=10)
    with pytest.raises(ProtocolError) as info:
        proto.receive('[5,"/chat","x","aaaaaaaaaaaaaa"]', None)
    assert info.value.close_code == status.WS_1009_MESSAGE_TOO_BIG


def test_wrong_frame_kind_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        ServerProtocol(JsonCodec(), max_message_size=100).receive(None, b"[8]")
    assert info.value.close_code == status.WS_4501_PROTOCOL_ERROR
    with pytest.raises(ProtocolError):
        ServerProtocol(MsgpackCodec(), max_message_size=100).receive("[8]", None)


def test_built_frames() -> None:
    proto = ServerProtocol(JsonCodec(), max_message_size=100)
    assert proto.ack_error("/c", 4, "unknown_event", "no") == b'[6,"/c",4,null,["unknown_event","no"]]'
    assert proto.ack("/c", 4, [1]) == b'[6,"/c",4,[1],null]'
    assert proto.ping() == b"[7]"
    assert proto.ping() is proto.ping()
    assert msgspec.json.decode(proto.hello(node="n", ping_interval=1.0, ping_timeout=2.0)) == [0, 1, "n", 1.0, 2.0, 100]


def test_call_ids_increase_and_wrap() -> None:
    proto = ServerProtocol(JsonCodec(), max_message_size=100)
    assert [proto.next_call_id() for _ in range(3)] == [1, 2, 3]
    proto._next_call_id = 2**31 - 1
    assert proto.next_call_id() == 0


def test_event_frame_builder() -> None:
    proto = ServerProtocol(JsonCodec(), max_message_size=100)
    frame = JsonCodec().decode(proto.event("/c", "q", msgspec.Raw(b'"x"'), 9))
    assert isinstance(frame, Event) and frame.id == 9


@pytest.mark.parametrize(
    ("now", "last_received", "ping_sent", "last_ping", "expected"),
    [
        (10.0, 0.0, None, 0.0, HeartbeatAction.PING),  # interval elapsed
        (5.0, 0.0, None, 0.0, HeartbeatAction.NONE),  # not yet
        (12.0, 0.0, 10.0, 10.0, HeartbeatAction.NONE),  # ping out, within timeout
        (15.0, 0.0, 10.0, 10.0, HeartbeatAction.TIMEOUT),  # ping unanswered
        (15.0, 11.0, 10.0, 10.0, HeartbeatAction.NONE),  # answered
        (20.0, 11.0, 10.0, 10.0, HeartbeatAction.PING),  # answered, next ping due
    ],
)
def test_heartbeat_action(
    now: float, last_received: float, ping_sent: float | None, last_ping: float, expected: HeartbeatAction
) -> None:
    action = heartbeat_action(
        now, last_received=last_received, ping_sent=ping_sent, last_ping=last_ping, interval=10.0, timeout=5.0
    )
    assert action is expected


def test_dedup_window() -> None:
    window = DedupWindow(size=2)
    assert not window.seen(1)
    window.handled(1)
    window.remember(1, b"a")
    window.handled(2)
    window.remember(2, b"b")
    window.handled(3)
    window.remember(3, b"c")
    assert window.seen(1) and window.seen(3) and not window.seen(4)
    assert window.cached(1) is None and window.cached(3) == b"c"
