-- cuda.lua: efla.cuda, the CUDA device API in one place.
--   efla.cuda.is_available()        a CUDA backend and at least one device
--   efla.cuda.device_count()
--   efla.cuda.properties([dev])     {name, total_memory, multiprocessors, compute_capability}
--   efla.cuda.synchronize([dev])    wait for the device's queued work
--   efla.cuda.memory_stats([dev])   {live_bytes, peak_bytes, cached_bytes, num_allocs, ...}
--   efla.cuda.empty_cache([dev]), efla.cuda.reset_peak([dev]), efla.cuda.set_tf32(bool)
-- dev is 'cuda', 'cuda:N' or a device number; the default is cuda:0. All work of a device
-- runs on its default stream, in order. init.lua also offers the older flat names
-- (efla.has_cuda, efla.device_count, efla.synchronize, efla.cuda_memory_stats, ...).
local efla_ffi = require 'efla.ffi'
local tensor = require 'efla.tensor'
local ffi, lib, check = efla_ffi.ffi, efla_ffi.lib, efla_ffi.check
local parse_device = tensor.parse_device

local cuda = {}

--- efla.has_cuda(): true when the CUDA backend is built in.
function cuda.has_backend() return lib.efla_has_backend(lib.EFLA_DEVICE_CUDA0) == 1 end

--- efla.device_count('cuda'): number of CUDA devices (0 without a GPU).
function cuda.count_devices(kind)
  if kind ~= nil and kind ~= 'cuda' then efla_ffi.raise("device_count: only 'cuda' devices are counted") end
  return math.max(0, lib.efla_device_count(lib.EFLA_DEVICE_CUDA0))
end

--- cuda.is_available() -> true when efla has a CUDA backend and sees at least one device.
function cuda.is_available() return cuda.has_backend() and cuda.count_devices() > 0 end
--- cuda.device_count() -> the number of CUDA devices (0 without a GPU).
function cuda.device_count() return cuda.count_devices() end

--- cuda.synchronize([dev='cuda']): waits until the device has finished its queued work.
function cuda.synchronize(dev) check(lib.efla_synchronize(parse_device(dev or 'cuda'))) end

--- cuda.memory_stats([dev='cuda']) -> {live_bytes=, peak_bytes=, cached_bytes=, num_allocs=, num_cache_hits=, num_ooms=}
function cuda.memory_stats(dev)
  local st = ffi.new('efla_memory_stats')
  check(lib.efla_cuda_memory_stats(parse_device(dev or 'cuda'), st))
  return { live_bytes = tonumber(st.live_bytes), peak_bytes = tonumber(st.peak_bytes),
    cached_bytes = tonumber(st.cached_bytes), num_allocs = tonumber(st.num_allocs),
    num_cache_hits = tonumber(st.num_cache_hits), num_ooms = tonumber(st.num_ooms) }
end
--- cuda.empty_cache([dev='cuda']): gives the allocator's cached free blocks back to the driver.
function cuda.empty_cache(dev) check(lib.efla_cuda_empty_cache(parse_device(dev or 'cuda'))) end
--- cuda.reset_peak([dev='cuda']): restarts the peak-memory statistic.
function cuda.reset_peak(dev) check(lib.efla_cuda_reset_peak(parse_device(dev or 'cuda'))) end
--- cuda.set_tf32(flag): TF32 tensor cores for float32 matmuls (true/false, or 1/0: in Lua
--- 0 is true, so numbers are compared); returns the previous setting.
function cuda.set_tf32(flag)
  local on = flag == true or (type(flag) == 'number' and flag ~= 0)
  return check(lib.efla_cuda_set_tf32(on and 1 or 0)) == 1
end

--- cuda.properties([dev]) -> {name, total_memory, multiprocessors, compute_capability}.
function cuda.properties(dev)
  local p = ffi.new('efla_device_props')
  check(lib.efla_cuda_device_props(parse_device(dev or 'cuda'), p))
  return { name = ffi.string(p.name), total_memory = tonumber(p.total_memory),
    multiprocessors = p.multiprocessors, compute_capability = p.cc_major .. '.' .. p.cc_minor }
end

return cuda
