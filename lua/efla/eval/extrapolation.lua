-- eval/extrapolation.lua: length extrapolation: the mean loss by position when a model
-- reads windows of 1x, 2x, 4x, 8x the context it was trained on.
--
-- For each multiplier m the encoded test text is cut into non-overlapping windows of
-- m*context + 1 tokens (at most max_tokens tokens per multiplier, at least one window);
-- each window is read from its start with a fresh state, and the loss at position t (the
-- prediction of token t + 1) is averaged over windows in buckets of positions: by default
-- powers of two ([1], [2, 3], [4, 7], ..., even on the plot's log axis), or `bucket`
-- positions wide when a number is given. A model that extrapolates keeps a flat or falling curve past
-- position `context`; one that does not rises there.
local ll = require 'efla.eval.loglik'

local X = {}

X.MULTIPLIERS = { 1, 2, 4, 8 }

--- X.evaluate(model, tok, text_or_ids, {context, multipliers, max_tokens = 65536, bucket,
---   batch_tokens = 16384, device}) (bucket: 'log2' (default) or a width in positions) -> {buckets = {{multiplier, from, to, loss, count}},
---   summary = {[m] = {loss = mean, loss_beyond = mean past position context, windows}},
---   skipped = {multipliers without one whole window}}
function X.evaluate(model, tok, text, opts)
  opts = opts or {}
  local context = opts.context or error('extrapolation: opts.context (the training context) is required', 2)
  local ids = type(text) == 'string' and tok:encode(text) or text
  local bucket = opts.bucket or 'log2'
  if bucket ~= 'log2' and (type(bucket) ~= 'number' or bucket < 1 or bucket % 1 ~= 0) then
    error("extrapolation: bucket must be 'log2' or a whole number of positions, got " .. tostring(bucket), 2)
  end
  local function bucket_of(t)
    if bucket == 'log2' then return math.floor(math.log(t) / math.log(2) + 1e-9) + 1 end
    return math.floor((t - 1) / bucket) + 1
  end
  local function bounds(b, L)
    if bucket == 'log2' then return 2 ^ (b - 1), math.min(2 ^ b - 1, L) end
    return (b - 1) * bucket + 1, math.min(b * bucket, L)
  end
  local max_tokens = opts.max_tokens or 65536
  local out = { buckets = {}, summary = {}, skipped = {}, bucket = bucket, context = context }
  for _, m in ipairs(opts.multipliers or X.MULTIPLIERS) do
    local L = m * context
    local fit = math.floor((#ids - 1) / L)
    if fit < 1 then
      out.skipped[#out.skipped + 1] = m
    else
      local nw = math.min(fit, math.max(1, math.floor(max_tokens / L)))
      local rows = {}
      for w = 0, nw - 1 do
        local row = {}
        for t = w * L + 1, w * L + L + 1 do row[#row + 1] = ids[t] end
        rows[#rows + 1] = row
      end
      local batch = math.max(1, math.floor((opts.batch_tokens or 16384) / L))
      local lps = ll.token_logprobs(model, rows, { batch = batch, device = opts.device })
      local sums, counts = {}, {}
      local total, beyond, nb = 0, 0, 0
      for _, row in ipairs(lps) do
        for t, v in ipairs(row) do
          local b = bucket_of(t)
          sums[b] = (sums[b] or 0) - v
          counts[b] = (counts[b] or 0) + 1
          total = total - v
          if t > context then beyond = beyond - v; nb = nb + 1 end
        end
      end
      for b = 1, #sums do
        local from, to = bounds(b, L)
        out.buckets[#out.buckets + 1] = { multiplier = m, from = from, to = to, loss = sums[b] / counts[b], count = counts[b] }
      end
      out.summary[m] = { loss = total / (nw * L), loss_beyond = nb > 0 and beyond / nb or nil, windows = nw }
    end
  end
  return out
end

--- X.write(result, csv_path, png_path, title) -> the PNG path (or nil, why) after writing the CSV.
function X.write(result, csv_path, png_path, title)
  local csv = require 'efla.csv'
  local plot = require 'efla.plot'
  local rows, series, by_m = {}, {}, {}
  for _, b in ipairs(result.buckets) do
    rows[#rows + 1] = { b.multiplier, b.from, b.to, b.loss, b.count }
    if not by_m[b.multiplier] then
      by_m[b.multiplier] = { name = b.multiplier .. 'x context', x = {}, y = {} }
      series[#series + 1] = by_m[b.multiplier]
    end
    local s = by_m[b.multiplier]
    s.x[#s.x + 1] = math.sqrt(b.from * b.to)
    s.y[#s.y + 1] = b.loss
  end
  csv.write(csv_path, { 'multiplier', 'position_from', 'position_to', 'mean_loss', 'count' }, rows)
  if #series == 0 then return nil, 'no multiplier had a whole window' end
  return plot.lines { path = png_path, title = (title or 'loss by position'):gsub('_', '-'), xlabel = 'position (tokens)',
    ylabel = 'mean cross-entropy (nats)', series = series, logx = true }
end

return X
