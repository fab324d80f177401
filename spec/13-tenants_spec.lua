-- Tenant quotas cannot be bypassed: the tenant is the value under the
-- pool's tenant_key itself, never its printed form.  Strings are compared
-- whole (any length, any bytes); numbers by value, named in decimal, so
-- that 1, 1.0 and "1" are one tenant; any other value is refused.
local tether = require "tether"

local bg = tether.background()

local check_invariant = require("spec.support.accounting").check

-- A pool whose every tenant may have one op queued or running, whose one
-- worker is held by a gate so that nothing ends while the spec submits.
local function strict_pool(name)
  local gate = tether.chan()
  local pool = tether.pool { name = name, workers = 1, queue = 100,
    quiet = true, tenant_key = "tenant", quotas = { default = 1 } }
  local function submit(tenant)
    return pool:submit(tether.with_value(bg, "tenant", tenant), "op",
      function(ctx, g) g:recv() end, gate)
  end
  local function finish()
    gate:close()
    assert.is_true(pool:drain())
    check_invariant(pool:stats())
  end
  return pool, submit, finish
end

describe("tenant quotas", function()
  it("a table or a boolean tenant is refused at submit, so it cannot "
     .. "get a fresh bucket each time", function()
    local pool, submit, finish = strict_pool("typed")
    for _, v in ipairs { {}, { name = "acme" }, true, false } do
      assert.has_error(function() submit(v) end,
        "bad argument #1 to 'submit' (the context's tenant must be a "
        .. "string or a number, got " .. type(v) .. ")")
    end
    assert.has_error(function() submit(0 / 0) end,
      "bad argument #1 to 'submit' (the context's tenant must be a string "
      .. "or a number, got NaN)")
    assert.has_error(function() submit(print) end,
      "bad argument #1 to 'submit' (the context's tenant must be a string "
      .. "or a number, got function)")
    -- None of them was accepted or counted.
    local s = pool:stats()
    assert.equal(0, s.submitted)
    assert.equal(0, s.rejected)
    finish()
  end)

  it("long names are compared whole: names that differ after 255 bytes "
     .. "are two tenants", function()
    local pool, submit, finish = strict_pool("long")
    local a = ("t"):rep(300) .. "a"
    local b = ("t"):rep(300) .. "b"
    assert.is_truthy(submit(a))
    assert.is_truthy(submit(b))
    local h, err = submit(a)
    assert.is_nil(h)
    assert.equal("quota_exceeded", err.code)
    assert.equal(a, err.tenant)
    assert.equal(2, pool:stats().submitted)
    finish()
  end)

  it("names with embedded NULs do not collide", function()
    local _, submit, finish = strict_pool("nul")
    assert.is_truthy(submit("acme\0one"))
    assert.is_truthy(submit("acme\0two"))
    assert.is_truthy(submit("acme"))
    local h, err = submit("acme\0one")
    assert.is_nil(h)
    assert.equal("acme\0one", err.tenant)
    finish()
  end)

  it("numbers are tenants by value: 1, 1.0 and \"1\" are one tenant; "
     .. "2 and 2.5 are others", function()
    local _, submit, finish = strict_pool("numbers")
    assert.is_truthy(submit(1))
    for _, same in ipairs { 1.0, "1", 1 } do
      local h, err = submit(same)
      assert.is_nil(h)
      assert.equal("quota_exceeded", err.code)
      assert.equal("quota exceeded: tenant '1' of pool 'numbers'",
                   err.message)
      -- err.tenant is the value itself, as the context holds it.
      assert.equal(same, err.tenant)
      assert.equal(math.type(same), math.type(err.tenant))
    end
    assert.is_truthy(submit(2))
    assert.is_truthy(submit(2.5))
    assert.is_nil(submit("2.5"))
    assert.is_truthy(submit(-0.0 + 3))
    finish()
  end)

  it("a quota keyed by a number or its decimal name is the same quota",
     function()
    local gate = tether.chan()
    local pool = tether.pool { name = "keyed", workers = 1, queue = 100,
      quiet = true, tenant_key = "tenant", quotas = { [7] = 2, x = 1 } }
    local function submit(v)
      return pool:submit(tether.with_value(bg, "tenant", v), "op",
        function(ctx, g) g:recv() end, gate)
    end
    assert.is_truthy(submit(7))
    assert.is_truthy(submit("7"))
    assert.is_nil(submit(7.0))
    assert.has_error(function()
      tether.pool { tenant_key = "t", quotas = { [1] = 1, ["1"] = 2 } } end,
      "bad argument #1 to 'pool' ('quotas' names tenant '1' twice)")
    assert.has_error(function()
      tether.pool { tenant_key = "t", quotas = { [true] = 1 } } end,
      "bad argument #1 to 'pool' (field 'quotas' keys must be tenants "
      .. "(strings or numbers))")
    -- A quota names its tenant as text without NUL bytes (such tenants
    -- have buckets of their own, under the default quota).
    assert.has_error(function()
      tether.pool { tenant_key = "t", quotas = { ["a\0b"] = 1 } } end,
      "bad argument #1 to 'pool' (a tenant in 'quotas' cannot hold a NUL "
      .. "byte ('a...'))")
    gate:close()
    assert.is_true(pool:drain())
  end)

  it("records show the tenant's name whole", function()
    local pool = tether.pool { name = "records", workers = 1, quiet = true,
      tenant_key = "tenant" }
    local long = ("n"):rep(400) .. "\0end"
    pool:submit(tether.with_value(bg, "tenant", long), "a",
      function() error("no") end):wait()
    pool:submit(tether.with_value(bg, "tenant", 42.0), "b",
      function() error("no") end):wait()
    local byname = {}
    for _, d in ipairs(pool:dead_letters()) do byname[d.name] = d end
    assert.equal(long, byname.a.tenant)
    assert.equal("42", byname.b.tenant)
    assert.is_true(pool:drain())
  end)
end)
