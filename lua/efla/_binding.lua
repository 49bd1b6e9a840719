-- efla/_binding.lua: the private binding that efla's own Lua modules use to call libefla
-- (require 'efla._binding', never through the public efla table): the FFI library and
-- its types, how a failed call becomes a Lua error, and the tensor ownership and argument
-- helpers. Its fields can change between versions; user code that binds further C
-- functions can reach the same table as efla.internal.
local efla_ffi = require 'efla.ffi'
local tensor = require 'efla.tensor'

return {
  -- the FFI and errors (efla/ffi.lua)
  ffi = efla_ffi.ffi, lib = efla_ffi.lib, raise = efla_ffi.raise, check = efla_ffi.check,
  checkp = efla_ffi.checkp, last_error = efla_ffi.last_error,
  -- tensors (efla/tensor.lua): wrap(ptr) takes over a new C reference
  wrap = tensor.wrap, wrap_or_nil = tensor.wrap_or_nil, adopt_borrowed = tensor.adopt_borrowed,
  Tensor = tensor.Tensor, is_tensor = tensor.is_tensor, to_tensor = tensor.to_tensor,
  need_tensor = tensor.need_tensor, parse_dtype = tensor.parse_dtype, parse_device = tensor.parse_device,
  device_name = tensor.device_name, dtype_names = tensor.dtype_names, shape_table = tensor.shape_table,
  cdim = tensor.cdim, c_index = tensor._c_index,
}
