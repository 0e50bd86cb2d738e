"""The Lua scripts that apply every write atomically inside Redis.

Each script touches the keys of one session only (one hash tag, so one Cluster slot), except
``REGISTER``, which touches only the store-wide keys. A task's mutable state is a msgpack
array (see :class:`htcgrid.backends.redis.schema.TaskState`) that the scripts unpack, change
and pack with Redis's bundled ``cmsgpack``; everything else they store is opaque bytes the
Python side encoded.

The hot scripts (SUBMIT, CLAIM, END_ATTEMPTS, RENEW) take a batch as a fixed handful of
arguments, not one argument per task and field: a msgpack *head* with the scalars of every
task (unpacked with ``cmsgpack``, one C call) and, where the batch carries bytes, one *data*
string of those bytes concatenated, cut with ``string.sub`` by the lengths in the head. Each
argument costs the client (redis-py turns it into protocol, hiredis packs it) and the server
(an object, then a Lua string) a fixed price, which per task and field was most of a small
call's cost. Redis 7.0's ``cmsgpack`` cannot read msgpack's bin type, so bytes never go in a
head. Replies stay flat arrays of the stored values: packing them into one string in Lua
(``table.concat``) costs Redis about 1 µs per task, far more than it saves the client
(hiredis turns a flat array into bytes objects in C).

Times travel as msgpack doubles (or as the strings Python wrote, for the few scalar
arguments), so they round-trip exactly into a task's msgpack state and into ZSET scores
(Redis formats a Lua number argument with 17 significant digits).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Shared by every script: state positions, chunked calls (Lua's unpack stops near 8000
# values, and a submit may carry 10,000 tasks), and the session's blob deletion.
_PRELUDE = """
local PENDING, RUNNING, CANCELLED = 0, 1, 4
local ST, ATT, WORKER, EXPIRY, NB = 1, 2, 3, 4, 5
local FINISHED, SEQ = 10, 11
local STEP = 4000

local function call_chunked(cmd, key, args)
  local n = #args
  local i = 1
  while i <= n do
    local j = math.min(i + STEP - 1, n)
    if key then
      redis.call(cmd, key, unpack(args, i, j))
    else
      redis.call(cmd, unpack(args, i, j))
    end
    i = j + 1
  end
end

local function hmget(key, fields)
  local n = #fields
  if n == 0 then return {} end
  if n <= STEP then return redis.call('HMGET', key, unpack(fields)) end -- no copy
  local out = {}
  local i = 1
  while i <= n do
    local j = math.min(i + STEP - 1, n)
    local part = redis.call('HMGET', key, unpack(fields, i, j))
    for k = 1, #part do out[#out + 1] = part[k] end
    i = j + 1
  end
  return out
end

local function pairs_of(a, b, list)
  local out = {}
  for k, v in ipairs(list) do
    out[2 * k - 1] = a and a or v
    out[2 * k] = b and b or v
  end
  return out
end

local function drop_blobs(index, prefix)
  local names = redis.call('SMEMBERS', index)
  local keys = {}
  for k, name in ipairs(names) do keys[k] = prefix .. name end
  call_chunked('UNLINK', false, keys)
  redis.call('UNLINK', index)
end

-- A lease's score in the leases ZSET: its expiry in whole milliseconds. Integer scores keep
-- inserts into a small (listpack) ZSET cheap; the exact expiry is in the task's state.
local function lease_score(expiry)
  return math.floor(expiry * 1000)
end

local function finished_event(events, seq)
  redis.call('XADD', events, 'MAXLEN', 1, string.format('%d-0', seq), 'seq', seq)
end
"""


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, which EVALSHA names it by."""

    name: str
    body: str
    source: str = field(init=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        source = _PRELUDE + self.body
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sha", hashlib.sha1(source.encode()).hexdigest())


#: KEYS seq, sessions; ARGV session id. Puts a session in the registry, in creation order.
REGISTER = Script(
    "register",
    """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[1]), ARGV[1])
return 1
""",
)

#: KEYS meta; ARGV spec, created_at, priority, token. 1 if created (or created before by the
#: same call, retried: same token), 0 if the id is taken.
CREATE = Script(
    "create",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'token') == ARGV[4] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'created_at', ARGV[2], 'priority', ARGV[3],
  'token', ARGV[4], 'is_cancelled', 0, 'next_index', 0, 'last_done_seq', 0,
  'last_served', 0, 'n_pending', 0, 'n_running', 0, 'n_succeeded', 0, 'n_failed', 0,
  'n_cancelled', 0)
return 1
""",
)

#: KEYS meta, batches, input, state, pending; ARGV head, data. head: msgpack [batch field,
#: lengths of the initial states (one per codec in the batch), lengths of the n inputs, the
#: 1-based state of each input or nil when there is one]; data: the states, then the inputs.
#: {0, first} | {-1} no session | {-2, first, count} batch seen | {-3} cancelled.
SUBMIT = Script(
    "submit",
    """
local meta, batches, input, state, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local head = cmsgpack.unpack(ARGV[1])
local field, state_lens, input_lens, slots = head[1], head[2], head[3], head[4]
local is_cancelled, next_index = unpack(redis.call('HMGET', meta, 'is_cancelled', 'next_index'))
if not is_cancelled then return {-1} end
local seen = redis.call('HGET', batches, field)
if seen then
  local first, count = string.match(seen, '^(%d+):(%d+)$')
  return {-2, tonumber(first), tonumber(count)}
end
if is_cancelled == '1' then return {-3} end
local n = #input_lens
local first = tonumber(next_index)
if n > 0 then
  local data = ARGV[2]
  local pos = 1
  local initial = {}
  for c = 1, #state_lens do
    initial[c] = string.sub(data, pos, pos + state_lens[c] - 1)
    pos = pos + state_lens[c]
  end
  local inputs, states, order = {}, {}, {}
  for k = 1, n do
    local i = first + k - 1
    local len = input_lens[k]
    inputs[2 * k - 1] = i
    inputs[2 * k] = string.sub(data, pos, pos + len - 1)
    pos = pos + len
    states[2 * k - 1] = i
    states[2 * k] = initial[slots and slots[k] or 1]
    order[2 * k - 1] = i
    order[2 * k] = i
  end
  call_chunked('HSET', input, inputs)
  call_chunked('HSET', state, states)
  call_chunked('ZADD', pending, order)
  redis.call('HINCRBY', meta, 'next_index', n)
  redis.call('HINCRBY', meta, 'n_pending', n)
end
redis.call('HSET', batches, field, string.format('%d:%d', first, n))
return {0, first}
""",
)

#: KEYS meta, pending, delayed, state, input, leases; ARGV n, worker, expiry, now.
#: {spec, n_pending left, next due, index, state, input, index, state, input, ...}, or {}
#: if the session is gone. ``next due`` is the earliest delayed retry's ``not_before`` when
#: the claim took nothing but retries wait, else 0. A session being cancelled claims
#: nothing; only a claim that took tasks counts as serving the session.
CLAIM = Script(
    "claim",
    """
local meta, pending, delayed, state, input, leases =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local spec, is_cancelled, left = unpack(redis.call('HMGET', meta, 'spec', 'is_cancelled',
  'n_pending'))
if not spec then return {} end
left = tonumber(left)
if is_cancelled == '1' or left == 0 then return {spec, left, 0} end
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[4], 'LIMIT', 0, STEP)
if #due > 0 then
  call_chunked('ZADD', pending, pairs_of(false, false, due))
  call_chunked('ZREM', delayed, due)
end
local popped = redis.call('ZPOPMIN', pending, ARGV[1])
if #popped == 0 then
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  return {spec, left, first[2] or 0}
end
redis.call('HSET', meta, 'last_served', ARGV[4])
local idx = {}
for k = 1, #popped, 2 do idx[#idx + 1] = popped[k] end
local states = hmget(state, idx)
local inputs = hmget(input, idx)
local expiry = tonumber(ARGV[3])
local sets = {}
local out = {spec, 0, 0}
for k, i in ipairs(idx) do
  local s = cmsgpack.unpack(states[k])
  s[ST] = RUNNING
  s[ATT] = s[ATT] + 1
  s[WORKER] = ARGV[2]
  s[EXPIRY] = expiry
  local packed = cmsgpack.pack(s)
  sets[2 * k - 1] = i
  sets[2 * k] = packed
  out[#out + 1] = i
  out[#out + 1] = packed
  out[#out + 1] = inputs[k]
end
call_chunked('HSET', state, sets)
call_chunked('ZADD', leases, pairs_of(lease_score(expiry), false, idx))
out[2] = redis.call('HINCRBY', meta, 'n_pending', -#idx)
redis.call('HINCRBY', meta, 'n_running', #idx)
return out
""",
)

#: KEYS meta, state, outcome, pending, delayed, leases, done, events; ARGV head, data.
#: head: msgpack [now, require_expired, rows], rows flat, 7 per completion: index, worker,
#: attempt, state, counter position (0 for none), not_before, length of its outcome;
#: data: the outcomes (msgpack, stored as they are) concatenated.
#: {1 (applied) or 0 (refused) per completion}.
END_ATTEMPTS = Script(
    "end_attempts",
    """
local meta, state, outcome, pending, delayed, leases, done, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local head = cmsgpack.unpack(ARGV[1])
local now, require_expired, rows = head[1], head[2], head[3]
local data = ARGV[2]
local m = #rows / 7
local accepted = {}
local seq0 = tonumber(redis.call('HGET', meta, 'last_done_seq'))
if not seq0 then
  for k = 1, m do accepted[k] = 0 end
  return accepted
end
local idx = {}
for k = 1, m do idx[k] = rows[7 * k - 6] end
local raw = hmget(state, idx)
local cur, dirty, order = {}, {}, {}
local seq = seq0
local delta = {0, 0, 0, 0, 0}
local outs, ended, to_pending, to_delayed, to_done = {}, {}, {}, {}, {}
local pos = 1
for k = 1, m do
  local b = 7 * (k - 1)
  local i = rows[b + 1]
  local len = rows[b + 7]
  local s = cur[i]
  if s == nil and raw[k] then
    s = cmsgpack.unpack(raw[k])
    cur[i] = s
  end
  local ok = s and s[ST] == RUNNING and s[WORKER] == rows[b + 2]
    and s[ATT] == rows[b + 3]
    and not (require_expired and s[EXPIRY] > now)
  if ok then
    local dst = rows[b + 4]
    local counter = rows[b + 5]
    if counter > 0 then s[counter] = s[counter] + 1 end
    s[ST] = dst
    s[WORKER] = ''
    ended[#ended + 1] = i
    delta[RUNNING + 1] = delta[RUNNING + 1] - 1
    delta[dst + 1] = delta[dst + 1] + 1
    if dst == PENDING then
      local nb = rows[b + 6]
      s[NB] = nb
      if nb <= now then
        to_pending[#to_pending + 1] = i
        to_pending[#to_pending + 1] = i
      else
        to_delayed[#to_delayed + 1] = nb
        to_delayed[#to_delayed + 1] = i
      end
    else
      seq = seq + 1
      s[FINISHED] = now
      s[SEQ] = seq
      to_done[#to_done + 1] = seq
      to_done[#to_done + 1] = i
    end
    outs[#outs + 1] = i
    outs[#outs + 1] = string.sub(data, pos, pos + len - 1)
    if not dirty[i] then
      dirty[i] = true
      order[#order + 1] = i
    end
    accepted[k] = 1
  else
    accepted[k] = 0
  end
  pos = pos + len
end
if #ended == 0 then return accepted end
local sets = {}
for _, i in ipairs(order) do
  sets[#sets + 1] = i
  sets[#sets + 1] = cmsgpack.pack(cur[i])
end
call_chunked('HSET', state, sets)
call_chunked('HSET', outcome, outs)
call_chunked('ZREM', leases, ended)
call_chunked('ZADD', pending, to_pending)
call_chunked('ZADD', delayed, to_delayed)
call_chunked('ZADD', done, to_done)
local names = {'n_pending', 'n_running', 'n_succeeded', 'n_failed', 'n_cancelled'}
for k = 1, 5 do
  if delta[k] ~= 0 then redis.call('HINCRBY', meta, names[k], delta[k]) end
end
if seq > seq0 then
  redis.call('HSET', meta, 'last_done_seq', seq)
  finished_event(events, seq)
end
return accepted
""",
)

#: KEYS state, leases; ARGV head: msgpack [expiry, worker, rows], rows flat, 2 per lease:
#: index, attempt. {1 (extended) or 0 (lost) per lease}.
RENEW = Script(
    "renew",
    """
local state, leases = KEYS[1], KEYS[2]
local head = cmsgpack.unpack(ARGV[1])
local expiry, worker, rows = head[1], head[2], head[3]
local m = #rows / 2
local idx = {}
for k = 1, m do idx[k] = rows[2 * k - 1] end
local raw = hmget(state, idx)
local held, sets, order = {}, {}, {}
for k = 1, m do
  local s = raw[k] and cmsgpack.unpack(raw[k])
  if s and s[ST] == RUNNING and s[WORKER] == worker and s[ATT] == rows[2 * k] then
    s[EXPIRY] = expiry
    sets[#sets + 1] = idx[k]
    sets[#sets + 1] = cmsgpack.pack(s)
    order[#order + 1] = idx[k]
    held[k] = 1
  else
    held[k] = 0
  end
end
call_chunked('HSET', state, sets)
call_chunked('ZADD', leases, pairs_of(lease_score(expiry), false, order))
return held
""",
)

#: KEYS meta, state, outcome, pending, delayed, leases, done, events; ARGV now, mode, then
#: indexes for mode 'some'. Mode 'all' closes the session and cancels up to ARGV[3] of its
#: unfinished tasks per call, so a huge session never blocks Redis for long: the caller
#: repeats until no more are left (claims skip a closed session meanwhile).
#: {0, n cancelled, 1 if more are left} | {-1} no session |
#: {-2, k} the k-th index is not a task of the session (nothing changed).
CANCEL = Script(
    "cancel",
    """
local meta, state, outcome, pending, delayed, leases, done, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local now = tonumber(ARGV[1])
local idx = {}
if ARGV[2] == 'all' then
  redis.call('HSET', meta, 'is_cancelled', 1)
  local limit = tonumber(ARGV[3])
  for _, key in ipairs({pending, delayed, leases}) do
    if #idx < limit then
      for _, i in ipairs(redis.call('ZRANGE', key, 0, limit - #idx - 1)) do
        idx[#idx + 1] = i
      end
    end
  end
else
  for k = 3, #ARGV do idx[#idx + 1] = ARGV[k] end
end
local raw = hmget(state, idx)
for k = 1, #idx do
  if not raw[k] then return {-2, k} end
end
local seq0 = tonumber(redis.call('HGET', meta, 'last_done_seq'))
local seq = seq0
local seen, sets, from_pending, from_running, to_done = {}, {}, {}, {}, {}
for k, i in ipairs(idx) do
  local s = not seen[i] and cmsgpack.unpack(raw[k])
  seen[i] = true
  if s and (s[ST] == PENDING or s[ST] == RUNNING) then
    if s[ST] == PENDING then
      from_pending[#from_pending + 1] = i
    else
      from_running[#from_running + 1] = i
    end
    seq = seq + 1
    s[ST] = CANCELLED
    s[WORKER] = ''
    s[FINISHED] = now
    s[SEQ] = seq
    sets[#sets + 1] = i
    sets[#sets + 1] = cmsgpack.pack(s)
    to_done[#to_done + 1] = seq
    to_done[#to_done + 1] = i
  end
end
local n = seq - seq0
if n == 0 then return {0, 0, 0} end
call_chunked('HSET', state, sets)
call_chunked('ZREM', pending, from_pending)
call_chunked('ZREM', delayed, from_pending)
call_chunked('ZREM', leases, from_running)
call_chunked('HDEL', outcome, from_pending)
call_chunked('HDEL', outcome, from_running)
call_chunked('ZADD', done, to_done)
if #from_pending > 0 then redis.call('HINCRBY', meta, 'n_pending', -#from_pending) end
if #from_running > 0 then redis.call('HINCRBY', meta, 'n_running', -#from_running) end
redis.call('HINCRBY', meta, 'n_cancelled', n)
redis.call('HSET', meta, 'last_done_seq', seq)
finished_event(events, seq)
local left = 0
if ARGV[2] == 'all' then
  left = redis.call('ZCARD', pending) + redis.call('ZCARD', delayed) + redis.call('ZCARD', leases)
end
return {0, n, left > 0 and 1 or 0}
""",
)

#: KEYS: every fixed key of the session, meta first and the blob index last; ARGV blob key
#: prefix. 1 if deleted, 0 if there was no such session.
DELETE = Script(
    "delete",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
drop_blobs(KEYS[#KEYS], ARGV[1])
redis.call('UNLINK', unpack(KEYS))
return 1
""",
)

#: KEYS blob index; ARGV blob key prefix. Deletes the session's blobs.
DROP_BLOBS = Script("drop_blobs", "drop_blobs(KEYS[1], ARGV[1])\nreturn 1\n")

#: KEYS meta, state, outcome; ARGV indexes. {0} no session | {1, states, outcomes}.
RECORDS = Script(
    "records",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
return {1, hmget(KEYS[2], ARGV), hmget(KEYS[3], ARGV)}
""",
)

#: KEYS meta, done, state, outcome; ARGV after, limit.
#: {0} no session | {1, indexes, states, outcomes} in done order.
FINISHED = Script(
    "finished",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local limit = tonumber(ARGV[2])
if limit <= 0 then return {1, {}, {}, {}} end
local idx = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, limit)
return {1, idx, hmget(KEYS[3], idx), hmget(KEYS[4], idx)}
""",
)

#: KEYS meta, leases, state; ARGV now, limit. {} | {spec, indexes, states}, oldest expiry
#: first, of leases expired by ``now`` (and, within now's millisecond, maybe a few not yet:
#: the caller checks each state's exact expiry).
EXPIRED = Script(
    "expired",
    """
local cutoff = lease_score(tonumber(ARGV[1]))
local idx = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, ARGV[2])
if #idx == 0 then return {} end
return {redis.call('HGET', KEYS[1], 'spec'), idx, hmget(KEYS[3], idx)}
""",
)

ALL = (
    REGISTER,
    CREATE,
    SUBMIT,
    CLAIM,
    END_ATTEMPTS,
    RENEW,
    CANCEL,
    DELETE,
    DROP_BLOBS,
    RECORDS,
    FINISHED,
    EXPIRED,
)
