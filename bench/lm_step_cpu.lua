-- bench/lm_step_cpu.lua: forward and backward time of one CausalLM step on the CPU, to
-- see what the thread settings cost a small experiment (B=64, T=9, d=64: the size of an
-- associative-recall toy) and a large one (B=16, T=256, d=256).
--
--   efla bench/lm_step_cpu.lua                      both sizes, efla's default threads
--   OMP_WAIT_POLICY=active efla bench/lm_step_cpu.lua     the old spinning wait
--   efla bench/lm_step_cpu.lua --threads 1
--
-- Prints the median over --steps steps (after 3 untimed ones) of the forward (loss) and
-- the backward, each in milliseconds.
local efla = require 'efla'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/lm_step_cpu.lua',
  description = 'CPU forward/backward time of a tiny and a large CausalLM step.',
  { '--threads', type = 'number', default = 0, help = 'OpenMP threads (0: keep the default)' },
  { '--steps', type = 'number', default = 15, help = 'timed steps per size' },
  { '--sizes', default = 'tiny,large', help = 'comma-separated: tiny, large' },
})
if opts.threads > 0 then efla.set_num_threads(opts.threads) end

local sizes = {
  tiny = { B = 64, T = 9, d = 64, layers = 2, heads = 2, vocab = 64 },
  large = { B = 16, T = 256, d = 256, layers = 2, heads = 4, vocab = 256 },
}

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

print(string.format('threads %d, OMP_WAIT_POLICY=%s', efla.num_threads(), os.getenv('OMP_WAIT_POLICY') or '(unset)'))
print('| size | B | T | d | forward ms | backward ms |')
print('|---|---|---|---|---|---|')
for name in opts.sizes:gmatch('[^,]+') do
  local s = assert(sizes[name], 'unknown size ' .. name .. ' (use tiny or large)')
  efla.manual_seed(1)
  local model = efla.nn.CausalLM { vocab_size = s.vocab, d_model = s.d, n_layers = s.layers, n_heads = s.heads }
  local tokens = efla.randint(1, s.vocab + 1, { s.B, s.T + 1 })  -- ids are 1-based
  local x, y = tokens:narrow(2, 1, s.T), tokens:narrow(2, 2, s.T)
  local fwd, bwd = {}, {}
  for step = 1, opts.steps + 3 do
    local t0 = wall()
    local logits = model:forward(x)
    local loss = efla.nn.functional.cross_entropy(logits:reshape(s.B * s.T, s.vocab), y:reshape(s.B * s.T))
    local t1 = wall()
    model:zero_grad()
    loss:backward()
    local t2 = wall()
    if step > 3 then fwd[#fwd + 1] = (t1 - t0) * 1e3; bwd[#bwd + 1] = (t2 - t1) * 1e3 end
    collectgarbage()
  end
  print(string.format('| %s | %d | %d | %d | %.2f | %.2f |', name, s.B, s.T, s.d, median(fwd), median(bwd)))
end
