"""The table of live Engine.IO sessions: a polling session closed by the server waits for its last GET, boundedly."""

from __future__ import annotations

from starlette_realtime.socketio.live import LiveSession, SessionTable
from starlette_realtime.socketio.session import EngineSession, Transport
from tests.conftest import ManualClock


def live(table: SessionTable, sid: str, transport: Transport = Transport.POLLING) -> LiveSession:
    session = LiveSession(EngineSession(sid, transport=transport, now=0.0), None, table.forget)
    table.add(session)
    if transport is Transport.POLLING:  # the handshake's GET takes the open packet
        session.engine.begin_get()
        assert (session.engine.take_get_body() or b"")[:1] == b"0"
    return session


def test_a_closed_polling_session_is_kept_until_its_last_get_then_forgotten() -> None:
    clock = ManualClock()
    table = SessionTable(linger=5.0, max_sessions=1, clock=clock)
    a = live(table, "a")
    assert table.full()
    a.engine.close("server close", 4006)
    a.finish()  # what flush() does once the session is closed
    assert table.get("a") is a  # its client's next GET still finds it
    assert not table.full()  # a closing session does not hold a slot
    a.engine.begin_get()
    assert a.engine.take_get_body() == b"1"
    table.forget(a)
    assert table.get("a") is None and len(table) == 0


def test_a_closed_session_whose_client_never_comes_back_is_swept_after_linger() -> None:
    clock = ManualClock()
    table = SessionTable(linger=5.0, max_sessions=None, clock=clock)
    a, b = live(table, "a"), live(table, "b")
    a.engine.close()
    a.finish()
    clock.advance(3.0)
    b.engine.close()
    b.finish()
    clock.advance(2.5)  # a's deadline passed, b's not
    table.sweep()
    assert table.get("a") is None and table.get("b") is b
    clock.advance(3.0)
    table.sweep()
    assert len(table) == 0


def test_other_closes_forget_the_session_at_once() -> None:
    table = SessionTable(linger=5.0, max_sessions=None, clock=ManualClock())
    ws = live(table, "w", Transport.WEBSOCKET)
    ws.engine.close()
    ws.finish()
    polling = live(table, "p")
    polling.engine.begin_get()
    polling.engine.abort_get()  # its GET went away: nothing more can reach the client
    assert polling.engine.closed
    polling.finish()
    assert len(table) == 0
