-- wrk script: POST {"phone": "+1415NXXXXXX"} with a fresh random valid US number per
-- request (N in 2-9, X in 0-9), as JSON, to the URL's path.
--
-- Environment:
--   WRK_AUTHORIZATION  sent verbatim as the Authorization header (e.g. "Bearer KEY")
--
-- done() prints one line for bench/loadgen.py to parse:
--   RESULT {"requests":..,"duration_us":..,"rps":..,"p50_us":..,"p99_us":..,"non2xx":..,...}
-- No response() callback on purpose: defining one makes wrk parse every response in Lua
-- and costs throughput. "non2xx" is wrk's own summary.errors.status, which counts
-- responses with status >= 400 (a 3xx would not be counted).

local thread_count = 0

function setup(thread)
  -- Runs in the main Lua state, once per thread: hand each thread its own number.
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
end

local headers

function init(args)
  -- Each wrk thread has its own Lua state and so its own math.random: seed them apart.
  math.randomseed(os.time() * 1000 + (thread_index or 0))
  headers = { ["Content-Type"] = "application/json" }
  local authorization = os.getenv("WRK_AUTHORIZATION")
  if authorization and authorization ~= "" then
    headers["Authorization"] = authorization
  end
end

function request()
  local body = string.format('{"phone":"+1415%d%06d"}', math.random(2, 9), math.random(0, 999999))
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  local seconds = summary.duration / 1e6
  local rps = 0
  if seconds > 0 then
    rps = summary.requests / seconds
  end
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"rps":%.2f,"p50_us":%d,"p99_us":%d,'
      .. '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, rps,
    latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect, errors.read, errors.write, errors.timeout))
end
