"""Room streams on Redis: publishing with an offset, reading the history, and the positions.

Every publication of a room goes through one Lua script that assigns the next
offset, appends to the room's Redis Stream and publishes on the room's channel
atomically (``redis_wire.PUBLISH_LUA``), so offsets follow the order in which
Redis publishes; on a Redis Cluster the script's ``SPUBLISH`` stays on the
room's shard.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..frames import Position
from .base import HistoryReply, Publication
from .redis_wire import decode_read, encode_body, history_reply, volatile_message

if TYPE_CHECKING:
    from .redis_node import StreamNode


class RoomStreams:
    """The stream side of a Redis backend node (on the node's commands, scripts and settings)."""

    def __init__(self, node: StreamNode) -> None:
        self.node = node
        self._asked: list[tuple[str, asyncio.Future[list[Any]]]] = []

    async def publish(self, pub: Publication) -> Publication:
        node = self.node
        body = encode_body(pub)
        meta, stream, channel = node.names.stream(pub.ns, pub.room)
        if pub.volatile or node.history_size <= 0:
            send = node.redis.spublish if node.cluster_mode else node.redis.publish
            await node.command(send(channel, volatile_message(body)))
            return pub
        args = [channel, node.global_epoch, secrets.token_urlsafe(6), node.history_size,
                max(1, int(node.history_ttl * 1000)), body, node.publish_command]
        offset, epoch = await node.command(node.script("publish")(keys=[meta, stream], args=args))
        return Publication(pub.ns, pub.room, pub.event, pub.data, pub.exclude, pub.rooms,
                           epoch.decode(), int(offset), pub.ts, pub.volatile)

    async def position(self, ns: str, room: str) -> Position | None:
        node = self.node
        meta = node.names.stream(ns, room)[0]
        # Positions asked at about the same time (a storm of connections, each noting
        # where its streams are) share one pipeline: one write and one read for all.
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._asked.append((meta, fut))
        if len(self._asked) == 1 and not node.spawn(self._read_positions):
            self._asked.clear()
            fut = asyncio.ensure_future(node.redis.hmget(meta, ["e", "o"]))
        epoch, offset = await node.command(fut)
        if epoch is None:
            return None
        return Position(_text(epoch), int(offset or 0))

    async def _read_positions(self) -> None:
        await asyncio.sleep(0)  # let the other callers of this loop iteration join
        asked, self._asked = self._asked, []
        pipe = self.node.redis.pipeline(transaction=False)
        for meta, _ in asked:
            pipe.hmget(meta, ["e", "o"])
        try:
            replies = await pipe.execute()
        except BaseException as exc:
            for _, fut in asked:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), reply in zip(asked, replies, strict=True):
            if not fut.done():
                fut.set_result(reply)

    async def positions(self, rooms: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
        """Each room stream's (epoch, offset); ``("<global epoch>.", 0)`` for a room without a stream."""
        node = self.node
        pipe = node.redis.pipeline(transaction=False)
        for ns, room in rooms:
            pipe.hmget(node.names.stream(ns, room)[0], ["e", "o"])
        out: list[tuple[str, int]] = []
        for epoch, offset in await node.command(pipe.execute()):
            out.append((node.global_epoch + ".", 0) if epoch is None else (epoch.decode(), int(offset or 0)))
        return out

    async def read(
        self, ns: str, room: str, after: int, epoch: str, *, all_on_new_epoch: bool = True
    ) -> tuple[str | None, int, list[Publication]]:
        """Read a room's stream after ``after``: (its epoch or ``None`` without one, its last offset, entries)."""
        node = self.node
        meta, stream, _ = node.names.stream(ns, room)
        args = [after, max(node.history_size, 1), epoch, "1" if all_on_new_epoch else "0"]
        res = await node.command(node.script("read")(keys=[meta, stream], args=args))
        return decode_read(res, int(node.history_ttl * 1000))

    async def skip_ahead(self, ns: str, room: str, epoch: str, offset: int) -> None:
        """Move a stream's offset counter up to ``offset`` (after a failover lost the stream's tail)."""
        node = self.node
        meta = node.names.stream(ns, room)[0]
        await node.command(node.script("skip")(keys=[meta], args=[epoch, offset]))

    async def since(self, ns: str, room: str, position: Position | None) -> HistoryReply:
        node = self.node
        after, asked = (0, "") if position is None else (position.offset, position.epoch)
        epoch, last, items = await self.read(ns, room, after, asked, all_on_new_epoch=position is None)
        if epoch is None:
            if position is None:
                return HistoryReply(True, (), None)
            # No stream: it expired while idle (nothing missed) only if it belonged
            # to the current global epoch; otherwise Redis lost it.
            current = await node.command(node.redis.get(node.names.epoch))
            same = current is not None and position.epoch.startswith(_text(current) + ".")
            return HistoryReply(same, (), None)
        return history_reply(position, epoch, last, items)

    def __repr__(self) -> str:
        return f"RoomStreams(prefix={self.node.names.prefix!r})"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["RoomStreams"]
