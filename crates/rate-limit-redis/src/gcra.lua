-- GCRA for every quota of one key, for a batch of requests, in one round trip (Redis 5 or
-- later). The requests are decided in order, as the same number of calls at one instant
-- would be: a refused request takes nothing, and the next is still asked.
--
-- KEYS[1]  one quota: a string holding its theoretical arrival time (TAT) in microseconds;
--          several: a hash whose field i holds quota i's TAT
-- ARGV[1]  now in microseconds, or '' to read the server's clock
-- ARGV[2]  n, the number of requests
-- ARGV[2r+1], ARGV[2r+2]  request r's need (the tokens it costs) and want (the tokens to
--          take if they are free: its need, or a lease of more)
-- ARGV[2n+2i+1], ARGV[2n+2i+2]  quota i's emission interval and burst tolerance, in
--          microseconds; for a window quota, 'w' and its period in microseconds, then its
--          count n
--
-- A window quota keeps its admissions of the last period in a sorted set, KEYS[1]..':w'..i,
-- one member per token scored by its instant (a counter beside it, ..':n', names them), and
-- admits when the tokens in the window and the request's come to at most n; otherwise the
-- request waits until enough of the oldest have left the window.
--
-- Returns 2n numbers, for each request {granted, 0} with need <= granted <= want when
-- admitted, or {0, wait} with the microseconds until its need would be admitted. Each key
-- expires once every TAT is in the past, when a missing key means the same thing: a full
-- burst. TATs are written with 17 digits: a double's full precision, which the default 14
-- lose.

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local requests = tonumber(ARGV[2])
local first_quota = 2 * requests + 3
local quotas = (#ARGV - first_quota + 1) / 2
local answers = {}

-- The most tokens a quota admits now, from its TAT: tat + n * interval - now <= tolerance.
local function fit(tat, interval, tolerance)
  return math.floor((tolerance - (tat - now)) / interval + 1e-9)
end

-- Microseconds until `need` tokens fit, rounded up.
local function wait(tat, need, interval, tolerance)
  return math.max(1, math.ceil(tat + need * interval - tolerance - now - 1e-3))
end

-- The common case, one GCRA quota: one GET and at most one SET.
if quotas == 1 and string.sub(ARGV[first_quota], 1, 1) ~= 'w' then
  local interval = tonumber(ARGV[first_quota])
  local tolerance = tonumber(ARGV[first_quota + 1])
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  local taken = false
  for r = 1, requests do
    local need = tonumber(ARGV[2 * r + 1])
    local grant = tonumber(ARGV[2 * r + 2])
    local free = fit(tat, interval, tolerance)
    if free < need then
      answers[2 * r - 1] = 0
      answers[2 * r] = wait(tat, need, interval, tolerance)
    else
      if free < grant then grant = free end
      tat = tat + grant * interval
      taken = true
      answers[2 * r - 1] = grant
      answers[2 * r] = 0
    end
  end
  if taken then
    redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  return answers
end

local fields = {}
local intervals = {}
local tolerances = {}
-- For a window quota: its sorted set, period, count, and the tokens in it now.
local windows = {}
local gcra = 0
for i = 1, quotas do
  fields[i] = tostring(i)
  local first = ARGV[first_quota + 2 * i - 2]
  if string.sub(first, 1, 1) == 'w' then
    local period = tonumber(string.sub(first, 2))
    local set = KEYS[1] .. ':w' .. i
    redis.call('ZREMRANGEBYSCORE', set, '-inf', string.format('%.17g', now - period))
    windows[i] = {
      set = set,
      period = period,
      n = tonumber(ARGV[first_quota + 2 * i - 1]),
      held = redis.call('ZCARD', set),
    }
  else
    gcra = gcra + 1
    intervals[i] = tonumber(first)
    tolerances[i] = tonumber(ARGV[first_quota + 2 * i - 1])
  end
end
local tats = {}
if gcra > 0 then
  local stored = redis.call('HMGET', KEYS[1], unpack(fields))
  for i = 1, quotas do
    local tat = tonumber(stored[i]) or now
    if tat < now then tat = now end
    tats[i] = tat
  end
end

-- Microseconds until a window holds room for `need` more tokens: until the token that
-- must leave last (the excess-th oldest) does.
local function window_wait(window, need)
  local excess = window.held + need - window.n
  local oldest = redis.call('ZRANGE', window.set, excess - 1, excess - 1, 'WITHSCORES')
  local at = tonumber(oldest[2]) or now
  return math.max(1, math.ceil(at + window.period - now - 1e-3))
end

local taken = false
for r = 1, requests do
  local need = tonumber(ARGV[2 * r + 1])
  local grant = tonumber(ARGV[2 * r + 2])
  local longest = 0
  for i = 1, quotas do
    local free
    local window = windows[i]
    if window then
      free = window.n - window.held
    else
      free = fit(tats[i], intervals[i], tolerances[i])
    end
    if free < need then
      local until_free
      if window then
        until_free = window_wait(window, need)
      else
        until_free = wait(tats[i], need, intervals[i], tolerances[i])
      end
      if until_free > longest then longest = until_free end
    end
    if free < grant then grant = free end
  end
  if grant < need then
    answers[2 * r - 1] = 0
    answers[2 * r] = longest
  else
    for i = 1, quotas do
      local window = windows[i]
      if window then
        local last = redis.call('INCRBY', window.set .. ':n', grant)
        local score = string.format('%.17g', now)
        -- In chunks, within what `unpack` may spread over a call's arguments.
        local token = 1
        while token <= grant do
          local members = {}
          local upto = math.min(grant, token + 999)
          for t = token, upto do
            members[#members + 1] = score
            members[#members + 1] = tostring(last - grant + t)
          end
          redis.call('ZADD', window.set, unpack(members))
          token = upto + 1
        end
        window.held = window.held + grant
        local ttl = math.ceil(window.period / 1000) + 1
        redis.call('PEXPIRE', window.set, ttl)
        redis.call('PEXPIRE', window.set .. ':n', ttl)
      else
        tats[i] = tats[i] + grant * intervals[i]
      end
    end
    taken = true
    answers[2 * r - 1] = grant
    answers[2 * r] = 0
  end
end
if not taken or gcra == 0 then return answers end

local updates = {}
local ttl = 0
for i = 1, quotas do
  if not windows[i] then
    updates[#updates + 1] = fields[i]
    updates[#updates + 1] = string.format('%.17g', tats[i])
    if tats[i] - now > ttl then ttl = tats[i] - now end
  end
end
redis.call('HSET', KEYS[1], unpack(updates))
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1)
return answers
