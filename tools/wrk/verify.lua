-- GET /v1/verify?personaId=support-bot with the tokens of BENCH_TOKENS_FILE, each thread starting at its own
-- offset and cycling through them (fresh tokens), or always the first one when BENCH_REPEAT=1 (a chat
-- session). The requests are formatted once, in init(), so that wrk spends little CPU per request.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local requests, i

function init(args)
  local tokens = read_lines(assert(os.getenv("BENCH_TOKENS_FILE"), "BENCH_TOKENS_FILE is not set"))
  if os.getenv("BENCH_REPEAT") == "1" then tokens = {tokens[1]} end
  requests = {}
  for k, token in ipairs(tokens) do
    requests[k] = wrk.format("GET", "/v1/verify?personaId=support-bot", {["Authorization"] = "Bearer " .. token})
  end
  local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
  i = math.floor(#requests * thread_id / threads)
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function response(status, headers, body)
  if status ~= 200 then unexpected = unexpected + 1 end
end
