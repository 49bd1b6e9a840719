-- collectives.lua: run under efla-run by test_distributed.lua. Every rank makes the inputs
-- of every rank (seeded by rank), so it can compute each collective's answer locally and
-- compare; prints "collectives ok <rank>" or raises naming the first mismatch.
local efla = require 'efla'
local dist = require 'efla.distributed'
local pg = dist.init { backend = os.getenv('EFLA_DIST_BACKEND') or 'tcp' }
local W, R = pg.world_size, pg.rank
local dev = pg.device

local function input(r, dtype, n)
  efla.manual_seed(100 + r)
  local x = efla.randn(n or 5, 3, { dtype = 'float64' })
  if dtype == 'int64' then x = x * 100 end
  return x:to(dtype)
end
local function same(a, b, what, tol)
  local d = (a:cpu():double() - b:cpu():double()):abs():max():item()
  if not (d <= (tol or 0)) then error(string.format('rank %d: %s differs from the reference by %g', R, what, d), 0) end
end

for _, dtype in ipairs({ 'float64', 'float32', 'int64' }) do
  local tol = dtype == 'float32' and 1e-5 or 0
  -- all_reduce: sum in rank order, and mean
  local ref = input(0, dtype)
  for r = 1, W - 1 do ref = ref + input(r, dtype) end
  local t = input(R, dtype):to(dev)
  pg:all_reduce(t, 'sum')
  same(t, ref, dtype .. ' all_reduce sum', tol)
  if dtype ~= 'int64' then
    local m = input(R, dtype):to(dev)
    pg:all_reduce(m, 'avg')
    same(m, ref / W, dtype .. ' all_reduce avg', tol)
  end
  -- broadcast from the last rank
  local b = input(R, dtype):to(dev)
  pg:broadcast(b, W - 1)
  same(b, input(W - 1, dtype), dtype .. ' broadcast', 0)
  -- all_gather: row r+1 is rank r's tensor
  local g = pg:all_gather(input(R, dtype):to(dev))
  if g:size(1) ~= W then error('all_gather: first dimension ' .. g:size(1) .. ', expected ' .. W, 0) end
  for r = 0, W - 1 do same(g:select(1, r + 1), input(r, dtype), dtype .. ' all_gather row ' .. r, 0) end
  -- reduce_scatter: part R+1 of the sum of [W*2, 3] inputs
  local full = input(0, dtype, 2 * W)
  for r = 1, W - 1 do full = full + input(r, dtype, 2 * W) end
  local part = pg:reduce_scatter(input(R, dtype, 2 * W):to(dev), 'sum')
  same(part, full:narrow(1, 2 * R + 1, 2), dtype .. ' reduce_scatter', tol)
end
-- numbers and a barrier
local s = pg:all_numbers({ R, 1 }, 'sum')
if s[1] ~= W * (W - 1) / 2 or s[2] ~= W then error('all_numbers: got ' .. s[1] .. ', ' .. s[2], 0) end
pg:barrier()
print('collectives ok ' .. R)
