"""The Lua scripts of Redis presence (pure text, no I/O); see ``presence_redis`` for the design.

Every script touches only keys of one hash tag: the room scripts the keys of
one room (``{prefix}:{<ns>:<room>}``, the slot of the room's stream), the
registry scripts the keys under ``{presence}``.  Time comes from Redis
(``TIME``), so that the hosts' clocks need not agree.
"""

from __future__ import annotations

from typing import Final

#: Apply one node's changes to a room.  KEYS: node hash, count hash, meta hash,
#: seq key. ARGV: key ttl (ms), replace (0/1), number of adds, then
#: ``user, meta`` per add, then the users to remove.  With replace, every user
#: of the node hash that is not added is removed (reaping a dead node is a
#: replace with no adds).  Returns ``{users left in the node hash, changes}``,
#: each change being ``{online (0/1), user, seq, meta}``.
APPLY_LUA: Final = """
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
local function remove(u)
  if redis.call('HDEL', KEYS[1], u) == 0 then return end
  if redis.call('HINCRBY', KEYS[2], u, -1) <= 0 then
    redis.call('HDEL', KEYS[2], u)
    local m = redis.call('HGET', KEYS[3], u) or '{}'
    redis.call('HDEL', KEYS[3], u)
    out[#out + 1] = {0, u, nextseq(), m}
  end
end
if ARGV[2] == '1' then
  local keep = {}
  for i = 1, nadd do keep[ARGV[2 + 2 * i]] = true end
  for _, u in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[u] then remove(u) end
  end
end
for i = 1, nadd do
  local u, m = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if redis.call('HSETNX', KEYS[1], u, m) == 1 then
    if redis.call('HINCRBY', KEYS[2], u, 1) == 1 then
      redis.call('HSET', KEYS[3], u, m)
      out[#out + 1] = {1, u, nextseq(), m}
    end
  end
end
for i = 4 + 2 * nadd, #ARGV do remove(ARGV[i]) end
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
