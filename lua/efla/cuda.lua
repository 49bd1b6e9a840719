-- cuda.lua: efla.cuda, the CUDA device API in one place.
--   efla.cuda.is_available()        a CUDA backend and at least one device
--   efla.cuda.device_count()
--   efla.cuda.properties([dev])     {name, total_memory, multiprocessors, compute_capability}
--   efla.cuda.synchronize([dev])    wait for the device's queued work
--   efla.cuda.memory_stats([dev])   {live_bytes, peak_bytes, cached_bytes, num_allocs, ...}
--   efla.cuda.empty_cache([dev]), efla.cuda.reset_peak([dev]), efla.cuda.set_tf32(bool)
-- dev is 'cuda', 'cuda:N' or a device number; the default is cuda:0. All work of a device
-- runs on its default stream, in order.
local efla = require 'efla'
local I = efla.internal
local ffi, lib = I.ffi, I.lib

local cuda = {}

--- cuda.is_available() -> true when efla has a CUDA backend and sees at least one device.
function cuda.is_available() return efla.has_cuda() and efla.device_count('cuda') > 0 end
--- cuda.device_count() -> the number of CUDA devices (0 without a GPU).
function cuda.device_count() return efla.device_count('cuda') end
--- cuda.synchronize([dev='cuda']): waits until the device has finished its queued work.
function cuda.synchronize(dev) return efla.synchronize(dev or 'cuda') end
cuda.memory_stats = efla.cuda_memory_stats
cuda.empty_cache = efla.cuda_empty_cache
cuda.reset_peak = efla.cuda_reset_peak
cuda.set_tf32 = efla.cuda_set_tf32

--- cuda.properties([dev]) -> {name, total_memory, multiprocessors, compute_capability}.
function cuda.properties(dev)
  local p = ffi.new('efla_device_props')
  if lib.efla_cuda_device_props(I.parse_device(dev or 'cuda'), p) < 0 then I.raise(I.last_error()) end
  return { name = ffi.string(p.name), total_memory = tonumber(p.total_memory),
    multiprocessors = p.multiprocessors, compute_capability = p.cc_major .. '.' .. p.cc_minor }
end

return cuda
