-- One client's idempotency entries, bounded in bytes: claim a key, complete it with its
-- answer, or release it, in one atomic step that also keeps the client's bookkeeping.
--
-- A client over its budget loses its own oldest finished answers (the script only ever
-- touches keys of this client, all under one hash tag), never a claim in flight: if its
-- claims alone fill the budget, a new claim is refused. Expired entries leave the
-- bookkeeping as they are met (their keys expired by themselves, on the same clock), and
-- every key has a TTL, so an idle client leaves nothing behind.
--
-- KEYS[1] the entry, KEYS[2] done (zset: key -> completed at, ms), KEYS[3] live (zset:
-- key -> claim deadline, ms), KEYS[4] cost (hash: key -> bytes charged), KEYS[5] used (bytes)
-- ARGV[1] op ('claim', 'complete', 'release'), ARGV[2] the Idempotency-Key, ARGV[3] prefix of
-- this client's entry keys, ARGV[4] budget (bytes), ARGV[5] answer life (ms), ARGV[6] claim
-- life (ms), ARGV[7] value to store, ARGV[8] its cost (bytes)
-- Returns {code, stored value or '', answers evicted, age of the youngest evicted (ms)}:
-- code 0 done (claimed / completed / released), 1 the key exists (value), 2 budget full.

local op, key, prefix = ARGV[1], ARGV[2], ARGV[3]
local budget, answer_ms, claim_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
-- Redis' clock, not a replica's: every replica agrees on what has expired.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local used = tonumber(redis.call('GET', KEYS[5]) or '0')
local evicted, youngest = 0, 0

local function forget(k)
    local cost = redis.call('HGET', KEYS[4], k)
    if cost then
        used = used - tonumber(cost)
        redis.call('HDEL', KEYS[4], k)
    end
    redis.call('ZREM', KEYS[2], k)
    redis.call('ZREM', KEYS[3], k)
end

local function drop(k)
    redis.call('DEL', prefix .. k)
    forget(k)
end

-- A bounded amount per call, more than one call adds: expired entries cannot pile up.
local function purge()
    local cutoff = now - answer_ms
    for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, 50)) do
        drop(k)
    end
    for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 50)) do
        drop(k)
    end
end

-- The client's own oldest finished answers go until `cost` more bytes fit.
local function make_room(cost)
    while used + cost > budget do
        local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        if not oldest[1] then
            return
        end
        drop(oldest[1])
        evicted = evicted + 1
        youngest = now - tonumber(oldest[2])
    end
end

local function finish(code, value)
    if used < 0 then
        used = 0 -- never below nothing, whatever happened to the keys meanwhile
    end
    -- The bookkeeping outlives every entry it counts by at most one call's life.
    local life = answer_ms + claim_ms
    redis.call('SET', KEYS[5], used, 'PX', life)
    for k = 2, 4 do
        redis.call('PEXPIRE', KEYS[k], life)
    end
    return {code, value or '', evicted, youngest}
end

purge()

if op == 'claim' then
    local stored = redis.call('GET', KEYS[1])
    if stored then
        return finish(1, stored)
    end
    forget(key) -- bookkeeping of an entry whose key is gone
    local cost = tonumber(ARGV[8])
    make_room(cost)
    if used + cost > budget then
        return finish(2)
    end
    redis.call('SET', KEYS[1], ARGV[7], 'PX', claim_ms)
    redis.call('ZADD', KEYS[3], now + claim_ms, key)
    redis.call('HSET', KEYS[4], key, cost)
    used = used + cost
elseif op == 'complete' then
    if redis.call('ZSCORE', KEYS[2], key) then
        -- A retry that outlived our claim finished first: its answer stays.
        return finish(0)
    end
    forget(key)
    local cost = tonumber(ARGV[8])
    make_room(cost)
    -- Kept even if claims in flight leave no room: dropping it would let its retry run
    -- twice. The budget is then exceeded by this one answer until the next eviction.
    redis.call('SET', KEYS[1], ARGV[7], 'PX', answer_ms)
    redis.call('ZADD', KEYS[2], now, key)
    redis.call('HSET', KEYS[4], key, cost)
    used = used + cost
elseif op == 'release' then
    if redis.call('ZSCORE', KEYS[3], key) then
        drop(key)
    end
end
return finish(0)
