-- wrk script for the serving benchmark: POST one fixed body, report the run as one JSON line.
--
--   wrk -t2 -c64 -d15s --latency -s request.lua <url> -- <body file> <content type> [tally]
--
-- With "tally", a response() hook counts statuses (2xx, 503, other); wrk then hands every
-- response to Lua, which costs throughput, so only the overload run asks for it.
-- done() prints a line starting with WRK_JSON that benchmarks/serving/wrk.py parses.

threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"), "cannot open body file " .. tostring(args[1]))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = args[2]
   s2xx, s503, sother = 0, 0, 0
   if args[3] == "tally" then
      response = function(status, headers, body)
         if status >= 200 and status < 300 then
            s2xx = s2xx + 1
         elseif status == 503 then
            s503 = s503 + 1
         else
            sother = sother + 1
         end
      end
   end
end

function done(summary, latency, requests)
   local t2xx, t503, tother = 0, 0, 0
   for _, thread in ipairs(threads) do
      t2xx = t2xx + (thread:get("s2xx") or 0)
      t503 = t503 + (thread:get("s503") or 0)
      tother = tother + (thread:get("sother") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, ' ..
      '"statuses": {"2xx": %d, "503": %d, "other": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9),
      t2xx, t503, tother))
end
