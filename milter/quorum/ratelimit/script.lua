-- Quorum rate limits: GCRA buckets, checked and reserved all-or-none in one call.
--
-- A bucket key holds its theoretical arrival time (TAT, integer microseconds); the bucket is
-- empty when TAT <= now. Taking `cost` units moves TAT to max(TAT, now) + cost * T and is
-- allowed while TAT - now <= limit * T, so from empty exactly `limit` units pass, then one more
-- every T. Keys expire with their TAT: constant memory, nothing to clean up.
--
-- KEYS: the buckets (all in one hash slot on a Cluster).
-- ARGV[1]: op: "reserve" (check all, then take from all or from none), "check" (as reserve,
--          without writing), "release" (give `cost` back, never below empty), "peek" (TATs).
-- ARGV[2]: now in microseconds, or "" for the server clock (TIME) so every Quorum host agrees.
--          An injected clock (tests, reference model) also stores keys without expiry.
-- ARGV[3..]: per key: T (microseconds per unit), limit (units), cost (units).
-- Returns {admitted 1|0, index of the bucket that refused (1-based, 0 if none),
--          microseconds until it would admit, now}; "peek" returns {now, TAT...} (0 = empty).

local now
local injected = ARGV[2] ~= ''
if injected then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local op = ARGV[1]

local function tat_of(key)
  local v = tonumber(redis.call('GET', key) or '')
  if v == nil or v < now then
    return now
  end
  return v
end

local function store(key, tat)
  if tat <= now then
    redis.call('DEL', key)
  elseif injected then
    redis.call('SET', key, string.format('%.0f', tat))
  else
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  end
end

if op == 'reserve' or op == 'check' then
  local new = {}
  local worst, wait = 0, 0
  for i = 1, #KEYS do
    local j = 3 * i
    local interval, limit, cost = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    local tat = tat_of(KEYS[i]) + cost * interval
    local over = tat - now - limit * interval
    if over > wait then
      worst, wait = i, over
    end
    new[i] = tat
  end
  if worst > 0 then
    return {0, worst, wait, now}
  end
  if op == 'reserve' then
    for i = 1, #KEYS do
      store(KEYS[i], new[i])
    end
  end
  return {1, 0, 0, now}
elseif op == 'release' then
  for i = 1, #KEYS do
    local v = tonumber(redis.call('GET', KEYS[i]) or '')
    if v ~= nil then
      store(KEYS[i], v - tonumber(ARGV[3 * i]) * tonumber(ARGV[3 * i + 2]))
    end
  end
  return {1, 0, 0, now}
elseif op == 'peek' then
  local out = {now}
  for i = 1, #KEYS do
    out[i + 1] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  end
  return out
end
return redis.error_reply('ERR quorum ratelimit: unknown op ' .. tostring(op))
