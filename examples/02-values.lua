-- Scenario 2: values cross the detach.  Values set before the detach
-- (string keys and tether.key objects) are readable from the detached
-- context after the parent is gone.
local tether = require "tether"

local trace_key = tether.key("trace")
local ctx = tether.with_value(tether.background(), "tenant", "acme")
ctx = tether.with_value(ctx, trace_key, { id = "4bf92f35", sampled = true })
local parent, cancel = tether.with_cancel(ctx)
local detached = tether.without_cancel(parent)
cancel()

local trace = detached:value(trace_key)
print(("parent canceled: %s"):format(tostring(parent:err())))
print(("detached sees tenant=%s trace.id=%s sampled=%s"):format(
  detached:value("tenant"), trace.id, tostring(trace.sampled)))
print(("a string key never matches a key object: value('trace') = %s")
  :format(tostring(detached:value("trace"))))
