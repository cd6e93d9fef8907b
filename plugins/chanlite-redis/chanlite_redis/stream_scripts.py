"""Key names and Lua scripts for history and presence: each operation one atomic call.

Every key of one group carries the group as a Redis hash tag (``{group}``), so all of a
group's history and presence keys live on one slot and each script below touches one
slot only (what a Redis Cluster needs; a prefix must therefore not contain ``{``)::

    {p}hm:{group}          hash    e: epoch, o: last offset given in that epoch,
                                   r: replication id of the server that gave it
    {p}hs:{group}          stream  one entry per message, id "<offset>-0",
                                   fields t (server ms) and d (the stamped payload)
    {p}pe:{group}          hash    presence: channel -> entry (see below)
    {p}pk:{group}          hash    presence key -> how many channels hold it
    {p}pz:{group}          zset    process (client id) -> server ms of its last refresh
    {p}ps:{group}          string  join sequence (orders the listing)
    {p}po:{group}:<client> set     the channels one process holds in the group
    {p}{pp}                zset    process -> server ms of its last refresh, for every
                                   process holding presence entries anywhere
    {p}{pp}:<client>       set     the groups where that process holds entries

The last two are the only keys not of one group: the registry through which any live
process finds the groups of a process that died, however many groups there are. They
share the hash tag ``{pp}``, so the registry scripts touch one slot too.

A presence entry is ``<12-digit seq><4-digit key length><key><12-char client><meta>``,
*meta* being a codec payload. A *stamped* payload is ``\\0<offset> <epoch> <group>\\0``
followed by the codec payload the sender encoded once; see :mod:`chanlite_redis.history`.

The epoch and the last offset are read and written only inside these scripts, so an
offset and its stored entry can never disagree. A hash without an epoch gets one (the
``SET NX`` of the design: the candidate comes from the caller, since a script's random
numbers are not random); so does a group whose stream key vanished (evicted, deleted)
while its offset says messages were kept: the history is lost, and a new epoch says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from chanlite_redis import scripts


class StreamKeys:
    """Builds the history and presence key names for one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def history(self, group: str) -> list[str]:
        """``[meta hash, stream]`` of *group*."""
        p = self.prefix
        return [f"{p}hm:{{{group}}}", f"{p}hs:{{{group}}}"]

    def presence(self, group: str) -> list[str]:
        """``[entries, key counts, beats, sequence]`` of *group*."""
        return [f"{self.prefix}{kind}:{{{group}}}" for kind in ("pe", "pk", "pz", "ps")]

    def owned(self, group: str, client_id: str) -> str:
        """The set of channels process *client_id* holds in *group*'s presence."""
        return f"{self.prefix}po:{{{group}}}:{client_id}"

    def processes(self) -> str:
        """The registry of processes holding presence entries, by last refresh."""
        return f"{self.prefix}{{pp}}"

    def groups_of(self, client_id: str) -> str:
        """The set of groups where process *client_id* holds presence entries."""
        return f"{self.prefix}{{pp}}:{client_id}"


class Script:
    """A Lua script run by its SHA, loaded again when the server forgot it (a restart)."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Not run: safe to load and run once more.
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_HISTORY = """
-- The group's epoch and last offset; a new epoch (offsets from 0) when there is none,
-- when the stream is gone although messages were kept in this epoch, or when this server
-- took over from the one that wrote them (a failover: replication is asynchronous, so
-- the last entries may be missing here, and their offsets would be given out again).
-- A server knows the replication id of the master it replaced as its master_replid2.
local function history_state(meta, stream, fresh)
  local state = redis.call('HMGET', meta, 'e', 'o', 'r')
  local epoch = state[1]
  local offset = tonumber(state[2] or '0') or 0
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%x+)') or ''
  local replaced = string.match(info, 'master_replid2:(%x+)')
  local failed_over = state[3] and state[3] == replaced
  if epoch and not failed_over and (offset == 0 or redis.call('EXISTS', stream) == 1) then
    if state[3] ~= replid then redis.call('HSET', meta, 'r', replid) end
    return epoch, offset
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', fresh, 'o', '0', 'r', replid)
  return fresh, 0
end
local function offset_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end
-- Drop entries stored at or before cutoff (server ms); they sit at the head.
local function prune_age(stream, cutoff)
  while true do
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    local last_old = nil
    for i = 1, #head do
      if tonumber(head[i][2][2]) > cutoff then
        if last_old then
          redis.call('XTRIM', stream, 'MINID', string.format('%d', last_old + 1))
        end
        return
      end
      last_old = offset_of(head[i][1])
    end
    if last_old then
      redis.call('XTRIM', stream, 'MINID', string.format('%d', last_old + 1))
    end
    if #head < 64 then return end
  end
end
"""

_GROUP_SEND_BODY = scripts.GROUP_SEND[len(scripts._COMMON) :]

HISTORY_SEND = Script(
    scripts._COMMON
    + _HISTORY
    + """
-- KEYS[1]: members hash (as GROUP_SEND), KEYS[2]: history meta, KEYS[3]: stream.
-- ARGV[1..7]: as GROUP_SEND; ARGV[8]: candidate epoch, ARGV[9]: size, ARGV[10]: ttl ms
-- (0: none), ARGV[11]: how long the keys outlive the last message (ms), ARGV[12]: group.
-- Assigns the next offset, stores the stamped payload, prunes, then delivers exactly as
-- GROUP_SEND does (the one PUBLISH and the queued copies carry the stamped payload).
local epoch, offset = history_state(KEYS[2], KEYS[3], ARGV[8])
offset = offset + 1
local now = now_ms()
local data = '\\0' .. string.format('%d', offset) .. ' ' .. epoch .. ' ' .. ARGV[12] .. '\\0'
  .. ARGV[3]
redis.call('HSET', KEYS[2], 'o', string.format('%d', offset))
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[9], string.format('%d-0', offset),
  't', string.format('%d', now), 'd', data)
local ttl = tonumber(ARGV[10])
if ttl > 0 then prune_age(KEYS[3], now - ttl) end
redis.call('PEXPIRE', KEYS[2], ARGV[11])
redis.call('PEXPIRE', KEYS[3], ARGV[11])
ARGV[3] = data
local function deliver()
"""
    + _GROUP_SEND_BODY
    + """
end
-- One string then the dropped channels: every element of a reply costs the client a parse.
local result = deliver()
table.insert(result, 1, string.format('%d', offset) .. ' ' .. epoch)
return result
"""
)

HISTORY_READ = Script(
    scripts._COMMON
    + _HISTORY
    + """
-- KEYS: history meta, stream. ARGV: candidate epoch, ttl ms (0: none), keep ms, mode
-- ('position', 'all' or 'since'), since offset, since epoch, limit (-1: none).
-- Returns {epoch, offset, oldest kept offset or false, payload, payload, ...}.
local epoch, offset = history_state(KEYS[1], KEYS[2], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then prune_age(KEYS[2], now_ms() - ttl) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local result = {epoch, string.format('%d', offset), false}
local mode = ARGV[4]
if mode == 'position' then return result end
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #head == 0 then return result end
result[3] = string.format('%d', offset_of(head[1][1]))
local limit = tonumber(ARGV[7])
if limit == 0 then return result end
local entries
if mode == 'all' then
  if limit < 0 then
    entries = redis.call('XRANGE', KEYS[2], '-', '+')
  else
    local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
    entries = {}
    for i = #newest, 1, -1 do entries[#entries + 1] = newest[i] end
  end
else
  local since = tonumber(ARGV[5])
  if ARGV[6] ~= epoch or since >= offset then return result end
  local start = string.format('%d-0', since + 1)
  if limit < 0 then
    entries = redis.call('XRANGE', KEYS[2], start, '+')
  else
    entries = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', limit)
  end
end
for i = 1, #entries do result[#result + 1] = entries[i][2][4] end
return result
"""
)

_PRESENCE = """
local function p_parse(entry)
  local n = tonumber(string.sub(entry, 13, 16))
  return string.sub(entry, 17, 16 + n), string.sub(entry, 17 + n, 28 + n)
end
local function p_owned(prefix, group, client)
  return prefix .. 'po:{' .. group .. '}:' .. client
end
-- Remove a channel's entry; 1 if it held its key's last meta, else 0.
local function p_remove(entries, counts, prefix, group, channel, entry)
  local key, client = p_parse(entry)
  redis.call('HDEL', entries, channel)
  redis.call('SREM', p_owned(prefix, group, client), channel)
  if redis.call('HINCRBY', counts, key, -1) <= 0 then
    redis.call('HDEL', counts, key)
    return 1
  end
  return 0
end
-- Remove every entry of processes whose last refresh is timeout ms old or older.
-- Returns {channel, entry, last, channel, entry, last, ...}.
local function p_sweep(entries, counts, beats, prefix, group, now, timeout)
  local removed = {}
  local dead = redis.call('ZRANGEBYSCORE', beats, '-inf', now - timeout)
  for _, client in ipairs(dead) do
    local owned = p_owned(prefix, group, client)
    for _, channel in ipairs(redis.call('SMEMBERS', owned)) do
      local entry = redis.call('HGET', entries, channel)
      if entry then
        local _, owner = p_parse(entry)
        if owner == client then
          removed[#removed + 1] = channel
          removed[#removed + 1] = entry
          removed[#removed + 1] = p_remove(entries, counts, prefix, group, channel, entry)
        end
      end
    end
    redis.call('DEL', owned)
    redis.call('ZREM', beats, client)
  end
  return removed
end
"""

PRESENCE_JOIN = Script(
    scripts._COMMON
    + _PRESENCE
    + """
-- KEYS: entries, counts, beats, sequence, this process's owned set.
-- ARGV: prefix, group, channel, key, client, meta, keep ms.
-- Returns {previous entry or false, previous key's last (1/0, -1: none left),
--          first (1/0), updated in place (1/0)}.
local channel, key, client = ARGV[3], ARGV[4], ARGV[5]
local previous = redis.call('HGET', KEYS[1], channel)
local seq = nil
local left_last = -1
if previous then
  local old_key, old_client = p_parse(previous)
  if old_key == key and old_client == client then
    seq = string.sub(previous, 1, 12)
  else
    left_last = p_remove(KEYS[1], KEYS[2], ARGV[1], ARGV[2], channel, previous)
  end
end
local first, updated = 0, 1
if not seq then
  updated = 0
  seq = string.format('%012d', redis.call('INCR', KEYS[4]))
  if redis.call('HINCRBY', KEYS[2], key, 1) == 1 then first = 1 end
end
redis.call('HSET', KEYS[1], channel, seq .. string.format('%04d', #key) .. key .. client .. ARGV[6])
redis.call('SADD', KEYS[5], channel)
redis.call('ZADD', KEYS[3], now_ms(), client)
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
return {previous or false, left_last, first, updated}
"""
)

PRESENCE_LEAVE = Script(
    _PRESENCE
    + """
-- KEYS: entries, counts, beats. ARGV: prefix, group, channel, client (the caller).
-- Returns {entry, last (1/0)} or false when the channel had no entry.
local previous = redis.call('HGET', KEYS[1], ARGV[3])
if not previous then return false end
local last = p_remove(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], previous)
local _, owner = p_parse(previous)
if owner == ARGV[4]
    and redis.call('EXISTS', p_owned(ARGV[1], ARGV[2], owner)) == 0 then
  -- The caller holds nothing more here: it stops refreshing this group.
  redis.call('ZREM', KEYS[3], owner)
end
return {previous, last}
"""
)

PRESENCE_BEAT = Script(
    scripts._COMMON
    + _PRESENCE
    + """
-- KEYS: entries, counts, beats, sequence, this process's owned set.
-- ARGV: prefix, group, client, keep ms, timeout ms, holds entries here (1/0).
-- Refreshes the caller (if it holds entries), then sweeps dead processes.
-- Returns {missing (1: the caller was not listed: swept, or Redis lost the keys),
--          channel, entry, last, ...} for the swept entries.
local now = now_ms()
local missing = 0
if ARGV[6] == '1' then
  if redis.call('ZADD', KEYS[3], now, ARGV[3]) == 1 then missing = 1 end
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
local removed = p_sweep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], now, tonumber(ARGV[5]))
table.insert(removed, 1, missing)
return removed
"""
)

PRESENCE_LIST = Script(
    scripts._COMMON
    + _PRESENCE
    + """
-- KEYS: entries, counts, beats. ARGV: prefix, group, timeout ms.
-- Sweeps dead processes, then returns {{swept channel, entry, last, ...}, listing}: the
-- listing is ONE string, "<8-digit length><channel><8-digit length><entry>" repeated,
-- as a reply of thousands of strings costs the client far more to parse.
local removed = p_sweep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], now_ms(),
  tonumber(ARGV[3]))
local flat = redis.call('HGETALL', KEYS[1])
local parts = {}
for i = 1, #flat do
  parts[#parts + 1] = string.format('%08d', #flat[i])
  parts[#parts + 1] = flat[i]
end
return {removed, table.concat(parts)}
"""
)

PRESENCE_DROP = Script(
    _PRESENCE
    + """
-- KEYS: entries, counts, beats, this process's owned set. ARGV: prefix, group, client.
-- Removes every entry the caller holds in the group (it is closing).
-- Returns {channel, entry, last, ...}.
local removed = {}
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local entry = redis.call('HGET', KEYS[1], channel)
  if entry then
    local _, owner = p_parse(entry)
    if owner == ARGV[3] then
      removed[#removed + 1] = channel
      removed[#removed + 1] = entry
      removed[#removed + 1] = p_remove(KEYS[1], KEYS[2], ARGV[1], ARGV[2], channel, entry)
    end
  end
end
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[3])
return removed
"""
)

PROCESS_BEAT = Script(
    scripts._COMMON
    + """
-- KEYS: the process registry, the caller's set of groups. ARGV: prefix, client,
-- holds entries (1/0), timeout ms, keep ms, then the groups where the caller holds some.
-- Refreshes the caller (if it holds entries); returns the processes silent for timeout
-- ms or longer with their groups: {client, {group, ...}, client, {group, ...}, ...}.
local now = now_ms()
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  for i = 6, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local result = {}
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]),
  'LIMIT', 0, 64)
for _, client in ipairs(dead) do
  result[#result + 1] = client
  result[#result + 1] = redis.call('SMEMBERS', ARGV[1] .. '{pp}:' .. client)
end
return result
"""
)

PROCESS_REAP = Script(
    scripts._COMMON
    + """
-- KEYS: the process registry, the dead process's set of groups. ARGV: client, timeout ms.
-- Forgets a process whose groups were swept, unless it refreshed meanwhile.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now_ms() - tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
end
return 1
"""
)

PROCESS_JOINED = Script(
    scripts._COMMON
    + """
-- KEYS: the process registry, the caller's set of groups. ARGV: client, group, keep ms.
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)
