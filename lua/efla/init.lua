-- efla/init.lua: `local efla = require 'efla'` returns this table (efla sets no globals).
--
-- It gathers the tensor functions (efla/tensor.lua), autograd (efla/autograd.lua) and
-- help; submodules such as efla.nn or efla.optim load on first use (efla.nn is
-- require 'efla.nn'). Every tensor method is also a function: efla.tanh(x) == x:tanh().
local tensor = require 'efla.tensor'
local autograd = require 'efla.autograd'
local binding = require 'efla._binding'
local cuda = require 'efla.cuda'

local efla = {}

-- module-level tensor functions (creation, random numbers, library settings...)
local internal_names = {
  wrap = true, wrap_or_nil = true, adopt_borrowed = true, to_tensor = true, parse_dtype = true,
  parse_device = true, device_name = true, shape_table = true, cdim = true,
  register_methods = true, register_properties = true, property_names = true,
}
for k, v in pairs(tensor) do
  if type(v) == 'function' and not internal_names[k] and not k:match('^_') then efla[k] = v end
end
efla.Size = tensor.Size
efla.dtypes = tensor.dtypes

-- every method as a function: efla.matmul(a, b), efla.sum(x, 2), ... (except where a
-- submodule has that name: efla.data is the data module, x:data() stays a method)
for k, v in pairs(tensor.T) do
  if efla[k] == nil and not package.searchpath('efla.' .. k, package.path) then efla[k] = tensor.first_arg_checked(k, v) end
end

--- efla.Tensor: the table of tensor methods; add a function here to add a method.
efla.Tensor = tensor.T

-- autograd
efla.autograd = {
  Function = autograd.Function, gradcheck = autograd.gradcheck, no_grad = autograd.no_grad, enable_grad = autograd.enable_grad,
  set_grad_enabled = autograd.set_grad_enabled, is_grad_enabled = autograd.is_grad_enabled,
  saved_memory = autograd.saved_memory,
}
efla.autograd.__doc = 'efla.autograd: Function{forward=, backward=} (a differentiable function written in Lua), gradcheck(f, inputs), no_grad(fn), enable_grad(fn), set_grad_enabled(flag), is_grad_enabled(), saved_memory(t) (what the graph keeps for backward, per op).'
efla.no_grad = autograd.no_grad
efla.enable_grad = autograd.enable_grad
efla.set_grad_enabled = autograd.set_grad_enabled
efla.is_grad_enabled = autograd.is_grad_enabled
efla.zero_grad = autograd.zero_grad
efla.gradcheck = autograd.gradcheck
efla.set_gc_callback = autograd.set_gc_callback

--- efla.set_debug_checks(on): NaN/Inf checks in efla.ops.delta_rule (names the first batch, token, head).
efla.set_debug_checks = function(on) return require('efla.ops').set_debug_checks(on) end

--- efla.supports(device, kernel, dtype) -> whether that device ('cpu', 'cuda', 'cuda:N' or a
--- tensor) has the backend kernel (a row of core/backend_ops.h: 'softmax', 'delta_rule_fwd',
--- 'swiglu', ...) for that dtype: efla.supports('cpu', 'delta_rule_fwd', 'bfloat16') is false.
--- efla.supports() -> the list of kernel names.
local supports_answers = {}   -- the op list is fixed at build time: ask C once per question
function efla.supports(device, kernel, dtype)
  local lib = binding.lib
  if device == nil then
    local names = {}
    for i = 0, lib.efla_backend_op_count() - 1 do names[#names + 1] = binding.ffi.string(lib.efla_backend_op_name(i)) end
    return names
  end
  local kind = binding.parse_device(device) == lib.EFLA_DEVICE_CPU and 0 or 1
  if type(kernel) ~= 'string' then binding.raise('supports: kernel must be a name such as "softmax", got ' .. type(kernel)) end
  local dt = binding.parse_dtype(dtype or 'float32')
  local key = kind .. ' ' .. kernel .. ' ' .. tonumber(dt)
  local answer = supports_answers[key]
  if answer == nil then
    answer = binding.check(lib.efla_backend_supports(kind, kernel, dt)) == 1
    supports_answers[key] = answer
  end
  return answer
end

--- efla.help([x]): an overview, or the documentation of a function, module or tensor.
function efla.help(x) return require('efla.help').help(x) end

-- Devices (efla/cuda.lua) under their older flat names too
efla.cuda = cuda
efla.has_cuda = cuda.has_backend
efla.device_count = cuda.count_devices
efla.synchronize = cuda.synchronize
efla.cuda_memory_stats = cuda.memory_stats
efla.cuda_empty_cache = cuda.empty_cache
efla.cuda_reset_peak = cuda.reset_peak
efla.cuda_set_tf32 = cuda.set_tf32

-- The fused AdamW step (efla/optim/adamw_step.lua), as before
efla.adamw_step_ = require 'efla.optim.adamw_step'

-- For user bindings of further C functions: the private binding table that efla's own
-- modules require as 'efla._binding' (FFI library, error and tensor-ownership helpers).
efla.internal = binding

-- The CUDA allocator asks Lua for a collection before it gives up on an allocation.
if efla.has_cuda() and efla.device_count('cuda') > 0 then autograd.set_gc_callback(true) end

-- efla.nn, efla.optim, ...: loaded on first use from lua/efla/<name>.lua or <name>/init.lua
local not_submodules = { ffi = true, cdef = true, cli = true, repl = true, init = true, _binding = true }
setmetatable(efla, {
  __index = function(t, k)
    if type(k) ~= 'string' or not_submodules[k] or not k:match('^[%w_]+$') then return nil end
    if not package.searchpath('efla.' .. k, package.path) then return nil end
    local m = require('efla.' .. k)
    rawset(t, k, m)
    return m
  end,
})

-- cumsum, sort, topk, multinomial, einsum, pad, softplus, log_sigmoid, conv1d (efla/ops_extra.lua)
package.loaded.efla = efla
require('efla.ops_extra').install(efla)

return efla
