-- efla.distributed.data_parallel: gradient averaging that overlaps the backward, and ZeRO-1.
--
-- DataParallel groups the parameters into buckets (in reverse registration order, about the
-- order in which the backward produces their gradients; each bucket one dtype and device,
-- about bucket_mb MiB). libefla calls a grad-ready hook (efla_set_grad_ready_hook) the moment
-- a parameter's gradient for this backward is complete; when every gradient of a bucket is
-- in, and every earlier bucket has gone, the bucket is flattened and its all-reduce (mean) is
-- launched, on NCCL's own stream while the backward goes on. dp:finish() (before clipping
-- and the optimiser step) launches what is left, waits, and writes the means back into
-- the .grad tensors. Buckets always go in the same order on every rank, so the collectives
-- match up. With gradient accumulation, set dp.sync = false for all but the last micro-batch.
--
-- ZeroOptimizer wraps an optimiser so that each parameter's state (Adam's moments) lives on
-- one rank only: the owner updates the parameter and broadcasts it. The update is the
-- wrapped optimiser's own, so the result equals the unsharded optimiser's.
local efla = require 'efla'
local binding = require 'efla._binding'
local ffi = require 'ffi'
local lib = binding.lib

local M = {}

local function key(ptr) return tonumber(ffi.cast('intptr_t', ptr)) end

local DataParallel = {}
DataParallel.__index = DataParallel

--- DataParallel(model [, {group = dist.group(), bucket_mb = 25, broadcast = true}]): averages
--- the gradients of model's parameters over the ranks (broadcast: rank 0's weights first).
function M.DataParallel(model, opts)
  opts = opts or {}
  local dist = require 'efla.distributed'
  local pg = opts.group or dist.group()
  if not pg then error('DataParallel: no process group; call efla.distributed.init() first (efla-run sets the environment it reads)', 2) end
  local self = setmetatable({ model = model, pg = pg, sync = true, buckets = {}, index = {}, early_launches = 0 }, DataParallel)
  local params = {}
  for _, p in ipairs(type(model.parameters) == 'function' and model:parameters() or model) do
    if p.requires_grad then params[#params + 1] = p end
  end
  if #params == 0 then error('DataParallel: the model has no parameter that requires a gradient', 2) end
  if opts.broadcast ~= false then
    efla.no_grad(function() for _, p in ipairs(params) do pg:broadcast(p, 0) end end)
  end
  local cap = (opts.bucket_mb or 25) * 1048576
  local cur
  for i = #params, 1, -1 do
    local p = params[i]
    local bytes = p:numel() * p:element_size()
    if not cur or cur.bytes + bytes > cap and #cur.params > 0 or cur.dtype ~= p:dtype() or cur.device ~= p:device() then
      cur = { params = {}, offsets = {}, bytes = 0, numel = 0, dtype = p:dtype(), device = p:device() }
      self.buckets[#self.buckets + 1] = cur
    end
    cur.params[#cur.params + 1] = p
    cur.offsets[#cur.offsets + 1] = cur.numel
    cur.numel, cur.bytes = cur.numel + p:numel(), cur.bytes + bytes
    self.index[key(p.ptr)] = { bucket = #self.buckets, param = p }
  end
  self.params = params
  self:_reset()
  M._install(self)
  return self
end

function DataParallel:_reset()
  for _, b in ipairs(self.buckets) do b.ready, b.launched = 0, false end
  self.next_bucket, self.err = 1, nil
end

-- Copies a bucket's gradients into one flat buffer and launches its all-reduce.
function DataParallel:_launch(b)
  b.flat = b.flat or efla.empty({ b.numel }, { dtype = b.dtype, device = b.device })
  for j, p in ipairs(b.params) do
    local g = p.grad
    local dst = b.flat:narrow(1, b.offsets[j] + 1, p:numel())
    if g then dst:copy_(g:reshape(-1)) else dst:zero_() end
  end
  self.pg:all_reduce(b.flat, 'avg', { async = true })
  b.launched = true
end

-- Launches, in order, every bucket whose gradients are all in.
function DataParallel:_advance()
  while self.next_bucket <= #self.buckets do
    local b = self.buckets[self.next_bucket]
    if b.ready < #b.params then return end
    self:_launch(b)
    self.next_bucket = self.next_bucket + 1
  end
end

-- The hook's body (it runs inside the C backward, so it must never raise).
function DataParallel:_on_ready(ptr)
  if not self.sync or self.err then return end
  local e = self.index[key(ptr)]
  if not e then return end
  local ok, err = pcall(function()
    local b = self.buckets[e.bucket]
    b.ready = b.ready + 1
    local before = self.next_bucket
    self:_advance()
    -- buckets launched while the backward is still running (what the overlap is made of)
    self.early_launches = self.early_launches + (self.next_bucket - before)
  end)
  if not ok then self.err = err end
end

--- dp:finish(): after the backward(s), before clipping and the optimiser step: launches the
--- buckets still waiting (parameters that got no gradient count as zeros), waits for all,
--- and leaves every parameter's .grad holding the mean over ranks.
function DataParallel:finish()
  local err = self.err
  if err then self:_reset(); error('DataParallel: a gradient all-reduce failed during the backward: ' .. tostring(err), 2) end
  efla.no_grad(function()
    for i = self.next_bucket, #self.buckets do self:_launch(self.buckets[i]) end
    self.pg:wait()
    for _, b in ipairs(self.buckets) do
      for j, p in ipairs(b.params) do
        local mean = b.flat:narrow(1, b.offsets[j] + 1, p:numel()):view(p:size())
        local g = p.grad
        if g then g:copy_(mean) else p.grad = mean:clone() end
      end
    end
  end)
  self:_reset()
end

--- dp:close(): removes the grad-ready hook (another DataParallel may then be made).
function DataParallel:close()
  if M._active == self then lib.efla_set_grad_ready_hook(nil, nil); M._active = nil end
end

-- One hook per process: the most recent DataParallel receives it.
local hook_cb
function M._install(dp)
  M._active = dp
  if not hook_cb then
    hook_cb = ffi.cast('efla_grad_ready_fn', function(leaf)
      local a = M._active
      if a then a:_on_ready(leaf) end
    end)
  end
  lib.efla_set_grad_ready_hook(hook_cb, nil)
end

-- ---- ZeRO-1 ---------------------------------------------------------------------------------------------

local Zero = {}
Zero.__index = function(self, k)
  local v = rawget(Zero, k)
  if v ~= nil then return v end
  return rawget(self, 'inner')[k]
end

--- ZeroOptimizer(optimizer [, group]): shards optimizer's state over the ranks. Parameters are
--- assigned to ranks greedily by size (the same on every rank); step() updates the owned
--- ones and broadcasts each from its owner; state_dict() gathers the whole state (every rank
--- must call it; the result is what the unsharded optimiser's would be), and
--- load_state_dict() keeps the owned part of a full state, so checkpoints move freely between
--- sharded and plain runs and across world sizes.
function M.ZeroOptimizer(inner, group)
  local pg = group or require('efla.distributed').group()
  if not pg then error('ZeroOptimizer: no process group; call efla.distributed.init() first', 2) end
  local self = setmetatable({ inner = inner, pg = pg, owner = {} }, Zero)
  local load = {}
  for r = 0, pg.world_size - 1 do load[r] = 0 end
  for _, e in ipairs(inner:each()) do
    local i, p = e[1], e[2]
    local best = 0
    for r = 1, pg.world_size - 1 do if load[r] < load[best] then best = r end end
    self.owner[i] = best
    load[best] = load[best] + p:numel()
  end
  return self
end

--- zero:owns(i) -> true when this rank holds parameter i's state (i: position in group order).
function Zero:owns(i) return self.owner[i] == self.pg.rank end

--- zero:step(): the owned parameters' update, then every parameter from its owner.
function Zero:step()
  local inner = self.inner
  efla.no_grad(function()
    for _, e in ipairs(inner:each()) do
      local i, p, g = e[1], e[2], e[3]
      local grad = p.grad
      if grad and self:owns(i) then
        inner.state[i] = inner.state[i] or {}
        inner:update(p, grad, inner.state[i], g)
      end
    end
    for _, e in ipairs(inner:each()) do self.pg:broadcast(e[2], self.owner[e[1]]) end
  end)
end

function Zero:zero_grad() return self.inner:zero_grad() end
function Zero:set_lr(lr) return self.inner:set_lr(lr) end
function Zero:get_lr() return self.inner:get_lr() end
function Zero:each() return self.inner:each() end

--- zero:state_dict() -> the full (unsharded) state; a collective: every rank must call it.
function Zero:state_dict()
  local inner = self.inner
  local mine = inner:state_dict()
  local full = { param_groups = mine.param_groups, state = {} }
  if not self.pg.star and self.pg.world_size > 1 then
    error('ZeroOptimizer:state_dict: needs the TCP rendezvous (init_method tcp://, the default), not a file one', 2)
  end
  efla.no_grad(function()
    for _, e in ipairs(inner:each()) do
      local i, p = e[1], e[2]
      local owner = self.owner[i]
      local s = mine.state[tostring(i)]
      -- the owner says which buffers exist (an empty state: the parameter never had a gradient)
      local names = {}
      if s then for k, v in pairs(s) do names[#names + 1] = k .. (efla.is_tensor(v) and '=t' or '=' .. tostring(v)) end end
      table.sort(names)
      local list = self.pg.world_size == 1 and table.concat(names, '\n')
        or self.pg.star:bcast(self.pg.rank == owner and table.concat(names, '\n') or nil, owner)
      if list ~= '' then
        local out = {}
        for item in list:gmatch('[^\n]+') do
          local k, v = item:match('^(.-)=(.*)$')
          if v == 't' then
            local o = { dtype = p:dtype() == 'bfloat16' and 'float32' or p:dtype(), device = p:device() }
            local t = (self.pg.rank == owner) and s[k]:to(p:device()):contiguous() or efla.zeros(p:size(), o)
            out[k] = self.pg:broadcast(t, owner):cpu()
          else
            out[k] = tonumber(v) or v
          end
        end
        full.state[tostring(i)] = out
      end
    end
  end)
  return full
end

--- zero:load_state_dict(sd): loads a full state (from a sharded or a plain run) and keeps the owned part.
function Zero:load_state_dict(sd)
  self.inner:load_state_dict(sd)
  for i in pairs(self.inner.state) do
    if not self:owns(i) then self.inner.state[i] = nil end
  end
end

return M
