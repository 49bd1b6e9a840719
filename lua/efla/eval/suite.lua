-- eval/suite.lua: the downstream evaluation of language-model checkpoints (what
-- recipes/lm_eval.lua and, for LM checkpoints, recipes/eval.lua run): held-out perplexity
-- and bits per byte, the cloze, the WordNet multiple choice and length extrapolation, one
-- result row per checkpoint; the Markdown table, CSV, JSON (with provenance) and plots.
local efla = require 'efla'
local data = require 'efla.data'
local lm_model = require 'efla.eval.lm_model'
local P = require 'efla.eval.perplexity'
local C = require 'efla.eval.cloze'
local W = require 'efla.eval.wordnet'
local X = require 'efla.eval.extrapolation'
local progress = require 'efla.progress'

local suite = {}

suite.TASKS = { 'ppl', 'cloze', 'wordnet', 'extrap' }
--- Defaults sized for a few minutes on 2 CPU cores; 0 means "all" for the byte limits.
suite.DEFAULTS = { ppl_bytes = 100000, cloze_items = 200, wordnet_items = 500, extrap_tokens = 32768,
  batch = 16, seed = 1234, device = 'cpu' }

--- suite.label(path) -> a short name for a checkpoint: its folder and file name.
function suite.label(path) return path:match('[^/]+/[^/]+$') or path end
local function file_safe(s) return (s:gsub('%.h5$', ''):gsub('[^%w%-_.]+', '_')) end

--- suite.find_checkpoints(paths) -> the .h5 files among paths, folders searched 3 levels
--- deep (sorted); an error names a path that does not exist.
function suite.find_checkpoints(paths)
  local out = {}
  local function walk(dir, depth)
    for _, name in ipairs(data.list_dir(dir) or {}) do
      local p = dir .. '/' .. name
      if data.is_dir(p) then
        if depth < 3 then walk(p, depth + 1) end
      elseif name:match('%.h5$') then out[#out + 1] = p end
    end
  end
  for _, p in ipairs(paths) do
    if data.is_dir(p) then
      local before = #out
      walk((p:gsub('/+$', '')), 1)
      if #out == before then error('lm_eval: the folder ' .. p .. ' holds no .h5 checkpoints', 0) end
    elseif data.exists(p) then out[#out + 1] = p
    else error('lm_eval: no such checkpoint file or folder: ' .. p, 0) end
  end
  return out
end

local function parse_tasks(list)
  local want = {}
  for t in (list or table.concat(suite.TASKS, ',')):gmatch('[^,%s]+') do
    local ok = false
    for _, k in ipairs(suite.TASKS) do if k == t then ok = true end end
    if not ok then error("lm_eval: unknown task '" .. t .. "' (known: " .. table.concat(suite.TASKS, ', ') .. ')', 0) end
    want[t] = true
  end
  return want
end
suite.parse_tasks = parse_tasks

--- suite.corpus_of(meta) -> {name =} or {text =} for the corpus a checkpoint was trained on.
function suite.corpus_of(meta, override)
  if override then
    if data.exists(override) and not data.is_dir(override) then return { text = override, label = override } end
    return { name = override, label = override }
  end
  local a = meta.args or {}
  if meta.text then return { text = meta.text, label = meta.text } end
  if a.text then return { text = a.text, label = a.text } end
  if type(meta.corpus) == 'string' then return { name = meta.corpus, label = meta.corpus } end
  if a.corpus then return { name = a.corpus, label = a.corpus } end
  error('lm_eval: the checkpoint records no corpus; pass --corpus NAME', 0)
end

-- cached per run: the WordNet synsets and each corpus' test text
local function cached(cache, key, fn)
  if cache[key] == nil then cache[key] = fn() end
  return cache[key]
end

--- suite.evaluate(path, opts, cache) -> row. opts: tasks, corpus, corpora, ppl_bytes,
--- cloze_items, wordnet_items, extrap_tokens, batch, seed, device, out (for the
--- extrapolation CSV/PNG). cache: a table shared across checkpoints.
function suite.evaluate(path, opts, cache)
  cache = cache or {}
  local o = {}
  for k, v in pairs(suite.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  local tasks = parse_tasks(o.tasks)
  local model, tok, meta = lm_model.load(path, { device = o.device })
  local ctx = meta.context
  local own = suite.corpus_of(meta, o.corpus)
  local row = { file = path, label = suite.label(path), method = meta.method or '?',
    order = tostring(model.config.order), key_norm = model.config.key_norm or 'none',
    corpus = own.label, tokenizer = tok.kind or '?', vocab = tok.vocab_size, context = ctx,
    params = lm_model.params(model), step = meta.step, counts = {} }
  local run = { batch = o.batch, device = o.device, max_len = ctx }
  local note = o.on_task or function() end
  local function test_text(spec, max_bytes)
    return cached(cache, 'text:' .. (spec.name or spec.text) .. ':' .. max_bytes, function()
      return P.load_split(spec, { max_bytes = max_bytes })
    end)
  end
  if tasks.ppl then
    row.ppl_by_corpus = {}
    local list = o.corpora or { own }
    for _, spec in ipairs(list) do
      if type(spec) == 'string' then spec = { name = spec, label = spec } end
      local r = P.evaluate(model, tok, test_text(spec, o.ppl_bytes), { context = ctx, batch = o.batch, device = o.device })
      row.ppl_by_corpus[spec.label or spec.name] = r
      if (spec.label or spec.name) == own.label or #list == 1 then row.ppl, row.bpb, row.loss = r.ppl, r.bpb, r.loss end
      row.counts['ppl:' .. (spec.label or spec.name)] = r.tokens
    end
    note(string.format('bpb %.3f', row.bpb or 0 / 0))
  end
  if tasks.cloze then
    local items = cached(cache, 'cloze:' .. own.label, function()
      return C.build(test_text(own, 0), { n = o.cloze_items, seed = o.seed })
    end)
    local r = C.evaluate(model, tok, items, run)
    row.cloze = { greedy = r.greedy, acc = r.acc, acc_norm = r.acc_norm, rank = r.rank, n = r.n,
      chance_acc = r.chance_acc, chance_rank = r.chance_rank, n_candidates = r.n_candidates }
    row.counts.cloze = r.n
    note(string.format('cloze acc %.3f', r.acc))
  end
  if tasks.wordnet then
    local items = cached(cache, 'wordnet', function()
      return W.build(W.load({ dir = o.wordnet_dir }), { n = o.wordnet_items, seed = o.seed })
    end)
    local r = W.evaluate(model, tok, items, run)
    row.wordnet = { acc = r.acc, acc_norm = r.acc_norm, n = r.n, chance = r.chance }
    row.counts.wordnet = r.n
    note(string.format('wordnet acc %.3f', r.acc))
  end
  if tasks.extrap then
    local r = X.evaluate(model, tok, test_text(own, 0), { context = ctx, max_tokens = o.extrap_tokens,
      batch_tokens = o.batch * ctx, device = o.device })
    row.extrap = { summary = {}, skipped = r.skipped, bucket = r.bucket }
    for m, s in pairs(r.summary) do row.extrap.summary[tostring(m)] = s end
    row.extrap_buckets = r.buckets
    if o.out then
      local base = o.out .. '/extrapolation_' .. file_safe(row.label)
      local png, why = X.write(r, base .. '.csv', base .. '.png', 'loss by position: ' .. row.label)
      row.extrap.csv, row.extrap.png = base .. '.csv', png or why
    end
    row.counts.extrap_windows = {}
    for m, s in pairs(r.summary) do row.counts.extrap_windows[tostring(m)] = s.windows end
    note('extrapolation')
  end
  return row
end

local function fmt(v, digits)
  if v == nil then return '' end
  if type(v) ~= 'number' then return tostring(v) end
  if v ~= v then return 'nan' end
  if v == math.floor(v) and math.abs(v) < 1e12 then return string.format('%d', v) end
  return string.format('%.' .. (digits or 4) .. 'g', v)
end

--- suite.columns: {header, getter} for the table and the CSV (one row per checkpoint).
suite.COLUMNS = {
  { 'checkpoint', function(r) return r.label end },
  { 'method', function(r) return r.method end },
  { 'corpus', function(r) return r.corpus end },
  { 'ctx', function(r) return r.context end },
  { 'params', function(r) return r.params end },
  { 'ppl', function(r) return r.ppl end },
  { 'bpb', function(r) return r.bpb end },
  { 'cloze greedy', function(r) return r.cloze and r.cloze.greedy end },
  { 'cloze acc@10', function(r) return r.cloze and r.cloze.acc end },
  { 'cloze acc_norm', function(r) return r.cloze and r.cloze.acc_norm end },
  { 'cloze rank', function(r) return r.cloze and r.cloze.rank end },
  { 'wordnet acc', function(r) return r.wordnet and r.wordnet.acc end },
  { 'wordnet acc_norm', function(r) return r.wordnet and r.wordnet.acc_norm end },
  { 'loss 1x', function(r) return r.extrap and r.extrap.summary['1'] and r.extrap.summary['1'].loss end },
  { 'loss 8x', function(r) return r.extrap and r.extrap.summary['8'] and r.extrap.summary['8'].loss end },
  { 'error', function(r) return r.error end },
}

--- suite.markdown(rows) -> a Markdown table, one row per checkpoint plus the chance row.
function suite.markdown(rows)
  local lines, head, sep = {}, {}, {}
  for i, c in ipairs(suite.COLUMNS) do head[i], sep[i] = c[1], '---' end
  lines[1] = '| ' .. table.concat(head, ' | ') .. ' |'
  lines[2] = '|' .. table.concat(sep, '|') .. '|'
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(suite.COLUMNS) do cells[i] = fmt(c[2](r)) end
    lines[#lines + 1] = '| ' .. table.concat(cells, ' | ') .. ' |'
  end
  local chance = { label = '(chance)', cloze = { acc = 0.1, acc_norm = 0.1, rank = 5.5 }, wordnet = { acc = W.CHANCE, acc_norm = W.CHANCE } }
  for _, r in ipairs(rows) do
    if r.cloze then chance.cloze = { acc = r.cloze.chance_acc, acc_norm = r.cloze.chance_acc, rank = r.cloze.chance_rank } break end
  end
  local cells = {}
  for i, c in ipairs(suite.COLUMNS) do cells[i] = fmt(c[2](chance)) end
  lines[#lines + 1] = '| ' .. table.concat(cells, ' | ') .. ' |'
  return table.concat(lines, '\n')
end

--- suite.provenance(opts, rows) -> what produced the numbers: efla version, date, seed,
--- the options and the sample counts per checkpoint.
function suite.provenance(opts)
  local plain = {}
  for k, v in pairs(opts) do
    if type(v) == 'string' or type(v) == 'number' or type(v) == 'boolean' or (type(v) == 'table' and k == 'corpora') then plain[k] = v end
  end
  return { efla_version = efla.version(), date = os.date('!%Y-%m-%dT%H:%M:%SZ'), seed = opts.seed or suite.DEFAULTS.seed,
    options = plain, tasks = opts.tasks or table.concat(suite.TASKS, ','),
    chance = { cloze_acc = 1 / C.DEFAULTS.n_candidates, cloze_rank = (C.DEFAULTS.n_candidates + 1) / 2, wordnet = W.CHANCE } }
end

--- suite.run(paths, opts) -> rows, files. Evaluates every checkpoint (a failing one gets a
--- row with its error and the batch goes on), prints progress and the Markdown table, and
--- writes <out>/lm_eval.csv, lm_eval.json, lm_eval.md and the extrapolation plots.
function suite.run(paths, opts)
  opts = opts or {}
  local out = opts.out or 'checkpoints/lm_eval'
  data.mkdir_p(out)
  local files = suite.find_checkpoints(paths)
  parse_tasks(opts.tasks)
  -- a checkpoint that is readable but not a language model is a usage error: say so first
  for _, path in ipairs(files) do
    local ok, info = pcall(require('efla.checkpoint').info, path)
    if ok and not lm_model.is_lm(info) then lm_model.load(path) end
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.out = out
  local rows, cache = {}, {}
  local log = opts.log or io.stdout
  o.on_task = function(what) log:write(what, ', '); log:flush() end
  for i, path in ipairs(files) do
    log:write(string.format('[%d/%d] %s ... ', i, #files, path))
    log:flush()
    local t0 = progress.wall()
    local ok, row = pcall(suite.evaluate, path, o, cache)
    if not ok then
      row = { file = path, label = suite.label(path), error = tostring(row):gsub('\n', ' ') }
      log:write('skipped: ' .. row.error .. '\n')
    else
      row.seconds = progress.wall() - t0
      log:write(string.format('done in %.1f s\n', row.seconds))
    end
    rows[#rows + 1] = row
  end
  local header, table_rows = {}, {}
  for i, c in ipairs(suite.COLUMNS) do header[i] = c[1] end
  for _, r in ipairs(rows) do
    local t = {}
    for i, c in ipairs(suite.COLUMNS) do local v = c[2](r); t[i] = v == nil and '' or v end
    table_rows[#table_rows + 1] = t
  end
  local csv = require 'efla.csv'
  local json = require 'efla.json'
  csv.write(out .. '/lm_eval.csv', header, table_rows)
  local md = suite.markdown(rows)
  data.write_atomic(out .. '/lm_eval.md', md .. '\n')
  local slim = {}
  for i, r in ipairs(rows) do
    local s = {}
    for k, v in pairs(r) do if k ~= 'extrap_buckets' then s[k] = v end end
    slim[i] = s
  end
  data.write_atomic(out .. '/lm_eval.json', json.encode({ provenance = suite.provenance(opts), rows = slim }) .. '\n')
  local written = { out .. '/lm_eval.csv', out .. '/lm_eval.json', out .. '/lm_eval.md' }
  -- one plot of every checkpoint at its longest evaluated multiplier
  local series = {}
  for _, r in ipairs(rows) do
    if r.extrap_buckets and #r.extrap_buckets > 0 then
      local top = r.extrap_buckets[#r.extrap_buckets].multiplier
      local s = { name = r.label:gsub('_', '-') .. ' (' .. top .. 'x)', x = {}, y = {} }
      for _, b in ipairs(r.extrap_buckets) do
        if b.multiplier == top then s.x[#s.x + 1] = math.sqrt(b.from * b.to); s.y[#s.y + 1] = b.loss end
      end
      series[#series + 1] = s
    end
  end
  if #series > 0 then
    local png = require('efla.plot').lines { path = out .. '/extrapolation.png', title = 'loss by position at the longest window',
      xlabel = 'position (tokens)', ylabel = 'mean cross-entropy (nats)', series = series, logx = true }
    if png then written[#written + 1] = png end
  end
  return rows, written, md
end

return suite
