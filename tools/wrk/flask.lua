-- The framework floor: GET / on tools/bench_flask.py.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

wrk.method = "GET"
wrk.path = "/"

function response(status, headers, body)
  if status ~= 200 then unexpected = unexpected + 1 end
end
