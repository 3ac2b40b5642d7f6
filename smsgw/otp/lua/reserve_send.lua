-- Check the per-number send policy and, if allowed, record one send. Atomic across replicas.
-- KEYS[1] sorted set of send times for one number
-- ARGV: now (s), window (s), cooldown (s), max sends
-- Reply: {1, next_send_at} when recorded; {0, retry_after, reason} when refused.
-- Times go out as "%.6f" strings: tostring() keeps only 14 significant digits.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local max_sends = tonumber(ARGV[4])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.6f', now - window + 0.000001))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 and now - tonumber(last[2]) < cooldown then
  return {0, string.format('%.6f', tonumber(last[2]) + cooldown - now), 'resend-cooldown'}
end
local count = redis.call('ZCARD', KEYS[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if count >= max_sends then
  return {0, string.format('%.6f', tonumber(first[2]) + window - now), 'too-many-sends'}
end
local stamp = string.format('%.6f', now)
-- Members must be unique even for two sends in the same microsecond (cooldown 0).
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[1], stamp, stamp .. ':' .. clock[1] .. clock[2] .. ':' .. count)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
local next_send_at = now + cooldown
if count + 1 >= max_sends then
  local oldest = (#first > 0) and tonumber(first[2]) or now
  next_send_at = math.max(next_send_at, oldest + window)
end
return {1, string.format('%.6f', next_send_at)}
