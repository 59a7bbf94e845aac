"""Sessions in Redis: saved when a connection closes, and written through while it lives (crash recovery)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from .redis_wire import Names

T = TypeVar("T")


class RedisSessions:
    """The session-store part of :class:`~starlette_realtime.backends.redis.RedisBackend`
    (``SessionStore`` and ``LiveSessionStore``), on its client, names, scripts and deadlines."""

    names: Names

    @property
    def redis(self) -> Any:  # provided by RedisBackend
        raise NotImplementedError

    async def command(self, aw: Awaitable[T]) -> T:  # provided by RedisBackend
        raise NotImplementedError

    def script(self, name: str) -> Any:  # provided by RedisBackend
        raise NotImplementedError

    async def save_session(self, key: str, state: bytes, ttl: float) -> None:
        """Keep a session's state for ``ttl`` seconds (``SET ... PX``).

        Raises:
            BackendUnavailable: Redis is down.
        """
        await self.command(self.redis.set(self.names.session(key), state, px=max(1, int(ttl * 1000))))

    async def take_session(self, key: str) -> bytes | None:
        """Return and forget a saved session (``GETDEL``).

        Raises:
            BackendUnavailable: Redis is down.
        """
        value = await self.command(self.redis.getdel(self.names.session(key)))
        raw = value.encode() if isinstance(value, str) else value
        if raw is not None and raw.startswith(OWNED):  # written through by put_session: drop the mark
            raw = raw[raw.index(b"\x00", len(OWNED)) + 1 :]
        return raw

    async def put_session(
        self, key: str, state: bytes, ttl: float, *, owner: str, create: bool, final: bool = False
    ) -> bool:
        """Write a live session's state, marked with its owner (one script: compare and set).

        Raises:
            BackendUnavailable: Redis is down.
        """
        mark = OWNED + owner.encode() + b"\x00"
        script = self.script("put_session")  # EVALSHA: the script is not sent each time
        done = await self.command(
            script(keys=[self.names.session(key)],
                   args=[mark, state, max(1, int(ttl * 1000)), 1 if create else 0, 1 if final else 0])
        )
        return bool(done)

    async def take_final_session(self, key: str) -> tuple[bytes | None, bool]:
        """Take a session only if it was saved by its closed connection (one script).

        Raises:
            BackendUnavailable: Redis is down.
        """
        reply = await self.command(self.script("take_final")(keys=[self.names.session(key)], args=[OWNED]))
        if reply[0] == 2:
            raw = reply[1]
            return (raw.encode() if isinstance(raw, str) else raw), False
        return None, reply[0] == 1

    async def touch_sessions(self, keys: Sequence[str], ttl: float) -> None:
        """Push back the expiry of live sessions (pipelines of ``TOUCH_BATCH``, split by node on a cluster).

        Raises:
            BackendUnavailable: Redis is down.
        """
        ms = max(1, int(ttl * 1000))
        # A node refreshes every session it holds at once (16,000 and more in a process): one
        # pipeline of them all takes seconds to build, send and parse on a busy node and would
        # miss command_timeout, leaving every session to expire.  Chunks each get their own.
        for start in range(0, len(keys), TOUCH_BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[start : start + TOUCH_BATCH]:
                pipe.pexpire(self.names.session(key), ms)
            await self.command(pipe.execute())


#: Live sessions whose expiry one pipeline pushes back.
TOUCH_BATCH = 1000

#: Marks a live session's value written by put_session: the owner, NUL, then the state (a
#: MessagePack array never starts with 0xFF).
OWNED = b"\xff\x01"

#: KEYS[1] the session; ARGV: the owner mark, the state, the TTL (ms), 1 to create, 1 for a final state
#: (stored without the mark: its connection closed, nobody writes it any more).  An update is written only
#: over its owner's own state; a final state also where there is none (its live write had failed).
PUT_SESSION_LUA = """
if ARGV[4] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then
    if string.sub(v, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
  elseif ARGV[5] ~= '1' then
    return 0
  end
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
end
return 1
"""

#: KEYS[1] the session; ARGV[1] the live mark's prefix.  {2, state}: a final state, taken; {1}: a live
#: one is there; {0}: none.
TAKE_FINAL_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
if string.sub(v, 1, #ARGV[1]) == ARGV[1] then return {1} end
redis.call('DEL', KEYS[1])
return {2, v}
"""


__all__ = ["OWNED", "PUT_SESSION_LUA", "TAKE_FINAL_LUA", "RedisSessions"]
