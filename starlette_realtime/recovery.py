"""Opening a namespace connection's streams, resuming an earlier session when the client presents one.

The order matters for "no gap, no duplicate": the connection first starts
receiving live publications into a buffer, then reads each stream's missed
publications from the backend's history, sends CONNECTED, the replay, and
finally the buffered live publications that the replay did not already cover.
"""

from __future__ import annotations

import logging
import time

import anyio

from . import status
from .backends import Backend, History
from .backends.base import Publication
from .connection import Connection, ConnectionState
from .core import DedupWindow
from .exceptions import BackendUnavailable, ConnectionClosed, Rejected
from .frames import Connect, Connected, Event, Position
from .hub import Hub
from .identity import user_key
from .membership import Membership
from .metrics import Metrics
from .rooms import ALL_ROOM, sid_room
from .session import Sessions, SessionSigner, SessionState

logger = logging.getLogger(__name__)


class Recovery:
    """Establishes namespace connections: streams, recovery of a presented session, CONNECTED.

    Args:
        backend: the node's backend (history, when it keeps one).
        sessions: the node's session store.
        signer: signs and checks session strings.
        membership: joins the connection's streams.
        hub: replays publications to one connection.
        metrics: told about recoveries.
    """

    def __init__(
        self, backend: Backend, sessions: Sessions, signer: SessionSigner, membership: Membership, hub: Hub,
        metrics: Metrics,
    ) -> None:
        self.backend = backend
        self._history: History | None = backend if isinstance(backend, History) else None
        self.sessions = sessions
        self.signer = signer
        self.membership = membership
        self.hub = hub
        self.metrics = metrics

    async def establish(self, conn: Connection, frame: Connect) -> DedupWindow | None:
        """Join the connection's streams, recover what it missed, and send CONNECTED.

        Returns:
            The dedup window of the resumed session, or ``None`` for a new one.

        Raises:
            Rejected: ``UNAVAILABLE``, retryable, when the backend is down before CONNECTED
                (the client retries with backoff instead of losing its WebSocket).
        """
        state: SessionState | None = None
        try:
            state = await self._load(conn, frame)
            return await self._establish(conn, frame, state)
        except BackendUnavailable as exc:
            if conn.state is not ConnectionState.CONNECTING:
                raise
            if state is not None:
                # The session was taken (it can be taken once): give it back, or the client's
                # retry of this refusal would find none and lose what it missed.
                with anyio.CancelScope(shield=True):
                    await self.sessions.save(conn.namespace, conn.sid, state)
            logger.warning("cannot open %s for sid=%s: %s", conn.namespace, conn.sid, exc)
            raise Rejected(
                status.CONNECT_UNAVAILABLE, "the server's backend is unavailable; retry later", retryable=True
            ) from exc

    async def _load(self, conn: Connection, frame: Connect) -> SessionState | None:
        if frame.session is None or not self.sessions.enabled:
            return None
        sid = self.signer.verify(conn.namespace, frame.session)
        if sid is None:
            return None
        state = await self.sessions.take(conn.namespace, sid, user_key(conn.user))
        if state is not None:
            conn.sid = sid
        return state

    async def _establish(self, conn: Connection, frame: Connect, state: SessionState | None) -> DedupWindow | None:
        ns = conn.namespace
        presented = frame.session is not None
        window: DedupWindow | None = None
        if state is not None:
            if state.dedup is not None:
                window = DedupWindow.restore(state.dedup, ns, conn.codec.from_json)
            else:
                window = DedupWindow()
                window.high = state.last_id
        conn.buffer = []
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
        for stream in (ALL_ROOM, sid_room(conn.sid)):
            await self.membership.add_stream(conn, stream)
        for room in rooms:
            conn.rooms = conn.rooms | {room}
            await self.membership.add_stream(conn, room)

        replay: list[Publication] = []
        lost: list[tuple[str, Position | None]] = []
        covered: dict[str, int] = {}
        history = self._history
        if state is not None and history is not None:
            client = frame.positions or {}
            for stream in list(conn.joined):
                saved = state.streams.get(stream)
                if stream in state.streams:
                    conn.joined[stream] = saved
                position = client.get(stream, saved)
                reply = await history.since(ns, stream, position)
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
        self.membership.count_user(conn)
        connected = Connected(
            ns, conn.sid, self.signer.sign(ns, conn.sid), recovered, presented and state is None
        )
        raw = conn.codec.encode(connected)
        conn.outbox.push(conn.codec.message(raw), len(raw))
        if presented:
            self.metrics.connection_recovered(ns, recovered)
        self.hub.replay(conn, replay)
        for stream, position in lost:
            payload = {"room": stream, "epoch": position.epoch if position else None}
            raw = conn.codec.encode(Event(ns, "$resync", conn.codec.encode_payload(payload), None, stream))
            conn.outbox.push(conn.codec.message(raw), len(raw))
        buffered = conn.buffer or []
        live = [p for p in buffered if not (p.offset and p.offset <= covered.get(p.room, 0))]
        self.hub.replay(conn, live)
        floors = {room: offset for room, offset in covered.items() if offset}
        # A publication the history read already covered can still come over pub/sub after
        # this point (the backend stores it before it publishes it): keep filtering for a while.
        conn.buffer = _Floors(conn, floors, self.hub) if floors else None
        self.metrics.connection_opened(ns)
        early, conn.early = conn.early, None
        for event, data, volatile in early or ():
            try:
                await conn.emit(event, data, volatile=volatile)
            except ConnectionClosed:
                break
            except Exception:
                logger.exception("an event emitted in on_connect could not be sent (sid=%s event=%s)", conn.sid, event)
        for room in rooms:
            await conn.endpoint.on_join(conn, room)
        return window

    def __repr__(self) -> str:
        return f"Recovery(backend={self.backend!r})"


class _Floors(list[Publication]):
    """Stands in for a recovered connection's buffer until live delivery passes what the replay sent.

    The hub hands a connection whose ``buffer`` is set every publication through ``append``
    (its hot loop checks nothing more).  A publication at or below the replayed offset of its
    stream is a duplicate and is dropped; the others are delivered one by one.  Once every
    stream has moved past its floor, or after ``_FLOOR_SECONDS``, the connection is back on
    the hub's fast path.
    """

    def __init__(self, conn: Connection, floors: dict[str, int], hub: Hub) -> None:
        super().__init__()
        self.conn = conn
        self.floors = floors
        self.hub = hub
        self.until = time.monotonic() + _FLOOR_SECONDS

    def append(self, pub: Publication) -> None:
        floor = self.floors.get(pub.room)
        if floor is not None:
            if pub.offset and pub.offset <= floor:
                return
            del self.floors[pub.room]
        self.hub.replay(self.conn, (pub,))
        if not self.floors or time.monotonic() > self.until:
            self.conn.buffer = None


#: How long a recovered connection filters live publications that the replay covered.
_FLOOR_SECONDS = 5.0


__all__ = ["Recovery"]
