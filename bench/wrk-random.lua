-- wrk script for bench/api: random product ids over the whole id range.
-- Usage: wrk ... URL -- MODE MAX_ID PAGES [ENCODING]
--   MODE: product | styles | related | page | mix | static (the URL's own path, for nginx)
--   mix = 50 % styles, 25 % product, 20 % related, 5 % page (the shop page's request pattern:
--   styles and product for every view, related for the carousel, the list now and then).
--   ENCODING: identity (default: no Accept-Encoding) or gzip (Accept-Encoding: gzip, as browsers).
-- done() prints one machine-readable line, "RESULT requests seconds errors p50_us p99_us non2xx sockerr".

local mode, max_id, pages
local headers = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_index", counter)
end

function init(args)
  mode = args[1] or "styles"
  max_id = tonumber(args[2] or "1")
  pages = tonumber(args[3] or "1")
  if args[4] == "gzip" then headers["Accept-Encoding"] = "gzip" end
  -- A different sequence per thread, the same for every run of the benchmark.
  math.randomseed(7919 * (thread_index or 1))
end

local function path_for(kind)
  if kind == "product" then
    return "/products/" .. math.random(1, max_id)
  elseif kind == "styles" then
    return "/products/" .. math.random(1, max_id) .. "/styles"
  elseif kind == "related" then
    return "/products/" .. math.random(1, max_id) .. "/related"
  elseif kind == "page" then
    return "/products?page=" .. math.random(1, pages) .. "&count=5"
  end
  return wrk.path
end

function request()
  local kind = mode
  if mode == "mix" then
    local r = math.random(1, 100)
    if r <= 50 then kind = "styles"
    elseif r <= 75 then kind = "product"
    elseif r <= 95 then kind = "related"
    else kind = "page" end
  end
  return wrk.format("GET", path_for(kind), headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  local socket = e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %d %.3f %d %d %d %d %d\n",
    summary.requests, summary.duration / 1e6, e.status + socket,
    latency:percentile(50), latency:percentile(99), e.status, socket))
end
