"""Opening a namespace connection, resuming an earlier session when the client presents one.

The order matters for "no gap, no duplicate": the connection first starts
receiving live publications into a buffer, then reads each stream's missed
publications from the backend's history, sends CONNECTED, the replay, and
finally the buffered live publications that the replay did not already cover.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import msgspec

from .backends import History, SessionStore
from .backends.base import Publication
from .connection import Connection, ConnectionState
from .exceptions import BackendUnavailable, Rejected
from .frames import Connect, Event, Position
from .rooms import ALL_ROOM, sid_room
from .session import STATE_DECODER, SessionState, session_key

if TYPE_CHECKING:
    from .routing import RealtimeRouter

logger = logging.getLogger(__name__)

#: The CONNECT_ERROR code (retryable) of a connection that could not be opened because the backend is down.
UNAVAILABLE = "UNAVAILABLE"

#: Pauses (seconds) between further looks for a session that is not saved yet: the node of
#: the dropped connection saves it once it has noticed the drop and left the connection's
#: rooms, and a client that reconnects at once, to another node, can get there first.
#: A session that is really gone costs these 0.5 s before CONNECTED (recovery_failed).
SAVE_WAIT = (0.025, 0.05, 0.1, 0.125, 0.2)


async def _load_state(router: RealtimeRouter, conn: Connection, frame: Connect) -> SessionState | None:
    if frame.session is None or not isinstance(router.backend, SessionStore):
        return None
    sid = router.signer.verify(conn.namespace, frame.session)
    if sid is None:
        return None
    raw = await router.backend.take_session(session_key(conn.namespace, sid))
    for pause in SAVE_WAIT:
        if raw is not None:
            break
        await anyio.sleep(pause)
        raw = await router.backend.take_session(session_key(conn.namespace, sid))
    if raw is None:
        return None
    try:
        state = STATE_DECODER.decode(raw)
    except msgspec.DecodeError:
        return None
    from .routing import user_key

    if state.user != user_key(conn.user):
        # Someone else's session: never hand it over.  Put it back for its owner.
        await router.backend.save_session(session_key(conn.namespace, sid), raw, router.config.recovery_window)
        return None
    conn.sid = sid
    return state


async def establish(router: RealtimeRouter, conn: Connection, frame: Connect) -> None:
    """Join the connection's streams, recover what it missed, and send CONNECTED.

    Raises:
        Rejected: ``UNAVAILABLE``, retryable, when the backend is down before CONNECTED
            (the client retries with backoff instead of losing its WebSocket).
    """
    try:
        await _establish(router, conn, frame)
    except BackendUnavailable as exc:
        if conn.state is not ConnectionState.CONNECTING:
            raise
        logger.warning("cannot open %s for sid=%s: %s", conn.namespace, conn.sid, exc)
        raise Rejected(UNAVAILABLE, "the server's backend is unavailable; retry later", retryable=True) from exc


async def _establish(router: RealtimeRouter, conn: Connection, frame: Connect) -> None:
    ns = conn.namespace
    state = await _load_state(router, conn, frame)
    presented = frame.session is not None
    if state is not None:
        conn.dedup.last_id = state.last_id
    conn.buffer = []
    streams: list[str] = [ALL_ROOM, sid_room(conn.sid)]
    rooms: list[str] = []
    if state is not None:
        for room in state.streams:
            if room.startswith("#"):
                continue
            try:
                allowed = await conn.endpoint.authorize_join(conn, room)
            except Exception:
                logger.exception("authorize_join failed during recovery (sid=%s room=%s)", conn.sid, room)
                allowed = False
            if allowed:
                rooms.append(room)
    for stream in streams:
        await router._add_stream(conn, stream)
    for room in rooms:
        conn.rooms.add(room)
        await router._add_stream(conn, room)

    replay: list[Publication] = []
    lost: list[tuple[str, Position | None]] = []
    covered: dict[str, int] = {}
    if state is not None and isinstance(router.backend, History):
        client = frame.positions or {}
        for stream in list(conn.joined):
            saved = state.streams.get(stream)
            if stream in state.streams:
                conn.joined[stream] = saved
            position = client.get(stream, saved)
            reply = await router.backend.since(ns, stream, position)
            if reply.recovered:
                replay.extend(reply.publications)
                if reply.publications:
                    covered[stream] = reply.publications[-1].offset
                elif position is not None:
                    covered[stream] = position.offset
            else:
                lost.append((stream, reply.position))
    recovered = state is not None and not lost
    conn.recovered = recovered
    conn.state = ConnectionState.OPEN
    router._count_user(conn)
    raw = conn.link.protocol.connected(
        ns,
        conn.sid,
        router.signer.sign(ns, conn.sid),
        recovered=recovered,
        recovery_failed=presented and state is None,
    )
    conn.outbox.push(conn.codec.message(raw), len(raw))
    if presented:
        router.metrics.connection_recovered(ns, recovered)
    router.hub.replay(conn, replay)
    for stream, position in lost:
        payload = {"room": stream, "epoch": position.epoch if position else None}
        data = conn.codec.encode_payload(payload)
        raw = conn.codec.encode(Event(ns, "$resync", data, None, stream))
        conn.outbox.push(conn.codec.message(raw), len(raw))
    buffered, conn.buffer = conn.buffer or [], None
    live = [p for p in buffered if not (p.offset and p.offset <= covered.get(p.room, 0))]
    router.hub.replay(conn, live)
    router.metrics.connection_opened(ns)
    for room in rooms:
        await conn.endpoint.on_join(conn, room)
