-- POST /v1/introspect (form token=...) with a secret key granted introspect (BENCH_KEY_FILE), over the tokens
-- of BENCH_TOKENS_FILE as verify.lua does (BENCH_REPEAT=1: the first one only). An answer that is not
-- 200 with "active": true counts as unexpected.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local requests, i

function init(args)
  local key = read_secret("BENCH_KEY_FILE")
  local tokens = read_lines(assert(os.getenv("BENCH_TOKENS_FILE"), "BENCH_TOKENS_FILE is not set"))
  if os.getenv("BENCH_REPEAT") == "1" then tokens = {tokens[1]} end
  local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/x-www-form-urlencoded"}
  requests = {}
  for k, token in ipairs(tokens) do
    requests[k] = wrk.format("POST", "/v1/introspect", headers, "token=" .. token)
  end
  local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
  i = math.floor(#requests * thread_id / threads)
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function response(status, headers, body)
  if status ~= 200 or not body:find('"active"%s*:%s*true') then unexpected = unexpected + 1 end
end
