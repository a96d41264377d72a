-- GCRA for every quota of one key, in one round trip.
--
-- KEYS[1]  a hash: field i holds quota i's theoretical arrival time (TAT), in microseconds
-- ARGV[1]  now in microseconds, or '' to read the server's clock
-- ARGV[2]  need: the tokens the request costs
-- ARGV[3]  want: the tokens to take if they are free (need, or a lease of more)
-- ARGV[2i+2], ARGV[2i+3]  quota i's emission interval and burst tolerance, in microseconds
--
-- Returns {granted, 0} with need <= granted <= want when admitted, or {0, wait} with the
-- microseconds until `need` would be admitted; nothing is taken then.

local now = tonumber(ARGV[1])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local need = tonumber(ARGV[2])
local grant = tonumber(ARGV[3])
local quotas = (#ARGV - 3) / 2

local fields = {}
for i = 1, quotas do fields[i] = tostring(i) end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local tats = {}
local wait = 0
for i = 1, quotas do
  local interval = tonumber(ARGV[2 * i + 2])
  local tolerance = tonumber(ARGV[2 * i + 3])
  local tat = tonumber(stored[i]) or now
  if tat < now then tat = now end
  tats[i] = tat
  -- The most tokens this quota admits now: tat + n * interval - now <= tolerance.
  local fit = math.floor((tolerance - (tat - now)) / interval + 1e-9)
  if fit < need then
    local at = tat + need * interval - tolerance - now
    if at > wait then wait = at end
  end
  if fit < grant then grant = fit end
end
if grant < need then
  return {0, math.max(1, math.ceil(wait - 1e-3))}
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
-- Once every TAT is in the past the key means "full burst", which is what a missing key means.
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1)
return {grant, 0}
