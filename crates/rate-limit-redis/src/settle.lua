-- Settles a request after its answer: `delta` more tokens taken from every quota of one key
-- (its true cost exceeded what it was admitted for), or given back if negative. Keys and
-- arguments as the admission script's (gcra.lua), with one request's place taken by delta.
--
-- KEYS[1]  as for gcra.lua: a string (one GCRA quota) or a hash (several), and the window
--          quotas' sorted sets KEYS[1]..':w'..i
-- ARGV[1]  now in microseconds, or '' to read the server's clock
-- ARGV[2]  delta, the tokens to take (positive) or give back (negative); a refund may name
--          its request's age, `-tokens:age` in microseconds
-- ARGV[3], ARGV[4], ...  each quota's two arguments, as for gcra.lua
--
-- A debit moves a GCRA quota's TAT on by delta intervals from now at the earliest, past the
-- burst if need be, so that the next admissions wait for it; a refund moves it back. A
-- window records a debit as tokens admitted now. A refund with the request's age takes back
-- the newest tokens admitted no later than now less that age (the request's own, and older
-- ones that leave the window no later): taken off later admissions, it would free room
-- early. On the server's clock the cut is off by the difference between this call's and
-- the admission's trips. Without an age it takes back the newest tokens.

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local delta_arg = ARGV[2]
local age = nil
local colon = string.find(delta_arg, ':', 1, true)
if colon then
  age = tonumber(string.sub(delta_arg, colon + 1))
  delta_arg = string.sub(delta_arg, 1, colon - 1)
end
local delta = tonumber(delta_arg)
local quotas = (#ARGV - 2) / 2
local single = quotas == 1 and string.sub(ARGV[3], 1, 1) ~= 'w'

for i = 1, quotas do
  local first = ARGV[2 * i + 1]
  if string.sub(first, 1, 1) == 'w' then
    local period = tonumber(string.sub(first, 2))
    local set = KEYS[1] .. ':w' .. i
    if delta > 0 then
      local last = redis.call('INCRBY', set .. ':n', delta)
      local score = string.format('%.17g', now)
      local token = 1
      while token <= delta do
        local members = {}
        local upto = math.min(delta, token + 999)
        for t = token, upto do
          members[#members + 1] = score
          members[#members + 1] = tostring(last - delta + t)
        end
        redis.call('ZADD', set, unpack(members))
        token = upto + 1
      end
      local ttl = math.ceil(period / 1000) + 1
      redis.call('PEXPIRE', set, ttl)
      redis.call('PEXPIRE', set .. ':n', ttl)
    elseif age then
      local members = redis.call('ZREVRANGEBYSCORE', set, string.format('%.17g', now - age),
        '-inf', 'LIMIT', 0, -delta)
      if #members > 0 then redis.call('ZREM', set, unpack(members)) end
    else
      redis.call('ZPOPMAX', set, -delta)
    end
  else
    local interval = tonumber(first)
    local tat
    if single then
      tat = tonumber(redis.call('GET', KEYS[1]))
    else
      tat = tonumber(redis.call('HGET', KEYS[1], tostring(i)))
    end
    tat = tat or now
    if delta > 0 and tat < now then tat = now end
    tat = tat + delta * interval
    if tat > now then
      local ttl = math.ceil((tat - now) / 1000) + 1
      local value = string.format('%.17g', tat)
      if single then
        redis.call('SET', KEYS[1], value, 'PX', ttl)
      else
        redis.call('HSET', KEYS[1], tostring(i), value)
        if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
      end
    elseif single then
      redis.call('DEL', KEYS[1])
    else
      redis.call('HDEL', KEYS[1], tostring(i))
    end
  end
end
return 0
