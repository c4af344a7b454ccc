-- wrk script of the Bun.serve benchmark (bench/serve.bench.ts): POSTs of BODY bytes built as
-- serve-bodies.ts builds them ("ID:SEQ:" in hex, padded with "x"); every response must be 200
-- and byte for byte the body of one request still outstanding on that thread (wrk does not say
-- which connection a response came on, so two concurrent responses swapped would pass: the
-- bench checks each row with its own Bun load generator first, which pairs them; bodies are
-- unique per thread in echo mode; in kv mode they cycle through the 64 x 16 KV key set, so a
-- count per body is kept). A mismatch is counted; done() prints one JSON line with the
-- requests, the mismatches and the latency percentiles (µs, wrk's per-request timing).
--   wrk -t2 -c64 -d2s -s bench/peers/serve-wrk.lua http://127.0.0.1:PORT/ -- BODY [kv]
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  bytes = tonumber(args[1] or "32")
  kv = args[2] == "kv"
  bad = 0
  firstBad = ""
  outstanding = {}
end

local function makeBody(id, seq)
  local s = string.format("%04x:%012x:", id, seq)
  if #s < bytes then s = s .. string.rep("x", bytes - #s) end
  return string.sub(s, 1, bytes)
end

function request()
  counter = counter + 1
  local b
  if kv then
    b = makeBody(counter % 64, (math.floor(counter / 64) % 16) + 1)
  else
    b = makeBody(tid, counter)
  end
  outstanding[b] = (outstanding[b] or 0) + 1
  return wrk.format("POST", "/", { ["Content-Length"] = tostring(#b) }, b)
end

function response(status, headers, body)
  local c = outstanding[body]
  if status ~= 200 or c == nil then
    bad = bad + 1
    if firstBad == "" then firstBad = string.format("status %d, body %q", status, string.sub(body or "", 1, 64)) end
    return
  end
  if c == 1 then outstanding[body] = nil else outstanding[body] = c - 1 end
end

function done(summary, latency, requests)
  local badTotal = 0
  local first = ""
  for _, t in ipairs(threads) do
    badTotal = badTotal + t:get("bad")
    if first == "" then first = t:get("firstBad") end
  end
  local e = summary.errors
  io.write(string.format('{"requests":%d,"seconds":%f,"p50Us":%f,"p99Us":%f,"mismatches":%d,"firstMismatch":%q,"socketErrors":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), badTotal, first,
    e.connect + e.read + e.write + e.timeout + e.status))
end
