-- efla/foreach.lua: multi-tensor ops (core/ops_foreach.c), one kernel call over a whole list
-- of tensors instead of one per tensor; what optim.clip_grad_norm_ runs on the gradients.
-- The lists hold contiguous floating tensors on one device (dtypes and sizes may differ);
-- neither op records a gradient. adamw_ is AdamW over lists (what optim.AdamW's step runs).
local binding = require 'efla._binding'
local ffi, lib = binding.ffi, binding.lib

local M = {}
local ptrarr = ffi.typeof('efla_tensor *[?]')

-- a Lua list of tensors -> n, a C array of their pointers (kept alive by the list)
local function c_list(list, op)
  if type(list) ~= 'table' or binding.is_tensor(list) then
    binding.raise(op .. ': expected a list (table) of tensors, got ' .. (binding.is_tensor(list) and 'a tensor' or type(list)))
  end
  local n = #list
  local arr = ptrarr(math.max(n, 1))
  for i = 1, n do arr[i - 1] = binding.need_tensor(list[i], op, 'element ' .. i).ptr end
  return n, arr
end

--- efla.foreach.sum_squares(tensors) -> the sum of x^2 over every element of every tensor
--- of the list, as a 0-d float64 tensor on their device (no host wait), accumulated in
--- double in a fixed order: the same result on every run. An empty list gives 0 (cpu).
--- Contiguous floating tensors on one device; records no gradient.
function M.sum_squares(list)
  local n, arr = c_list(list, 'foreach.sum_squares')
  return binding.wrap(lib.efla_foreach_sum_squares(n, arr))
end

--- efla.foreach.scale_(tensors, coef): multiplies every tensor of the list in place by coef
--- (a one-element tensor on their device, read there, or a number), each in its own dtype;
--- returns the list. Contiguous floating tensors on one device, each listed once.
function M.scale_(list, coef)
  local n, arr = c_list(list, 'foreach.scale_')
  if type(coef) == 'number' then
    local efla = require 'efla'
    coef = efla.full({}, coef, { dtype = 'float64', device = n > 0 and list[1]:device() or 'cpu' })
  end
  binding.check(lib.efla_foreach_scale_(n, arr, binding.need_tensor(coef, 'foreach.scale_', 'coef').ptr))
  return list
end

--- efla.foreach.adamw_(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, step):
--- efla.adamw_step_ on every (params[i], grads[i], ms[i], vs[i]) in a few kernel launches,
--- the same result bit for bit; one step count (from 1) for the whole list. The four lists
--- have one length; every tensor is contiguous and on one device; grads have their
--- parameter's dtype, m and v the parameter's dtype or float32. Returns params. Errors
--- name the tensor by its index from 0.
function M.adamw_(params, grads, ms, vs, lr, b1, b2, eps, wd, step)
  local op = 'foreach.adamw_'
  local n, pa = c_list(params, op)
  local lists = { { 'grads', grads }, { 'ms', ms }, { 'vs', vs } }
  local arrs = {}
  for k, e in ipairs(lists) do
    local m, arr = c_list(e[2], op)
    if m ~= n then binding.raise(string.format('%s: %d params but %d %s; the four lists must have one length', op, n, m, e[1])) end
    arrs[k] = arr
  end
  local nums = { lr, b1, b2, eps, wd, step }
  for k = 1, 6 do
    local x = nums[k]
    if type(x) ~= 'number' then
      binding.raise(string.format('%s: %s must be a number, got %s', op,
        ({ 'lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'step' })[k], type(x)))
    end
  end
  binding.check(lib.efla_foreach_adamw_(n, pa, ffi.cast('const efla_tensor *const *', arrs[1]), arrs[2], arrs[3],
    lr, b1, b2, eps, wd, step))
  return params
end

return M
