-- Count one OTP start in the pumping counters of each of its scopes (country, prefix) unless
-- one scope is over its limit; then nothing is counted at all. Atomic across replicas: of N
-- simultaneous starts exactly as many are counted as the limit allows, and a refused start
-- leaves no trace, so refusals cannot keep a range refused or raise tomorrow's baseline.
-- KEYS: per scope, 4 keys: current bucket, previous bucket, today, yesterday; then, when
--       given, the mark of a recently verified number (counted, never refused)
-- ARGV: elapsed share of the current bucket (0..1), bucket (s), day (s), spike factor,
--       bucket ttl (ms), day ttl (ms), then one floor per scope
-- Reply: {0} counted; {i, recent, limit} refused by scope i (1-based), nothing counted.
local scopes = #ARGV - 6
local elapsed = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local day = tonumber(ARGV[3])
local spike = tonumber(ARGV[4])

local function value(key)
  return tonumber(redis.call('GET', key) or '0')
end

local exempt = #KEYS > 4 * scopes and redis.call('EXISTS', KEYS[#KEYS]) == 1
if not exempt then
  for i = 1, scopes do
    local base = 4 * (i - 1)
    local recent = value(KEYS[base + 1]) + 1 + value(KEYS[base + 2]) * (1 - elapsed)
    local limit = math.max(tonumber(ARGV[6 + i]), spike * value(KEYS[base + 4]) * window / day)
    if recent > limit then
      return {i, string.format('%.3f', recent), string.format('%.3f', limit)}
    end
  end
end
for i = 1, scopes do
  local base = 4 * (i - 1)
  redis.call('INCR', KEYS[base + 1])
  redis.call('PEXPIRE', KEYS[base + 1], ARGV[5])
  redis.call('INCR', KEYS[base + 3])
  redis.call('PEXPIRE', KEYS[base + 3], ARGV[6])
end
return {0}
