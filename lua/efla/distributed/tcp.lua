-- efla.distributed.tcp: the TCP pieces of efla.distributed: framed messages over lua-posix
-- sockets, the rendezvous (every rank connects to rank 0, a star), and the CPU transport's
-- collectives, which go through rank 0: it receives every rank's tensor, reduces them in
-- rank order (so the result is deterministic) and sends the result back. Simple rather than
-- fast: it exists so that data-parallel training and every collective run, and are tested,
-- on a machine without GPUs; NCCL carries CUDA tensors (efla.distributed.nccl).
local efla = require 'efla'
local wall = require('efla.progress').wall

-- lua-posix (Debian's lua-posix; the GPU bundle carries it) is needed once there are peers
local have_posix, S = pcall(require, 'posix.sys.socket')
local P = have_posix and require 'posix.poll'
local U = have_posix and require 'posix.unistd'
local function need_posix()
  if not have_posix then
    error('distributed: talking to other ranks needs lua-posix (posix.sys.socket), which is not installed: ' ..
      'apt-get install lua-posix, or put its modules on LUA_CPATH/LUA_PATH', 0)
  end
end

local tcp = {}

local HEADER = 16   -- a message is its length as 16 decimal digits, then the payload

local function closefd(fd) if fd then U.close(fd) end end
tcp.close = closefd

-- Waits until fd is readable; false after `seconds`.
local function readable(fd, seconds)
  local deadline = wall() + seconds
  while true do
    local left = deadline - wall()
    if left <= 0 then return false end
    local r = P.rpoll(fd, math.max(1, math.floor(math.min(left, 1) * 1000)))
    if r and r > 0 then return true end
  end
end

--- send(fd, s, who): writes the framed message s; raises naming `who` when the peer is gone.
function tcp.send(fd, s, who)
  local msg = string.format('%016d', #s) .. s
  local pos = 1
  while pos <= #msg do
    local n, err = S.send(fd, pos == 1 and msg or msg:sub(pos))
    if not n then error(string.format('distributed: sending to %s failed (%s): it has probably stopped; see its output', who, tostring(err)), 0) end
    pos = pos + n
  end
end

local function recv_exact(fd, n, who, timeout)
  local parts, got = {}, 0
  while got < n do
    if not readable(fd, timeout) then
      error(string.format('distributed: no data from %s within %g s (set EFLA_DIST_TIMEOUT to wait longer; is it stuck or dead?)', who, timeout), 0)
    end
    local s, err = S.recv(fd, math.min(n - got, 4194304))
    if not s then error(string.format('distributed: receiving from %s failed (%s)', who, tostring(err)), 0) end
    if #s == 0 then error(string.format('distributed: %s closed the connection: it has probably failed; see its output', who), 0) end
    parts[#parts + 1] = s
    got = got + #s
  end
  return table.concat(parts)
end

--- recv(fd, who, timeout) -> the next framed message.
function tcp.recv(fd, who, timeout)
  local h = recv_exact(fd, HEADER, who, timeout)
  local n = tonumber(h)
  if not n then error(string.format('distributed: garbled message from %s (not an efla peer on this port?)', who), 0) end
  if n == 0 then return '' end
  return recv_exact(fd, n, who, timeout)
end

local function resolve(host, port)
  local res, err = S.getaddrinfo(host, tostring(port), { family = S.AF_INET, socktype = S.SOCK_STREAM })
  if not res or not res[1] then
    error(string.format('distributed: cannot resolve the master address %s (%s); set MASTER_ADDR to a reachable host name or IP', host, tostring(err)), 0)
  end
  return res[1]
end

local function nodelay(fd)
  if S.IPPROTO_TCP and S.TCP_NODELAY then S.setsockopt(fd, S.IPPROTO_TCP, S.TCP_NODELAY, 1) end
end

-- ---- rendezvous ------------------------------------------------------------------------------------

-- Rank 0: listens, accepts world - 1 peers (each says "efla <rank> <world>"), then sends each
-- "ok" followed by `payload` (the NCCL unique id, or ''). Returns peers[r] = fd.
local function serve(o)
  local fd = assert(S.socket(S.AF_INET, S.SOCK_STREAM, 0))
  S.setsockopt(fd, S.SOL_SOCKET, S.SO_REUSEADDR, 1)
  local ok, err = S.bind(fd, { family = S.AF_INET, addr = '0.0.0.0', port = o.port })
  if not ok then
    closefd(fd)
    error(string.format('distributed: rank 0 cannot listen on port %d (%s); pick a free MASTER_PORT (efla-run --master ADDR:PORT)', o.port, tostring(err)), 0)
  end
  assert(S.listen(fd, 128))
  local peers, arrived, deadline = {}, 1, wall() + o.timeout
  local function fail(msg)
    for _, p in pairs(peers) do pcall(tcp.send, p, 'err ' .. msg, 'a peer'); closefd(p) end
    closefd(fd)
    error(msg, 0)
  end
  while arrived < o.world do
    if not readable(fd, deadline - wall()) then
      local missing = {}
      for r = 1, o.world - 1 do if not peers[r] then missing[#missing + 1] = tostring(r) end end
      fail(string.format('distributed: rendezvous timed out after %g s: rank%s %s of %d never connected to port %d ' ..
        '(did they start? same MASTER_ADDR/MASTER_PORT and WORLD_SIZE?)', o.timeout, #missing > 1 and 's' or '',
        table.concat(missing, ', '), o.world, o.port))
    end
    local c = S.accept(fd)
    if c then
      local okh, hello = pcall(tcp.recv, c, 'a connecting peer', math.max(1, deadline - wall()))
      local r, w = (okh and hello or ''):match('^efla (%d+) (%d+)$')
      r, w = tonumber(r), tonumber(w)
      if not r then
        closefd(c)   -- not one of ours (a port scanner, a stale client): ignore it
      elseif w ~= o.world or r < 1 or r >= o.world or peers[r] then
        tcp.send(c, string.format('err rank %d of world %d does not fit this world of %d (ranks 1..%d, each once)', r, w, o.world, o.world - 1), 'a peer')
        closefd(c)
        fail(string.format('distributed: a peer announced rank %d of world %d, which does not fit this world of size %d%s',
          r, w, o.world, peers[r] and ' (that rank is already taken)' or ''))
      else
        nodelay(c)
        peers[r], arrived = c, arrived + 1
      end
    end
  end
  closefd(fd)
  for r = 1, o.world - 1 do tcp.send(peers[r], 'ok ' .. (o.payload or ''), 'rank ' .. r) end
  return peers
end

-- Rank r > 0: connects to rank 0 (retrying until the deadline), says hello, waits for "ok".
local function join(o)
  local addr = resolve(o.host, o.port)
  local deadline = wall() + o.timeout
  local fd, last
  while true do
    fd = assert(S.socket(S.AF_INET, S.SOCK_STREAM, 0))
    local ok, err = S.connect(fd, addr)
    if ok then break end
    closefd(fd)
    last = err
    if wall() > deadline then
      error(string.format('distributed: rank %d could not reach rank 0 at %s:%d within %g s (%s); is rank 0 running, ' ..
        'and are MASTER_ADDR/MASTER_PORT the same everywhere?', o.rank, o.host, o.port, o.timeout, tostring(last)), 0)
    end
    require('posix.time').nanosleep({ tv_sec = 0, tv_nsec = 50000000 })
  end
  nodelay(fd)
  tcp.send(fd, string.format('efla %d %d', o.rank, o.world), 'rank 0')
  local reply = tcp.recv(fd, 'rank 0 (waiting for the other ranks)', math.max(1, deadline - wall()) + 5)
  if reply:sub(1, 3) == 'err' then closefd(fd); error(reply:sub(5), 0) end
  if reply:sub(1, 3) ~= 'ok ' then closefd(fd); error('distributed: unexpected reply from rank 0: ' .. reply:sub(1, 40), 0) end
  return fd, reply:sub(4)
end

--- rendezvous{rank, world, host, port, timeout, payload} -> links: rank 0 gets
--- {peers = {[r] = fd}}, others {root = fd, payload = rank 0's payload}.
function tcp.rendezvous(o)
  if o.world == 1 then return { peers = {}, payload = o.payload } end
  need_posix()
  -- a peer that dies mid-send must give an error here, not kill this process
  local sig = require 'posix.signal'
  sig.signal(sig.SIGPIPE, sig.SIG_IGN)
  if o.rank == 0 then return { peers = serve(o), payload = o.payload } end
  local fd, payload = join(o)
  return { root = fd, payload = payload }
end

-- ---- the star transport ----------------------------------------------------------------------------

local Star = {}
Star.__index = Star

--- Star(links, rank, world, timeout): message passing through rank 0.
function tcp.Star(links, rank, world, timeout)
  return setmetatable({ links = links, rank = rank, world = world, timeout = timeout }, Star)
end

function Star:close()
  for _, fd in pairs(self.links.peers or {}) do closefd(fd) end
  closefd(self.links.root)
  self.links = { peers = {} }
end

-- Rank 0 collects one message from every rank (its own is `mine`): list indexed 0..world-1.
function Star:gather(mine)
  if self.rank ~= 0 then
    tcp.send(self.links.root, mine, 'rank 0')
    return nil
  end
  local all = { [0] = mine }
  for r = 1, self.world - 1 do all[r] = tcp.recv(self.links.peers[r], 'rank ' .. r, self.timeout) end
  return all
end

-- Rank 0 sends s to every rank; every rank returns it.
function Star:scatter_same(s)
  if self.rank ~= 0 then return tcp.recv(self.links.root, 'rank 0', self.timeout) end
  for r = 1, self.world - 1 do tcp.send(self.links.peers[r], s, 'rank ' .. r) end
  return s
end

-- src's message reaches every rank (through rank 0 when src ~= 0).
function Star:bcast(s, src)
  if src ~= 0 then
    if self.rank == src then tcp.send(self.links.root, s, 'rank 0')
    elseif self.rank == 0 then s = tcp.recv(self.links.peers[src], 'rank ' .. src, self.timeout) end
  end
  if self.rank == 0 then
    for r = 1, self.world - 1 do if r ~= src then tcp.send(self.links.peers[r], s, 'rank ' .. r) end end
    return s
  end
  if self.rank == src then return s end
  return tcp.recv(self.links.root, 'rank 0', self.timeout)
end

-- ---- collectives on tensors (any device: values travel through the host) ---------------------------------

local function shape_of(t) return t:dim() == 0 and {} or t:size() end

local function from_bytes(s, t)
  local shape = shape_of(t)
  if #shape == 0 then return efla.from_buffer(s, { 1 }, t:dtype()):view({}) end
  return efla.from_buffer(s, shape, t:dtype())
end

--- star:all_reduce(t, average): in place; rank 0 sums in rank order, then divides.
function Star:all_reduce(t, average)
  local all = self:gather(t:to_buffer())
  local out
  if self.rank == 0 then
    local acc = from_bytes(all[0], t)
    for r = 1, self.world - 1 do acc = acc + from_bytes(all[r], t) end
    if average then acc = acc / self.world end
    out = self:scatter_same(acc:to(t:dtype()):to_buffer())
  else
    out = self:scatter_same()
  end
  t:copy_(from_bytes(out, t))
  return t
end

--- star:broadcast(t, root): in place.
function Star:broadcast(t, root)
  local s = self:bcast(self.rank == root and t:to_buffer() or nil, root)
  if self.rank ~= root then t:copy_(from_bytes(s, t)) end
  return t
end

--- star:all_gather(t) -> a new tensor [world, ...t's shape] on t's device.
function Star:all_gather(t)
  local all = self:gather(t:to_buffer())
  local s = self:scatter_same(all and table.concat(all, '', 0, self.world - 1) or nil)
  local shape = { self.world }
  for _, n in ipairs(shape_of(t)) do shape[#shape + 1] = n end
  local out = efla.from_buffer(s, shape, t:dtype())
  if t:device() ~= 'cpu' then out = out:to(t:device()) end
  return out
end

--- star:barrier(): returns when every rank has reached it.
function Star:barrier()
  self:gather('b')
  self:scatter_same('b')
end

--- star:all_numbers(list, average) -> list summed (or averaged) over ranks, element-wise (float64).
function Star:all_numbers(list, average)
  local t = efla.tensor(list, { dtype = 'float64' })
  self:all_reduce(t, average)
  return t:totable()
end

return tcp
