-- Helpers of the OTP store's scripts, put before each script's source (load_script helpers).

-- Make `hash` the pending verification `id` of its (client, phone) `pointer` until
-- `expiry_ms` (ms since epoch), its field/value pairs from ARGV[first] on.
local function put_pending(hash, pointer, id, expiry_ms, first)
  local fields = {}
  for i = first, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('DEL', hash)
  redis.call('HSET', hash, unpack(fields))
  redis.call('PEXPIREAT', hash, expiry_ms)
  redis.call('SET', pointer, id, 'PXAT', expiry_ms)
end
