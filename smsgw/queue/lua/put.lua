-- Accept a batch of messages, all or none, if the shared bound leaves room for all of them.
-- The bound counts every accepted message not yet finished: entries still in a stream
-- (waiting or held by a consumer; finished ones are deleted) plus scheduled retries.
--
-- KEYS[1] high stream, KEYS[2] normal stream, KEYS[3] delayed set
-- ARGV[1] max_size, then per message: stream index (1 or 2), payload
-- Returns {1 if accepted else 0, total after the call}

local total = redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2])
    + redis.call('ZCARD', KEYS[3])
local count = (#ARGV - 1) / 2
if total + count > tonumber(ARGV[1]) then
    return {0, total}
end
for i = 2, #ARGV, 2 do
    redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'm', ARGV[i + 1])
end
return {1, total + count}
