-- Renew one replica's grant of a provider's in-flight cap, on Redis's clock.
--
-- The hash holds one field per live replica: "grant demand expires_ms". A replica may have
-- at most `grant` sends open; the script keeps sum(grant) <= cap by never granting more
-- than the others leave free. Entries past their expiry (a replica that stopped renewing,
-- SIGKILLed or cut off from Redis) are dropped, so their places come back.
--
-- KEYS[1]  the provider's in-flight hash
-- ARGV[1]  replica id
-- ARGV[2]  cap: sends open at once across every replica
-- ARGV[3]  demand: sends this replica has open plus those waiting for a place
-- ARGV[4]  in use: sends this replica has open
-- ARGV[5]  lease in ms: the entry expires this long after now unless renewed
--
-- Returns {grant, target, live replicas}. target is this replica's max-min fair share of
-- the cap over every live replica's demand (plus an even part of what nobody demands, as
-- headroom for bursts); grant = min(max(target, in use), free). The replica opens nothing
-- beyond min(grant, target): a replica whose share shrank gives places back as its sends
-- end, and its grant follows at the next renewal.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local me = ARGV[1]
local cap = tonumber(ARGV[2])
local demand = tonumber(ARGV[3])
local in_use = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])

local entries = {{id = me, demand = demand}}
local others = 0
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local id = flat[i]
  if id ~= me then
    local g, d, expires = string.match(flat[i + 1], '^(%d+) (%d+) (%d+)$')
    if g and tonumber(expires) > now then
      others = others + tonumber(g)
      entries[#entries + 1] = {id = id, demand = tonumber(d)}
    else
      redis.call('HDEL', KEYS[1], id) -- expired (or unreadable): its places are free
    end
  end
end

-- Max-min fairness by water-filling: the smallest demands are met in full while they fit
-- an even split of what is left; the rest share the remainder evenly.
table.sort(entries, function(a, b)
  if a.demand ~= b.demand then return a.demand < b.demand end
  return a.id < b.id
end)
local n = #entries
local left = cap
local share = {}
local i = 1
while i <= n do
  local even = math.floor(left / (n - i + 1))
  if entries[i].demand > even then break end
  share[entries[i].id] = entries[i].demand
  left = left - entries[i].demand
  i = i + 1
end
-- Spread what is left over the unmet demands or, when every demand is met, over everyone
-- as headroom. Whole places: the first (left mod k) in sorted order get one more.
local first = i
if first > n then first = 1 end
local k = n - first + 1
local even, extra = math.floor(left / k), left % k
for j = first, n do
  local add = even
  if j - first < extra then add = add + 1 end
  share[entries[j].id] = (share[entries[j].id] or 0) + add
end

local target = share[me]
local free = math.max(cap - others, 0)
local grant = math.min(math.max(target, in_use), free)
redis.call('HSET', KEYS[1], me, string.format('%d %d %d', grant, demand, now + lease))
-- Every entry expires at most `lease` from now: the whole key goes when all replicas stop.
redis.call('PEXPIRE', KEYS[1], string.format('%d', lease))
return {grant, target, n}
