-- One replica's heartbeat: KEYS[1] = sorted set of a role's replicas (score: last beat,
-- seconds on Redis' clock); ARGV[1] = replica name, ARGV[2] = seconds a beat counts.
-- Forgets replicas silent for longer, keeps the key alive while anyone beats, and answers
-- how many replicas of the role are alive.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('EXPIRE', KEYS[1], math.ceil(ttl * 4))
return redis.call('ZCARD', KEYS[1])
