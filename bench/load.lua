-- wrk script of InferGate's benchmark (bench/wrk.py runs it).
-- Arguments after `--`: METHOD BODY_FILE KEYS_FILE THREADS KEY_HEADER [UNIQUE_BASE]
-- ("-" for no body / no keys).
-- Each request carries the next API key of the file (the threads start evenly spread over it,
-- so N requests in all use about every one of N keys once) in KEY_HEADER (x-api-key unless
-- given; "authorization" sends it as OpenAI SDKs do, "Bearer <key>");
-- the requests are built once in init(), so wrk only copies bytes in the loop. With UNIQUE_BASE
-- (a number), every "__N__" in the body becomes a number no other request of this run has
-- (UNIQUE_BASE + the request's count * THREADS + the thread's index), each request built in turn:
-- requests that never repeat (cache misses).
-- done() prints one line "BENCH_RESULT {json}" with the latency percentiles (microseconds),
-- the totals, wrk's socket errors, the count of every HTTP status and of every value of the
-- x-infergate-cache header (hit, miss).

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
  unique_base = tonumber(args[6] or "")
  step = thread_count
  sent = 0
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
        prepared[#prepared + 1] = prepare(method, headers, body)
      end
    end
  else
    prepared[1] = prepare(method, headers, body)
  end
  position = (thread_index * math.floor(#prepared / thread_count)) % #prepared
  statuses = {}
  cache = {}
end

-- A request as bytes, or (UNIQUE_BASE given) what to build each one from.
function prepare(method, headers, body)
  if unique_base == nil then
    return wrk.format(method, nil, headers, body)
  end
  local own = {}
  for name, value in pairs(headers) do
    own[name] = value
  end
  return {method = method, headers = own, body = body}
end

function request()
  position = position % #prepared + 1
  local prepared_request = prepared[position]
  if unique_base == nil then
    return prepared_request
  end
  local n = string.format("%d", unique_base + sent * step + thread_index)
  sent = sent + 1
  local body = prepared_request.body:gsub("__N__", n)
  return wrk.format(prepared_request.method, nil, prepared_request.headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local cached = headers["x-infergate-cache"]
  if cached ~= nil then
    cache[cached] = (cache[cached] or 0) + 1
  end
end

function done(summary, latency, requests)
  local counts = {}
  local cached = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    for value, n in pairs(thread:get("cache")) do
      cached[value] = (cached[value] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  local cache_parts = {}
  for value, n in pairs(cached) do
    cache_parts[#cache_parts + 1] = string.format('"%s":%d', value, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,'
      .. '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"timeout":%.0f,"status":%.0f},'
      .. '"latency_us":{"p50":%.0f,"p95":%.0f,"p99":%.0f,"max":%.0f,"mean":%.1f},'
      .. '"statuses":{%s},"cache":{%s}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ","), table.concat(cache_parts, ",")))
end
