-- wrk script: POST the demo sentence, count non-2xx answers and wrong translations, print one RESULT line.
wrk.method = "POST"
wrk.body = '{"text":"I love you so much"}'
wrk.headers["Content-Type"] = "application/json"
local expected = "म तपाईंलाई एकदम धेरै माया गर्छु"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrong = 0
  non2xx = 0
end

function response(status, headers, body)
  if status ~= 200 then
    non2xx = non2xx + 1
  elseif not string.find(body, '"text":"' .. expected .. '"', 1, true) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local w, n = 0, 0
  for _, t in ipairs(threads) do
    w = w + t:get("wrong")
    n = n + t:get("non2xx")
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format("RESULT requests=%d seconds=%.1f rps=%.1f p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f socket_errors=%d non2xx=%d wrong=%d\n",
    summary.requests, seconds, summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, e.connect + e.read + e.write + e.timeout, n, w))
end
