-- efla/optim/adamw_step.lua: the fused AdamW kernel of libefla (efla_adamw_step_) as one
-- Lua function. optim.Adam/AdamW call it per parameter; it is also efla.adamw_step_.
local efla_ffi = require 'efla.ffi'
local tensor = require 'efla.tensor'
local lib, check = efla_ffi.lib, efla_ffi.check
local need_tensor = tensor.need_tensor

--- efla.adamw_step_(p, grad, m, v, lr, beta1, beta2, eps, weight_decay, step): one AdamW
--- update of p (and its moments m, v) in place; step counts from 1.
local function adamw_step_(p, g, m, v, lr, b1, b2, eps, wd, step)
  need_tensor(p, 'adamw_step_', 'the parameter')
  check(lib.efla_adamw_step_(p.ptr, need_tensor(g, 'adamw_step_', 'grad').ptr, need_tensor(m, 'adamw_step_', 'm').ptr,
    need_tensor(v, 'adamw_step_', 'v').ptr, lr, b1, b2, eps, wd or 0, step))
  return p
end

return adamw_step_
