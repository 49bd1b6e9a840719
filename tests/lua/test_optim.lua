-- test_optim.lua: efla.optim. Optimiser steps against hand-computed values and a plain-Lua
-- reference of each update rule, gradient clipping, parameter groups, learning-rate
-- schedules at chosen steps, and state round trips (state_dict -> a fresh optimiser, and
-- through a checkpoint file) that must give an identical next step.
-- Run: build/efla tests/lua/test_optim.lua [name-pattern]
local ffi = require 'ffi'
local efla = require 'efla'
local nn = require 'efla.nn'
local optim = require 'efla.optim'
local checkpoint = require 'efla.checkpoint'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, near, ok, raises = t.test, t.eq, t.near, t.ok, t.raises

efla.manual_seed(99)
local F64 = { dtype = 'float64' }
local sqrt = math.sqrt

pcall(ffi.cdef, 'int getpid(void);')
local tmpdir = string.format('%s/test_optim.%d', os.getenv('EFLA_TEST_TMP') or '/tmp', ffi.C.getpid())
os.execute("mkdir -p '" .. tmpdir .. "'")

-- a float64 leaf parameter with given values, and a helper that sets its gradient
local function P(values, dtype) return efla.tensor(values, { dtype = dtype or 'float64' }):requires_grad_() end
local function set_grad(p, values) p.grad = efla.tensor(values, { dtype = p:dtype() }) end

-- ---- hand-computed single values -----------------------------------------------------------------------
test('SGD: plain, weight decay, momentum, dampening, Nesterov: hand-computed values', function()
  local function run(opts, grads)
    local p = P({ 1 })
    local opt = optim.SGD({ p }, opts)
    local out = {}
    for i, g in ipairs(grads) do set_grad(p, { g }); opt:step(); out[i] = p:totable()[1] end
    return out
  end
  near(run({ lr = 0.1 }, { 0.5, 0.5 }), { 0.95, 0.90 }, 1e-15)
  near(run({ lr = 0.1, weight_decay = 0.1 }, { 0.5 }), { 0.94 }, 1e-15)            -- d = 0.5 + 0.1 * 1
  near(run({ lr = 0.1, momentum = 0.9 }, { 0.5, 0.5 }), { 0.95, 0.855 }, 1e-15)      -- buf = g, then 1.9 g
  near(run({ lr = 0.1, momentum = 0.9, dampening = 0.5 }, { 0.5, 0.5 }), { 0.95, 0.88 }, 1e-15)  -- buf 0.7
  -- Nesterov: d = g + 0.9 buf: 0.95, then buf = 0.95 and d = 0.5 + 0.855
  near(run({ lr = 0.1, momentum = 0.9, nesterov = true }, { 0.5, 0.5 }), { 0.905, 0.7695 }, 1e-15)
end)

test('Adam and AdamW: hand-computed first steps', function()
  local function one(cls, opts, g)
    local p = P({ 1 })
    local opt = cls({ p }, opts)
    set_grad(p, { g }); opt:step()
    return p:totable()[1], opt.state[1]
  end
  -- m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25: p = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
  local v, st = one(optim.Adam, { lr = 0.1 }, 0.5)
  near(v, 1 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15)
  near(v, 0.900000002, 1e-12)
  eq(st.step, 1)
  near(st.exp_avg:totable(), { 0.05 }, 1e-15)
  near(st.exp_avg_sq:totable(), { 0.00025 }, 1e-15)
  -- Adam's weight decay joins the gradient: g = 0.6
  near((one(optim.Adam, { lr = 0.1, weight_decay = 0.1 }, 0.5)), 1 - 0.1 * 0.6 / (0.6 + 1e-8), 1e-15)
  -- AdamW's is decoupled: p = 1 - 0.1 * 0.1 * 1, then the Adam step
  near((one(optim.AdamW, { lr = 0.1, weight_decay = 0.1 }, 0.5)), 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15)
  -- AdamW's default weight decay is 0.01, Adam's 0
  eq(optim.AdamW({ P({ 1 }) }).param_groups[1].weight_decay, 0.01)
  eq(optim.Adam({ P({ 1 }) }).param_groups[1].weight_decay, 0)
end)

-- ---- multi-step references -------------------------------------------------------------------------------
local function adam_ref(p, grads, h, decoupled)
  p = { unpack(p) }
  local m, v = {}, {}
  for i = 1, #p do m[i], v[i] = 0, 0 end
  for step, g in ipairs(grads) do
    for i = 1, #p do
      local gi = g[i]
      if decoupled then p[i] = p[i] - h.lr * h.wd * p[i] else gi = gi + h.wd * p[i] end
      m[i] = h.b1 * m[i] + (1 - h.b1) * gi
      v[i] = h.b2 * v[i] + (1 - h.b2) * gi * gi
      local mh, vh = m[i] / (1 - h.b1 ^ step), v[i] / (1 - h.b2 ^ step)
      p[i] = p[i] - h.lr * mh / (sqrt(vh) + h.eps)
    end
  end
  return p
end
local function sgd_ref(p, grads, h)
  p = { unpack(p) }
  local buf = {}
  for step, g in ipairs(grads) do
    for i = 1, #p do
      local d = g[i] + h.wd * p[i]
      if h.momentum > 0 then
        buf[i] = step == 1 and d or h.momentum * buf[i] + (1 - h.dampening) * d
        d = h.nesterov and d + h.momentum * buf[i] or buf[i]
      end
      p[i] = p[i] - h.lr * d
    end
  end
  return p
end
local function random_list(n, scale)
  local out = {}
  for i = 1, n do out[i] = (math.random() * 2 - 1) * (scale or 1) end
  return out
end

test('SGD and Adam/AdamW over 6 steps of varied gradients against the reference rules (float64, float32)', function()
  math.randomseed(7)
  local p0 = random_list(5)
  local grads = {}
  for s = 1, 6 do grads[s] = random_list(5, s) end
  local function run(cls, opts, dtype)
    local p = P(p0, dtype)
    local opt = cls({ p }, opts)
    for _, g in ipairs(grads) do set_grad(p, g); opt:step() end
    return p:totable()
  end
  for _, dtype in ipairs({ 'float64', 'float32' }) do
    local tol = dtype == 'float64' and 1e-13 or 2e-6
    for _, h in ipairs({ { lr = 0.05, momentum = 0, dampening = 0, wd = 0 }, { lr = 0.05, momentum = 0.8, dampening = 0.1, wd = 0.01 },
      { lr = 0.05, momentum = 0.9, dampening = 0, wd = 0.02, nesterov = true } }) do
      near(run(optim.SGD, { lr = h.lr, momentum = h.momentum, dampening = h.dampening, weight_decay = h.wd, nesterov = h.nesterov }, dtype),
        sgd_ref(p0, grads, h), tol, 'SGD ' .. dtype)
    end
    local h = { lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.05 }
    local o = { lr = h.lr, betas = { h.b1, h.b2 }, eps = h.eps, weight_decay = h.wd }
    near(run(optim.Adam, o, dtype), adam_ref(p0, grads, h, false), tol, 'Adam ' .. dtype)
    near(run(optim.AdamW, o, dtype), adam_ref(p0, grads, h, true), tol, 'AdamW ' .. dtype)
  end
end)

test('step skips parameters without a gradient; zero_grad drops gradients; step(closure)', function()
  local a, b = P({ 1, 2 }), P({ 3 })
  local opt = optim.Adam({ a, b }, { lr = 0.1 })
  set_grad(a, { 1, 1 })
  opt:step()
  ok(opt.state[1] and not opt.state[2], 'state only for the parameter that had a gradient')
  near(b:totable(), { 3 }, 0)
  opt:zero_grad()
  ok(a.grad == nil and b.grad == nil)
  local w = P({ 2 })
  local sgd = optim.SGD({ w }, { lr = 0.25 })
  local loss = sgd:step(function() sgd:zero_grad(); local l = (w * w):sum(); l:backward(); return l end)
  near(loss:item(), 4, 0)
  near(w:totable(), { 1 }, 1e-15)   -- 2 - 0.25 * 4
end)

test('optimisers accept modules and parameter groups; bad settings are reported', function()
  local m = nn.Linear(3, 2)
  eq(#optim.SGD(m, { lr = 0.1 }).param_groups[1].params, 2)
  local groups = optim.SGD({ { params = { m.weight } }, { params = { m.bias }, lr = 0.5 } }, { lr = 0.1 }).param_groups
  eq(groups[1].lr, 0.1); eq(groups[2].lr, 0.5)
  raises(function() optim.SGD({}, { lr = 0.1 }) end, 'non-empty list')
  raises(function() optim.SGD(m, {}) end, 'lr is required')
  raises(function() optim.SGD(m, { lr = 0.1, nesterov = true }) end, 'nesterov needs momentum > 0')
  raises(function() optim.SGD(m, { lr = -1 }) end, 'lr must be a number >= 0')
  raises(function() optim.Adam(m, { betas = { 1.0, 0.9 } }) end, 'beta1 must lie in [0, 1)')
  raises(function() optim.AdamW(m, { weight_decay = -0.1 }) end, 'weight_decay must be >= 0')
  raises(function() optim.SGD({ m.weight, m.weight }, { lr = 0.1 }) end, 'appears twice')
  raises(function() optim.SGD({ m.weight * 2 }, { lr = 0.1 }) end, 'is not a leaf')
  raises(function() optim.SGD({ efla.zeros(2) }, { lr = 0.1 }) end, 'every parameter is frozen')
end)

test('frozen parameters (requires_grad = false) are skipped and stay unchanged', function()
  efla.manual_seed(3)
  local m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
  m[1].weight:requires_grad_(false)
  m[1].bias:requires_grad_(false)
  local frozen_w = m[1].weight:clone()
  for _, make in ipairs({ function() return optim.SGD(m, { lr = 0.1 }) end,
    function() return optim.AdamW(m, { lr = 0.1 }) end, function() return optim.Adam(m, { lr = 0.1 }) end }) do
    local opt = make()
    eq(#opt.param_groups[1].params, 2)
    local before = m[2].weight:clone()
    opt:zero_grad()
    m:forward(efla.randn(5, 3)):square():sum():backward()
    opt:step()
    ok(m[1].weight:allclose(frozen_w, 0, 0), 'a frozen weight moved')
    ok(not m[2].weight:allclose(before, 0, 0), 'a trainable weight did not move')
  end
  local groups = optim.param_groups(m, { weight_decay = 0.1 })
  eq(#optim.AdamW(groups, { lr = 0.1 }).param_groups, #groups)
end)

-- ---- clipping, groups --------------------------------------------------------------------------------------
test('clip_grad_norm: returns the global norm, scales only above max_norm, in place', function()
  local a, b, c = P({ 1, 1 }), P({ 1 }), P({ 5 })
  set_grad(a, { 3, 4 }); set_grad(b, { 12 })   -- c has no gradient
  near(optim.clip_grad_norm({ a, b, c }, 100), 13, 1e-12)
  near(a.grad:totable(), { 3, 4 }, 0)
  local norm = optim.clip_grad_norm({ a, b, c }, 6.5)
  near(norm, 13, 1e-12)
  local coef = 6.5 / (13 + 1e-6)
  near(a.grad:totable(), { 3 * coef, 4 * coef }, 1e-12)
  near(b.grad:totable(), { 12 * coef }, 1e-12)
  near(optim.clip_grad_norm({ a, b }), 6.5, 1e-6)
  -- a module works too; float32 gradients are summed in float64
  local m = nn.Linear(2, 2)
  m.weight.grad = efla.full({ 2, 2 }, 1e-3); m.bias.grad = efla.full({ 2 }, 1e-3)
  near(optim.clip_grad_norm(m, 1), 1e-3 * sqrt(6), 1e-9)
  -- a non-finite norm comes back as it is and leaves the gradients alone
  set_grad(a, { math.huge, 1 })
  eq(optim.clip_grad_norm({ a }, 1), math.huge)
  eq(a.grad:totable()[2], 1)
  raises(function() optim.clip_grad_norm({ a }, 0) end, 'max_norm must be a number > 0')
  raises(function() optim.clip_grad_norm_({ a }, 1, 'fast') end, 'opts must be a table')
end)

test('param_groups: no weight decay on biases and norms; AdamW decays only the first group', function()
  local model = nn.CausalLM { vocab_size = 6, d_model = 8, n_layers = 1, n_heads = 2, dtype = 'float64' }
  local groups = optim.param_groups(model, { weight_decay = 0.2 })
  eq(#groups, 2)
  eq(groups[1].weight_decay, 0.2); eq(groups[2].weight_decay, 0)
  local in_group = {}
  for gi, g in ipairs(groups) do for _, n in ipairs(g.names) do in_group[n] = gi end end
  local n_named = 0
  for _, np in ipairs(model:named_parameters()) do
    n_named = n_named + 1
    local name, p = np[1], np[2]
    local want = (p:dim() < 2 or name:find('norm') or name:match('bias$')) and 2 or 1
    eq(in_group[name], want, name)
  end
  eq(#groups[1].params + #groups[2].params, n_named)
  eq(in_group['embed.weight'], 1); eq(in_group['layers.1.attn.q_proj.weight'], 1)
  eq(in_group['layers.1.attn.k_conv.weight'], 1); eq(in_group['head.weight'], 1)
  eq(in_group['layers.1.attn_norm.weight'], 2); eq(in_group['layers.1.attn.b_proj.bias'], 2)
  eq(in_group['layers.1.attn.o_norm.weight'], 2); eq(in_group['norm.weight'], 2)
  -- with zero gradients AdamW moves only the decayed weights, each by the factor (1 - lr wd)
  local before = {}
  for i, p in ipairs(model:parameters()) do before[i] = p:clone(); p.grad = efla.zeros_like(p) end
  local opt = optim.AdamW(groups, { lr = 0.5 })
  opt:step()
  for i, np in ipairs(model:named_parameters()) do
    local factor = in_group[np[1]] == 1 and (1 - 0.5 * 0.2) or 1
    near(np[2]:totable(), (before[i] * factor):totable(), 1e-14, np[1])
  end
  -- a custom rule
  local only_embed = optim.param_groups(model, { no_decay = function(name) return name ~= 'embed.weight' end })
  eq(only_embed[1].names, { 'embed.weight' })
end)

-- ---- schedules ----------------------------------------------------------------------------------------------
test('schedules: values at chosen steps; step() sets every group (times lr_scale)', function()
  local c = optim.schedule.Constant { lr = 0.1 }
  eq(c:lr(1), 0.1); eq(c:lr(1000), 0.1)
  local w = optim.schedule.WarmupCosine { lr = 1, warmup_steps = 10, total_steps = 110, min_lr = 0.1 }
  near(w:lr(1), 0.1, 1e-15)
  near(w:lr(5), 0.5, 1e-15)
  near(w:lr(10), 1, 1e-15)
  near(w:lr(35), 0.1 + 0.45 * (1 + math.cos(math.pi / 4)), 1e-15)
  near(w:lr(60), 0.55, 1e-15)
  near(w:lr(110), 0.1, 1e-15)
  near(w:lr(500), 0.1, 1e-15)
  local nowarm = optim.schedule.warmup_cosine { lr = 2, total_steps = 4 }
  near({ nowarm:lr(1), nowarm:lr(2), nowarm:lr(4) }, { 1 + math.cos(math.pi / 4), 1, 0 }, 1e-15)
  local s = optim.schedule.Step { lr = 1, step_size = 3, gamma = 0.5 }
  local vals = {}
  for i = 1, 7 do vals[i] = s:lr(i) end
  eq(vals, { 1, 1, 1, 0.5, 0.5, 0.5, 0.25 })
  eq(optim.schedule.step { lr = 1, step_size = 1 }:lr(3), 0.1 ^ 2)

  local a, b = P({ 1 }), P({ 1 })
  local opt = optim.SGD({ { params = { a } }, { params = { b }, lr_scale = 0.1 } }, { lr = 1 })
  local sched = optim.schedule.WarmupCosine { lr = 1, warmup_steps = 4, total_steps = 8 }
  eq(sched:step(opt), 0.25)
  eq(opt.param_groups[1].lr, 0.25)
  near(opt.param_groups[2].lr, 0.025, 1e-15)
  eq(opt:get_lr(), 0.25)
  sched:step(opt)
  eq(sched.last_step, 2); eq(sched:get_lr(), 0.5)
  raises(function() optim.schedule.WarmupCosine { lr = 1 } end, 'total_steps must be a number')
  raises(function() optim.schedule.WarmupCosine { lr = 1, warmup_steps = 9, total_steps = 8 } end, 'exceeds total_steps')
  raises(function() optim.schedule.Step { lr = 1 } end, 'step_size must be a number')
end)

test('schedules: state_dict is plain numbers; round trip and from_state continue the schedule', function()
  local s = optim.schedule.WarmupCosine { lr = 1, warmup_steps = 3, total_steps = 20, min_lr = 0.01 }
  for _ = 1, 7 do s:step() end
  local sd = s:state_dict()
  eq(sd, { kind = 'WarmupCosine', last_step = 7, settings = { lr = 1, warmup_steps = 3, total_steps = 20, min_lr = 0.01 } })
  local s2 = optim.schedule.WarmupCosine { lr = 1, total_steps = 20 }
  s2:load_state_dict(sd)
  eq(s2:step(), s:step())
  local s3 = optim.schedule.from_state(sd)
  eq(s3:step(), s:lr(8))
  raises(function() optim.schedule.Constant { lr = 1 }:load_state_dict(sd) end, 'the state is of a WarmupCosine schedule')
  raises(function() optim.schedule.from_state({ kind = 'Linear' }) end, "unknown schedule kind 'Linear'")
end)

-- ---- state round trips ----------------------------------------------------------------------------------------
local function tiny_model(seed)
  efla.manual_seed(seed)
  return nn.Sequential(nn.Linear(3, 5, { dtype = 'float64' }), nn.Tanh(), nn.LayerNorm(5, { dtype = 'float64' }),
    nn.Linear(5, 2, { dtype = 'float64' }))
end
local X, Y = efla.randn(8, 3, F64), efla.randn(8, 2, F64)
local function train_step(model, opt)
  opt:zero_grad()
  local loss = nn.functional.mse(model(X), Y)
  loss:backward()
  opt:step()
  return loss:item()
end
local function same_params(a, b, what)
  for i, p in ipairs(a:parameters()) do
    ok(p:eq(b:parameters()[i]):all(), (what or '') .. ' parameter ' .. i .. ' differs')
  end
end

test('optimiser state_dict: a snapshot; loaded into a fresh optimiser the next steps are identical', function()
  local makers = {
    function(m) return optim.AdamW(optim.param_groups(m, { weight_decay = 0.05 }), { lr = 0.01 }) end,
    function(m) return optim.Adam(m, { lr = 0.01, weight_decay = 0.01 }) end,
    function(m) return optim.SGD(m, { lr = 0.05, momentum = 0.9, nesterov = true }) end,
  }
  for k, make in ipairs(makers) do
    local a = tiny_model(1)
    local opt_a = make(a)
    for _ = 1, 3 do train_step(a, opt_a) end
    local sd = opt_a:state_dict()
    local frozen = sd.state['1'].exp_avg or sd.state['1'].momentum_buffer
    local copy = frozen:clone()
    local b = tiny_model(2)
    b:load_state_dict(a:state_dict())
    local opt_b = make(b)
    opt_b:load_state_dict(sd)
    for _ = 1, 2 do
      local la, lb = train_step(a, opt_a), train_step(b, opt_b)
      eq(la, lb, 'maker ' .. k .. ': the same loss')
    end
    same_params(a, b, 'maker ' .. k)
    ok(frozen:eq(copy):all(), 'maker ' .. k .. ': the state_dict did not move with later steps')
  end
end)

test('optimiser and schedule state through a checkpoint file: identical next step', function()
  local a = tiny_model(3)
  local opt_a = optim.AdamW(optim.param_groups(a, { weight_decay = 0.05 }), { lr = 0.01 })
  local sched_a = optim.schedule.WarmupCosine { lr = 0.02, warmup_steps = 2, total_steps = 10 }
  for _ = 1, 4 do sched_a:step(opt_a); train_step(a, opt_a) end
  local path = tmpdir .. '/optim.h5'
  checkpoint.save(path, { model = a:state_dict(), optim = opt_a:state_dict(), schedule = sched_a:state_dict(), step = 4 })
  local ck = checkpoint.load(path)
  local b = tiny_model(4)
  b:load_state_dict(ck.model)
  local opt_b = optim.AdamW(optim.param_groups(b, { weight_decay = 0.5 }), { lr = 1 })   -- settings come from the file
  opt_b:load_state_dict(ck.optim)
  eq(opt_b.param_groups[1].weight_decay, 0.05)
  local sched_b = optim.schedule.from_state(ck.schedule)
  eq(sched_b.last_step, 4)
  for _ = 1, 3 do
    sched_a:step(opt_a); sched_b:step(opt_b)
    eq(train_step(a, opt_a), train_step(b, opt_b))
  end
  same_params(a, b)
  os.remove(path)
end)

test('optimiser load_state_dict: every mismatch reported at once', function()
  local a = tiny_model(5)
  local opt = optim.Adam(a, { lr = 0.01 })
  train_step(a, opt)
  local sd = opt:state_dict()
  local other = nn.Sequential(nn.Linear(3, 4, { dtype = 'float64' }), nn.Linear(4, 2, { dtype = 'float64' }))
  local err = raises(function() optim.Adam(other, { lr = 0.01 }):load_state_dict(sd) end, 'does not match this optimiser')
  ok(err:find('group 1 has 6 parameters in the state, 4 here', 1, true), err)
  ok(err:find('state 1.exp_avg is [5,3] but parameter 1 is [4,3]', 1, true), err)
  ok(err:find('state entry 5 names no parameter', 1, true), err)
  local grouped = optim.Adam(optim.param_groups(a), { lr = 0.01 })
  raises(function() grouped:load_state_dict(sd) end, 'the state has 1 parameter groups, this optimiser 2')
  raises(function() grouped:load_state_dict({}) end, 'expected the table state_dict() returned')
end)

test('training end to end: Adam fits a small regression', function()
  local model = tiny_model(6)
  local opt = optim.Adam(model, { lr = 0.05 })
  local first = train_step(model, opt)
  local last
  for _ = 1, 150 do last = train_step(model, opt) end
  ok(last < 0.2 * first, string.format('loss %.4f -> %.4f', first, last))
end)

os.execute("rmdir '" .. tmpdir .. "' 2>/dev/null")
t.done()
