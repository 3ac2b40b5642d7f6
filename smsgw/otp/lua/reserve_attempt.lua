-- Count one check against a pending verification unless its attempts are spent. The attempt
-- is counted before the code is compared, so 50 simultaneous guesses get max_attempts
-- comparisons in all, whichever replicas they reach.
-- KEYS[1] the verification's hash when checked by id, else the (client, phone) pointer
-- ARGV: "id" or "phone" (what KEYS[1] is), prefix of verification keys, client, now (s)
-- Reply: {"not_found"} | {"exhausted"} | {"reserved", id, fields (HGETALL list)...}
local key, id = KEYS[1], nil
if ARGV[1] == 'phone' then
  id = redis.call('GET', KEYS[1])
  if not id then return {'not_found'} end
  key = ARGV[2] .. id
else
  id = string.sub(KEYS[1], #ARGV[2] + 1)
end
local client = redis.call('HGET', key, 'client')
if not client or client ~= ARGV[3] then return {'not_found'} end
local expires_at = tonumber(redis.call('HGET', key, 'expires_at'))
if tonumber(ARGV[4]) >= expires_at then
  redis.call('DEL', key)
  return {'not_found'}
end
local attempts = tonumber(redis.call('HGET', key, 'attempts'))
if attempts >= tonumber(redis.call('HGET', key, 'max_attempts')) then
  return {'exhausted'}
end
redis.call('HINCRBY', key, 'attempts', 1)
local reply = {'reserved', id}
for _, value in ipairs(redis.call('HGETALL', key)) do reply[#reply + 1] = value end
return reply
