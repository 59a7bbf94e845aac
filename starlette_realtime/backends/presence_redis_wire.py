"""The Lua scripts of Redis presence (pure text, no I/O); see ``presence_redis`` for the design.

Every script touches only keys of one hash tag: the room scripts the keys of
one room (``{prefix}:{<ns>:<room>}``, the slot of the room's stream), the
registry scripts the keys under ``{presence}``.  Time comes from Redis
(``TIME``), so that the hosts' clocks need not agree.
"""

from __future__ import annotations

from typing import Final

#: Apply one node's changes to a room, and publish each transition in the same
#: step.  KEYS: node hash, count hash, meta hash, seq key, and the room
#: stream's meta hash and stream (the keys of ``redis_wire.PUBLISH_LUA``).
#: ARGV: key ttl (ms), replace (0/1), number of adds, publish (0/1), the room's
#: channel, global epoch, new stream id, history size, history ttl (ms), the
#: publication's msgpack before and after its data, the room, the publish
#: command; then ``user, meta`` per add, then the users to remove.  With
#: replace, every user of the node hash that is not added is removed (reaping a
#: dead node is a replace with no adds).  With publish, each transition becomes
#: a publication on the room's stream (``{"room", "user", "status", "meta",
#: "seq"}``, the ``$presence`` event's data) inside this script, so that a node
#: dying between the change and its event cannot lose the event.  Returns
#: ``{users left in the node hash, changes}``, each change being
#: ``{online (0/1), user, seq, meta}``.
APPLY_LUA: Final = """
local A = 13
local ttl = tonumber(ARGV[1])
local nadd = tonumber(ARGV[3])
local seq = false
local out = {}
local function nextseq()
  if not seq then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    seq = tonumber(redis.call('GET', KEYS[4]) or '0') + 1
    if now > seq then seq = now end
  else
    seq = seq + 1
  end
  return seq
end
local function bin(s)
  local n = #s
  if n < 256 then return string.char(0xc4, n) .. s end
  if n < 65536 then return string.char(0xc5, math.floor(n / 256), n % 256) .. s end
  return string.char(0xc6, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. s
end
local function publish(online, u, q, m)
  if ARGV[4] ~= '1' then return end
  local data = '{"room":' .. cjson.encode(ARGV[12]) .. ',"user":' .. cjson.encode(u) .. ',"status":"' ..
    (online == 1 and 'online' or 'offline') .. '","meta":' .. m .. ',"seq":' .. string.format('%d', q) .. '}'
  local body = ARGV[10] .. bin(data) .. ARGV[11]
  if tonumber(ARGV[8]) <= 0 then
    redis.call(ARGV[13], ARGV[5], 'p0,,' .. body)
    return
  end
  local e = redis.call('HGET', KEYS[5], 'e')
  if not e then
    e = ARGV[6] .. '.' .. ARGV[7]
    redis.call('DEL', KEYS[6])
    redis.call('HSET', KEYS[5], 'e', e)
  end
  local o = redis.call('HINCRBY', KEYS[5], 'o', 1)
  local t = redis.call('TIME')
  local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  local id = string.format('%d', o)
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[8], id .. '-0', 'd', body, 't', now)
  redis.call('PEXPIRE', KEYS[5], ARGV[9])
  redis.call('PEXPIRE', KEYS[6], ARGV[9])
  redis.call(ARGV[13], ARGV[5], 'p' .. id .. ',' .. e .. ',' .. body)
end
local function change(online, u, m)
  local q = nextseq()
  out[#out + 1] = {online, u, q, m}
  publish(online, u, q, m)
end
local function remove(u)
  if redis.call('HDEL', KEYS[1], u) == 0 then return end
  if redis.call('HINCRBY', KEYS[2], u, -1) <= 0 then
    redis.call('HDEL', KEYS[2], u)
    local m = redis.call('HGET', KEYS[3], u) or '{}'
    redis.call('HDEL', KEYS[3], u)
    change(0, u, m)
  end
end
if ARGV[2] == '1' then
  local keep = {}
  for i = 1, nadd do keep[ARGV[A - 1 + 2 * i]] = true end
  for _, u in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[u] then remove(u) end
  end
end
for i = 1, nadd do
  local u, m = ARGV[A - 1 + 2 * i], ARGV[A + 2 * i]
  if redis.call('HSETNX', KEYS[1], u, m) == 1 then
    if redis.call('HINCRBY', KEYS[2], u, 1) == 1 then
      redis.call('HSET', KEYS[3], u, m)
      change(1, u, m)
    end
  end
end
for i = A + 1 + 2 * nadd, #ARGV do remove(ARGV[i]) end
if seq then redis.call('SET', KEYS[4], string.format('%d', seq), 'PX', ttl) end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {redis.call('HLEN', KEYS[1]), out}
"""

#: Refresh a member's deadline and list the dead members.  KEYS: registry.
#: ARGV: member, ttl (ms), key ttl (ms), most dead to list, new member id,
#: first registration (0/1).  Returns ``{state, dead members}``: state 0 when
#: the member was alive, 1 when it was missing, 2 when it had expired; in both
#: latter cases the new member id is registered instead (and a missing old one
#: is entered as expired, so that whatever it may still hold gets reaped).
LIVENESS_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local state = 0
if ARGV[6] ~= '1' then
  local score = redis.call('ZSCORE', KEYS[1], me)
  if not score then
    state = 1
    redis.call('ZADD', KEYS[1], 0, me)
    me = ARGV[5]
  elseif tonumber(score) <= now then
    state = 2
    me = ARGV[5]
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), me)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {state, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))}
"""

#: Claim the clean-up of a dead member (only while it is still dead).
#: KEYS: registry, claim key. ARGV: dead member, claimant, claim ttl (ms).
CLAIM_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now then return 0 end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

#: Forget a dead member once its rooms are clean.  KEYS: registry, claim key. ARGV: member.
FORGET_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[2])
return 1
"""

#: Read a room's members.  KEYS: meta hash, seq key. ARGV: cursor ('' for all at
#: once), page size.  Returns ``{seq, next cursor, {user, meta, ...}}``.
PAGE_LUA: Final = """
local s = redis.call('GET', KEYS[2]) or '0'
if ARGV[1] == '' then return {s, '0', redis.call('HGETALL', KEYS[1])} end
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
return {s, r[1], r[2]}
"""
