-- Take over entries some consumer has held longer than the visibility timeout (it died or
-- hangs), high priority first, and forget consumers that hold nothing and have been silent
-- for long, so the group does not grow with every replica that ever ran.
--
-- KEYS[1] high stream, KEYS[2] normal stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle (ms), ARGV[4] most entries to take,
-- ARGV[5] high cursor, ARGV[6] normal cursor, ARGV[7] idle (ms) after which an empty
-- consumer is forgotten
-- Returns {high cursor, normal cursor, then per entry: stream index, entry id, payload}

local group, consumer = ARGV[1], ARGV[2]
local out = {'0-0', '0-0'}
local left = tonumber(ARGV[4])

for k = 1, 2 do
    if left > 0 then
        local reply = redis.pcall('XAUTOCLAIM', KEYS[k], group, consumer, ARGV[3], ARGV[4 + k],
            'COUNT', left)
        -- NOGROUP: nothing was ever read from this stream, so nothing can be claimed.
        if not reply.err then
            out[k] = reply[1]
            left = left - append_entries(out, k, reply[2])
        end
    end

    local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[k], group)
    if not consumers.err then
        for _, info in ipairs(consumers) do
            local fields = {}
            for f = 1, #info, 2 do
                fields[info[f]] = info[f + 1]
            end
            -- Checked and deleted atomically: deleting a consumer drops its pending
            -- entries, so one that still holds anything is never touched.
            if fields.name ~= consumer and fields.pending == 0
                and fields.idle > tonumber(ARGV[7]) then
                redis.call('XGROUP', 'DELCONSUMER', KEYS[k], group, fields.name)
            end
        end
    end
end
return out
