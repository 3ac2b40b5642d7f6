-- Count one check against a pending verification unless its attempts are spent. The attempt
-- is counted before the code is compared, so 50 simultaneous guesses get max_attempts
-- comparisons in all, whichever replicas they reach.
-- KEYS[1] the verification's hash when checked by id, else the (client, phone) pointer
-- ARGV: "id" or "phone" (what KEYS[1] is), prefix of verification keys, client, now (s;
--       empty: Redis' clock, the one every replica shares; tests pass one to drive time);
--       by phone, optionally a placeholder to check when nothing is pending (so the answer
--       does not tell whether a code is): its id, expiry (ms since epoch), field/value pairs
-- Reply: {"not_found"} | {"exhausted"} | {"reserved", id, fields (HGETALL list)...}
local key, id = KEYS[1], nil
if ARGV[1] == 'phone' then
  id = redis.call('GET', KEYS[1])
  key = id and (ARGV[2] .. id)
else
  id = string.sub(KEYS[1], #ARGV[2] + 1)
end
local now = tonumber(ARGV[4])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local found = key and redis.call('HGET', key, 'client') == ARGV[3]
if found and now >= tonumber(redis.call('HGET', key, 'expires_at')) then
  redis.call('DEL', key)
  found = false
end
if not found then
  if ARGV[1] ~= 'phone' or #ARGV < 6 then return {'not_found'} end
  id = ARGV[5]
  key = ARGV[2] .. id
  local fields = {}
  for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIREAT', key, ARGV[6])
  redis.call('SET', KEYS[1], id, 'PXAT', ARGV[6])
end
local attempts = tonumber(redis.call('HGET', key, 'attempts'))
if attempts >= tonumber(redis.call('HGET', key, 'max_attempts')) then
  return {'exhausted'}
end
redis.call('HINCRBY', key, 'attempts', 1)
local reply = {'reserved', id}
for _, value in ipairs(redis.call('HGETALL', key)) do reply[#reply + 1] = value end
return reply
