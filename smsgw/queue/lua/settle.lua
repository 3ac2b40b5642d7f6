-- Record what happened to held messages, in one atomic step per batch:
-- finished entries are acknowledged and deleted (so streams hold only unfinished work),
-- retries are scheduled in the delayed set together with the ack of their old entry,
-- and "done" markers are written where another consumer may hold a copy of an entry.
--
-- Only entries still pending for this consumer are acknowledged or retried. One whose lease
-- ran out belongs to the consumer that claimed it, which sends it or already did (and then
-- left its done marker): a retry scheduled here would send it a second time, and
-- acknowledging it would take it from its owner. Such an entry is reported back as lost. A
-- final outcome (ack) still leaves its marker, so the owner skips its copy; a lost retry
-- leaves none (the owner must send it).
--
-- KEYS[1] high stream, KEYS[2] normal stream, KEYS[3] delayed set, KEYS[4..] done markers
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] marker TTL (s),
-- then per outcome 7 values: kind ('a' ack, 'r' retry, 'm' sent), stream index,
-- entry id ('' for a retry of a message not read from a stream), its marker (index in
-- KEYS, 0: none), 1 if the marker is wanted even while the entry is ours, delay (ms) and
-- delayed-set member (retries; 0 and '' otherwise).
-- Returns the entries no longer ours, flat: stream index, entry id, ...

local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lost = {}
local done = {{}, {}}
local now

-- Due times on Redis' clock, which every replica shares.
local function schedule(delay_ms, member)
    if not now then
        local clock = redis.call('TIME')
        now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    end
    redis.call('ZADD', KEYS[3], now + tonumber(delay_ms), member)
end

-- The consumer the entry is pending for, or nil (finished, or never read from this group).
local function owner(key, id)
    local pending = redis.pcall('XPENDING', key, group, id, id, 1)
    if type(pending) == 'table' and pending[1] ~= nil then
        return pending[1][2]
    end
    return nil
end

local function mark(index)
    if index > 0 then
        redis.call('SET', KEYS[index], '1', 'EX', ttl)
    end
end

for i = 4, #ARGV, 7 do
    local kind, k, id = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    local marker, wanted = tonumber(ARGV[i + 3]), ARGV[i + 4] == '1'
    if kind == 'm' then
        mark(marker)
    elseif id == '' then
        -- Handed to us without an entry: dropping it would lose an accepted message.
        schedule(ARGV[i + 5], ARGV[i + 6])
    else
        local holder = owner(KEYS[k], id)
        -- Pending for nobody and finished nowhere (no marker): Redis lost it (a restart
        -- without persistence). A retry is then the only copy left: keep it.
        local vanished = holder == nil
            and (marker == 0 or redis.call('EXISTS', KEYS[marker]) == 0)
        if holder == consumer or vanished then
            if holder == consumer then
                done[k][#done[k] + 1] = id
            end
            if kind == 'r' then
                schedule(ARGV[i + 5], ARGV[i + 6])
            end
            if wanted then
                mark(marker)
            end
        else
            lost[#lost + 1] = k
            lost[#lost + 1] = id
            if kind == 'a' then
                mark(marker)
            end
        end
    end
end

for k = 1, 2 do
    if #done[k] > 0 then
        redis.call('XACK', KEYS[k], group, unpack(done[k]))
        redis.call('XDEL', KEYS[k], unpack(done[k]))
    end
end
return lost
