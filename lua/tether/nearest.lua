--- tether.nearest: the word of a list closest to a misspelled one, for
-- the "did you mean" of command-line and options errors written in Lua
-- (the binding's options tables have their own, in csrc/lua/lopts.c).

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

--- nearest(words, word) returns the element of the list 'words' closest
-- to 'word', if it is at most two edits away, else nil.  Ties go to the
-- first in the list.
return function(words, word)
  local best, bd
  for _, w in ipairs(words) do
    local d = distance(word, w)
    if d <= 2 and (bd == nil or d < bd) then best, bd = w, d end
  end
  return best
end
