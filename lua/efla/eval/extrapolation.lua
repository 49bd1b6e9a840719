-- eval/extrapolation.lua: length extrapolation: the mean loss by position when a model
-- reads windows of 1x, 2x, 4x, 8x the context it was trained on.
--
-- For each multiplier m the encoded test text is cut into non-overlapping windows of
-- m*context + 1 tokens (at most max_tokens tokens per multiplier, at least one window);
-- each window is read from its start with a fresh state, and the loss at position t (the
-- prediction of token t + 1) is averaged over windows in buckets of `bucket` positions
-- (default context/4). A model that extrapolates keeps a flat or falling curve past
-- position `context`; one that does not rises there.
local ll = require 'efla.eval.loglik'

local X = {}

X.MULTIPLIERS = { 1, 2, 4, 8 }

--- X.evaluate(model, tok, text_or_ids, {context, multipliers, max_tokens = 65536, bucket,
---   batch_tokens = 16384, device}) -> {buckets = {{multiplier, from, to, loss, count}},
---   summary = {[m] = {loss = mean, loss_beyond = mean past position context, windows}},
---   skipped = {multipliers without one whole window}}
function X.evaluate(model, tok, text, opts)
  opts = opts or {}
  local context = opts.context or error('extrapolation: opts.context (the training context) is required', 2)
  local ids = type(text) == 'string' and tok:encode(text) or text
  local bucket = opts.bucket or math.max(1, math.floor(context / 4))
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
          local b = math.floor((t - 1) / bucket) + 1
          sums[b] = (sums[b] or 0) - v
          counts[b] = (counts[b] or 0) + 1
          total = total - v
          if t > context then beyond = beyond - v; nb = nb + 1 end
        end
      end
      for b = 1, #sums do
        out.buckets[#out.buckets + 1] = { multiplier = m, from = (b - 1) * bucket + 1,
          to = math.min(b * bucket, L), loss = sums[b] / counts[b], count = counts[b] }
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
    s.x[#s.x + 1] = (b.from + b.to) / 2
    s.y[#s.y + 1] = b.loss
  end
  csv.write(csv_path, { 'multiplier', 'position_from', 'position_to', 'mean_loss', 'count' }, rows)
  if #series == 0 then return nil, 'no multiplier had a whole window' end
  return plot.lines { path = png_path, title = title or 'loss by position', xlabel = 'position (tokens)',
    ylabel = 'mean cross-entropy (nats)', series = series, logx = true }
end

return X
