"""What the Redis backend stores and sends: key and channel names, Lua scripts, message encodings.

Pure: no I/O, no clock.  Every key of one room stream (its Redis Stream, its
meta hash holding the epoch and the offset counter) and the room's pub/sub
channel share one hash tag, ``{<ns>:<room>}``, so that they live in one Redis
Cluster slot and one Lua script may touch all of them (and ``SPUBLISH`` on the
channel would reach the shard that owns the stream).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..cluster import ControlReply, ControlRequest
from ..frames import Position
from .base import HistoryReply, Publication

#: Publish one non-volatile publication: assign the next offset (creating the
#: stream's epoch when the stream is new), append it to the stream (trimmed to
#: about ``history_size`` entries, the entry id being ``<offset>-0``), refresh
#: both keys' TTL and publish it on the room's channel, all atomically, so that
#: offsets follow the order in which Redis publishes.  On a Redis Cluster the
#: command is ``SPUBLISH``: the channel shares the keys' hash tag, so it goes to
#: the shard that runs the script.
#: KEYS: meta, stream. ARGV: channel, global epoch, new stream id, history_size, ttl_ms, body,
#: publish command (``PUBLISH`` or ``SPUBLISH``).
PUBLISH_LUA: Final = """
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[2] .. '.' .. ARGV[3]
  -- a stream left over from an expired meta hash would refuse restarted offsets
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e)
end
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local id = string.format('%d', o)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id .. '-0', 'd', ARGV[6], 't', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call(ARGV[7], ARGV[1], 'p' .. id .. ',' .. e .. ',' .. ARGV[6])
return {o, e}
"""

#: Read a stream: its epoch, its last offset, Redis' clock (ms) and the entries
#: from ``from + 1`` (or from 1 when ``from_epoch`` is not the stream's epoch and
#: ``all_on_new_epoch`` is 1), never older than the last ``history_size`` offsets.
#: KEYS: meta, stream. ARGV: from offset, history_size, from_epoch, all_on_new_epoch.
READ_LUA: Final = """
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
if not m[1] then return {} end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local last = tonumber(m[2] or '0')
local start = tonumber(ARGV[1]) + 1
if ARGV[3] ~= m[1] then
  if ARGV[4] ~= '1' then return {m[1], string.format('%d', last), now, {}} end
  start = 1
end
local floor = last - tonumber(ARGV[2]) + 1
if floor > start then start = floor end
if start < 1 then start = 1 end
if start > last then return {m[1], string.format('%d', last), now, {}} end
local entries = redis.call('XRANGE', KEYS[2], string.format('%d', start) .. '-0', '+')
return {m[1], string.format('%d', last), now, entries}
"""

#: Move a stream's offset counter forward after a failover lost the stream's
#: tail (writes the old master had not replicated), so that new offsets are
#: above every offset a receiver saw.  KEYS: meta. ARGV: epoch, offset.
SKIP_AHEAD_LUA: Final = """
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
if m[1] ~= ARGV[1] then return 0 end
if tonumber(m[2] or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'o', ARGV[2])
return 1
"""

#: Register (or refresh) a node in the registry, scored by Redis' clock so that
#: hosts' clocks need not agree, and drop nodes whose registration expired.
#: KEYS: registry. ARGV: node id, ttl_ms.
REGISTER_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return 1
"""

#: The live nodes of the registry.  KEYS: registry.
LIVE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""


class Names:
    """Key and channel names under one prefix.

    A namespace's ``%`` and ``:`` are escaped so that ``(ns, room)`` maps to one
    name only (room names are free-form and come last).
    """

    __slots__ = ("control", "epoch", "nodes", "prefix")

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain '{' or '}' (they are Redis Cluster hash tags)")
        self.prefix = prefix
        self.epoch = f"{prefix}:epoch"
        self.nodes = f"{prefix}:nodes"
        self.control = f"{prefix}:ctl".encode()

    def _tag(self, ns: str, room: str) -> str:
        if "%" in ns or ":" in ns:
            ns = ns.replace("%", "%25").replace(":", "%3A")
        return f"{self.prefix}:{{{ns}:{room}}}"

    def stream(self, ns: str, room: str) -> tuple[str, str, bytes]:
        """The room stream's meta hash key, stream key and channel name."""
        tag = self._tag(ns, room)
        return f"{tag}:m", f"{tag}:s", f"{tag}:c".encode()

    def channel(self, ns: str, room: str) -> bytes:
        """The room's pub/sub channel."""
        return f"{self._tag(ns, room)}:c".encode()

    def node(self, node_id: str) -> bytes:
        """A node's own channel: its heartbeats and the replies to its cluster requests."""
        return f"{self.prefix}:node:{node_id}".encode()

    def session(self, key: str) -> str:
        return f"{self.prefix}:sess:{key}"

    def __repr__(self) -> str:
        return f"Names(prefix={self.prefix!r})"


class ControlEnvelope(msgspec.Struct, array_like=True, frozen=True):
    """A cluster request on the control channel: who asks, the request id, the request."""

    origin: str
    rid: str
    request: ControlRequest


class ReplyEnvelope(msgspec.Struct, array_like=True, frozen=True):
    """A node's answer, sent to the requester's node channel (``node`` is the backend's node id)."""

    rid: str
    node: str
    reply: ControlReply


HEARTBEAT: Final = b"h"
REPLY: Final = b"r"

_pub_encoder = msgspec.msgpack.Encoder()
_pub_decoder = msgspec.msgpack.Decoder(Publication)
CONTROL_DECODER: Final = msgspec.msgpack.Decoder(ControlEnvelope)
REPLY_DECODER: Final = msgspec.msgpack.Decoder(ReplyEnvelope)
encode_msgpack = _pub_encoder.encode


def encode_body(pub: Publication) -> bytes:
    """The publication as stored and sent, once per publish (its data is already JSON bytes)."""
    return _pub_encoder.encode(pub)


def volatile_message(body: bytes) -> bytes:
    """A channel message for a publication without offset."""
    return b"p0,," + body


def decode_message(message: bytes) -> Publication:
    """A channel message back into a publication with its epoch and offset.

    Raises:
        ValueError: the message is not a publication.
        msgspec.DecodeError: the body is malformed.
    """
    if message[:1] != b"p":
        raise ValueError("not a publication message")
    offset, epoch, body = message[1:].split(b",", 2)
    pub = _pub_decoder.decode(body)
    if offset == b"0":
        return pub
    return msgspec.structs.replace(pub, epoch=epoch.decode(), offset=int(offset))


def decode_entry(epoch: str, entry_id: bytes, fields: list[bytes]) -> tuple[int, Publication]:
    """A stream entry into (Redis time in ms, publication)."""
    offset = int(entry_id.split(b"-", 1)[0])
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    pub = _pub_decoder.decode(values[b"d"])
    return int(values[b"t"]), msgspec.structs.replace(pub, epoch=epoch, offset=offset)


def decode_read(res: list[Any], ttl_ms: int) -> tuple[str | None, int, list[Publication]]:
    """The reply of READ_LUA as (epoch or ``None`` without a stream, last offset, entries younger than the TTL)."""
    if not res:
        return None, 0, []
    epoch = res[0].decode()
    horizon = int(res[2]) - ttl_ms
    entries = (decode_entry(epoch, entry_id, fields) for entry_id, fields in res[3])
    return epoch, int(res[1]), [pub for ts, pub in entries if ts > horizon]


def history_reply(position: Position | None, epoch: str, last: int, items: list[Publication]) -> HistoryReply:
    """What ``since(position)`` answers for an existing stream (the same rules as the memory backend)."""
    current = Position(epoch, last)
    if position is None:
        return HistoryReply(True, items, current)
    if position.epoch != epoch:
        return HistoryReply(False, (), current)
    if position.offset >= last:
        return HistoryReply(True, (), current)
    missed = [pub for pub in items if pub.offset > position.offset]
    # The history covers the position only if the first missed offset follows it.
    first = missed[0].offset if missed else last + 1
    if first != position.offset + 1:
        return HistoryReply(False, (), current)
    return HistoryReply(True, missed, current)


__all__ = [
    "CONTROL_DECODER",
    "ControlEnvelope",
    "HEARTBEAT",
    "LIVE_LUA",
    "Names",
    "PUBLISH_LUA",
    "READ_LUA",
    "REGISTER_LUA",
    "REPLY",
    "REPLY_DECODER",
    "SKIP_AHEAD_LUA",
    "ReplyEnvelope",
    "decode_entry",
    "decode_read",
    "decode_message",
    "encode_body",
    "encode_msgpack",
    "history_reply",
    "volatile_message",
]
