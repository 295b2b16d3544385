-- POST /v1/tokens with a secret key (BENCH_KEY_FILE): one token per request for the persona support-bot,
-- for one of 10,000 end users. Each thread appends the tokens it receives to BENCH_TOKENS_OUT.<thread>
-- (a private temporary directory): the verify and introspect scenarios use them.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local key, out, n

function init(args)
  key = read_secret("BENCH_KEY_FILE")
  local path = os.getenv("BENCH_TOKENS_OUT")
  if path then
    out = assert(io.open(path .. "." .. thread_id, "w"))
    out:setvbuf("line")
  end
  n = 0
end

function request()
  n = n + 1
  local body = string.format('{"personaId": "support-bot", "sub": "user-%d-%d"}', thread_id, n % 10000)
  return wrk.format("POST", "/v1/tokens", {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 then
    unexpected = unexpected + 1
  elseif out then
    local token = body:match('"token"%s*:%s*"([^"]+)"')
    if token then out:write(token, "\n") else unexpected = unexpected + 1 end
  end
end
