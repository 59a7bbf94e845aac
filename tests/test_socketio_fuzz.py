"""Random and mutated Engine.IO / Socket.IO input never breaks the sans-I/O layers: it decodes or is a ProtocolError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starlette_realtime.exceptions import ProtocolError
from starlette_realtime.socketio import engineio, packets
from starlette_realtime.socketio.packets import pack_unit
from starlette_realtime.socketio.session import CLOSE_CODES, EngineSession, Transport, Verdict
from starlette_realtime.socketio.wire import SocketIOWire

W = SocketIOWire()
VALID = [
    "40",
    '40{"token":"x"}',
    "40/admin,",
    '42["ev",1,"2",{"3":[true]}]',
    '42/chat,12["ev"]',
    "43/chat,12[]",
    '452-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    "41",
    "41/chat,",
    "3",
    "2probe",
    "5",
    "6",
]
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutate(data: st.DataObject) -> str:
    base = data.draw(st.sampled_from(VALID))
    ops = data.draw(st.lists(st.tuples(st.integers(0, 60), st.text(max_size=3)), max_size=4))
    for pos, insert in ops:
        pos = min(pos, len(base))
        cut = data.draw(st.integers(0, 2))
        base = base[:pos] + insert + base[pos + cut :]
    return base


@SETTINGS
@given(st.data())
def test_mutated_packets_decode_or_are_protocol_errors(data: st.DataObject) -> None:
    text = mutate(data) if data.draw(st.booleans()) else data.draw(st.text(max_size=40))
    for fn in (
        lambda: W.receive(text, None),
        lambda: packets.Decoder().feed(text),
        lambda: engineio.decode_ws(text, None),
    ):
        try:
            fn()
        except ProtocolError:
            pass


@SETTINGS
@given(st.binary(max_size=64), st.lists(st.binary(max_size=8), max_size=3), st.text(max_size=30))
def test_random_binary_units_decode_or_are_protocol_errors(blob: bytes, attachments: list[bytes], head: str) -> None:
    for data in (blob, pack_unit([head, *attachments]), pack_unit(["4" + head, *attachments])):
        try:
            W.receive(None, data)
        except ProtocolError:
            pass


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=20), st.binary(max_size=20), st.sampled_from(VALID)), max_size=12))
def test_a_session_survives_any_sequence_of_frames(frames: list[str | bytes]) -> None:
    for transport in Transport:
        s = EngineSession("x", transport=transport, now=0.0, max_payload=64)
        if transport is Transport.POLLING:
            s.begin_upgrade()
        for i, frame in enumerate(frames):
            if isinstance(frame, bytes):
                s.receive_ws(None, frame, float(i))
            else:
                s.receive_ws(frame, None, float(i))
            s.tick(float(i))
            s.ws_frames()
            s.messages()
        assert s.close_reason in (None, *CLOSE_CODES)


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_a_polling_session_survives_any_posts(bodies: list[bytes]) -> None:
    s = EngineSession("x", transport=Transport.POLLING, now=0.0, max_payload=64)
    for body in bodies:
        if s.begin_post(len(body)) is Verdict.OK:
            assert s.receive_post(body, 0.0) in tuple(Verdict)
        s.begin_get()
        s.take_get_body()
        for message in s.messages():
            try:
                if isinstance(message, str):
                    W.receive(message, None)
            except ProtocolError:
                pass


def test_encoded_server_frames_are_valid_engineio_payloads() -> None:
    from starlette_realtime.frames import Ack, Event

    for frame in (Event("/", "ev", W.encode_payload({"b": b"\x00\x01"})), Ack("/a", 1, W.encode_payload([1, "x"]))):
        first, *attachments = engineio.decode_payload(W.encode(frame))
        assert first.type is engineio.PacketType.MESSAGE and isinstance(first.data, str)
        decoded = packets.decode(first.data)
        if attachments:
            assert isinstance(decoded, packets.Partial) and decoded.expected == len(attachments)
