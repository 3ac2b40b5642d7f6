-- Record what happened to held messages, in one atomic step per batch:
-- finished entries are acknowledged and deleted (so streams hold only unfinished work),
-- retries are scheduled in the delayed set together with the ack of their old entry,
-- and "done" markers are written where another consumer may hold a copy of an entry.
--
-- KEYS[1] high stream, KEYS[2] normal stream, KEYS[3] delayed set, KEYS[4..] done markers
-- ARGV[1] group, ARGV[2] marker TTL (s), ARGV[3] acks in high, ARGV[4] acks in normal,
-- ARGV[5] retries, then the high entry ids, the normal entry ids,
-- then per retry: delay (ms), delayed-set member
-- Returns the number of entries acknowledged.

local group = ARGV[1]
local i = 6
local acked = 0

for k = 1, 2 do
    local n = tonumber(ARGV[2 + k])
    if n > 0 then
        local ids = {}
        for j = 1, n do
            ids[j] = ARGV[i]
            i = i + 1
        end
        acked = acked + redis.call('XACK', KEYS[k], group, unpack(ids))
        redis.call('XDEL', KEYS[k], unpack(ids))
    end
end

local retries = tonumber(ARGV[5])
if retries > 0 then
    -- Due times on Redis' clock, which every replica shares.
    local clock = redis.call('TIME')
    local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    for _ = 1, retries do
        redis.call('ZADD', KEYS[3], now + tonumber(ARGV[i]), ARGV[i + 1])
        i = i + 2
    end
end

for k = 4, #KEYS do
    redis.call('SET', KEYS[k], '1', 'EX', tonumber(ARGV[2]))
end

return acked
