-- wrk script of InferGate's benchmark (bench/wrk.py runs it).
-- Arguments after `--`: METHOD BODY_FILE KEYS_FILE THREADS KEY_HEADER ("-" for no body / no keys).
-- Each request carries the next API key of the file (the threads start evenly spread over it,
-- so N requests in all use about every one of N keys once) in KEY_HEADER (x-api-key unless
-- given; "authorization" sends it as OpenAI SDKs do, "Bearer <key>");
-- the requests are built once in init(), so wrk only copies bytes in the loop.
-- done() prints one line "BENCH_RESULT {json}" with the latency percentiles (microseconds),
-- the totals, wrk's socket errors and the count of every HTTP status.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local content = file:read("*a")
  file:close()
  return content
end

function init(args)
  local method, body_path, keys_path = args[1], args[2], args[3]
  local thread_count = tonumber(args[4] or "1")
  local key_header = args[5] or "x-api-key"
  local body = nil
  local headers = {}
  if body_path ~= "-" then
    body = read_file(body_path)
    headers["content-type"] = "application/json"
  end
  prepared = {}
  if keys_path ~= "-" then
    for key in io.lines(keys_path) do
      if key ~= "" then
        if key_header == "authorization" then
          headers["authorization"] = "Bearer " .. key
        else
          headers[key_header] = key
        end
        prepared[#prepared + 1] = wrk.format(method, nil, headers, body)
      end
    end
  else
    prepared[1] = wrk.format(method, nil, headers, body)
  end
  position = (thread_index * math.floor(#prepared / thread_count)) % #prepared
  statuses = {}
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,'
      .. '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"timeout":%.0f,"status":%.0f},'
      .. '"latency_us":{"p50":%.0f,"p95":%.0f,"p99":%.0f,"max":%.0f,"mean":%.1f},'
      .. '"statuses":{%s}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ",")))
end
