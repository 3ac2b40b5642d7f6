-- Give back entries a stopping consumer fetched but never handed out: add each again at
-- the tail of its stream, where any replica reads it at once, and drop our copy.
-- (Waiting for the visibility timeout would delay them for nothing.)
--
-- KEYS[1] high stream, KEYS[2] normal stream
-- ARGV[1] group, ARGV[2] consumer, then per entry: stream index, entry id, payload
-- Returns the number of entries given back.

local group, consumer = ARGV[1], ARGV[2]
local count = 0
for i = 3, #ARGV, 3 do
    local key, id = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
    -- Only entries still ours: one claimed elsewhere meanwhile is that replica's now.
    local pending = redis.pcall('XPENDING', key, group, id, id, 1)
    if type(pending) == 'table' and pending[1] and pending[1][2] == consumer then
        redis.call('XACK', key, group, id)
        redis.call('XDEL', key, id)
        redis.call('XADD', key, '*', 'm', ARGV[i + 2])
        count = count + 1
    end
end
return count
