-- Store a verification as the one pending for (client, phone); return the one it replaced.
-- KEYS[1] the new verification's hash, KEYS[2] the (client, phone) pending pointer
-- ARGV: prefix of verification keys, new id, expiry (ms since epoch), then field/value pairs
-- Reply: the replaced verification's fields (HGETALL list), or an empty list.
local replaced = {}
local previous = redis.call('GET', KEYS[2])
if previous and previous ~= ARGV[2] then
  local previous_key = ARGV[1] .. previous
  replaced = redis.call('HGETALL', previous_key)
  redis.call('DEL', previous_key)
end
put_pending(KEYS[1], KEYS[2], ARGV[2], ARGV[3], 4)
return replaced
