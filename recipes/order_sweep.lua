-- recipes/order_sweep.lua: accuracy and robustness vs the integration order of the memory
-- ODE: 1 (Euler = DeltaNet's update), 2, 4 (Runge-Kutta) and exact (EFLA), all with the
-- same keys (unnormalised by default, where the orders differ most; --key-norm l2 to
-- compare them on DeltaNet's footing) and the same learning rate.
local efla = require 'efla'
local smnist = require 'efla.tasks.smnist'
local report = require 'efla.tasks.report'
local seeds = require 'efla.tasks.seeds'
local csv = require 'efla.csv'

local spec = smnist.common_options()
spec.name = 'recipes/order_sweep.lua'
spec.description = 'Train the sMNIST model with integration orders 1, 2, 4 and exact; compare accuracy and robustness.'
table.insert(spec, { '--orders', default = '1,2,4,exact', help = 'comma-separated orders' })
table.insert(spec, { '--key-norm', default = 'none', choices = { 'none', 'l2' }, help = 'key normalisation for every order' })
table.insert(spec, { '--lr', type = 'number', above = 0, default = 3e-3, help = 'learning rate for every order' })
table.insert(spec, { '--out', default = 'checkpoints/order_sweep', help = 'output folder' })
local args = efla.args.parse(arg, spec)
efla.data.mkdir_p(args.out)

local variants, orders = {}, {}
for o in args.orders:gmatch('[^,]+') do
  local order = o == 'exact' and 'exact' or tonumber(o)
  if order ~= 'exact' and not (order == 1 or order == 2 or order == 3 or order == 4) then
    error("--orders: '" .. o .. "' is not exact, 1, 2, 3 or 4", 0)
  end
  orders[#orders + 1] = o
  variants[#variants + 1] = { name = 'order_' .. o, method = order == 'exact' and 'efla' or 'deltanet',
    overrides = { order = order, key_norm = args.key_norm, lr = args.lr } }
end
local runs = smnist.run_variants(variants, args, args.out, { recipe = 'order_sweep' })

report.loss(args.out, runs)
local aggregated = runs[1].seeds ~= nil   -- --seeds N > 1: mean ± std, every seed in seed-<s>/
if aggregated then seeds.write(args.out, runs) else report.robustness(args.out, runs) end
-- accuracy vs order (x: 1, 2, 4, and exact drawn at 8)
local xs, clean, scale10 = {}, {}, {}
local rows = {}
for i, r in ipairs(runs) do
  xs[i] = orders[i] == 'exact' and 8 or tonumber(orders[i])
  clean[i] = r.results.scale[1][2]
  scale10[i] = r.results.scale[#r.results.scale][2]
  rows[i] = { orders[i], clean[i], scale10[i], r.final_loss }
  if aggregated then
    rows[i][5], rows[i][6] = r.std.scale[1], r.std.scale[#r.std.scale]
  end
end
csv.write(args.out .. '/accuracy_vs_order.csv', aggregated and { 'order', 'clean', 'scale_x10', 'final_loss', 'clean_std', 'scale_x10_std' }
  or { 'order', 'clean', 'scale_x10', 'final_loss' }, rows)
report.order_plot(args.out, xs, clean, scale10)
report.write_json(args.out .. '/results.json', { args = args, compute = runs[1].compute, runs = runs })
print('\n' .. (aggregated and seeds.summary_table(runs) or report.summary_table(runs)))
print('\nwrote ' .. args.out .. ': accuracy_vs_order.{csv,png}, robustness_*.csv, acc_vs_*.png')
