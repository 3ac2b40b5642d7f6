-- Undo a save whose SMS could not be queued: delete the new verification and, if it is still
-- the pending one of (client, phone), put back the one it replaced. If another start took
-- the place meanwhile, that one stays (its SMS is on its way).
-- KEYS[1] the new verification's hash, KEYS[2] the (client, phone) pointer,
-- KEYS[3] the replaced verification's hash (any key when there is none)
-- ARGV: new id, replaced id ('' for none), replaced expiry (ms since epoch), its field/value pairs
-- Reply: 1 if the place was ours to give back, 0 otherwise.
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
  return 1
end
put_pending(KEYS[3], KEYS[2], ARGV[2], ARGV[3], 4)
return 1
