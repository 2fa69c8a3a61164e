-- wrk script for `python -m bench scan`: POST /api/v1/scans, keep-alive.
--
-- wrk -s scan.lua URL -- BODIES NONCE TOKEN
--
-- Thread k reads BODIES.k: one scan body per line, without its scan_id
-- ("code":"...","gate":"..."[,"direction":"..."]}), and rotates through them.
-- Each request gets a unique scan_id NONCE-k-n. Answers are counted by their
-- "reason"; done() prints one line "WRK_RESULT {json}" with latency percentiles
-- (ms), counts, errors, and how many bodies each thread sent.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local base, nonce, token = args[1], args[2], args[3]
  lines = {}
  for line in io.lines(base .. "." .. id) do
    lines[#lines + 1] = line
  end
  n = #lines
  i = 0
  sent = 0
  wraps = 0
  counts = {}
  prefix = '{"scan_id":"' .. nonce .. "-" .. id .. "-"
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wraps = wraps + 1
  end
  sent = sent + 1
  return wrk.format("POST", "/api/v1/scans", headers, prefix .. sent .. '",' .. lines[i])
end

function response(status, hdrs, body)
  local reason = string.match(body, '"reason":"([%w_]+)"')
  if reason == nil then
    reason = "http_" .. status
  elseif status >= 300 then
    reason = "http_" .. status .. "_" .. reason
  end
  counts[reason] = (counts[reason] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  local wrapped = 0
  local sent = {}
  for _, t in ipairs(threads) do
    sent[#sent + 1] = string.format("%d", t:get("sent") or 0)
    for k, v in pairs(t:get("counts") or {}) do
      total[k] = (total[k] or 0) + v
    end
    wrapped = wrapped + (t:get("wraps") or 0)
  end
  local parts = {}
  for k, v in pairs(total) do
    parts[#parts + 1] = string.format('"%s":%d', k, v)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"wraps":%d,"sent":[%s],"reasons":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.status, e.timeout,
    wrapped, table.concat(sent, ","), table.concat(parts, ",")))
end
