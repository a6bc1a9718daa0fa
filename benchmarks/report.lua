-- wrk script for benchmarks/run.py.
--
-- Sends each request with one of the session cookies listed (newline separated, each
-- "name=value") in the environment variable BENCH_COOKIES, cycling through them so that
-- concurrent connections mostly use different sessions. Counts non-2xx responses and, when the
-- run is done, prints one line "BENCH_RESULT {json}" with the counts and latency percentiles
-- (microseconds).

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_number", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

-- Per-thread state (every wrk thread runs this file in its own Lua state).
non2xx = 0
local prepared = {}
local position = 1

function init(args)
   local cookies = os.getenv("BENCH_COOKIES") or ""
   for cookie in string.gmatch(cookies, "[^\n]+") do
      local headers = {}
      for name, value in pairs(wrk.headers) do
         headers[name] = value
      end
      headers["Cookie"] = cookie
      prepared[#prepared + 1] = wrk.format(nil, nil, headers)
   end
   if #prepared == 0 then
      prepared[1] = wrk.format()
   end
   position = (thread_number * 7) % #prepared + 1
end

function request()
   local req = prepared[position]
   position = position % #prepared + 1
   return req
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
end

function done(summary, latency, requests)
   local total_non2xx = 0
   for _, thread in ipairs(threads) do
      total_non2xx = total_non2xx + thread:get("non2xx")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
         .. '"non2xx": %d, "socket_errors": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      total_non2xx, e.connect + e.read + e.write + e.timeout))
end
