-- Per-number failed-check cap, across all of a number's verifications. Atomic across
-- replicas, like the per-verification attempt cap: a check reserves a slot before its code
-- is compared, and gives it back if the code was right.
-- KEYS[1] sorted set of failed (or pending) checks of one number, scored by time (s)
-- ARGV: now (s; empty: Redis' clock, the one every replica shares; tests pass one to drive
-- time), window (s), max failures, member (unique id of this check)
-- Reply: {1} reserved; {0, retry_after} refused (the oldest failure must age out first).
local clock = redis.call('TIME')
local now = tonumber(ARGV[1]) or (tonumber(clock[1]) + tonumber(clock[2]) / 1000000)
local window = tonumber(ARGV[2])
local max_failures = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.6f', now - window + 0.000001))
if redis.call('ZCARD', KEYS[1]) >= max_failures then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, string.format('%.6f', tonumber(first[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return {1}
