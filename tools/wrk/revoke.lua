-- POST /v1/admin/revocations {"jti": ...} with an admin key (BENCH_KEY_FILE): a jti unique per request
-- (BENCH_RUN names the run, then the thread and a counter). Anything but 201 counts as unexpected.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local key, run, n

function init(args)
  key = read_secret("BENCH_KEY_FILE")
  run = os.getenv("BENCH_RUN") or "bench"
  n = 0
end

function request()
  n = n + 1
  local body = string.format('{"jti": "%s-%d-%d", "reason": "bench"}', run, thread_id, n)
  return wrk.format("POST", "/v1/admin/revocations", {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 201 then unexpected = unexpected + 1 end
end
