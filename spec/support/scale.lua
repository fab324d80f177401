-- The size of big structures in specs (a million contexts, a million
-- channels), from one place: full size in `make test`, scaled down when
-- the suite runs under a sanitizer or valgrind (`make check` sets
-- TETHER_SANITIZER), so that those runs stay within CI's time.
local M = {}

-- M.factor is 1 in plain runs and smaller under `make check`;
-- TETHER_SPEC_SCALE (a number) overrides it.
M.factor = tonumber(os.getenv("TETHER_SPEC_SCALE") or "")
  or (os.getenv("TETHER_SANITIZER") and 0.05 or 1)

-- M.n scales a count, never below 'floor' (default 1).
function M.n(count, floor)
  return math.max(floor or 1, math.floor(count * M.factor))
end

-- M.sanitized is true under a sanitizer (memory bounds such as RSS do
-- not hold there: freed memory sits in quarantine).
M.sanitized = os.getenv("TETHER_SANITIZER") ~= nil

return M
