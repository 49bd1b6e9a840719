-- bench/clip_grad_norm.lua: gradient clipping of a language model's gradients, per call:
-- optim.clip_grad_norm_ (the multi-tensor ops of efla.foreach: one sum of squares, a few
-- scalar ops, one scale) against its per-tensor path ({foreach = false}: a norm, a cast and a
-- multiply per gradient, then a stack), and efla.foreach.sum_squares alone. Both clip to half
-- the norm, so every call scales every gradient. Prints both norms and their difference.
--
--   efla bench/clip_grad_norm.lua                       (cuda: the byte LM of bench/lm_step_gpu.lua)
--   efla bench/clip_grad_norm.lua --device cpu --reps 20
local efla = require 'efla'
local wall = require('efla.progress').wall
local nn, optim, fe = efla.nn, efla.optim, efla.foreach

local opts = efla.args.parse(arg, {
  name = 'bench/clip_grad_norm.lua',
  description = 'clip_grad_norm_ on the multi-tensor ops against the per-tensor formula, ms per call.',
  { '--device', default = 'cuda', help = 'cuda[:N] or cpu' },
  { '--dtype', default = 'float32', choices = { 'float32', 'bfloat16', 'float64' }, help = 'parameter and gradient dtype' },
  { '--d-model', type = 'number', default = 512, help = 'model width (byte LM: 512)' },
  { '--layers', type = 'number', default = 8, help = 'layers (byte LM: 8)' },
  { '--vocab', type = 'number', default = 256, help = 'vocabulary (byte LM: 256)' },
  { '--reps', type = 'number', default = 50, help = 'timed calls per variant' },
  { '--seed', type = 'number', default = 1, help = 'random seed of the gradients' },
})
local dev = opts.device
local function sync() if dev ~= 'cpu' then efla.cuda.synchronize() end end

efla.manual_seed(opts.seed)
local model = nn.CausalLM { vocab_size = opts.vocab, d_model = opts.d_model, n_layers = opts.layers,
  n_heads = math.max(1, math.floor(opts.d_model / 128)), short_conv = true, output_norm = true }
model:to(dev, opts.dtype)
local params, numel = model:parameters(), 0
for _, p in ipairs(params) do
  p.grad = efla.randn(p:size(), { dtype = opts.dtype, device = dev }) * 1e-3
  numel = numel + p:numel()
end
local grads = {}
for i, p in ipairs(params) do grads[i] = p.grad end

-- the per-tensor path (one norm and one scaling per gradient), what clip_grad_norm_ ran before
-- efla.foreach
local function per_tensor_clip(max_norm) return optim.clip_grad_norm_(params, max_norm, { foreach = false }) end

local function time(name, fn)
  for _ = 1, 3 do fn() end   -- warm-up (allocator, first launches)
  sync()
  local t0 = wall()
  for _ = 1, opts.reps do fn() end
  sync()
  local ms = (wall() - t0) * 1e3 / opts.reps
  print(string.format('  %-34s %9.3f ms/call', name, ms))
  return ms
end

-- Re-randomising between calls would dominate the time: refresh the gradients once per
-- variant and clip to half their norm; the first call halves them, every later call still
-- scales them (by 1 - 2e-6 / norm), and they stay far from denormal numbers.
local function refresh() for _, g in ipairs(grads) do g:copy_(efla.randn(g:size(), { dtype = opts.dtype, device = dev }) * 1e-3) end end
print(string.format('clip_grad_norm_: %d gradients, %.2fM elements, %s on %s, %d calls each',
  #grads, numel / 1e6, opts.dtype, dev, opts.reps))
refresh()
local n_new = optim.clip_grad_norm_(params, 1e30):item()
local n_old = per_tensor_clip(1e30):item()
print(string.format('  norms: multi-tensor %.12g, per-tensor %.12g (relative difference %.2g)',
  n_new, n_old, math.abs(n_new - n_old) / n_old))
refresh()
local max_norm = 0.5 * n_new
local t_new = time('clip_grad_norm_ (multi-tensor)', function() optim.clip_grad_norm_(params, max_norm) end)
refresh()
local t_old = time('per-tensor formula', function() per_tensor_clip(max_norm) end)
refresh()
time('foreach.sum_squares only', function() fe.sum_squares(grads) end)
print(string.format('summary: clip_grad_norm_ %.3f ms vs %.3f ms per call (%.1fx), %d gradients on %s',
  t_new, t_old, t_old / t_new, #grads, dev))
