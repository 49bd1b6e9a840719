-- recipes/lr_sweep.lua: final clean accuracy vs learning rate for EFLA and DeltaNet (the
-- paper reports that EFLA wants a larger rate than DeltaNet).
local efla = require 'efla'
local smnist = require 'efla.tasks.smnist'
local report = require 'efla.tasks.report'
local csv = require 'efla.csv'

local spec = smnist.common_options()
spec.name = 'recipes/lr_sweep.lua'
spec.description = 'Sweep the learning rate for both methods; plot final accuracy vs rate.'
table.insert(spec, { '--rates', default = '1e-4,3e-4,1e-3,3e-3,1e-2', help = 'comma-separated learning rates' })
table.insert(spec, { '--out', default = 'checkpoints/lr_sweep', help = 'output folder' })
local args = efla.args.parse(arg, spec)
efla.data.mkdir_p(args.out)

local rates, variants = {}, {}
for r in args.rates:gmatch('[^,]+') do
  local lr = tonumber(r)
  if not lr or lr ~= lr or lr <= 0 or lr == math.huge then error("--rates: '" .. r .. "' is not a learning rate (a number > 0)", 0) end
  rates[#rates + 1] = lr
end
for _, method in ipairs({ 'efla', 'deltanet' }) do
  for _, lr in ipairs(rates) do
    variants[#variants + 1] = { name = string.format('%s_lr%g', method, lr), method = method, overrides = { lr = lr } }
  end
end
local runs = smnist.run_variants(variants, args, args.out, { recipe = 'lr_sweep', clean_only = true })

-- with --seeds N > 1 the runs are means over the seeds (each seed in seed-<s>/); std beside them
local aggregated = runs[1].seeds ~= nil
local series, rows = {}, {}
for mi, method in ipairs({ 'efla', 'deltanet' }) do
  local ys, errs = {}, {}
  for ri, lr in ipairs(rates) do
    local run = runs[(mi - 1) * #rates + ri]
    ys[ri] = run.results.scale[1][2]
    rows[#rows + 1] = { method, lr, ys[ri], run.final_loss }
    if aggregated then errs[ri] = run.std.scale[1]; rows[#rows][5] = errs[ri] end
  end
  series[#series + 1] = { name = method, x = rates, y = ys, yerr = aggregated and errs or nil }
end
csv.write(args.out .. '/accuracy_vs_lr.csv', aggregated and { 'method', 'lr', 'clean_accuracy', 'final_loss', 'clean_std' }
  or { 'method', 'lr', 'clean_accuracy', 'final_loss' }, rows)
report.lr_plot(args.out, series)
report.loss(args.out, runs)
print('')
for _, r in ipairs(rows) do
  print(string.format('%-9s lr %-8g accuracy %.4f%s  final loss %.4f', r[1], r[2], r[3],
    r[5] and string.format(' ± %.4f', r[5]) or '', r[4] or 0 / 0))
end
print('\nwrote ' .. args.out .. ': accuracy_vs_lr.{csv,png}, loss.csv')
