-- GCRA for every quota of one key, in one round trip (Redis 5 or later).
--
-- KEYS[1]  one quota: a string holding its theoretical arrival time (TAT) in microseconds;
--          several: a hash whose field i holds quota i's TAT
-- ARGV[1]  now in microseconds, or '' to read the server's clock
-- ARGV[2]  need: the tokens the request costs
-- ARGV[3]  want: the tokens to take if they are free (need, or a lease of more)
-- ARGV[2i+2], ARGV[2i+3]  quota i's emission interval and burst tolerance, in microseconds
--
-- Returns {granted, 0} with need <= granted <= want when admitted, or {0, wait} with the
-- microseconds until `need` would be admitted; nothing is taken then. Each key expires once
-- every TAT is in the past, when a missing key means the same thing: a full burst.
-- TATs are written with 17 digits: a double's full precision, which the default 14 lose.

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local need = tonumber(ARGV[2])
local grant = tonumber(ARGV[3])
local quotas = (#ARGV - 3) / 2

-- The most tokens a quota admits now, from its TAT: tat + n * interval - now <= tolerance.
local function fit(tat, interval, tolerance)
  return math.floor((tolerance - (tat - now)) / interval + 1e-9)
end

local function wait(tat, interval, tolerance)
  return tat + need * interval - tolerance - now
end

-- The common case, one quota: one GET and one SET.
if quotas == 1 then
  local interval = tonumber(ARGV[4])
  local tolerance = tonumber(ARGV[5])
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  local free = fit(tat, interval, tolerance)
  if free < need then
    return {0, math.max(1, math.ceil(wait(tat, interval, tolerance) - 1e-3))}
  end
  if free < grant then grant = free end
  tat = tat + grant * interval
  redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  return {grant, 0}
end

local fields = {}
for i = 1, quotas do fields[i] = tostring(i) end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local tats = {}
local longest = 0
for i = 1, quotas do
  local interval = tonumber(ARGV[2 * i + 2])
  local tolerance = tonumber(ARGV[2 * i + 3])
  local tat = tonumber(stored[i]) or now
  if tat < now then tat = now end
  tats[i] = tat
  local free = fit(tat, interval, tolerance)
  if free < need then
    local until_free = wait(tat, interval, tolerance)
    if until_free > longest then longest = until_free end
  end
  if free < grant then grant = free end
end
if grant < need then
  return {0, math.max(1, math.ceil(longest - 1e-3))}
end

local updates = {}
local ttl = 0
for i = 1, quotas do
  local tat = tats[i] + grant * tonumber(ARGV[2 * i + 2])
  updates[2 * i - 1] = fields[i]
  updates[2 * i] = string.format('%.17g', tat)
  if tat - now > ttl then ttl = tat - now end
end
redis.call('HSET', KEYS[1], unpack(updates))
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1)
return {grant, 0}
