-- tasks/precision.lua: the --compute option the training recipes share (lm, smnist and its
-- sweeps, mad): mixed precision by default on a GPU, float32 on the CPU.
--
--   local precision = require 'efla.tasks.precision'
--   spec[#spec + 1] = precision.option()                 -- --compute auto|bfloat16|float32
--   local compute = precision.resolve(args.compute, device, precision.recorded(args.resume))
--   precision.apply(model, compute)                       -- after model:to(device)
--
-- Mixed precision is Module:set_compute_dtype: parameters, gradients and the optimiser state
-- stay float32 (the master weights), activations and matmuls run in bfloat16, and the loss
-- is float32. Training code records the resolved dtype (checkpoint meta.compute, results), so
-- a checkpoint says how it was trained.
local precision = {}

--- The --compute choices; 'auto' = bfloat16 on a GPU, float32 on the CPU.
precision.CHOICES = { 'auto', 'bfloat16', 'float32' }

--- option() -> the --compute option spec (a fresh table) for efla.args.parse.
function precision.option()
  return { '--compute', default = 'auto', choices = { unpack(precision.CHOICES) },
    help = 'compute dtype: mixed precision (bfloat16 activations and matmuls, float32 master weights, optimiser state and loss) or float32; auto = bfloat16 on a GPU, float32 on the CPU' }
end

local function is_gpu(device)
  return type(device) == 'string' and device ~= 'cpu' and device ~= ''
end

--- compute_dtype(choice, device) -> 'bfloat16' or 'float32': the --compute option, where auto
--- (or nil) means mixed precision on a GPU ('cuda', 'cuda:1') and float32 on the CPU (or no
--- device given), whose bfloat16 is storage only. An explicit choice passes through; anything
--- else is an error naming the choices.
function precision.compute_dtype(choice, device)
  if choice == nil or choice == 'auto' then return is_gpu(device) and 'bfloat16' or 'float32' end
  if choice == 'bfloat16' or choice == 'float32' then return choice end
  error(string.format("--compute must be auto, bfloat16 or float32, got '%s'", tostring(choice)), 0)
end

--- recorded(path) -> the compute dtype a checkpoint was trained in (its meta.compute), or nil
--- (no path, a checkpoint from before it was recorded, or a file that cannot be read: the
--- resume itself then reports that). Reads the metadata only.
function precision.recorded(path)
  if type(path) ~= 'string' or path == '' then return nil end
  local ok, info = pcall(require('efla.checkpoint').info, path)
  if not ok or type(info) ~= 'table' or type(info.meta) ~= 'table' then return nil end
  local c = info.meta.compute
  if c == 'bfloat16' or c == 'float32' then return c end
  return nil
end

--- resolve(choice, device [, recorded]) -> dtype, source: compute_dtype, except that auto (or
--- nil) on a resumed run keeps the dtype the checkpoint recorded. source says which rule
--- decided: 'given' (an explicit choice), 'checkpoint' or 'auto'.
function precision.resolve(choice, device, recorded)
  if choice ~= nil and choice ~= 'auto' then return precision.compute_dtype(choice, device), 'given' end
  if recorded == 'bfloat16' or recorded == 'float32' then return recorded, 'checkpoint' end
  return precision.compute_dtype(choice, device), 'auto'
end

--- apply(model, dtype) -> model: set_compute_dtype(dtype) unless dtype is float32 (then the
--- model is left as it is: plain float32).
function precision.apply(model, dtype)
  if dtype ~= nil and dtype ~= 'float32' then model:set_compute_dtype(dtype) end
  return model
end

--- note(what, dtype, source, recorded) -> a line for stderr when a resumed run's dtype differs
--- from the checkpoint's or came from it; nil otherwise.
function precision.note(what, dtype, source, recorded)
  if source == 'checkpoint' then
    return string.format('%s: compute %s, as the checkpoint was trained (--compute auto on a resume keeps it)', what, dtype)
  end
  if recorded and recorded ~= dtype then
    return string.format('%s: compute %s, the checkpoint was trained in %s', what, dtype, recorded)
  end
  return nil
end

return precision
