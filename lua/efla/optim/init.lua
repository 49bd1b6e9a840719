-- efla.optim: optimisers, gradient clipping, learning-rate schedules, parameter groups.
local efla = require 'efla'
local optim = {}
optim.Optimizer = require 'efla.optim.optimizer'
optim.SGD = require 'efla.optim.sgd'
local adam = require 'efla.optim.adam'
optim.Adam, optim.AdamW = adam.Adam, adam.AdamW
optim.schedule = require 'efla.optim.schedule'
local foreach = require 'efla.foreach'

-- a module, a list of tensors or a list of parameter groups -> a flat list of tensors
local function flat_params(params, fn)
  if type(params) == 'table' and type(params.parameters) == 'function' then return params:parameters() end
  if type(params) ~= 'table' then error(fn .. ': expected a module, a list of tensors or parameter groups, got ' .. type(params), 3) end
  if params[1] ~= nil and not efla.is_tensor(params[1]) and type(params[1]) == 'table' and params[1].params then
    local out = {}
    for _, g in ipairs(params) do for _, p in ipairs(g.params) do out[#out + 1] = p end end
    return out
  end
  return params
end

-- The gradients of params that have one.
local function grads_of(params)
  local grads = {}
  for _, p in ipairs(params) do
    local g = p.grad
    if g then grads[#grads + 1] = g end
  end
  return grads
end

-- true when the multi-tensor kernels take the list: one device, contiguous, floating
local function foreach_ok(grads)
  local dev = grads[1]:device()
  for _, g in ipairs(grads) do
    if g:device() ~= dev or not g:is_contiguous() or not g:is_floating_point() then return false end
  end
  return true
end

-- The global gradient norm as a 0-d float64 tensor on the gradients' device (nil without
-- gradients), and the gradients. On one device: one multi-tensor sum of squares (a few
-- launches for any number of gradients) and a sqrt. Otherwise (mixed devices, strided or
-- integer gradients): one norm per gradient, moved to the first one's device, then a stack.
local function global_norm(params, use_foreach)
  local grads = grads_of(params)
  if #grads == 0 then return nil, grads end
  if use_foreach and foreach_ok(grads) then
    return efla.no_grad(function() return foreach.sum_squares(grads):sqrt() end), grads, true
  end
  local norms = {}
  efla.no_grad(function()
    for _, g in ipairs(grads) do
      local n = g:norm()
      if #norms > 0 and n:device() ~= norms[1]:device() then n = n:to(norms[1]:device()) end
      norms[#norms + 1] = n:double()
    end
  end)
  local total = efla.no_grad(function() return efla.stack(norms):square():sum():sqrt() end)
  return total, grads, false
end

local function check_max_norm(max_norm, fn)
  if max_norm ~= nil and (type(max_norm) ~= 'number' or not (max_norm > 0)) then
    error(fn .. ': max_norm must be a number > 0, got ' .. tostring(max_norm), 3)
  end
end

--- clip_grad_norm_(params, max_norm) -> the global L2 norm of all gradients before clipping,
--- as a 0-d float64 tensor on the gradients' device, without waiting for the device: the
--- norm (one multi-tensor sum of squares, efla.foreach), the factor min(1, max_norm /
--- (norm + 1e-6)) and the scaling (one multi-tensor scale) all run there. A
--- non-finite norm leaves the gradients alone (the factor is 1); read the norm (:item())
--- when you want to log it or skip such a step. The GPU training loop's choice.
--- opts.foreach = false: one norm and one scaling per gradient instead (the path taken anyway
--- for gradients on several devices, strided or not floating; a baseline for benchmarks).
function optim.clip_grad_norm_(params, max_norm, opts)
  params = flat_params(params, 'clip_grad_norm_')
  check_max_norm(max_norm, 'clip_grad_norm_')
  if opts ~= nil and type(opts) ~= 'table' then error('clip_grad_norm_: opts must be a table ({foreach = false}), got ' .. type(opts), 2) end
  local total, grads, one_list = global_norm(params, not (opts and opts.foreach == false))
  if not total then return efla.zeros({}, { dtype = 'float64' }) end
  if max_norm then
    efla.no_grad(function()
      local coef = (total + 1e-6):reciprocal():mul(max_norm):clamp(-math.huge, 1)
      coef = efla.where(total:lt(math.huge), coef, efla.ones({}, { dtype = 'float64', device = total:device() }))
      if one_list then foreach.scale_(grads, coef); return end
      local by_dtype = {}
      for _, g in ipairs(grads) do
        local dt = g:dtype()
        by_dtype[dt] = by_dtype[dt] or coef:to(dt)
        g:mul_(by_dtype[dt])
      end
    end)
  end
  return total
end

--- clip_grad_norm(params, max_norm) -> the global L2 norm of all gradients, before
--- clipping, as a number (reading it waits for the device once; clip_grad_norm_ does not).
--- When it exceeds max_norm every gradient is scaled in place by max_norm / (norm + 1e-6).
--- A non-finite norm is returned as it is and the gradients are left alone, so that the
--- caller can skip the step.
function optim.clip_grad_norm(params, max_norm)
  params = flat_params(params, 'clip_grad_norm')
  check_max_norm(max_norm, 'clip_grad_norm')
  return optim.clip_grad_norm_(params, max_norm):item()
end

--- param_groups(model, {weight_decay = 0.01, no_decay = fn(name, p) -> bool}) -> two
--- groups: {params = weights that decay, weight_decay = wd, names = {...}} and
--- {params = biases, norm weights and other < 2-d parameters, weight_decay = 0, names}
--- (the usual AdamW practice). Empty groups are left out.
function optim.param_groups(model, opts)
  if type(model) ~= 'table' or type(model.named_parameters) ~= 'function' then
    error('param_groups(model, opts): expected an nn module', 2)
  end
  opts = opts or {}
  local no_decay_fn = opts.no_decay or function(name, p)
    return p:dim() < 2 or name:match('norm[^.]*%.[^.]+$') ~= nil or name:match('bias$') ~= nil
  end
  local decay, no_decay, decay_names, no_decay_names = {}, {}, {}, {}
  for _, np in ipairs(model:named_parameters()) do
    local name, p = np[1], np[2]
    if no_decay_fn(name, p) then
      no_decay[#no_decay + 1], no_decay_names[#no_decay_names + 1] = p, name
    else
      decay[#decay + 1], decay_names[#decay_names + 1] = p, name
    end
  end
  local groups = {}
  if #decay > 0 then groups[#groups + 1] = { params = decay, weight_decay = opts.weight_decay or 0.01, names = decay_names } end
  if #no_decay > 0 then groups[#groups + 1] = { params = no_decay, weight_decay = 0, names = no_decay_names } end
  return groups
end

optim.__doc = [[
efla.optim: SGD(params, {lr, momentum, dampening, weight_decay, nesterov}),
  Adam(params, {lr, betas, eps, weight_decay}), AdamW(... weight_decay = 0.01, decoupled);
  params: a module, a list of tensors, or groups {{params = {...}, weight_decay = 0}, ...}
  (optim.param_groups(model, {weight_decay}) splits off biases and norms).
  opt:zero_grad(), opt:step(), opt:set_lr(lr), opt:state_dict(), opt:load_state_dict(sd).
  optim.clip_grad_norm(params, max_norm) -> the norm before clipping (a number);
  optim.clip_grad_norm_(params, max_norm) -> the same as a device tensor, no host wait.
  Gradient accumulation: backward() adds into .grad, so for k micro-batches call
  (loss / k):backward() k times, then clip, opt:step(), opt:zero_grad().
  optim.schedule.Constant{lr}, WarmupCosine{lr, total_steps, warmup_steps, min_lr},
  Step{lr, step_size, gamma}: sched:step(opt) before each opt:step(); sched:state_dict().]]

return optim
