-- Quorum flow control: concurrency slots as leases, taken all-or-none in one call.
--
-- Each KEY is a sorted set of the slots held for one subject (an account, a domain, a client):
-- member = the transaction's slot id, score = when its lease runs out (server milliseconds).
-- Expired leases (an instance that died) are dropped before counting, so a slot comes back
-- `lease` after its holder stopped renewing it. Time is Redis's own (TIME): every Quorum host
-- agrees whatever its clock says.
--
-- ARGV[1]: op: "take" (check every key, then add the slot to all or to none), "renew" (extend
--          the slot's lease where it is held), "give" (remove it).
-- ARGV[2]: the slot id.  ARGV[3]: the lease in milliseconds.
-- ARGV[4..]: per key (take): its limit.
-- Returns take: {1, 0} admitted, or {0, i, held} refused by KEYS[i] holding `held` slots;
--         renew / give: {n} keys touched.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, slot, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])

if op == 'take' then
  for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    local limit = tonumber(ARGV[3 + i])
    if redis.call('ZSCORE', KEYS[i], slot) == false then
      local held = redis.call('ZCARD', KEYS[i])
      if held >= limit then
        return {0, i, held}
      end
    end
  end
  for i = 1, #KEYS do
    redis.call('ZADD', KEYS[i], now + lease, slot)
    redis.call('PEXPIRE', KEYS[i], lease * 2)
  end
  return {1, 0}
elseif op == 'renew' then
  local n = 0
  for i = 1, #KEYS do
    n = n + redis.call('ZADD', KEYS[i], 'XX', 'CH', now + lease, slot)
    redis.call('PEXPIRE', KEYS[i], lease * 2)
  end
  return {n}
elseif op == 'give' then
  local n = 0
  for i = 1, #KEYS do
    n = n + redis.call('ZREM', KEYS[i], slot)
  end
  return {n}
end
return redis.error_reply('unknown op ' .. tostring(op))
