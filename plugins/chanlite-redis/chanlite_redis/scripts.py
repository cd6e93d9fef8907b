"""Key names and the Lua scripts that make each layer operation one atomic round trip.

Layout under a prefix (default ``chanlite:``); the braces are literal, a Redis hash tag,
so every key and topic one operation touches hashes to one slot (what a Redis Cluster
needs; a prefix must therefore not contain ``{``)::

    {p}c:{channel}   list   messages for a plain channel: "<13-digit expiry ms><payload>"
    {p}i:{client}    list   inbox of one process: "<expiry><channel> <payload>" for any of
                            the channels it made with new_channel()
    {p}n:{client}    hash   pending messages in that inbox per channel (for capacity)
    {p}m:{group}     hash   members that are not the process's own: channel -> "<joined> <cap>"
    {p}a:{client}    string heartbeat of a live process (expires unless refreshed)
    {p}g:{group}     topic  one PUBLISH per group message; processes with members subscribe
    {p}w:{channel}   topic  wakes receivers waiting on a plain (non-process) channel
    {p}ctl           topic  flush and remote discards, seen by every listening process
    {p}t:{channel}:<token>  string an entry a plain receive() popped, kept briefly for RESTORE
    {p}x:{channel}:<token>  string marks a pop as undone, should it reach the server late

On a cluster the topics are shard channels (``SPUBLISH``, ``SSUBSCRIBE``) except ``ctl``,
and :func:`for_cluster` gives the scripts' cluster form.

Times come from the server's clock (``TIME``), so processes on machines with skewed
clocks still agree on expiry. Entries sit in send order, so expired ones are at the head
and are trimmed there; a list's own TTL removes it once its last entry is stale.
"""

from __future__ import annotations

STAMP = 13
"""Width of the expiry stamp (milliseconds since the epoch) in front of each entry."""


class Keys:
    """Builds the Redis key and topic names for one prefix."""

    __slots__ = ("ctl", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ctl = f"{prefix}ctl"

    def channel(self, channel: str) -> str:
        return f"{self.prefix}c:{{{channel}}}"

    def inbox(self, client_id: str) -> str:
        return f"{self.prefix}i:{{{client_id}}}"

    def counts(self, client_id: str) -> str:
        return f"{self.prefix}n:{{{client_id}}}"

    def members(self, group: str) -> str:
        return f"{self.prefix}m:{{{group}}}"

    def alive(self, client_id: str) -> str:
        return f"{self.prefix}a:{{{client_id}}}"

    def group_topic(self, group: str) -> str:
        return f"{self.prefix}g:{{{group}}}"

    def wake_topic(self, channel: str) -> str:
        return f"{self.prefix}w:{{{channel}}}"

    def taken(self, channel: str, token: str) -> str:
        return f"{self.prefix}t:{{{channel}}}:{token}"

    def dropped(self, channel: str, token: str) -> str:
        return f"{self.prefix}x:{{{channel}}}:{token}"

    def send_keys(self, channel: str, owner: str | None) -> list[str]:
        """The keys SEND touches for *channel* (of process *owner*, or a plain one)."""
        if owner is not None:
            return [self.inbox(owner), self.counts(owner)]
        return [self.channel(channel)]


def for_cluster(script: str) -> str:
    """*script* as it runs on a Redis Cluster: topics are shard channels (``SPUBLISH``),
    heard only on the node that holds their slot rather than sent to every node."""
    return script.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")


#: The field of a process's counts hash that counts its inbox entries a sender's script
#: found expired and removed (no channel name has a space); its heartbeat takes it.
EXPIRED = " expired"

_COMMON = f"""
local EXPIRED = '{EXPIRED}'
"""  # (the rest is no f-string: its braces are Lua's)
_COMMON += """local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function stamp_of(entry)
  return tonumber(string.sub(entry, 1, 13)) or 0
end
local function channel_of(entry)
  local space = string.find(entry, ' ', 14, true)
  return string.sub(entry, 14, (space or 14) - 1)
end
local function uncount(counts, channel)
  if redis.call('HINCRBY', counts, channel, -1) <= 0 then
    redis.call('HDEL', counts, channel)
  end
end
local function trim(key, now)
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head or stamp_of(head) > now then return end
    redis.call('LPOP', key)
  end
end
local function trim_inbox(inbox, counts, now)
  while true do
    local head = redis.call('LINDEX', inbox, 0)
    if not head or stamp_of(head) > now then return end
    redis.call('LPOP', inbox)
    local channel = channel_of(head)
    -- No channel: a sender's trailing marker (MARK_DIRECT), which is not counted.
    if channel ~= '' then
      uncount(counts, channel)
      -- Expired before its owner read it: counted for the owner, whose heartbeat takes it.
      redis.call('HINCRBY', counts, EXPIRED, 1)
    end
  end
end
-- Owner process of a channel made by new_channel(): "<prefix>.<client>!<token>".
local function owner_of(channel)
  local bang = string.find(channel, '!', 1, true)
  if not bang then return nil end
  return string.match(string.sub(channel, 1, bang - 1), '([^.]*)$')
end
-- Queue one message for a channel: in its owner's inbox, or on the plain channel's list
-- with a wake-up for its receivers. False when the channel is at capacity.
local function push(prefix, channel, stamp, payload, cap, ttl, now)
  local owner = owner_of(channel)
  if owner then
    local inbox = prefix .. 'i:{' .. owner .. '}'
    local counts = prefix .. 'n:{' .. owner .. '}'
    trim_inbox(inbox, counts, now)
    if tonumber(redis.call('HGET', counts, channel) or '0') >= cap then return false end
    redis.call('RPUSH', inbox, stamp .. channel .. ' ' .. payload)
    redis.call('HINCRBY', counts, channel, 1)
    redis.call('PEXPIRE', inbox, ttl)
    redis.call('PEXPIRE', counts, ttl)
    return true
  end
  local key = prefix .. 'c:{' .. channel .. '}'
  trim(key, now)
  if redis.call('LLEN', key) >= cap then return false end
  redis.call('RPUSH', key, stamp .. payload)
  redis.call('PEXPIRE', key, ttl)
  redis.call('PUBLISH', prefix .. 'w:{' .. channel .. '}', '')
  return true
end
"""

SEND = (
    _COMMON
    + """
-- KEYS: what push() touches for the channel (Keys.send_keys), declared for a cluster.
-- ARGV: prefix, channel, payload, capacity, expiry ms
local now = now_ms()
local expiry = tonumber(ARGV[5])
local stamp = string.format('%013d', now + expiry)
if push(ARGV[1], ARGV[2], stamp, ARGV[3], tonumber(ARGV[4]), expiry + 1000, now) then
  return 1
end
return 0
"""
)

MARK = """
-- A sender's trailing marker for a group (chanlite_redis.trailing): the message header
-- with no payload. KEYS[1]: the group's members hash (names the slot on a cluster).
-- ARGV: topic, header
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

MARK_DIRECT = (
    _COMMON
    + """
-- A sender's trailing marker for a process: an inbox entry with no channel and no
-- payload after the header, not counted against any channel's capacity.
-- KEYS: inbox, counts. ARGV: header, expiry ms
local now = now_ms()
local expiry = tonumber(ARGV[2])
trim_inbox(KEYS[1], KEYS[2], now)
redis.call('RPUSH', KEYS[1], string.format('%013d', now + expiry) .. ' ' .. ARGV[1])
redis.call('PEXPIRE', KEYS[1], expiry + 1000)
return 1
"""
)

# HISTORY_SEND (stream_scripts.py) runs this script's body, after _COMMON, as a function
# once it has stamped ARGV[3]: keep KEYS[1], ARGV[1..7] and the returned list as they are.
GROUP_SEND = (
    _COMMON
    + """
-- KEYS[1]: members hash.
-- ARGV: prefix, topic, payload, expiry ms, group_expiry ms, grace ms (-1: on a cluster),
-- header (sender, number)
-- Processes with their own members hear the one PUBLISH (behind a header naming the
-- sender, which skips its own copy); members added by someone else (plain channel names, or another
-- process's channels) get a copy queued here.
local prefix = ARGV[1]
redis.call('PUBLISH', ARGV[2], ARGV[7] .. ARGV[3])
local members = redis.call('HGETALL', KEYS[1])
if #members == 0 then return {} end
local now = now_ms()
local expiry = tonumber(ARGV[4])
local group_expiry = tonumber(ARGV[5])
local grace = tonumber(ARGV[6])
local stamp = string.format('%013d', now + expiry)
local dropped = {}
for i = 1, #members, 2 do
  local channel = members[i]
  local value = members[i + 1]
  local space = string.find(value, ' ', 1, true) or (#value + 1)
  local joined = tonumber(string.sub(value, 1, space - 1)) or 0
  local cap = tonumber(string.sub(value, space + 1)) or 100
  local owner = owner_of(channel)
  if joined + group_expiry <= now then
    redis.call('HDEL', KEYS[1], channel)
  elseif grace < 0 then
    -- On a cluster (grace -1) a member's keys are in another slot, perhaps on another
    -- node: the caller queues its copy ("\1<capacity> <channel>", after the payload).
    if #dropped == 0 then dropped[1] = '\2' .. ARGV[3] end
    dropped[#dropped + 1] = '\1' .. string.format('%d', cap) .. ' ' .. channel
  elseif owner and now - joined > grace
      and redis.call('EXISTS', prefix .. 'a:{' .. owner .. '}') == 0 then
    -- Its process stopped sending heartbeats: nobody will ever read the channel.
    redis.call('HDEL', KEYS[1], channel)
  elseif not push(prefix, channel, stamp, ARGV[3], cap, expiry + 1000, now) then
    dropped[#dropped + 1] = channel
  end
end
return dropped
"""
)

GROUP_ADD = (
    _COMMON
    + """
-- KEYS[1]: members hash. ARGV: channel, capacity, group_expiry ms
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now_ms()) .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

POP = (
    _COMMON
    + """
-- KEYS[1]: a plain channel list, KEYS[2]: taken:<token>, KEYS[3]: dropped:<token>.
-- ARGV: hold ms. Returns the list's oldest unexpired entry or false, and keeps a copy
-- under the pop's token for a while, so a reader cancelled before it saw the reply can
-- put it back (RESTORE). A pop that RESTORE ran before does nothing.
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local now = now_ms()
while true do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then return false end
  if stamp_of(entry) > now then
    redis.call('SET', KEYS[2], entry, 'PX', ARGV[1])
    return entry
  end
end
"""
)

RESTORE = """
-- KEYS: as for POP. ARGV: hold ms, list ttl ms. Undoes the POP with this token, whether it
-- has run (its entry goes back to the head) or not yet (it will then do nothing).
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
local entry = redis.call('GET', KEYS[2])
if not entry then return 0 end
redis.call('DEL', KEYS[2])
redis.call('LPUSH', KEYS[1], entry)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

UNCOUNT = """
-- KEYS[1]: a process's inbox counts. ARGV: channel, n, channel, n, ... taken from its inbox.
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"""

BEAT = f"""
-- KEYS[1]: a process's heartbeat key, KEYS[2]: its inbox counts. ARGV: ttl ms. Returns the
-- server's TIME, from which the process measures its clock's offset, and how many of its
-- inbox entries senders found expired since the last beat (taken: counted once).
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local expired = redis.call('HGET', KEYS[2], '{EXPIRED}') or '0'
if expired ~= '0' then redis.call('HDEL', KEYS[2], '{EXPIRED}') end
local t = redis.call('TIME')
return {{t[1], t[2], expired}}
"""
