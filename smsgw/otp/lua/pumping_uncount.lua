-- Take back one counted start (its SMS could not be queued): one less in each key, never
-- below zero. DECR keeps a key's expiry; a key that already expired is not made again.
-- KEYS: the counters pumping_admit.lua incremented for that start
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
