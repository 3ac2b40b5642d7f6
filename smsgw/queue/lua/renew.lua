-- Keep the entries this consumer holds from looking abandoned: reset their idle time, but
-- only for entries it still owns. XCLAIM alone would also take back an entry another
-- replica has already claimed, and both would then send it.
--
-- KEYS[1] high stream, KEYS[2] normal stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] number of high ids, then high ids, normal ids
-- Returns the entries no longer ours, flat: stream index, entry id, ...

local group, consumer = ARGV[1], ARGV[2]
local lists = {{}, {}}
for i = 4, #ARGV do
    local k = (i - 4 < tonumber(ARGV[3])) and 1 or 2
    lists[k][#lists[k] + 1] = ARGV[i]
end

local lost = {}
for k = 1, 2 do
    local owned = {}
    for _, id in ipairs(lists[k]) do
        local pending = redis.pcall('XPENDING', KEYS[k], group, id, id, 1)
        if type(pending) == 'table' and pending[1] and pending[1][2] == consumer then
            owned[#owned + 1] = id
        else
            lost[#lost + 1] = k
            lost[#lost + 1] = id
        end
    end
    if #owned > 0 then
        -- Minimum idle 0 and JUSTID: resets the idle time without counting a delivery.
        local args = {'XCLAIM', KEYS[k], group, consumer, 0}
        for _, id in ipairs(owned) do
            args[#args + 1] = id
        end
        args[#args + 1] = 'JUSTID'
        redis.call(unpack(args))
    end
end
return lost
