-- Shared by the scripts of tools/bench.py (loaded with dofile): thread numbering, reading a file of lines,
-- and the result line that tools/bench.py parses. No script prints a token or a key.
--
-- wrk runs the script once in its main state (setup, done) and once per thread (init, request, response);
-- setup() gives each thread its number and keeps it, so done() can add up the threads' "unexpected" counts.

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

unexpected = 0  -- per thread: answers that are not what the scenario expects (counted by response())

function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if #line > 0 then lines[#lines + 1] = line end
  end
  return lines
end

function read_secret(variable)
  local file = assert(io.open(assert(os.getenv(variable), variable .. " is not set"), "r"))
  local text = file:read("*l")
  file:close()
  return text
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + (tonumber(thread:get("unexpected")) or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "unexpected": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, bad,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
