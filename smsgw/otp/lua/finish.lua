-- End a verification (approved or discarded): delete it and its pointer if it still points
-- at it. KEYS[1] the verification's hash, KEYS[2] the (client, phone) pointer, ARGV[1] its id
-- Reply: 1 if it was still there (first approval wins), 0 otherwise.
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
