-- Check the per-number send policy and, if allowed, record one send. Atomic across replicas.
-- KEYS[1] sorted set of send times for one number
-- ARGV: now (s; empty: Redis' clock), window (s), cooldown (s), max sends, daily max (0: none),
-- daily window (s). Every replica passes an empty now, so all judge on the one clock they
-- share, whatever their own say; tests pass one to drive time.
-- Reply: {1, next_send_at, sent_at} when recorded; {0, retry_after, reason} when refused.
-- Times go out as "%.6f" strings: tostring() keeps only 14 significant digits.
local clock = redis.call('TIME')
local now = tonumber(ARGV[1]) or (tonumber(clock[1]) + tonumber(clock[2]) / 1000000)
local window = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local max_sends = tonumber(ARGV[4])
local daily_max = tonumber(ARGV[5])
local day = tonumber(ARGV[6])
local kept = window
if daily_max > 0 and day > window then kept = day end

local function since(seconds)
  return '(' .. string.format('%.6f', now - seconds + 0.000001)
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since(kept))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 and now - tonumber(last[2]) < cooldown then
  return {0, string.format('%.6f', tonumber(last[2]) + cooldown - now), 'resend-cooldown'}
end
-- Sends within the short window: the oldest of them and how many.
local recent = redis.call('ZRANGEBYSCORE', KEYS[1], string.sub(since(window), 2), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local recent_count = redis.call('ZCOUNT', KEYS[1], string.sub(since(window), 2), '+inf')
if recent_count >= max_sends then
  return {0, string.format('%.6f', tonumber(recent[2]) + window - now), 'too-many-sends'}
end
local count = redis.call('ZCARD', KEYS[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if daily_max > 0 and count >= daily_max then
  return {0, string.format('%.6f', tonumber(first[2]) + day - now), 'daily-cap'}
end
local stamp = string.format('%.6f', now)
-- Members must be unique even for two sends in the same microsecond (cooldown 0).
redis.call('ZADD', KEYS[1], stamp, stamp .. ':' .. clock[1] .. clock[2] .. ':' .. count)
redis.call('PEXPIRE', KEYS[1], math.ceil(kept * 1000))
local next_send_at = now + cooldown
if recent_count + 1 >= max_sends then
  local oldest = (#recent > 0) and tonumber(recent[2]) or now
  next_send_at = math.max(next_send_at, oldest + window)
end
if daily_max > 0 and count + 1 >= daily_max then
  local oldest = (#first > 0) and tonumber(first[2]) or now
  next_send_at = math.max(next_send_at, oldest + day)
end
return {1, string.format('%.6f', next_send_at), stamp}
