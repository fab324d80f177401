-- Scenario 1: detach.  Cancel a parent; a context made from it by
-- without_cancel still reports no error.
local tether = require "tether"

local parent, cancel = tether.with_cancel(tether.background())
local detached = tether.without_cancel(parent)

cancel()
print("parent:   err = " .. tostring(parent:err()))
print("detached: err = " .. tostring(detached:err()))
assert(parent:err() == tether.canceled and detached:err() == nil)
