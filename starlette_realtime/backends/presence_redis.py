"""Presence on Redis: who is in each room across nodes, and clean-up after a node dies.

Works with Redis 6.2 and newer (tested on 7.0; no ``HEXPIRE``, which needs 7.4)
and with Redis Cluster: each script touches only keys of one hash tag.  It runs
on the :class:`~starlette_realtime.backends.redis.RedisBackend`'s client
(redis-py asyncio, so asyncio-only) and on its single node heartbeat.

Keys, for the room tag ``{prefix}:{<ns>:<room>}`` (the slot of the room's stream):

* ``<tag>:p:n:<member>``: hash ``user -> meta``, one per (room, node); its key TTL
  (``3 * ttl + 10`` s) only collects garbage, liveness is the registry below.
* ``<tag>:p:c``: hash ``user -> number of nodes holding the user``.
* ``<tag>:p:m``: hash ``user -> meta`` of the present users (the member list).
* ``<tag>:p:q``: the room's last sequence number.

And for the namespace, under the hash tag ``{presence}``:

* ``<prefix>:{presence}:<ns>:nodes``: sorted set ``member -> deadline`` (Redis'
  clock, ms); a member is one incarnation of one node's presence in the namespace.
* ``<prefix>:{presence}:<ns>:reap:<member>``: who is cleaning up a dead member.
* ``<prefix>:presence:<ns>:rooms:{<member>}``: the rooms where a member has users.

Every transition (a user's count going 0 -> 1 or 1 -> 0) happens inside one
Lua script, so it is decided once, by whichever node ran the script.  Given an
``event`` name, the same script also publishes each transition on the room's
stream (with an offset, kept in the history, through ``SPUBLISH`` on a Redis
Cluster), so that a node that dies between the change and its event loses no
event; without one, the caller publishes the returned changes.  A node whose
update fails (Redis is down) re-writes the room when Redis is back, and the
users who left meanwhile get their offline event then.  A member whose deadline passed is dead: a surviving node
claims it, runs the same script on each of its rooms (removing its users;
those held by no other node go offline), then removes it.  A node that finds
its own member expired or missing (it was paused, or Redis restarted empty)
takes a new member id and writes its complete state again under it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio

from ..exceptions import BackendUnavailable
from .base import PresenceChange, PresencePage, PresenceReset, Publication
from .presence_redis_host import PresenceOwner, PublishReaped, RedisHost, StreamHost, is_redis_host
from .presence_redis_wire import APPLY_LUA, CLAIM_LUA, FORGET_LUA, LIVENESS_LUA, PAGE_LUA
from .redis_client import is_cluster
from .redis_wire import encode_body

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

logger = logging.getLogger(__name__)

_BATCH: Final = 200
_MAX_DEAD: Final = 16


def _escape(ns: str) -> str:
    return ns.replace("%", "%25").replace(":", "%3A") if ("%" in ns or ":" in ns) else ns


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPresence:
    """A :class:`~starlette_realtime.backends.base.PresenceStore` for one namespace on Redis.

    Args:
        backend: the started Redis backend whose client and heartbeat it uses.
        namespace: the namespace it serves.
        ttl: seconds within which the users of a node that died without cleaning
            up go offline.  A node's deadline is ``ttl`` minus one heartbeat interval
            after its last heartbeat, and dead nodes are looked for on every
            heartbeat, so that the two add up to at most ``ttl``.
        clock: a monotonic clock (for tests).
        event: publish each transition of a room (not of a ``#`` room) as this
            event on the room's stream, inside the script that makes the change
            (its data is ``{"room", "user", "status", "meta", "seq"}``); the
            caller then must not publish the changes :meth:`presence_apply`
            returns.  ``None``: the caller publishes them.

    Raises:
        ValueError: ``ttl`` is shorter than two heartbeat intervals.
    """

    def __init__(
        self,
        backend: RedisHost,
        *,
        namespace: str,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        event: str | None = None,
    ) -> None:
        interval = float(getattr(backend, "heartbeat_interval", 1.0))
        if ttl < 2 * interval:
            raise ValueError(f"the presence ttl must be at least two heartbeat intervals ({2 * interval} s)")
        self._backend = backend
        self.namespace = namespace
        self.ttl = ttl
        self._clock = clock
        self._interval = interval
        # How long a member lives after a refresh: found dead at most one beat later.
        self._window = ttl - interval
        self._ttl_ms = int(self._window * 1000)
        self._key_ttl_ms = int((3 * ttl + 10) * 1000)
        self.refresh_every = ttl / 3
        prefix = backend.prefix
        self._ns = _escape(namespace)
        self._tag_prefix = f"{prefix}:{{{self._ns}:"
        self._registry = f"{prefix}:{{presence}}:{self._ns}:nodes"
        self._claims = f"{prefix}:{{presence}}:{self._ns}:reap:"
        self._rooms_prefix = f"{prefix}:presence:{self._ns}:rooms:"
        self.member = self._new_member()
        self._scripts: dict[str, AsyncScript] = {}
        self._owner: PresenceOwner | None = None
        self._publish: PublishReaped | None = None
        self._alive_at = float("-inf")
        self._next_refresh = 0.0
        self._in_set: set[str] = set()
        self._liveness_lock = anyio.Lock()
        self.reaped = 0
        self._failing = False
        self.event = event
        # The data of a publication is cut out of its msgpack encoding at this
        # marker; the script puts the event's JSON in its place.
        self._marker = secrets.token_bytes(16)

    @property
    def publishes_events(self) -> bool:
        """Whether the store publishes the transitions itself (an ``event`` was given)."""
        return self.event is not None

    def _publish_args(self, room: str) -> list[Any]:
        # ARGV[4..13] of APPLY_LUA.
        if self.event is None or room.startswith("#"):
            return [0, "", "", "", 0, 0, "", "", room, "PUBLISH"]
        host: StreamHost = self._backend  # type: ignore[assignment]
        _, _, channel = host.names.stream(self.namespace, room)
        body = encode_body(Publication(self.namespace, room, self.event, self._marker, ts=time.time()))
        cut = body.index(self._marker)
        head, tail = body[: cut - 2], body[cut + len(self._marker) :]
        return [1, channel, host.global_epoch, secrets.token_urlsafe(6), host.history_size,
                max(1, int(host.history_ttl * 1000)), head, tail, room, host.publish_command]

    def _new_member(self) -> str:
        return f"{self._backend.node_id}.{secrets.token_hex(4)}"

    # Keys ---------------------------------------------------------------------

    def _room_keys(self, room: str, member: str) -> list[str]:
        tag = f"{self._tag_prefix}{room}}}:p"
        return [f"{tag}:n:{member}", f"{tag}:c", f"{tag}:m", f"{tag}:q"]

    def _apply_keys(self, room: str, member: str) -> list[str]:
        # The presence keys and the room stream's keys (``Names.stream``): one hash tag.
        stream = f"{self._tag_prefix}{room}}}"
        return [*self._room_keys(room, member), f"{stream}:m", f"{stream}:s"]

    def _rooms_key(self, member: str) -> str:
        return f"{self._rooms_prefix}{{{member}}}"

    @property
    def _redis(self) -> Any:
        return self._backend.redis

    def _script(self, name: str, lua: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._redis.register_script(lua)
        return script

    # Lifecycle ------------------------------------------------------------------

    async def start(self, owner: PresenceOwner, publish: PublishReaped) -> None:
        """Register this node's member and join the node heartbeat.

        Args:
            owner: the node's presence bookkeeping, re-synced when the member is lost.
            publish: sends the transitions found while cleaning up after dead nodes.

        Raises:
            redis.exceptions.RedisError: Redis refused or could not be reached.
        """
        self._owner = owner
        self._publish = publish
        # Joined first: if Redis does not answer now, a later beat registers us.
        self._backend.add_heartbeat_callback(self.heartbeat)
        sent = self._clock()
        await self._script("live", LIVENESS_LUA)(
            keys=[self._registry],
            args=[self.member, self._ttl_ms, self._key_ttl_ms, 0, self.member, 1],
        )
        self._alive_at = sent

    def close(self) -> None:
        """Leave the node heartbeat (the member expires and is cleaned up by the other nodes)."""
        self._backend.remove_heartbeat_callback(self.heartbeat)
        self._owner = None

    # The store ------------------------------------------------------------------

    async def presence_apply(
        self,
        ns: str,
        room: str,
        adds: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        *,
        replace: bool = False,
    ) -> list[PresenceChange]:
        self._check_ns(ns)
        if not self._healthy():
            raise BackendUnavailable("Redis is unreachable")
        if self._clock() - self._alive_at > self._window / 2:
            # We have not refreshed our deadline for a while (a pause, an outage):
            # it may have passed and others may be reaping us.  Check first.
            if await self._liveness() != 0:
                raise PresenceReset
        member = self.member
        if adds and room not in self._in_set:
            # Before the entry itself, so that a reaper that sees the entry sees the room.
            rooms_key = self._rooms_key(member)
            pipe = self._redis.pipeline(transaction=False)
            pipe.sadd(rooms_key, room)
            pipe.pexpire(rooms_key, self._key_ttl_ms)
            await pipe.execute()
            self._in_set.add(room)
        args: list[Any] = [self._key_ttl_ms, 1 if replace else 0, len(adds), *self._publish_args(room)]
        for user, meta in adds:
            args += (user, meta)
        args += removes
        left, raw = await self._script("apply", APPLY_LUA)(keys=self._apply_keys(room, member), args=args)
        if not left and room in self._in_set and member == self.member:
            await self._redis.srem(self._rooms_key(member), room)
            self._in_set.discard(room)
        return _changes(raw)

    async def presence_page(self, ns: str, room: str, cursor: str | None, limit: int | None) -> PresencePage:
        keys = self._room_keys(room, "")
        seq, nxt, flat = await self._script("page", PAGE_LUA)(
            keys=[keys[2], keys[3]], args=["" if limit is None else (cursor or "0"), limit or 0]
        )
        members = [(_text(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]
        nxt_s = _text(nxt)
        return PresencePage(int(seq), members, None if limit is None or nxt_s == "0" else nxt_s)

    async def presence_contains(self, ns: str, room: str, user: str) -> bool:
        return bool(await self._redis.hexists(self._room_keys(room, "")[1], user))

    async def presence_count(self, ns: str, room: str) -> int:
        return int(await self._redis.hlen(self._room_keys(room, "")[1]))

    def _check_ns(self, ns: str) -> None:
        if ns != self.namespace:
            raise ValueError(f"this presence store serves {self.namespace!r}, not {ns!r}")

    # Heartbeat --------------------------------------------------------------------

    async def _liveness(self) -> int:
        async with self._liveness_lock:
            state, _ = await self._refresh_deadline()
            return state

    async def _refresh_deadline(self) -> tuple[int, list[str]]:
        new = self._new_member()
        sent = self._clock()
        state, dead = await self._script("live", LIVENESS_LUA)(
            keys=[self._registry],
            args=[self.member, self._ttl_ms, self._key_ttl_ms, _MAX_DEAD, new, 0],
        )
        state = int(state)
        self._alive_at = sent
        if state:
            old, self.member = self.member, new
            self._in_set.clear()
            logger.warning(
                "presence member %s of namespace %s was %s; re-registering as %s",
                old, self.namespace, "missing (Redis lost it?)" if state == 1 else "expired", new,
            )
            if self._owner is not None:
                self._owner.mark_all()
        return state, [_text(d) for d in dead if _text(d) != self.member]

    async def heartbeat(self) -> None:
        """One beat: refresh our deadline, retry failed updates, refresh key TTLs, reap dead nodes."""
        owner = self._owner
        if owner is None or not self._healthy():
            return
        try:
            async with self._liveness_lock:
                state, dead = await self._refresh_deadline()
            if not await owner.flush_dirty():
                return
            now = self._clock()
            if now >= self._next_refresh:
                await owner.collect()
                await self._refresh_keys(owner.stored_rooms())
                self._next_refresh = now + self.refresh_every
            if state == 0:
                # A node that just found itself expired leaves the reaping to the next
                # beat, giving the others (maybe paused as it was) one beat to refresh.
                for member in dead:
                    await self.reap(member)
        except Exception as exc:
            if not self._failing:
                logger.warning("presence heartbeat failed (namespace=%s): %r", self.namespace, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("presence heartbeat works again (namespace=%s)", self.namespace)
        self._failing = False

    def _healthy(self) -> bool:
        return bool(getattr(self._backend, "healthy", True))

    async def _keep_alive(self) -> None:
        # Long clean-ups must not let our own deadline pass.
        if self._clock() - self._alive_at > min(self._interval, self._window / 4):
            await self._liveness()

    async def _refresh_keys(self, rooms: list[str]) -> None:
        member = self.member
        ttl = self._key_ttl_ms
        rooms_key = self._rooms_key(member)
        for start in range(0, len(rooms), _BATCH):
            pipe = self._redis.pipeline(transaction=False)
            for room in rooms[start : start + _BATCH]:
                for key in self._room_keys(room, member):
                    pipe.pexpire(key, ttl)
            await pipe.execute()
        if rooms:
            await self._redis.pexpire(rooms_key, ttl)

    async def reap(self, member: str) -> int:
        """Clean up after a dead member, if it is still dead and nobody else is at it.

        Returns:
            The number of rooms cleaned.
        """
        claim = self._claims + member
        claim_ms = max(10_000, self._ttl_ms)
        claimed = await self._script("claim", CLAIM_LUA)(
            keys=[self._registry, claim], args=[member, f"{self.member}/{secrets.token_hex(4)}", claim_ms]
        )
        if not claimed:
            return 0
        rooms_key = self._rooms_key(member)
        rooms = sorted(_text(r) for r in await self._redis.smembers(rooms_key))
        script = self._script("apply", APPLY_LUA)
        for start in range(0, len(rooms), _BATCH):
            chunk = rooms[start : start + _BATCH]
            calls = [(self._apply_keys(room, member), [self._key_ttl_ms, 1, 0, *self._publish_args(room)])
                     for room in chunk]
            if is_cluster(self._redis):
                # redis-py's cluster pipelines refuse scripts: send them side by side.
                results = await asyncio.gather(*(script(keys=keys, args=args) for keys, args in calls))
            else:
                pipe = self._redis.pipeline(transaction=False)
                for keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                results = await pipe.execute()
            for room, (_, raw) in zip(chunk, results, strict=True):
                changes = _changes(raw)
                if changes and self._publish is not None and not self.publishes_events:
                    await self._publish(room, changes)
            await self._keep_alive()
        await self._redis.delete(rooms_key)
        await self._script("forget", FORGET_LUA)(keys=[self._registry, claim], args=[member])
        self.reaped += 1
        logger.info("presence: cleaned up dead member %s (%d rooms, namespace=%s)", member, len(rooms), self.namespace)
        return len(rooms)

    def __repr__(self) -> str:
        return f"RedisPresence(namespace={self.namespace!r}, member={self.member!r}, ttl={self.ttl})"


def _changes(raw: list[Any]) -> list[PresenceChange]:
    return [PresenceChange(_text(user), bool(online), int(seq), bytes(meta)) for online, user, seq, meta in raw]


__all__ = ["PresenceOwner", "PublishReaped", "RedisHost", "RedisPresence", "StreamHost", "is_redis_host"]
