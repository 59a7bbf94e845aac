"""Resumable sessions: the signed session string a client presents to recover.

The session string names a namespace connection (namespace and sid) and is
signed with the router's secret key, so it can be neither forged nor made to
name another connection; the saved state also records the user, and a client
authenticated as someone else cannot take the session over.
"""

from __future__ import annotations

import math

import msgspec
from itsdangerous import BadData, URLSafeTimedSerializer

from .frames import Position

_SALT = "starlette_realtime.session"


class SessionState(msgspec.Struct, array_like=True, frozen=True):
    """What a backend keeps of a disconnected session, for recovery on any node.

    Attributes:
        user: the user's identity key (``None`` for anonymous connections).
        streams: every stream the connection received, with its position at join time.
        last_id: the highest client event id handled (for deduplication).
    """

    user: str | None
    streams: dict[str, Position | None]
    last_id: int = -1


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
