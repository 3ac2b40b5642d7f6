-- Lease future send slots for one provider, on Redis's clock.
--
-- The provider's schedule is a grid of slots num/den µs apart: slot g is at
-- E + ceil(g * num / den). Any 1 s window holds at most 1e6 * den / num grid points, and
-- each point is leased at most once, so all replicas together stay within that.
-- The grid is dealt out in `lanes`: lane m owns the points g = m (mod lanes), and one call
-- leases consecutive points of one lane (the one that can start soonest). Interleaved
-- lanes spread each replica's slots over time instead of handing it a block at the full
-- rate, which a busy replica could not keep up with.
--
-- KEYS[1]  the provider's limiter key
-- ARGV[1]  "lease" or "pause"
-- ARGV[2]  num, ARGV[3] den: the grid spacing in µs as a fraction. Whole µs would round
--          1/4950 s up to 203 µs and waste 0.5% of the rate.
-- ARGV[4]  slots wanted (lease)
-- ARGV[5]  look-ahead in µs: nothing is leased beyond now + look-ahead
-- ARGV[6]  idle expiry in ms (beyond whatever the state still needs)
-- ARGV[7]  lease: hold in µs (nothing before now + hold); pause: pause length in µs
-- ARGV[8]  lanes
--
-- Returns {count, first slot - now, next free slot of any lane - now}, in µs; slot i of
-- the lease is at first + i * lanes * num / den (to within 1 µs).
-- State: "E num den lanes paused_until next_0 .. next_{lanes-1}", integers, µs of Redis's
-- clock. Numbers: µs timestamps (~1.8e15) are exact in a double, but tostring() keeps 14
-- significant digits, so every number written goes through string.format('%d').

local function idiv(a, b)
  -- floor(a / b) for integers, exact even where the float division rounds
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local op = ARGV[1]
local num, den = tonumber(ARGV[2]), tonumber(ARGV[3])
local lookahead = tonumber(ARGV[5])
local ttl_ms = tonumber(ARGV[6])
local extra = tonumber(ARGV[7])
local lanes = tonumber(ARGV[8])
local step = idiv(num + den - 1, den) -- one grid interval, rounded up to whole µs

local E, paused
local nexts = {}
local changed = false
local state = redis.call('GET', KEYS[1])
if state then
  local f = {}
  for n in string.gmatch(state, '%d+') do f[#f + 1] = tonumber(n) end
  paused = f[5]
  if #f == 5 + lanes and f[2] == num and f[3] == den and f[4] == lanes then
    E = f[1]
    for m = 0, lanes - 1 do nexts[m] = f[6 + m] end
  end
end

local function at(g)
  return E + idiv(g * num + den - 1, den)
end

local function first_from(t) -- first grid point at or after t
  if t <= E then return 0 end
  local g = idiv((t - E) * den, num)
  while at(g) < t do g = g + 1 end
  while g > 0 and at(g - 1) >= t do g = g - 1 end
  return g
end

local function lane_start(m, g) -- first point of lane m at or after both g and its next
  return math.max(nexts[m], g + (m - g) % lanes)
end

if E then
  -- Nothing is leased beyond now + look-ahead, so a lane starting further out means the
  -- clock stepped back; starting over (below) avoids stalling every replica that long.
  local earliest = nexts[0]
  for m = 1, lanes - 1 do earliest = math.min(earliest, nexts[m]) end
  if at(earliest) > now + lookahead + (lanes + 1) * step then E = nil end
end
if not E then
  -- No usable state: a new or expired key, a restarted or failed-over Redis, another
  -- spacing. Slots handed out before reach at most now + look-ahead: start after them.
  E = now + lookahead + step
  for m = 0, lanes - 1 do nexts[m] = m end
  paused = paused or 0
  changed = true
end

if op == 'pause' then
  extra = math.max(extra, 0)
  if now + extra > paused then paused = now + extra end
  changed = true
elseif extra > 0 and now + extra > paused then
  paused = now + extra -- the hold after degraded mode
  changed = true
end

local lo = first_from(math.max(now, paused))
local hi = first_from(now + lookahead + 1) - 1 -- last point at or before now + look-ahead
local lane, start = 0, lane_start(0, lo)
for m = 1, lanes - 1 do
  local s = lane_start(m, lo)
  if s < start then lane, start = m, s end
end

local count = 0
if op ~= 'pause' and start <= hi then
  count = math.min(tonumber(ARGV[4]), idiv(hi - start, lanes) + 1)
end
if count > 0 then
  nexts[lane] = start + count * lanes
  changed = true
end
local following = lane_start(0, lo)
for m = 1, lanes - 1 do following = math.min(following, lane_start(m, lo)) end
local first_off, next_off = at(start) - now, at(following) - now

-- Keep grid indexes small enough for exact arithmetic (g * num < 2^53): shift the origin
-- by whole multiples of den * lanes, which moves E by whole µs and keeps every lane.
local smallest = nexts[0]
for m = 1, lanes - 1 do smallest = math.min(smallest, nexts[m]) end
if smallest > 500000000 then
  local shift = idiv(smallest, den * lanes) * den * lanes
  E = E + (shift / den) * num
  for m = 0, lanes - 1 do nexts[m] = nexts[m] - shift end
  changed = true
end

if changed then
  local parts = {string.format('%d %d %d %d %d', E, num, den, lanes, paused)}
  for m = 0, lanes - 1 do parts[#parts + 1] = string.format('%d', nexts[m]) end
  local ahead_ms = idiv(math.max(paused - now, lookahead + (lanes + 1) * step) + 999, 1000)
  redis.call('SET', KEYS[1], table.concat(parts, ' '), 'PX', string.format('%d', ttl_ms + ahead_ms))
end
return {count, first_off, next_off}
