-- recipes/ablate_keynorm.lua: the "spectral gate" ablation. EFLA and DeltaNet, each with
-- and without L2 key normalisation, under the same robustness tests. EFLA's transition
-- along k is e^{-beta*|k|^2}, in (0, 1] for any key norm; DeltaNet's Euler step 1 - beta*|k|^2
-- leaves (-1, 1) once beta*|k|^2 > 2, so without normalised keys it should degrade.
local efla = require 'efla'
local smnist = require 'efla.tasks.smnist'
local report = require 'efla.tasks.report'
local seeds = require 'efla.tasks.seeds'

local spec = smnist.common_options()
spec.name = 'recipes/ablate_keynorm.lua'
spec.description = 'EFLA and DeltaNet with and without key normalisation, under the robustness tests.'
table.insert(spec, { '--out', default = 'checkpoints/ablate_keynorm', help = 'output folder' })
local args = efla.args.parse(arg, spec)
efla.data.mkdir_p(args.out)

local runs = smnist.run_variants({
  { name = 'efla_keys_raw', method = 'efla', overrides = { key_norm = 'none' } },
  { name = 'efla_keys_l2', method = 'efla', overrides = { key_norm = 'l2' } },
  { name = 'deltanet_keys_l2', method = 'deltanet', overrides = { key_norm = 'l2' } },
  { name = 'deltanet_keys_raw', method = 'deltanet', overrides = { key_norm = 'none' } },
}, args, args.out, { recipe = 'ablate_keynorm' })

report.loss(args.out, runs)
local aggregated = runs[1].seeds ~= nil   -- --seeds N > 1: mean ± std, every seed in seed-<s>/
if aggregated then seeds.write(args.out, runs) else report.robustness(args.out, runs) end
report.write_json(args.out .. '/results.json', { args = args, compute = runs[1].compute, runs = runs })
print('\n' .. (aggregated and seeds.summary_table(runs) or report.summary_table(runs)))
print('\nwrote ' .. args.out .. ': loss.csv, robustness_*.csv, acc_vs_*.png, results.json')
