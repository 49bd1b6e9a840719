-- efla/format.lua: tostring() of tensors, Torch-style.
--
--   0.1000  2.0000 -3.5000
--   4.0000  5.0000  6.0000
--  [efla float32 tensor of size 2x3 (cpu)]
--
-- Values share one format so columns line up; large tensors (more than `summarize`
-- elements) show the first and last `edge` entries of each dim longer than 2*edge with
-- "..." between; 3-d and more print one matrix per leading index, "(i,j,.,.) =" (1-based).
-- Only the shown elements are copied out of the tensor (block by block), so printing a huge
-- or device tensor is cheap.
local efla_ffi = require 'efla.ffi'
local lib = efla_ffi.lib
local tensor = require 'efla.tensor'
local tensor_methods = tensor.T

local tensor_format = {
  edge = 3,          -- entries kept at each end of an elided dim
  summarize = 100,   -- elide when the tensor has more elements than this
  linewidth = 80,
}

-- Per dim: the ranges of indices shown ({start0, length}); elided dims have two ranges.
local function shown_ranges(shape, elide)
  local ranges = {}
  for d = 1, #shape do
    local n = shape[d]
    if elide and n > 2 * tensor_format.edge then
      ranges[d] = { { 0, tensor_format.edge }, { n - tensor_format.edge, tensor_format.edge } }
    else
      ranges[d] = { { 0, n } }
    end
  end
  return ranges
end

-- Copies the shown elements out, block by block. Returns get(k) where k is a list of
-- 0-based positions within the shown entries of each dim.
local function fetch(x, shape, ranges)
  local nd = #shape
  local counts, strides = {}, {}
  for d = 1, nd do
    local c = 0
    for _, r in ipairs(ranges[d]) do c = c + r[2] end
    counts[d] = c
  end
  local s = 1
  for d = nd, 1, -1 do strides[d] = s; s = s * counts[d] end
  local values = {}
  local block_pos = {}
  local function rec(d, view, base)
    if d > nd then
      local get, n = tensor._read_all(view)
      if n == 0 then return end
      -- walk the block in row-major order, mapping to shown coordinates
      local bshape = tensor.shape_table(view)
      local k = {}
      for i = 1, nd do k[i] = 0 end
      for lin = 0, n - 1 do
        local key = base
        for i = 1, nd do key = key + k[i] * strides[i] end
        values[key] = get(lin)
        for i = nd, 1, -1 do
          k[i] = k[i] + 1
          if k[i] < bshape[i] then break end
          k[i] = 0
        end
      end
      return
    end
    local off = 0
    for _, r in ipairs(ranges[d]) do
      local v = view
      if #ranges[d] > 1 then v = tensor.wrap(lib.efla_narrow(view.ptr, d - 1, r[1], r[2])) end
      rec(d + 1, v, base + off * strides[d])
      off = off + r[2]
    end
  end
  rec(1, x, 0)
  return function(k)
    local key = 0
    for i = 1, nd do key = key + k[i] * strides[i] end
    return values[key]
  end, counts
end

-- The shown entries of a dim as a list: 0-based shown position, or false for the "..." gap.
local function entries(ranges, d)
  local list, pos = {}, 0
  for ri, r in ipairs(ranges[d]) do
    if ri > 1 then list[#list + 1] = false end
    for j = 0, r[2] - 1 do list[#list + 1] = { shown = pos, index = r[1] + j } ; pos = pos + 1 end
  end
  return list
end

local function is_int(v) return v == math.floor(v) and v > -1e15 and v < 1e15 end

-- One format for every shown value: returns fmt(v) -> string.
local function make_formatter(values, dtype)
  if dtype == 'bool' then return function(v) return v and 'true' or 'false' end end
  if dtype == 'int64' or dtype == 'uint8' then
    return function(v) return string.format('%d', v) end
  end
  local maxabs, all_int = 0, true
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if not is_int(v) then all_int = false end
    end
  end
  local special = function(v)
    if v ~= v then return 'nan' end
    if v == math.huge then return 'inf' end
    if v == -math.huge then return '-inf' end
  end
  local fmt
  if all_int and maxabs < 1e8 then fmt = '%.0f'
  elseif maxabs >= 1e5 or (maxabs > 0 and maxabs < 1e-4) then fmt = '%.4e'
  else fmt = '%.4f' end
  return function(v)
    local s = special(v)
    if s then return s end
    if v == 0 then v = 0 end  -- no "-0"
    return string.format(fmt, v)
  end
end

local function pad(s, w) return string.rep(' ', w - #s) .. s end

-- Formats a matrix (rows x cols of shown entries; value(r, c) gives the number).
local function matrix_lines(rows, cols, value, fmt, width, out, indent)
  indent = indent or ''
  local ncols = #cols
  local cell = width + 1
  local per_line = ncols
  local has_gap = false
  for _, c in ipairs(cols) do if not c then has_gap = true end end
  if not has_gap and ncols * (cell + 1) > tensor_format.linewidth then
    per_line = math.max(1, math.floor((tensor_format.linewidth - 2) / (cell + 1)))
  end
  for first = 1, ncols, per_line do
    local last = math.min(ncols, first + per_line - 1)
    if per_line < ncols then
      out[#out + 1] = string.format('%sColumns %d to %d', indent, cols[first].index + 1, cols[last].index + 1)
    end
    for _, r in ipairs(rows) do
      if not r then
        out[#out + 1] = indent .. ' ...'
      else
        local parts = {}
        for ci = first, last do
          local c = cols[ci]
          parts[#parts + 1] = c and pad(fmt(value(r, c)), cell) or ' ...'
        end
        out[#out + 1] = indent .. table.concat(parts, ' ')
      end
    end
    if per_line < ncols and last < ncols then out[#out + 1] = '' end
  end
end

local function footer(x, shape)
  local dtype, dev = tensor_methods.dtype(x), tensor_methods.device(x)
  local what
  if #shape == 0 then what = 'scalar' else what = 'tensor of size ' .. table.concat(shape, 'x') end
  local extra = ''
  local gf = lib.efla_grad_fn_name(x.ptr)
  if gf ~= nil then extra = ' grad_fn=' .. efla_ffi.ffi.string(gf)
  elseif lib.efla_requires_grad(x.ptr) == 1 then extra = ' requires_grad' end
  return string.format('[efla %s %s (%s)%s]', dtype, what, dev, extra)
end
tensor_format.footer = function(x) return footer(x, (tensor.shape_table(x))) end

--- format.tensor(x): the Torch-style text of a tensor.
function tensor_format.tensor(x)
  local shape = tensor.shape_table(x)
  local nd = #shape
  local numel = tensor_methods.numel(x)
  local dtype = tensor_methods.dtype(x)
  if nd == 0 then
    local v = tensor_methods.item(x)
    local fmt = make_formatter({ type(v) == 'number' and v or 0 }, dtype)
    return fmt(v) .. '\n' .. footer(x, shape)
  end
  if numel == 0 then return footer(x, shape) end
  local ranges = shown_ranges(shape, numel > tensor_format.summarize)
  local get, counts = fetch(x, shape, ranges)
  -- every shown value, to choose one format
  local all = {}
  local total = 1
  for d = 1, nd do total = total * counts[d] end
  local k = {}
  for d = 1, nd do k[d] = 0 end
  for _ = 1, total do
    all[#all + 1] = get(k)
    for d = nd, 1, -1 do
      k[d] = k[d] + 1
      if k[d] < counts[d] then break end
      k[d] = 0
    end
  end
  local fmt = make_formatter(all, dtype)
  local width = 1
  for _, v in ipairs(all) do
    local s = fmt(v)
    if #s > width then width = #s end
  end
  local out = {}
  local ents = {}
  for d = 1, nd do ents[d] = entries(ranges, d) end
  if nd == 1 then
    -- a row, wrapped at the line width
    local line = {}
    local len = 0
    for _, e in ipairs(ents[1]) do
      local s = e and pad(fmt(get({ e.shown })), width + 1) or ' ...'
      if len + #s + 1 > tensor_format.linewidth and #line > 0 then
        out[#out + 1] = table.concat(line, ' ')
        line, len = {}, 0
      end
      line[#line + 1] = s
      len = len + #s + 1
    end
    out[#out + 1] = table.concat(line, ' ')
  else
    -- leading dims: one matrix per combination, Torch's "(i,j,.,.) ="
    local lead = {}
    local function rec(d)
      if d > nd - 2 then
        if nd > 2 then
          local label = {}
          for i = 1, nd - 2 do label[i] = tostring(lead[i].index + 1) end
          if #out > 0 then out[#out + 1] = '' end
          out[#out + 1] = '(' .. table.concat(label, ',') .. ',.,.) = '
        end
        matrix_lines(ents[nd - 1], ents[nd], function(r, c)
          local kk = {}
          for i = 1, nd - 2 do kk[i] = lead[i].shown end
          kk[nd - 1] = r.shown
          kk[nd] = c.shown
          return get(kk)
        end, fmt, width, out)
        return
      end
      for _, e in ipairs(ents[d]) do
        if e then
          lead[d] = e
          rec(d + 1)
        else
          out[#out + 1] = ''
          out[#out + 1] = '...'
        end
      end
    end
    rec(1)
  end
  out[#out + 1] = footer(x, shape)
  return table.concat(out, '\n')
end

return tensor_format
