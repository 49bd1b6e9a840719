-- efla/autograd.lua: the Lua face of core's autograd.
--
--   x.grad, x.requires_grad, x.grad_fn, x.is_leaf        properties
--   x:backward([grad [, retain_graph]]), x:requires_grad_([flag]), x:detach(), x:zero_grad()
--   efla.no_grad(fn, ...), efla.enable_grad(fn, ...), efla.set_grad_enabled(flag)
--   efla.autograd.Function{forward=, backward=}         custom differentiable functions
--   efla.gradcheck(f, inputs [, opts])                   finite-difference check (float64)
--   efla.set_gc_callback([enable])                       let the CUDA allocator ask for a GC
--   efla.autograd.saved_memory(t)                        what the graph keeps for backward, per op
--
-- LuaJIT callbacks: core calls back into Lua for custom Functions (the backward, and the
-- release of their context). LuaJIT must not enter a callback from a C function that
-- compiled code called, so every Lua function that calls a C function able to run a
-- callback is jit.off (backward, grad assignment, tensor release).
local efla_ffi = require 'efla.ffi'
local ffi, lib = efla_ffi.ffi, efla_ffi.lib
local raise, check = efla_ffi.raise, efla_ffi.check
local tensor = require 'efla.tensor'
local tensor_methods, wrap, is_tensor = tensor.T, tensor.wrap, tensor.is_tensor

local autograd = {}
local this_chunk = debug.getinfo(1, 'f').func

-- ---- tensor properties and methods (given to tensor.lua through its extension point) -----------
local function set_grad(x, g)
  if g ~= nil and not is_tensor(g) then raise('x.grad = g: g must be a tensor or nil') end
  check(lib.efla_set_grad(x.ptr, g and g.ptr or nil))
end
jit.off(set_grad)  -- releasing the old grad can free a graph holding a Lua node
tensor.register_properties({
  grad = { get = function(x) return tensor.wrap_or_nil(lib.efla_grad(x.ptr)) end, set = set_grad },
  requires_grad = {
    get = function(x) return lib.efla_requires_grad(x.ptr) == 1 end,
    set = function(x, v) check(lib.efla_set_requires_grad(x.ptr, v and 1 or 0)) end,
  },
  is_leaf = { get = function(x) return lib.efla_is_leaf(x.ptr) == 1 end },
  --- x.grad_fn: the name of the node that made x ("mul", "tanh", ...), nil for leaves
  grad_fn = { get = function(x)
    local s = lib.efla_grad_fn_name(x.ptr)
    if s == nil then return nil end
    return ffi.string(s)
  end },
})

local grad_methods = {}   -- registered with tensor.register_methods below

--- x:requires_grad_([flag=true]): marks a leaf as needing gradients; returns x
function grad_methods.requires_grad_(x, flag)
  if flag == nil then flag = true end
  check(lib.efla_set_requires_grad(x.ptr, flag and 1 or 0))
  return x
end
--- x:detach(): the same values, cut from the graph (shares storage)
function grad_methods.detach(x) return wrap(lib.efla_detach(x.ptr)) end
--- x:zero_grad(): drops x.grad
function grad_methods.zero_grad(x) set_grad(x, nil); return x end

-- A message a Lua backward raised, handed over to the backward() call that ran it (a C
-- callback must not raise through C frames).
local pending_error

--- x:backward([grad [, retain_graph]]): accumulates d x / d leaf into every leaf's .grad.
--- grad may be omitted for one-element tensors; a number is accepted for one-element x.
local function backward(x, grad, retain_graph)
  if type(grad) == 'boolean' then grad, retain_graph = nil, grad end
  if type(grad) == 'number' then grad = tensor.full_like(x, grad) end
  if grad ~= nil and not is_tensor(grad) then raise('backward: grad must be a tensor, a number or nil') end
  pending_error = nil
  local rc = lib.efla_backward(x.ptr, grad and grad.ptr or nil, retain_graph and 1 or 0)
  if rc < 0 then
    local msg = pending_error or efla_ffi.last_error()
    pending_error = nil
    raise(msg)
  end
  return x
end
jit.off(backward)
grad_methods.backward = backward
tensor.register_methods(grad_methods)

-- ---- grad mode ---------------------------------------------------------------------------------------
local function with_grad_mode(mode, fn, ...)
  if type(fn) ~= 'function' and not (type(fn) == 'table' and getmetatable(fn) and getmetatable(fn).__call) then
    raise('expected a function to run, got ' .. type(fn))
  end
  local prev = lib.efla_set_grad_enabled(mode)
  local res = { pcall(fn, ...) }
  lib.efla_set_grad_enabled(prev)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, table.maxn(res))
end
--- efla.no_grad(fn, ...): runs fn(...) with gradient recording off (restored even on error)
function autograd.no_grad(fn, ...) return with_grad_mode(0, fn, ...) end
--- efla.enable_grad(fn, ...): runs fn(...) with gradient recording on
function autograd.enable_grad(fn, ...) return with_grad_mode(1, fn, ...) end
--- efla.set_grad_enabled(flag): returns the previous setting
function autograd.set_grad_enabled(flag) return lib.efla_set_grad_enabled(flag and 1 or 0) == 1 end
function autograd.is_grad_enabled() return lib.efla_grad_enabled() == 1 end
--- efla.zero_grad(params): drops .grad of every tensor in a list (or table of tensors)
function autograd.zero_grad(params)
  for _, p in pairs(params) do if is_tensor(p) then set_grad(p, nil) end end
end

-- ---- custom functions ----------------------------------------------------------------------------------
-- Each recorded node gets an id (its ctx pointer); registry[id] holds the Lua side. One
-- backward callback and one release callback serve every node.
local registry, next_id = {}, 0
autograd._registry = registry

local function backward_cb_impl(node, grad_outputs, grad_inputs)
  local id = tonumber(ffi.cast('intptr_t', lib.efla_node_ctx(node)))
  local rec = registry[id]
  if not rec then
    pending_error = 'backward of a Lua Function: its context is gone'
    return -1
  end
  local ok, err = pcall(function()
    local ctx = rec.ctx
    -- saved tensors come back through core, which checks that they were not changed in place
    local saved = {}
    for i, slot in ipairs(rec.slots) do saved[i] = wrap(lib.efla_node_saved(node, slot)) end
    ctx.saved_tensors = saved
    local grads = {}
    for i = 1, rec.n_outputs do grads[i] = tensor.adopt_borrowed(grad_outputs[i - 1]) end
    local res = { rec.fn.backward(ctx, unpack(grads, 1, rec.n_outputs)) }
    ctx.saved_tensors = nil
    for k, argpos in ipairs(rec.tensor_args) do
      local g = res[argpos]
      if g ~= nil and lib.efla_node_needs_grad(node, k - 1) == 1 then
        if not is_tensor(g) then
          error(string.format('%s.backward returned a %s for argument %d; expected a tensor or nil',
            rec.name, type(g), argpos), 0)
        end
        lib.efla_tensor_retain(g.ptr)   -- core takes this reference
        grad_inputs[k - 1] = g.ptr
      end
    end
  end)
  if not ok then
    pending_error = 'backward of ' .. rec.name .. ': ' .. tostring(err)
    return -1
  end
  return 0
end
local backward_cb = ffi.cast('efla_backward_fn', backward_cb_impl)
local free_cb = ffi.cast('void (*)(void *)', function(p)
  registry[tonumber(ffi.cast('intptr_t', p))] = nil
end)

local Ctx = {}
Ctx.__index = Ctx
--- ctx:save_for_backward(t1, t2, ...): tensors the backward needs (checked for in-place changes)
function Ctx:save_for_backward(...)
  self._to_save = { ... }
end
Ctx.save = Ctx.save_for_backward

local Function = {}
Function.__index = Function

--- efla.autograd.Function{forward=function(ctx, ...), backward=function(ctx, grad...) [, name=]}:
--- a differentiable function. Call it like a function (F(x, y)) or F:apply(x, y).
--- forward runs with recording off and returns tensors; backward returns one gradient (or
--- nil) per forward argument.
function autograd.Function(def)
  if type(def) ~= 'table' or type(def.forward) ~= 'function' or type(def.backward) ~= 'function' then
    raise('autograd.Function: expects a table with forward(ctx, ...) and backward(ctx, grad_output...) functions')
  end
  def.name = def.name or 'lua_function'
  return setmetatable(def, Function)
end
Function.__call = function(self, ...) return self:apply(...) end

function Function:apply(...)
  local n = select('#', ...)
  local args = { ... }
  local ctx = setmetatable({}, Ctx)
  local tensor_args, inputs = {}, {}
  for i = 1, n do
    if is_tensor(args[i]) then
      tensor_args[#tensor_args + 1] = i
      inputs[#inputs + 1] = args[i]
    end
  end
  local needs = {}
  for i = 1, n do needs[i] = is_tensor(args[i]) and args[i].requires_grad and autograd.is_grad_enabled() end
  ctx.needs_input_grad = needs
  local outs = { autograd.no_grad(self.forward, ctx, ...) }
  local n_out = #outs
  for i = 1, n_out do
    if not is_tensor(outs[i]) then
      raise(string.format('%s.forward must return tensors; result %d is a %s', self.name, i, type(outs[i])))
    end
    -- an input handed back unchanged must not become this node's output
    if outs[i].requires_grad then outs[i] = outs[i]:detach() end
  end
  if n_out == 0 then raise(self.name .. '.forward returned nothing') end
  local in_arr = ffi.new('efla_tensor *[?]', math.max(1, #inputs))
  for k = 1, #inputs do in_arr[k - 1] = inputs[k].ptr end
  local out_arr = ffi.new('efla_tensor *[?]', n_out)
  for k = 1, n_out do out_arr[k - 1] = outs[k].ptr end
  lib.efla_clear_error()
  local node = lib.efla_node_record(self.name, backward_cb, #inputs, in_arr, n_out, out_arr)
  if node == nil then
    if ffi.string(lib.efla_last_error()) ~= '' then raise(efla_ffi.last_error()) end
    return unpack(outs, 1, n_out)   -- nothing needs a gradient
  end
  next_id = next_id + 1
  local rec = { fn = self, ctx = ctx, name = self.name, n_outputs = n_out, tensor_args = tensor_args, slots = {} }
  registry[next_id] = rec
  lib.efla_node_set_ctx(node, ffi.cast('void *', next_id), free_cb)
  for i, t in ipairs(ctx._to_save or {}) do
    if not is_tensor(t) then raise(string.format('%s: save_for_backward argument %d is not a tensor', self.name, i)) end
    rec.slots[i] = check(lib.efla_node_save(node, t.ptr))
  end
  ctx._to_save = nil
  return unpack(outs, 1, n_out)
end

-- ---- gradcheck -------------------------------------------------------------------------------------------
-- Deterministic weights in [-1, 1] that project a non-scalar output onto a scalar (so the
-- check compares J^T w, a random direction), without touching efla's RNG.
local function weights_like(out, seed)
  local shape = tensor.shape_table(out)
  local n = tensor_methods.numel(out)
  local vals = {}
  local s = seed
  for i = 1, n do
    s = (s * 1103515245 + 12345) % 2147483648
    vals[i] = (s / 2147483648) * 2 - 1
  end
  local w = tensor.tensor(vals, { dtype = 'float64' })
  return tensor_methods.reshape(w, shape)
end

local function unravel(i, shape)
  local pos = {}
  for d = #shape, 1, -1 do
    pos[d] = i % shape[d]
    i = math.floor(i / shape[d])
  end
  return pos
end

--- efla.gradcheck(f, inputs [, {eps=1e-6, atol=1e-5, rtol=1e-4}]) -> ok, report, worst
--- Compares the gradients of f(inputs...) (projected on fixed random weights when f's
--- output is not a scalar) with central finite differences. Inputs that require grad must
--- be float64. report names the worst element: input index, 1-based position, analytic
--- and numeric values.
function autograd.gradcheck(f, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-4
  local rng0 = tensor.rng_state()
  local checked = {}
  for i, x in ipairs(inputs) do
    if is_tensor(x) and x.requires_grad then
      if tensor_methods.dtype(x) ~= 'float64' then
        raise(string.format('gradcheck: input %d is %s; use float64 inputs for finite differences', i, tensor_methods.dtype(x)))
      end
      if not x.is_leaf then raise(string.format('gradcheck: input %d is not a leaf; pass leaves (detach() then requires_grad_())', i)) end
      checked[#checked + 1] = i
    end
  end
  if #checked == 0 then raise('gradcheck: no input requires grad') end
  local weights
  -- the scalar objective L = sum_k sum(out_k * w_k)
  local function objective()
    tensor.set_rng_state(rng0)  -- the same random draws (dropout...) at every evaluation
    local outs = { f(unpack(inputs)) }
    local L
    for k, o in ipairs(outs) do
      if is_tensor(o) and tensor_methods.is_floating_point(o) then
        weights = weights or {}
        weights[k] = weights[k] or weights_like(o, 12345 + 7919 * k)
        local term = tensor_methods.sum(tensor_methods.mul(tensor_methods.double(o), weights[k]))
        L = L and tensor_methods.add(L, term) or term
      end
    end
    if not L then raise('gradcheck: f returned no floating-point tensor') end
    return L
  end
  -- analytic
  for _, i in ipairs(checked) do set_grad(inputs[i], nil) end
  local L = objective()
  backward(L)
  local rng_after = tensor.rng_state()
  local analytic = {}
  for _, i in ipairs(checked) do
    local g = inputs[i].grad
    analytic[i] = g and { tensor._read_all(g) } or false
    set_grad(inputs[i], nil)
  end
  -- numeric, one element at a time
  local worst = { score = -math.huge }
  local failed = false
  local idx = ffi.new('int64_t[8]')
  local out = ffi.new('double[1]')
  autograd.no_grad(function()
    for _, i in ipairs(checked) do
      local x = inputs[i]
      local shape = tensor.shape_table(x)
      local n = tensor_methods.numel(x)
      for e = 0, n - 1 do
        local pos = unravel(e, shape)
        for d = 1, #shape do idx[d - 1] = pos[d] end
        check(lib.efla_get(x.ptr, idx, out))
        local orig = out[0]
        check(lib.efla_set(x.ptr, idx, orig + eps))
        local fp = tensor_methods.item(objective())
        check(lib.efla_set(x.ptr, idx, orig - eps))
        local fm = tensor_methods.item(objective())
        check(lib.efla_set(x.ptr, idx, orig))
        local num = (fp - fm) / (2 * eps)
        local ana = analytic[i] and analytic[i][1](e) or 0
        local diff = math.abs(ana - num)
        local tol = atol + rtol * math.abs(num)
        local score = diff - tol
        if diff ~= diff then score = math.huge end
        if score > 0 then failed = true end
        if score > worst.score then
          local p1 = {}
          for d = 1, #pos do p1[d] = pos[d] + 1 end
          worst = { score = score, input = i, position = p1, analytic = ana, numeric = num, diff = diff }
        end
      end
    end
  end)
  tensor.set_rng_state(rng_after)
  local report = string.format('gradcheck %s: worst element: input %d at {%s}: analytic %.10g, numeric %.10g, |diff| %.3g (tolerance %.3g)',
    failed and 'FAILED' or 'ok', worst.input or 0, table.concat(worst.position or {}, ','), worst.analytic or 0,
    worst.numeric or 0, worst.diff or 0, atol + rtol * math.abs(worst.numeric or 0))
  return not failed, report, worst
end

-- ---- where activation memory goes ----------------------------------------------------------------------
--- efla.autograd.saved_memory(t) -> rows, total_bytes: the tensors that the graph behind t keeps
--- for its backward, per node name (rows of {name=, nodes=, tensors=, bytes=}, largest first).
--- Each storage counts once, for the node nearest t that saves it; parameters and other
--- leaves are left out. Call it between forward and backward, e.g. on the loss.
function autograd.saved_memory(t)
  if not is_tensor(t) then raise('saved_memory(t): t must be a tensor, got ' .. type(t)) end
  local total = ffi.new('int64_t[1]')
  local n = lib.efla_graph_saved(t.ptr, nil, 0, total)
  if n < 0 then check(-1) end
  local rows = {}
  if n > 0 then
    local buf = ffi.new('efla_saved_entry[?]', n)
    n = lib.efla_graph_saved(t.ptr, buf, n, total)
    if n < 0 then check(-1) end
    for i = 0, n - 1 do
      local e = buf[i]
      rows[#rows + 1] = { name = ffi.string(e.name), nodes = tonumber(e.nodes), tensors = tonumber(e.tensors),
                          bytes = tonumber(e.bytes) }
    end
  end
  return rows, tonumber(total[0])
end

-- ---- the GC hook for device memory ---------------------------------------------------------------------
local gc_cb
--- efla.set_gc_callback([enable=true]): when a device allocation fails, the allocator asks
--- Lua for a full garbage collection (dropping unreachable tensors) and retries. Entering
--- Lua from the allocator is only safe when the Lua code that called into efla was not
--- JIT-compiled, so this also turns the JIT off for efla's own wrapper functions.
function autograd.set_gc_callback(enable)
  if enable == nil then enable = true end
  if enable then
    if not gc_cb then
      gc_cb = ffi.cast('void (*)(void)', function() collectgarbage('collect') end)
      autograd._jit_off_wrappers()
    end
    lib.efla_set_gc_callback(gc_cb)
  else
    lib.efla_set_gc_callback(nil)
  end
end

-- Every function of efla's binding files (recursively: jit.off(chunk, true) covers the
-- functions defined inside a chunk), and the public functions of the other efla modules
-- loaded so far with the functions nested in them.
function autograd._jit_off_wrappers()
  jit.off(tensor._chunk, true)
  jit.off(this_chunk, true)
  for name, mod in pairs(package.loaded) do
    if type(name) == 'string' and name:match('^efla') and type(mod) == 'table' then
      for _, fn in pairs(mod) do if type(fn) == 'function' then jit.off(fn, true) end end
    end
  end
end

return autograd
