-- make_seeds.lua OUTDIR: the fuzzer's seed corpus, valid checkpoints of the shapes efla
-- writes: empty, every dtype, nested sections, many attributes, a long string (stored as a
-- dataset), a 0-element tensor, a scalar. Run: build/efla tests/fuzz/make_seeds.lua DIR
local efla = require 'efla'
local ck = require 'efla.checkpoint'
local out = assert(arg[1], 'usage: efla make_seeds.lua OUTDIR')
os.execute("mkdir -p '" .. out .. "'")
efla.manual_seed(1)
local function save(name, c) ck.save(out .. '/' .. name, c) end
save('empty.h5', {})
save('small_model.h5', { model = { w = efla.ones({ 2, 3 }), b = efla.zeros({ 3 }) }, step = 7, epoch = 1,
  metrics = { acc = 0.5, loss = { 2.3, 1.1 } } })
save('dtypes.h5', { model = {
  f32 = efla.randn({ 3 }), f64 = efla.randn({ 2 }, { dtype = 'float64' }),
  i64 = efla.tensor({ 1, 2, 3 }, { dtype = 'int64' }), u8 = efla.tensor({ 1, 255 }, { dtype = 'uint8' }),
  b = efla.tensor({ 1, 0 }, { dtype = 'bool' }), bf = efla.ones({ 2 }, { dtype = 'bfloat16' }),
  scalar = efla.tensor(3.5), none = efla.zeros({ 0, 4 }) } })
save('sections.h5', { model = { ['layers.1.w'] = efla.ones({ 2, 2 }) },
  optim = { state = { { m = efla.zeros({ 2, 2 }), step = 3 } }, lr = 0.1 },
  schedule = { t = 5 }, rng = { seed = 1, offset = 2 }, meta = { recipe = 'seed', config = { d = 4 } } })
save('long_string.h5', { meta = { note = string.rep('abcdefgh', 4500) } })
print('seeds written to ' .. out)
