-- tasks/lm_report.lua: the files a language-model run writes (train.csv, valid.csv,
-- loss.png, results.json with provenance) and the tables it prints.
local csv = require 'efla.csv'
local plot = require 'efla.plot'
local report = require 'efla.tasks.report'
local efla = require 'efla'

local R = {}

local function git_revision() return require('efla.sys').git_revision() or 'unknown' end

--- provenance(args) -> {efla_version, git_revision, date, seed, argv, threads}
function R.provenance(args)
  local argv = {}
  for i = 0, #(arg or {}) do argv[#argv + 1] = arg[i] end
  return { efla_version = efla.version(), git_revision = git_revision(), date = os.date('!%Y-%m-%dT%H:%M:%SZ'),
    seed = args.seed, argv = argv, threads = efla.num_threads() }
end

--- write(out_dir, runs, args) -> list of the files written. runs: {name, history (train loss
--- per step), valid = {{step, tokens_seen, loss, bpb}, ...}, tokens, steps, ...}.
function R.write(out_dir, runs, args)
  local files = {}
  local per_step = args.batch * (args.accum or 1) * args.context
  -- train.csv: one row per step
  local header, rows, longest = { 'step', 'tokens' }, {}, 0
  for _, r in ipairs(runs) do header[#header + 1] = r.name .. '_loss'; longest = math.max(longest, #r.history) end
  for s = 1, longest do
    local row = { s, s * per_step }
    for _, r in ipairs(runs) do row[#row + 1] = r.history[s] or '' end
    rows[s] = row
  end
  csv.write(out_dir .. '/train.csv', header, rows)
  files[#files + 1] = 'train.csv'
  -- valid.csv: one row per evaluation and run
  rows = {}
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.valid) do rows[#rows + 1] = { r.name, v.step, v.tokens_seen, v.loss, v.bpb, v.ppl } end
  end
  csv.write(out_dir .. '/valid.csv', { 'run', 'step', 'tokens', 'valid_loss', 'bits_per_byte', 'perplexity' }, rows)
  files[#files + 1] = 'valid.csv'
  -- loss.png: train (smoothed) and validation loss against tokens seen
  local series = {}
  for _, r in ipairs(runs) do
    local xs, sm = {}, plot.smooth(r.history, math.max(5, math.floor(#r.history / 20)))
    for s = 1, #r.history do xs[s] = s * per_step end
    series[#series + 1] = { name = r.name .. ' train (smoothed)', x = xs, y = sm, style = 'lines' }
    local vx, vy = {}, {}
    for i, v in ipairs(r.valid) do vx[i], vy[i] = v.tokens_seen, v.loss end
    series[#series + 1] = { name = r.name .. ' valid', x = vx, y = vy, style = 'linespoints' }
  end
  local png, why = plot.lines { path = out_dir .. '/loss.png', title = 'language-model loss', xlabel = 'training tokens',
    ylabel = 'cross-entropy (nats per token)', series = series }
  files[#files + 1] = png and 'loss.png' or why
  -- results.json
  local out_runs = {}
  for i, r in ipairs(runs) do
    out_runs[i] = { name = r.name, method = r.method, config = r.config, parameters = r.parameters, steps = r.steps,
      tokens = r.tokens, seconds = r.seconds, tokens_per_second = r.tokens_per_second, lr = r.lr,
      valid_loss = r.final.loss, bits_per_byte = r.final.bpb, perplexity = r.final.ppl, valid = r.valid,
      checkpoint = r.checkpoint, best = r.best, compute = r.compute }
  end
  local result = { provenance = R.provenance(args), args = args, runs = out_runs }
  if #runs == 2 then
    result.comparison = { runs = { runs[1].name, runs[2].name }, tokens = runs[1].tokens,
      valid_loss_difference = runs[2].final.loss - runs[1].final.loss,
      bits_per_byte_difference = runs[2].final.bpb - runs[1].final.bpb, text = R.comparison(runs[1], runs[2]) }
  end
  report.write_json(out_dir .. '/results.json', result)
  files[#files + 1] = 'results.json'
  return files
end

--- summary(runs) -> the table printed at the end of a run.
function R.summary(runs)
  local lines = {}
  local function row(c) lines[#lines + 1] = string.format('| %-10s | %10s | %6s | %8s | %9s | %10s | %9s | %8s | %7s |', unpack(c)) end
  row({ 'run', 'parameters', 'steps', 'tokens', 'tok/s', 'valid loss', 'bits/byte', 'ppl', 'time' })
  lines[#lines + 1] = '|' .. string.rep('-', 12) .. '|' .. string.rep('-', 12) .. '|' .. string.rep('-', 8) .. '|' ..
    string.rep('-', 10) .. '|' .. string.rep('-', 11) .. '|' .. string.rep('-', 12) .. '|' .. string.rep('-', 11) ..
    '|' .. string.rep('-', 10) .. '|' .. string.rep('-', 9) .. '|'
  for _, r in ipairs(runs) do
    row({ r.name, tostring(r.parameters), tostring(r.steps), string.format('%.2fM', r.tokens / 1e6),
      string.format('%.3gk', r.tokens_per_second / 1000), string.format('%.4f', r.final.loss),
      string.format('%.4f', r.final.bpb), string.format('%.2f', r.final.ppl), string.format('%.0f s', r.seconds) })
  end
  return table.concat(lines, '\n')
end

--- comparison(a, b) -> a sentence or two comparing two runs' final validation loss.
function R.comparison(a, b)
  local d = b.final.loss - a.final.loss
  local better = d > 0 and a.name or b.name
  return string.format('comparison (same data order, %.2fM tokens each): %s valid loss %.4f (%.4f bits/byte), %s %.4f (%.4f bits/byte);\n' ..
    '%s is lower by %.4f nats/token (%.2f%%, %.4f bits/byte). One seed: repeat with --seed for the spread.',
    a.tokens / 1e6, a.name, a.final.loss, a.final.bpb, b.name, b.final.loss, b.final.bpb, better, math.abs(d),
    100 * math.abs(d) / math.max(a.final.loss, b.final.loss), math.abs(b.final.bpb - a.final.bpb))
end

return R
