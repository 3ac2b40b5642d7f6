-- Move due retries back into their streams, then read new entries for one consumer,
-- high priority first. One call per batch; the read never blocks (scripts cannot).
--
-- KEYS[1] high stream, KEYS[2] normal stream, KEYS[3] delayed set
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entries wanted, ARGV[4] most retries to move
-- Returns {total, ms until the next retry is due (-1: none), then per entry:
--          stream index, entry id, payload}

local group, consumer = ARGV[1], ARGV[2]
local clock = redis.call('TIME')
-- Redis' clock, not a replica's: every replica agrees on when a retry is due.
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Read and removed in the same script, so two replicas never both move one retry.
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, member in ipairs(due) do
    -- Member layout: one digit (stream index), then the payload.
    redis.call('XADD', KEYS[tonumber(string.sub(member, 1, 1))], '*', 'm', string.sub(member, 2))
end
if #due > 0 then
    redis.call('ZREM', KEYS[3], unpack(due))
end

local function read(key, count)
    local args = {'XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, '>'}
    local reply = redis.pcall(unpack(args))
    if type(reply) == 'table' and reply.err then
        if not string.find(reply.err, 'NOGROUP', 1, true) then
            return redis.call(unpack(args)) -- raises the original error
        end
        -- First use, or Redis lost its data: start from 0 so nothing already added is skipped.
        redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
        reply = redis.call(unpack(args))
    end
    return reply
end

local out = {0, -1}
local left = tonumber(ARGV[3])
for k = 1, 2 do
    if left <= 0 then
        break
    end
    local reply = read(KEYS[k], left)
    if reply then
        left = left - append_entries(out, k, reply[1][2])
    end
end

out[1] = redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3])
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if first[2] then
    out[2] = math.max(0, tonumber(first[2]) - now)
end
return out
