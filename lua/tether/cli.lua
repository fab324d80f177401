--- tether.cli: what the command lines and option checks written in Lua
-- share (tether run, tether worker, worker.run): the word of a list
-- closest to a misspelled one, for "did you mean" (the binding's options
-- tables have their own, in csrc/lua/lopts.c), and the parsers of option
-- values.
local M = {}

--- distance returns the edit distance (Levenshtein) between a and b.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local c = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + c)
    end
    prev = cur
  end
  return prev[#b]
end

--- M.nearest(words, word) returns the element of the list 'words'
-- closest to 'word', if it is at most two edits away, else nil.  Ties go
-- to the first in the list.
function M.nearest(words, word)
  local best, bd
  for _, w in ipairs(words) do
    local d = distance(word, w)
    if d <= 2 and (bd == nil or d < bd) then best, bd = w, d end
  end
  return best
end

--- M.seconds(v) reads a non-negative, finite number of seconds from an
-- option's text; nil and what was expected otherwise.
function M.seconds(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n < 0 or n == math.huge then
    return nil, "a non-negative number of seconds"
  end
  return n
end

return M
