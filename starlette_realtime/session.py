"""Resumable sessions: the signed session string a client presents to recover.

The session string names a namespace connection (namespace and sid) and is
signed with the router's secret key, so it can be neither forged nor made to
name another connection; the saved state also records the user, and a client
authenticated as someone else cannot take the session over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import anyio
import msgspec
from itsdangerous import BadData, URLSafeTimedSerializer

from .backends import Backend, LiveSessionStore, SessionStore
from .core import DedupState
from .frames import Position

logger = logging.getLogger(__name__)

_SALT = "starlette_realtime.session"


class SessionState(msgspec.Struct, array_like=True, frozen=True):
    """What a backend keeps of a disconnected session, for recovery on any node.

    Attributes:
        user: the user's identity key (``None`` for anonymous connections).
        streams: every stream the connection received, with its position at join time.
        last_id: the highest client event id handled (kept for sessions saved by older versions).
        dedup: the session's dedup window with its kept answers (docs/protocol.md).
    """

    user: str | None
    streams: dict[str, Position | None]
    last_id: int = -1
    dedup: DedupState | None = None


class SessionSigner:
    """Signs and checks session strings.

    Args:
        secret_keys: the router's secret keys, newest first (old ones still verify).
        max_age: seconds a session string stays valid after it was signed, or ``None``
            (the default) for no limit of its own.  The router passes none: a session
            string is signed when its connection opens, and the recovery window counts
            from the drop (the saved state's time to live), so a connection that lived
            longer than the window must still recover.
    """

    def __init__(self, secret_keys: list[str | bytes], *, max_age: float | None = None) -> None:
        # itsdangerous signs with the last key and accepts any: we list newest first.
        keys = [k.encode() if isinstance(k, str) else k for k in reversed(secret_keys)]
        self._serializer = URLSafeTimedSerializer(keys, salt=_SALT)
        self.max_age = max_age

    def sign(self, namespace: str, sid: str) -> str:
        """The session string for a connection."""
        return self._serializer.dumps([namespace, sid])

    def verify(self, namespace: str, session: str) -> str | None:
        """Return the sid named by a valid session string for ``namespace``, else ``None``."""
        try:
            max_age = None if self.max_age is None else math.ceil(self.max_age)
            value = self._serializer.loads(session, max_age=max_age)
        except (BadData, ValueError, TypeError):
            return None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or value[0] != namespace
            or not isinstance(value[1], str)
        ):
            return None
        return value[1]

    def __repr__(self) -> str:
        return f"SessionSigner(max_age={self.max_age})"


def session_key(namespace: str, sid: str) -> str:
    """The backend key under which a session's state is saved."""
    return f"session:{namespace}:{sid}"


STATE_ENCODER = msgspec.msgpack.Encoder()
STATE_DECODER = msgspec.msgpack.Decoder(SessionState)


#: Pauses (seconds) between further looks for a session that another node has not saved yet:
#: that node saves it once it has noticed the drop, and a client that reconnects at once to
#: another node can get there first.  A session that is really gone costs these 0.5 s.
SAVE_WAIT = (0.025, 0.05, 0.1, 0.125, 0.2)

#: Sessions written through concurrently by one flush.
_FLUSH_BATCH = 256


class _Live:
    # The event is made only when a resume waits for this socket to close: an asyncio.Event
    # costs ~900 bytes (its waiters' deque), and almost no live session is ever waited for.
    __slots__ = ("_closed", "done", "supersede", "user")

    def __init__(self, user: str | None, supersede: Callable[[], None]) -> None:
        self.user = user
        self.supersede = supersede
        self.done = False
        self._closed: anyio.Event | None = None

    def close(self) -> None:
        self.done = True
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        if self.done:
            return
        if self._closed is None:
            self._closed = anyio.Event()
        await self._closed.wait()


class Sessions:
    """Saving and taking resumable sessions, through the backend, for one node.

    The node also knows its own live sessions: a client that resumes a session whose
    old socket this node still serves (the drop is not noticed yet, or its handler is
    still running) supersedes that socket and waits for it to save, instead of racing it.

    Args:
        backend: where sessions are kept (a :class:`~starlette_realtime.backends.SessionStore`,
            else nothing is recoverable).
        window: seconds a saved session stays resumable.
        grace: seconds to wait for a superseded socket of this node to save its session.
    """

    def __init__(
        self, backend: Backend, *, window: float, grace: float, write_through: bool = True,
        flush_interval: float = 0.05,
    ) -> None:
        self.backend = backend
        # A runtime_checkable Protocol's isinstance() costs microseconds: once, not per connection.
        self._enabled = isinstance(backend, SessionStore)
        self._write_through = write_through and isinstance(backend, LiveSessionStore)
        self.flush_interval = flush_interval
        #: Live sessions changed since the last flush: how to build each one's state, and its owner.
        self._dirty: dict[tuple[str, str], tuple[Callable[[], SessionState], str]] = {}
        self.window = window
        self.grace = grace
        self._live: dict[tuple[str, str], _Live] = {}

    @property
    def enabled(self) -> bool:
        """Whether the backend keeps sessions."""
        return self._enabled

    @property
    def write_through(self) -> bool:
        """Whether live sessions are kept in the backend as they change (they survive a node's crash)."""
        return self._write_through

    async def put(
        self, ns: str, sid: str, state: SessionState, *, owner: str, create: bool, final: bool = False
    ) -> bool:
        """Write a live session through to the backend (failures are logged, not raised).

        Returns:
            Whether it was written (``False`` when another connection owns it now).
        """
        backend = self.backend
        if not self._write_through or not isinstance(backend, LiveSessionStore):
            return False
        try:
            return await backend.put_session(
                session_key(ns, sid), STATE_ENCODER.encode(state), self.window, owner=owner, create=create,
                final=final,
            )
        except Exception:
            logger.warning("could not write the session through (sid=%s namespace=%s)", sid, ns, exc_info=True)
            return False

    def changed(self, ns: str, sid: str, build: Callable[[], SessionState], owner: str) -> None:
        """A live session changed (a join, a leave, an answer): write it through at the next flush.

        Costs a dictionary store: the state is built and written once per flush, however many
        changes it had, so that the answer path never waits for Redis.
        """
        if self._write_through:
            self._dirty[(ns, sid)] = (build, owner)

    async def flush(self) -> None:
        """Write every changed live session through to the backend (``_FLUSH_BATCH`` at a time)."""
        dirty, self._dirty = self._dirty, {}
        items = [(key, build, owner) for key, (build, owner) in dirty.items() if key in self._live]
        for start in range(0, len(items), _FLUSH_BATCH):
            batch = items[start : start + _FLUSH_BATCH]
            await asyncio.gather(*(
                self.put(ns, sid, build(), owner=owner, create=False) for (ns, sid), build, owner in batch
            ))

    async def keep_alive(self) -> None:
        """Flush changed sessions every ``flush_interval``, and push back the expiry of this node's
        live sessions a third of the window at a time (forever)."""
        backend = self.backend
        if not self._write_through or not isinstance(backend, LiveSessionStore):
            return
        period = max(0.5, self.window / 3)
        next_touch = time.monotonic() + period
        while True:
            await anyio.sleep(self.flush_interval)
            if self._dirty:
                await self.flush()
            if time.monotonic() >= next_touch:
                next_touch = time.monotonic() + period
                keys = [session_key(ns, sid) for ns, sid in list(self._live)]
                try:
                    await backend.touch_sessions(keys, self.window)
                except Exception:
                    logger.warning("could not refresh %d live sessions", len(keys), exc_info=True)

    def opened(self, ns: str, sid: str, user: str | None, supersede: Callable[[], None]) -> None:
        """A connection opened on this node: it can be superseded by its own resume."""
        self._live[(ns, sid)] = _Live(user, supersede)

    def closed(self, ns: str, sid: str) -> None:
        """A connection of this node is closed (and its session saved, if it was to be)."""
        self._dirty.pop((ns, sid), None)
        live = self._live.pop((ns, sid), None)
        if live is not None:
            live.close()

    async def save(self, ns: str, sid: str, state: SessionState, *, owner: str = "") -> None:
        """Keep a session for ``window`` seconds (failures are logged, not raised).

        With write-through, only over the state this connection (``owner``) wrote: a session
        that its client already resumed elsewhere is left to its new owner.
        """
        if self.write_through:
            await self.put(ns, sid, state, owner=owner, create=False, final=True)
            return
        if not isinstance(self.backend, SessionStore):
            return
        try:
            await self.backend.save_session(session_key(ns, sid), STATE_ENCODER.encode(state), self.window)
        except Exception:
            logger.warning("could not save the session for recovery (sid=%s namespace=%s)", sid, ns, exc_info=True)

    async def take(self, ns: str, sid: str, user: str | None) -> SessionState | None:
        """Take a saved session of ``user`` (it can be taken once); ``None`` when there is none.

        Raises:
            BackendUnavailable: the backend is down.
        """
        backend = self.backend
        if not isinstance(backend, SessionStore):
            return None
        live = self._live.get((ns, sid))
        if live is not None and live.user == user:
            live.supersede()
            with anyio.move_on_after(self.grace + 1.0):
                await live.wait_closed()
        key = session_key(ns, sid)
        if self._write_through and isinstance(backend, LiveSessionStore):
            # Prefer the state its connection saved on closing (the newest); a live one written
            # through may be up to flush_interval behind.  It is taken only when no node saves
            # one in time: its node crashed (or still holds a half-open socket).
            raw, pending = await backend.take_final_session(key)
            for pause in SAVE_WAIT:
                if raw is not None:
                    break
                await anyio.sleep(pause)
                raw, pending = await backend.take_final_session(key)
            if raw is None and pending:
                raw = await backend.take_session(key)
        else:
            raw = await backend.take_session(key)
            for pause in SAVE_WAIT:
                if raw is not None:
                    break
                await anyio.sleep(pause)
                raw = await backend.take_session(key)
        if raw is None:
            return None
        try:
            state = STATE_DECODER.decode(raw)
        except msgspec.DecodeError:
            return None
        if state.user != user:
            # Someone else's session: never hand it over.  Put it back for its owner.
            await backend.save_session(key, raw, self.window)
            return None
        return state

    def __repr__(self) -> str:
        return f"Sessions(window={self.window}, live={len(self._live)})"
