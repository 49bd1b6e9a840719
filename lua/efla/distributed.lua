-- efla.distributed: several processes (one per GPU, or CPU ranks) training one model.
--
--   local dist = require 'efla.distributed'
--   local pg = dist.init()                 -- from RANK/WORLD_SIZE/... (set by scripts/efla-run)
--   pg:all_reduce(t, 'avg')                -- in place; also broadcast, all_gather, reduce_scatter, barrier
--   local dp = dist.DataParallel(model)    -- gradients averaged in buckets during the backward
--
-- Two transports behind one interface: 'nccl' for CUDA tensors (libnccl.so.2 opened at run
-- time by libefla) and 'tcp', a star through rank 0 over lua-posix sockets for CPU tensors
-- (and a fallback for anything). Both rendezvous over TCP at MASTER_ADDR:MASTER_PORT (rank 0
-- listens; the NCCL unique id travels with the reply), or through a shared file
-- (init_method = 'file:///shared/path') for NCCL. docs/DISTRIBUTED.md has the whole story.
local efla = require 'efla'
local binding = require 'efla._binding'
local tcp = require 'efla.distributed.tcp'

local dist = {}
local default_group

local function env_int(names)
  for _, n in ipairs(names) do
    local v = os.getenv(n)
    if v and v ~= '' then
      local x = tonumber(v)
      if not x or x ~= math.floor(x) or x < 0 then
        error(string.format('distributed: %s=%q is not a whole number >= 0', n, v), 0)
      end
      return x, n
    end
  end
end

--- dist.env() -> {rank, world_size, local_rank, local_world_size, master_addr, master_port}
--- from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
--- MASTER_PORT) or Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
--- SLURM_NTASKS_PER_NODE; MASTER_ADDR still comes from the environment, defaulting to
--- 127.0.0.1); nil when neither is set (a plain single process).
function dist.env()
  local rank = env_int({ 'RANK', 'SLURM_PROCID' })
  local world = env_int({ 'WORLD_SIZE', 'SLURM_NTASKS' })
  if rank == nil and world == nil then return nil end
  rank, world = rank or 0, world or 1
  if world < 1 then error('distributed: WORLD_SIZE must be >= 1', 0) end
  if rank >= world then
    error(string.format('distributed: rank %d is outside a world of size %d (RANK must lie in 0..WORLD_SIZE-1)', rank, world), 0)
  end
  local local_rank = env_int({ 'LOCAL_RANK', 'SLURM_LOCALID' }) or 0
  local local_world = env_int({ 'LOCAL_WORLD_SIZE' }) or tonumber((os.getenv('SLURM_NTASKS_PER_NODE') or ''):match('^%d+')) or world
  return { rank = rank, world_size = world, local_rank = local_rank, local_world_size = local_world,
    master_addr = os.getenv('MASTER_ADDR') or '127.0.0.1', master_port = env_int({ 'MASTER_PORT' }) or 29500 }
end

-- ---- shared-file rendezvous (NCCL id only) -------------------------------------------------------------

local function file_rendezvous(path, rank, world, timeout, payload)
  local data = require 'efla.data'
  local wall = require('efla.progress').wall
  local function nanosleep(t) return require('posix.time').nanosleep(t) end
  local function write(name, s)
    local tmp = name .. '.tmp' .. rank
    local f = assert(io.open(tmp, 'wb')); f:write(s); f:close()
    assert(os.rename(tmp, name))
  end
  local function read(name) local f = io.open(name, 'rb'); if not f then return nil end local s = f:read('*a'); f:close(); return s end
  local deadline = wall() + timeout
  if rank == 0 then
    write(path .. '.id', payload)
    while true do
      local missing = {}
      for r = 1, world - 1 do if not data.exists(path .. '.rank' .. r) then missing[#missing + 1] = tostring(r) end end
      if #missing == 0 then break end
      if wall() > deadline then
        error(string.format('distributed: file rendezvous %s timed out after %g s: rank(s) %s of %d never arrived', path, timeout,
          table.concat(missing, ', '), world), 0)
      end
      nanosleep({ tv_sec = 0, tv_nsec = 50000000 })
    end
    for r = 1, world - 1 do os.remove(path .. '.rank' .. r) end
    os.remove(path .. '.id')
    return payload
  end
  while true do
    local id = read(path .. '.id')
    if id and #id == #payload then write(path .. '.rank' .. rank, 'here'); return id end
    if wall() > deadline then
      error(string.format('distributed: file rendezvous %s timed out after %g s: rank 0 never wrote %s.id (is it running, on the same shared file system?)',
        path, timeout, path), 0)
    end
    nanosleep({ tv_sec = 0, tv_nsec = 50000000 })
  end
end

-- ---- process groups ---------------------------------------------------------------------------------------

local Group = {}
Group.__index = Group

local function check_op(op)
  if op == nil or op == 'sum' then return false end
  if op == 'avg' or op == 'mean' then return true end
  error("distributed: op must be 'sum' or 'avg', got " .. tostring(op), 3)
end

local function check_tensor(t, what)
  if not efla.is_tensor(t) then error(string.format('distributed.%s: expected a tensor, got %s', what, type(t)), 3) end
end

--- pg:all_reduce(t [, op = 'sum'|'avg' [, {async = true}]]) -> t: every rank's t becomes the
--- sum (or mean) over ranks. NCCL: t must be a contiguous tensor on pg.device; async leaves the
--- work queued until pg:wait().
function Group:all_reduce(t, op, opts)
  check_tensor(t, 'all_reduce')
  local avg = check_op(op)
  if self.nccl then
    binding.check(binding.lib.efla_nccl_all_reduce(self.nccl, t.ptr, avg and 1 or 0))
    if not (opts and opts.async) then self:wait() end
  else
    self.star:all_reduce(t, avg)
  end
  return t
end

--- pg:broadcast(t [, root = 0]) -> t: rank root's values on every rank (0-based root).
function Group:broadcast(t, root)
  check_tensor(t, 'broadcast')
  root = root or 0
  if root < 0 or root >= self.world_size then error(string.format('distributed.broadcast: root %d is not a rank of 0..%d', root, self.world_size - 1), 2) end
  if self.nccl then
    binding.check(binding.lib.efla_nccl_broadcast(self.nccl, t.ptr, root))
    self:wait()
  else
    self.star:broadcast(t, root)
  end
  return t
end

--- pg:all_gather(t) -> a new tensor [world_size, ...t's shape]: row r+1 is rank r's t.
function Group:all_gather(t)
  check_tensor(t, 'all_gather')
  if self.nccl then
    local shape = { self.world_size }
    for _, n in ipairs(t:dim() > 0 and t:size() or {}) do shape[#shape + 1] = n end
    local out = efla.empty(shape, { dtype = t:dtype(), device = t:device() })
    local src = t:contiguous()   -- held in a local: the call must not outlive its tensor
    binding.check(binding.lib.efla_nccl_all_gather(self.nccl, src.ptr, out.ptr))
    self:wait()
    return out
  end
  return self.star:all_gather(t)
end

--- pg:reduce_scatter(t [, op]) -> this rank's part of the reduction: t's first dimension (a
--- multiple of world_size) is cut into world_size equal parts; rank r gets part r+1 of the
--- sum (or mean) over ranks.
function Group:reduce_scatter(t, op)
  check_tensor(t, 'reduce_scatter')
  local avg = check_op(op)
  local n = t:dim() > 0 and t:size(1) or 0
  if n == 0 or n % self.world_size ~= 0 then
    error(string.format('distributed.reduce_scatter: the first dimension (%d) must be a positive multiple of the world size %d', n, self.world_size), 2)
  end
  local part = n / self.world_size
  if self.nccl then
    local shape = t:size(); shape[1] = part
    local out = efla.empty(shape, { dtype = t:dtype(), device = t:device() })
    local src = t:contiguous()
    binding.check(binding.lib.efla_nccl_reduce_scatter(self.nccl, src.ptr, out.ptr, avg and 1 or 0))
    self:wait()
    return out
  end
  local all = self.star:all_reduce(t:clone(), avg)
  return all:narrow(1, self.rank * part + 1, part):clone()
end

--- pg:barrier(): returns when every rank has called it.
function Group:barrier()
  if self.star then self.star:barrier()
  elseif self.nccl then self:all_reduce(efla.zeros({ 1 }, { device = self.device })):item() end
end

--- pg:wait(): NCCL: the default stream waits for the queued collectives (a no-op for tcp).
function Group:wait()
  if self.nccl then binding.check(binding.lib.efla_nccl_wait(self.nccl)) end
end

--- pg:all_numbers(list [, op]) -> the element-wise sum (or mean) of a list of numbers over ranks.
function Group:all_numbers(list, op)
  local avg = check_op(op)
  if self.world_size == 1 then
    local out = {}
    for i, v in ipairs(list) do out[i] = v end
    return out
  end
  if self.star then return self.star:all_numbers(list, avg) end
  local t = efla.tensor(list, { dtype = 'float64' }):to(self.device)
  return self:all_reduce(t, avg and 'avg' or 'sum'):cpu():totable()
end

--- pg:destroy(): closes the connections and the NCCL communicator.
function Group:destroy()
  if self.nccl then binding.lib.efla_nccl_destroy(self.nccl); self.nccl = nil end
  if self.star then self.star:close() end
  if default_group == self then default_group = nil end
end

function Group:__tostring()
  return string.format('efla.distributed group: rank %d of %d (local %d), %s on %s', self.rank, self.world_size,
    self.local_rank, self.backend, self.device)
end

--- dist.init([{backend = 'tcp'|'nccl'|'auto', rank, world_size, local_rank, master_addr,
---   master_port, init_method = 'tcp://ADDR:PORT'|'file:///path', timeout = 120 (seconds, or
---   EFLA_DIST_TIMEOUT), device}]) -> the process group (also the default one).
--- Missing fields come from dist.env(); without any, a world of one. 'auto' picks NCCL when
--- CUDA devices are present, else tcp. NCCL ranks use cuda:<local_rank> unless device is given.
function dist.init(o)
  o = o or {}
  if default_group then error('distributed.init: already initialised (call dist.group():destroy() first)', 2) end
  local e = dist.env() or { rank = 0, world_size = 1, local_rank = 0, local_world_size = 1, master_addr = '127.0.0.1', master_port = 29500 }
  local g = setmetatable({}, Group)
  g.rank, g.world_size = o.rank or e.rank, o.world_size or e.world_size
  g.local_rank = o.local_rank or e.local_rank
  local host, port = o.master_addr or e.master_addr, o.master_port or e.master_port
  local file
  if o.init_method then
    local h, p = o.init_method:match('^tcp://([^:]+):(%d+)$')
    file = o.init_method:match('^file://(/.+)$')
    if h then host, port = h, tonumber(p)
    elseif not file then error("distributed.init: init_method must be 'tcp://ADDR:PORT' or 'file:///absolute/path', got " .. o.init_method, 2) end
  end
  local timeout = o.timeout or tonumber(os.getenv('EFLA_DIST_TIMEOUT') or '') or 120
  local backend = o.backend or os.getenv('EFLA_DIST_BACKEND') or 'auto'
  if backend == 'auto' then
    backend = (efla.has_cuda() and efla.device_count('cuda') > 0 and binding.lib.efla_nccl_available() == 1) and 'nccl' or 'tcp'
  end
  if backend ~= 'tcp' and backend ~= 'nccl' then error("distributed.init: backend must be 'tcp', 'nccl' or 'auto', got " .. tostring(backend), 2) end
  if g.rank < 0 or g.rank >= g.world_size then
    error(string.format('distributed.init: rank %d is outside a world of size %d', g.rank, g.world_size), 2)
  end
  g.backend = backend
  local payload = ''
  local lib, ffi = binding.lib, binding.ffi
  if backend == 'nccl' then
    if lib.efla_nccl_available() ~= 1 then error('distributed.init: ' .. binding.last_error(), 2) end
    g.device = o.device or ('cuda:' .. g.local_rank)
    if g.rank == 0 then
      local id = ffi.new('char[128]')
      binding.check(lib.efla_nccl_unique_id(id))
      payload = ffi.string(id, 128)
    end
  else
    g.device = o.device or 'cpu'
  end
  if file then
    if backend ~= 'nccl' then error('distributed.init: a file:// rendezvous serves NCCL only; the tcp transport needs tcp://ADDR:PORT', 2) end
    payload = file_rendezvous(file, g.rank, g.world_size, timeout, g.rank == 0 and payload or string.rep('\0', 128))
  else
    local links = tcp.rendezvous { rank = g.rank, world = g.world_size, host = host, port = port, timeout = timeout, payload = payload }
    g.star = tcp.Star(links, g.rank, g.world_size, math.max(timeout, tonumber(os.getenv('EFLA_DIST_OP_TIMEOUT') or '') or 1800))
    payload = links.payload or payload
  end
  if backend == 'nccl' then
    local dev = binding.parse_device(g.device)
    g.nccl = binding.checkp(lib.efla_nccl_init(payload, g.world_size, g.rank, dev))
  end
  -- a rank's lines interleave with the others' (efla-run prefixes them): flush each one
  if g.world_size > 1 then io.stdout:setvbuf('line') end
  default_group = g
  return g
end

--- dist.group() -> the initialised default group, or nil.
function dist.group() return default_group end
--- dist.is_initialized() -> true once dist.init has run.
function dist.is_initialized() return default_group ~= nil end
--- dist.rank() -> this process's rank (0 without a group).
function dist.rank() return default_group and default_group.rank or 0 end
--- dist.world_size() -> the number of ranks (1 without a group).
function dist.world_size() return default_group and default_group.world_size or 1 end
--- dist.is_main() -> true on rank 0 (and in a plain single process): the one that prints and writes files.
function dist.is_main() return dist.rank() == 0 end

--- dist.auto([opts]) -> the default group: the existing one, a new one when the process was
--- started by efla-run (or Slurm) with WORLD_SIZE > 1, else nil (a plain single process).
function dist.auto(opts)
  if default_group then return default_group end
  local e = dist.env()
  if not e or e.world_size <= 1 then return nil end
  return dist.init(opts)
end

--- dist.DataParallel(model [, {group, bucket_mb = 25, broadcast = true}]): see efla.distributed.data_parallel.
function dist.DataParallel(model, opts) return require('efla.distributed.data_parallel').DataParallel(model, opts) end
--- dist.ZeroOptimizer(optimizer [, group]): ZeRO-1 (optimizer state sharded over ranks); see efla.distributed.data_parallel.
function dist.ZeroOptimizer(optimizer, group) return require('efla.distributed.data_parallel').ZeroOptimizer(optimizer, group) end

return dist
