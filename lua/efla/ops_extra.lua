-- efla/ops_extra.lua: tensor ops researchers reach for, beyond the core set: cumsum, sort
-- (C kernels, core/ops_scan.c) and softplus (core/ops_elementwise.c), and, composed from
-- existing differentiable ops, topk, multinomial, einsum, pad, log_sigmoid and conv1d. Composed ops run on
-- every device and get their gradients from the ops they are made of; cumsum and sort
-- have CPU kernels only so far (on CUDA they say so and suggest :cpu()).
--
-- init.lua installs each as a tensor method and as an efla.* function (x:cumsum(2) ==
-- efla.cumsum(x, 2)). Dims and indices are 1-based, as everywhere in the Lua API.
local efla = require 'efla'   -- init.lua registers itself in package.loaded before loading this
local binding = require 'efla._binding'
local tensor = require 'efla.tensor'
local ffi, lib = binding.ffi, binding.lib

local extra = {}

local function need_tensor(x, op, what)
  if not binding.is_tensor(x) then
    binding.raise(string.format('%s: %s must be a tensor, got %s', op, what or 'the input', type(x)))
  end
  return x
end

local function shape_str(x) return '[' .. table.concat(x:size(), ',') .. ']' end

--- x:cumsum([dim=1]) -> the running sum along dim (1-based; -1 the last). bool and uint8
--- inputs give int64. Differentiable. CPU kernel (on CUDA: move with :cpu()).
function extra.cumsum(x, dim)
  need_tensor(x, 'cumsum')
  return binding.wrap(lib.efla_cumsum(x.ptr, binding.cdim(dim or 1, 'cumsum')))
end

--- x:sort([dim=-1 [, descending=false]]) -> values, indices: a stable sort along dim; indices
--- are 1-based int64 positions (values == x:gather(dim, indices)); NaN sorts last (first when
--- descending). The values are differentiable. CPU kernel (on CUDA: move with :cpu()).
function extra.sort(x, dim, descending)
  need_tensor(x, 'sort')
  dim = dim or -1
  local v, i = ffi.new('efla_tensor*[1]'), ffi.new('efla_tensor*[1]')
  if lib.efla_sort(x.ptr, binding.cdim(dim, 'sort'), descending and 1 or 0, v, i) < 0 then binding.raise(binding.last_error()) end
  local values, idx = binding.wrap(v[0]), binding.wrap(i[0])
  idx = idx + 1   -- 1-based
  if x.requires_grad and efla.is_grad_enabled() then values = x:gather(dim, idx) end
  return values, idx
end

--- x:topk(k [, dim=-1 [, largest=true]]) -> values, indices: the k largest (or smallest)
--- entries along dim, in order, with their 1-based positions. Values are differentiable.
function extra.topk(x, k, dim, largest)
  need_tensor(x, 'topk')
  dim = dim or -1
  local n = x:dim() == 0 and 1 or x:size(dim)
  if type(k) ~= 'number' or k % 1 ~= 0 or k < 0 or k > n then
    binding.raise(string.format('topk: k must be a whole number in 0..%d (the size of dim %d of %s), got %s',
      n, dim, shape_str(x), tostring(k)))
  end
  local values, idx = extra.sort(x, dim, largest ~= false)
  return values:narrow(dim, 1, k), idx:narrow(dim, 1, k)
end

--- efla.multinomial(probs, n [, {replacement = false}]) -> int64 1-based categories: n draws per
--- row of probs ([C] or [B, C]; non-negative weights, not necessarily normalised). Without
--- replacement every category appears at most once (Gumbel top-k); with it, by inverse CDF.
--- Uses efla's generator: efla.manual_seed makes it reproducible. Draws on the CPU and
--- returns the result on probs' device.
function extra.multinomial(probs, n, opts)
  need_tensor(probs, 'multinomial', 'probs')
  opts = opts or {}
  if probs:dim() ~= 1 and probs:dim() ~= 2 then
    binding.raise('multinomial: probs must be [C] or [B, C], got ' .. shape_str(probs))
  end
  if type(n) ~= 'number' or n % 1 ~= 0 or n < 1 then
    binding.raise('multinomial: n (the number of draws) must be a whole number >= 1, got ' .. tostring(n))
  end
  local one_row = probs:dim() == 1
  -- drawn on the CPU (cumsum and sort have CPU kernels only; the generator is the same on
  -- every device), returned on probs' device
  local device = probs:device()
  local p = efla.no_grad(function() return (one_row and probs:unsqueeze(1) or probs):to({ dtype = 'float64', device = 'cpu' }) end)
  local C = p:size(2)
  local bad = efla.no_grad(function()
    return (p:lt(0):any() and 'negative') or ((p - p):ne(0):any() and 'NaN or infinite')
      or (p:sum(2):le(0):any() and 'all zero in a row') or nil
  end)
  if bad then binding.raise('multinomial: probs has ' .. bad .. ' weights; give non-negative finite weights, some positive in every row') end
  local out
  if opts.replacement then
    out = efla.no_grad(function()
      local cdf = extra.cumsum(p, 2)
      cdf = cdf / cdf:narrow(2, C, 1)                       -- [B, C], last column 1
      local u = efla.rand(p:size(1), n, 1, { dtype = 'float64' })
      -- the category is 1 + the number of cdf entries below u (at most C)
      return cdf:unsqueeze(2):lt(u):long():sum(3):add(1):clamp(1, C)
    end)
  else
    local nonzero = efla.no_grad(function() return p:gt(0):long():sum(2):min():item() end)
    if n > nonzero then
      binding.raise(string.format('multinomial: %d draws without replacement, but a row has only %d categories of positive weight (use {replacement = true})', n, nonzero))
    end
    out = efla.no_grad(function()
      local g = -(-(efla.rand(p:size(1), C, { dtype = 'float64' }):clamp(1e-300, nil)):log()):log()
      local keys = p:log() + g                                -- log(0) = -inf never wins
      local _, idx = extra.topk(keys, n, 2, true)
      return idx
    end)
  end
  out = one_row and out:squeeze(1) or out
  return device == 'cpu' and out or out:to(device)
end

-- ---- einsum -----------------------------------------------------------------------------------------
local function parse_einsum(eq, nops)
  local lhs, rhs = eq:gsub('%s', ''):match('^([^%-]*)%->(.*)$')
  if not lhs then lhs = eq:gsub('%s', '') end
  if lhs:find('%.') or (rhs and rhs:find('%.')) then
    binding.raise("einsum: '...' (ellipsis) is not supported yet; name every dim with a letter")
  end
  local inputs = {}
  for term in (lhs .. ','):gmatch('([^,]*),') do inputs[#inputs + 1] = term end
  if #inputs ~= nops then
    binding.raise(string.format("einsum: '%s' names %d operands, %d were given", eq, #inputs, nops))
  end
  for _, term in ipairs(inputs) do
    if not term:match('^%a*$') then binding.raise(string.format("einsum: '%s': subscripts must be letters", eq)) end
    local seen = {}
    for c in term:gmatch('.') do
      if seen[c] then binding.raise(string.format("einsum: '%s': a letter repeated in one operand (a diagonal) is not supported yet", eq)) end
      seen[c] = true
    end
  end
  if not rhs then
    -- implicit output: the letters that appear once, in alphabetical order
    local count = {}
    for _, term in ipairs(inputs) do for c in term:gmatch('.') do count[c] = (count[c] or 0) + 1 end end
    local once = {}
    for c, k in pairs(count) do if k == 1 then once[#once + 1] = c end end
    table.sort(once)
    rhs = table.concat(once)
  end
  if not rhs:match('^%a*$') then binding.raise(string.format("einsum: '%s': the output must be letters", eq)) end
  return inputs, rhs
end

local function chars(s) local t = {} for c in s:gmatch('.') do t[#t + 1] = c end return t end
local function has(s, c) return s:find(c, 1, true) ~= nil end

-- Sum away the letters of `term` that `keep` does not have; returns the tensor and its term.
local function sum_unused(x, term, keep)
  local dims, rest = {}, {}
  for i, c in ipairs(chars(term)) do
    if has(keep, c) then rest[#rest + 1] = c else dims[#dims + 1] = i end
  end
  for j = #dims, 1, -1 do x = x:sum(dims[j]) end
  return x, table.concat(rest)
end

-- Reorder x's dims from term `from` to term `to` (the same letters).
local function permute_to(x, from, to)
  if from == to or #to <= 1 then return x end
  local perm = {}
  for i, c in ipairs(chars(to)) do perm[i] = from:find(c, 1, true) end
  return x:permute(unpack(perm))
end

local function prod(sizes) local n = 1 for _, s in ipairs(sizes) do n = n * s end return n end

-- Two operands -> out_term, as one batched matmul.
local function contract2(a, ta, b, tb, out_term)
  local size = {}
  for i, c in ipairs(chars(ta)) do size[c] = a:size(i) end
  for i, c in ipairs(chars(tb)) do
    if size[c] and size[c] ~= b:size(i) then
      binding.raise(string.format("einsum: dim '%s' has size %d in one operand and %d in another", c, size[c], b:size(i)))
    end
    size[c] = b:size(i)
  end
  local batch, left, right, contract = {}, {}, {}, {}
  for _, c in ipairs(chars(ta)) do
    if has(tb, c) then
      if has(out_term, c) then batch[#batch + 1] = c else contract[#contract + 1] = c end
    else left[#left + 1] = c end
  end
  for _, c in ipairs(chars(tb)) do if not has(ta, c) then right[#right + 1] = c end end
  local function sizes(list) local t = {} for i, c in ipairs(list) do t[i] = size[c] end return t end
  local B, L, R, K = prod(sizes(batch)), prod(sizes(left)), prod(sizes(right)), prod(sizes(contract))
  local sb, sl, sr, sk = table.concat(batch), table.concat(left), table.concat(right), table.concat(contract)
  local am = permute_to(a, ta, sb .. sl .. sk):reshape(B, L, K)
  local bm = permute_to(b, tb, sb .. sk .. sr):reshape(B, K, R)
  local y = am:matmul(bm)                                  -- [B, L, R]
  local shape = {}
  for _, s in ipairs(sizes(batch)) do shape[#shape + 1] = s end
  for _, s in ipairs(sizes(left)) do shape[#shape + 1] = s end
  for _, s in ipairs(sizes(right)) do shape[#shape + 1] = s end
  y = #shape > 0 and y:reshape(unpack(shape)) or y:reshape(1):squeeze(1)
  return y, sb .. sl .. sr
end

--- efla.einsum(equation, a [, b, ...]) -> the Einstein sum, e.g. 'ij,jk->ik' (matmul),
--- 'bhtd,bhsd->bhts' (attention scores), 'ii' is not supported (no repeated letters in
--- one operand), nor '...'. Without '->' the output is the letters that appear once, in
--- alphabetical order. Two operands become one batched matmul; more are contracted left
--- to right. Differentiable; runs on any device.
function extra.einsum(eq, ...)
  if type(eq) ~= 'string' then binding.raise("einsum(equation, tensors...): the equation must be a string such as 'ij,jk->ik'") end
  local ops = { ... }
  if #ops == 1 and type(ops[1]) == 'table' and not binding.is_tensor(ops[1]) then ops = ops[1] end
  if #ops == 0 then binding.raise('einsum: give at least one tensor') end
  local terms, out_term = parse_einsum(eq, #ops)
  for i, x in ipairs(ops) do
    need_tensor(x, 'einsum', 'operand ' .. i)
    if x:dim() ~= #terms[i] then
      binding.raise(string.format("einsum: operand %d is %s (%d dims) but '%s' names %d", i, shape_str(x), x:dim(), terms[i], #terms[i]))
    end
  end
  for c in out_term:gmatch('.') do
    local found = false
    for _, t in ipairs(terms) do if has(t, c) then found = true end end
    if not found then binding.raise(string.format("einsum: the output letter '%s' is in no operand", c)) end
  end
  -- letters each step still needs: the output's and those of the operands to come
  local function needed_after(k)
    local s = out_term
    for j = k + 1, #ops do s = s .. terms[j] end
    return s
  end
  local acc, tacc = sum_unused(ops[1], terms[1], needed_after(1))
  for k = 2, #ops do
    local keep = needed_after(k)
    local b, tb = sum_unused(ops[k], terms[k], keep .. tacc)
    -- the result of this step keeps the letters later steps or the output need
    local step_out = {}
    for _, c in ipairs(chars(tacc .. tb)) do
      if has(keep, c) and not has(table.concat(step_out), c) then step_out[#step_out + 1] = c end
    end
    acc, tacc = contract2(acc, tacc, b, tb, table.concat(step_out))
  end
  acc, tacc = sum_unused(acc, tacc, out_term)
  return permute_to(acc, tacc, out_term)
end

--- x:pad(pads [, value=0]) -> x with constant padding: pads = {left, right} pads the last dim,
--- {left, right, top, bottom} the last two, and so on (PyTorch's order: last dim first).
--- Sizes must be >= 0. Differentiable.
function extra.pad(x, pads, value)
  need_tensor(x, 'pad')
  if type(pads) ~= 'table' or #pads % 2 ~= 0 or #pads / 2 > x:dim() then
    binding.raise(string.format('pad: pads must be a table of pairs {before, after} for at most the last %d dims of %s, got %s',
      x:dim(), shape_str(x), type(pads) == 'table' and ('{' .. table.concat(pads, ', ') .. '}') or tostring(pads)))
  end
  for _, p in ipairs(pads) do
    if type(p) ~= 'number' or p % 1 ~= 0 or p < 0 then
      binding.raise('pad: every pad size must be a whole number >= 0 (use narrow to crop), got ' .. tostring(p))
    end
  end
  local y = x
  for j = 1, #pads / 2 do
    local d = x:dim() - j + 1
    local before, after = pads[2 * j - 1], pads[2 * j]
    local parts = {}
    local function block(n)
      local s = y:size()
      s[d] = n
      return efla.full(s, value or 0, { dtype = y:dtype(), device = y:device() })
    end
    if before > 0 then parts[#parts + 1] = block(before) end
    parts[#parts + 1] = y
    if after > 0 then parts[#parts + 1] = block(after) end
    if #parts > 1 then y = efla.cat(parts, d) end
  end
  return y
end

--- x:softplus([beta=1]) -> log(1 + e^(beta*x)) / beta, computed without overflow for any x;
--- differentiable (its derivative is sigmoid(beta*x)). One C kernel per device (efla_softplus).
function extra.softplus(x, beta)
  need_tensor(x, 'softplus')
  beta = beta or 1
  if type(beta) ~= 'number' or beta <= 0 then binding.raise('softplus: beta must be a number > 0, got ' .. tostring(beta)) end
  return binding.wrap(lib.efla_softplus(x.ptr, beta))
end

--- x:log_sigmoid() -> log(sigmoid(x)) = -softplus(-x), finite for any x; differentiable.
function extra.log_sigmoid(x)
  need_tensor(x, 'log_sigmoid')
  return -extra.softplus(-x)
end

--- efla.conv1d(x [B, C_in, L], weight [C_out, C_in, K] [, bias [C_out]] [, {stride = 1,
--- padding = 0, dilation = 1}]) -> [B, C_out, L_out], L_out = floor((L + 2*padding -
--- dilation*(K-1) - 1) / stride) + 1: a cross-correlation, as in PyTorch. Composed from pad,
--- index_select and one matmul, so it is differentiable and runs on any device.
function extra.conv1d(x, weight, bias, opts)
  if type(bias) == 'table' and not binding.is_tensor(bias) then bias, opts = nil, bias end
  opts = opts or {}
  need_tensor(x, 'conv1d', 'x')
  need_tensor(weight, 'conv1d', 'weight')
  if x:dim() ~= 3 or weight:dim() ~= 3 or x:size(2) ~= weight:size(2) then
    binding.raise(string.format('conv1d: expected x [B, C_in, L] and weight [C_out, C_in, K] with the same C_in, got x %s, weight %s',
      shape_str(x), shape_str(weight)))
  end
  local stride, padding, dilation = opts.stride or 1, opts.padding or 0, opts.dilation or 1
  for name, v in pairs({ stride = stride, dilation = dilation }) do
    if type(v) ~= 'number' or v % 1 ~= 0 or v < 1 then binding.raise(string.format('conv1d: %s must be a whole number >= 1, got %s', name, tostring(v))) end
  end
  if type(padding) ~= 'number' or padding % 1 ~= 0 or padding < 0 then
    binding.raise('conv1d: padding must be a whole number >= 0, got ' .. tostring(padding))
  end
  local B, Cin, Cout, K = x:size(1), x:size(2), weight:size(1), weight:size(3)
  local xp = padding > 0 and extra.pad(x, { padding, padding }) or x
  local Lp = xp:size(3)
  local span = dilation * (K - 1) + 1
  if Lp < span then
    binding.raise(string.format('conv1d: the (padded) input length %d is shorter than the kernel span %d', Lp, span))
  end
  local Lout = math.floor((Lp - span) / stride) + 1
  -- the input position of (tap k, output t), 1-based, taps outer
  local pos = {}
  for k = 0, K - 1 do
    for t = 0, Lout - 1 do pos[#pos + 1] = 1 + k * dilation + t * stride end
  end
  local index = efla.tensor(pos, { dtype = 'int64', device = x:device() })
  local cols = xp:index_select(3, index):reshape(B, Cin * K, Lout)       -- [B, Cin*K, Lout]
  local y = weight:reshape(Cout, Cin * K):matmul(cols)                  -- [B, Cout, Lout]
  if bias then
    need_tensor(bias, 'conv1d', 'bias')
    if bias:dim() ~= 1 or bias:size(1) ~= Cout then
      binding.raise(string.format('conv1d: bias must be [%d], got %s', Cout, shape_str(bias)))
    end
    y = y + bias:reshape(1, Cout, 1)
  end
  return y
end

local methods = { 'cumsum', 'sort', 'topk', 'pad', 'softplus', 'log_sigmoid' }
local functions = { 'cumsum', 'sort', 'topk', 'multinomial', 'einsum', 'pad', 'softplus', 'log_sigmoid', 'conv1d' }

--- ops_extra.install(efla): adds the ops as tensor methods (x:cumsum(2)) and efla.* functions
--- (called once by efla/init.lua).
function extra.install(e)
  local new_methods = {}
  for _, name in ipairs(methods) do if tensor.T[name] == nil then new_methods[name] = extra[name] end end
  tensor.register_methods(new_methods)
  for _, name in ipairs(functions) do if rawget(e, name) == nil then e[name] = extra[name] end end
end

return extra
