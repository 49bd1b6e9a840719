-- bench/lm_step_gpu.lua: one language-model training step on the GPU (forward, the fused
-- head + cross-entropy, backward, device-side gradient clipping, AdamW), in ms/step,
-- tokens/s, peak GPU memory and the activation bytes per token and layer that autograd keeps
-- between forward and backward. bench/lm_step_fla.py prints the same columns for
-- flash-linear-attention's DeltaNet on the same shapes; bench/lm_step_vs_fla.sh runs both.
--
--   efla bench/lm_step_gpu.lua                          both models, bfloat16 compute
--   efla bench/lm_step_gpu.lua --model byte --delta-rule-noop   the step without the delta rule
--   efla bench/lm_step_gpu.lua --compute float32        float32 throughout
--   efla bench/lm_step_gpu.lua --device cpu --model tiny --steps 2   (checks the script)
--
-- Models (DeltaNet layers as fla builds them: short convolutions with SiLU, L2-normalised q
-- and k, sigmoid beta, RMSNorm on the output, SwiGLU MLP of fla's size, no gate):
--   byte  8 layers x 512, 4 heads, vocab 256, batch 16 x 2048 (25.5M parameters)
--   125m  12 layers x 768, 6 heads (head_dim 128), vocab 32000 token ids, batch 16 x 2048
--   tiny  2 layers x 64, 2 heads, vocab 256, batch 2 x 64 (a smoke test)
-- Float32 master weights and AdamW state; --compute bfloat16 runs activations and matmuls in
-- bfloat16 (Module:set_compute_dtype). One batch of random tokens stays on the device, and
-- nothing reads the device inside the timed steps (the loss is read once at the end).
local efla = require 'efla'
local nn, optim = efla.nn, efla.optim
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/lm_step_gpu.lua',
  description = 'Training-step throughput and memory of efla CausalLMs (compare: bench/lm_step_fla.py).',
  { '--model', default = 'both', choices = { 'byte', '125m', 'both', 'tiny' }, help = 'which model' },
  { '--device', default = 'cuda', help = 'cuda[:N] (cpu only to check the script)' },
  { '--compute', default = 'bfloat16', choices = { 'bfloat16', 'float32' }, help = 'activation/matmul dtype' },
  { '--batch', type = 'number', help = 'sequences per step (default: per model)' },
  { '--seq', type = 'number', help = 'tokens per sequence (default: per model)' },
  { '--steps', type = 'number', default = 10, help = 'timed steps' },
  { '--warmup', type = 'number', default = 3, help = 'untimed steps first' },
  { '--order', default = '1', help = "delta-rule order: 1 (DeltaNet, like fla) or 'exact' (EFLA)" },
  { '--delta-rule-noop', type = 'boolean', help = 'replace the delta rule by o = (q + k + v) * beta (same shapes, cheap)' },
  { '--recompute-states', type = 'boolean', help = 'delta rule: recompute chunk states in backward instead of saving them' },
  { '--memory-report', type = 'boolean', help = 'print what the graph keeps for backward, per op (efla.autograd.saved_memory)' },
  { '--no-fused', type = 'boolean', help = 'composed ops instead of the fused layers (efla.nn.fused.enabled = false)' },
  { '--seed', type = 'number', default = 1, help = 'seed of weights and tokens' },
})

local MODELS = {
  byte = { vocab_size = 256, d_model = 512, n_layers = 8, n_heads = 4, batch = 16, seq = 2048 },
  ['125m'] = { vocab_size = 32000, d_model = 768, n_layers = 12, n_heads = 6, batch = 16, seq = 2048 },
  tiny = { vocab_size = 256, d_model = 64, n_layers = 2, n_heads = 2, batch = 2, seq = 64 },
}
-- fla's GatedMLP size: 2/3 * 4 * d rounded up to a multiple of 256
local function fla_mlp_hidden(d) return 256 * math.ceil(math.floor(d * 4 * 2 / 3) / 256) end

if opts.no_fused then nn.fused.enabled = false end
if opts.delta_rule_noop then
  efla.ops.delta_rule = function(q, k, v, beta)
    local B, H, dv = q:size(1), q:size(3), v:size(4)
    local S = efla.zeros({ B, H, q:size(4), dv }, { dtype = 'float32', device = q:device() })
    return (q + k + v) * beta:unsqueeze(4), S
  end
end

local dev = opts.device
local function sync() if dev ~= 'cpu' then efla.cuda.synchronize() end end
local function mem()
  if dev == 'cpu' then return { live_bytes = efla.cpu_live_bytes(), peak_bytes = 0 } end
  return efla.cuda.memory_stats()
end

local function run(name)
  local spec = MODELS[name]
  local B, T = opts.batch or spec.batch, opts.seq or spec.seq
  efla.manual_seed(opts.seed)
  collectgarbage('collect'); collectgarbage('collect')
  if dev ~= 'cpu' then efla.cuda.empty_cache() end
  local model = nn.CausalLM {
    vocab_size = spec.vocab_size, d_model = spec.d_model, n_layers = spec.n_layers, n_heads = spec.n_heads,
    order = opts.order == 'exact' and 'exact' or tonumber(opts.order), key_norm = 'l2', query_norm = 'l2',
    short_conv = true, output_norm = true, output_gate = false, mlp_hidden = fla_mlp_hidden(spec.d_model),
    recompute_states = opts.recompute_states or false,
  }
  model:to(dev)
  if opts.compute ~= 'float32' then model:set_compute_dtype(opts.compute) end
  local opt = optim.AdamW(optim.param_groups(model, { weight_decay = 0.1 }), { lr = 3e-4 })
  local tok = efla.randint(1, spec.vocab_size + 1, { B, T }):to(dev)
  local tgt = efla.randint(1, spec.vocab_size + 1, { B, T }):to(dev)

  local function step()
    opt:zero_grad()
    local loss = model:loss(tok, tgt)
    loss:backward()
    optim.clip_grad_norm_(model, 1.0)
    opt:step()
    return loss
  end
  for _ = 1, opts.warmup do step() end
  sync()
  -- activation bytes kept between forward and backward (one extra, untimed step)
  opt:zero_grad()
  collectgarbage('collect')
  sync()
  local before = mem().live_bytes
  local loss = model:loss(tok, tgt)
  sync()
  local kept = mem().live_bytes - before
  local report = opts.memory_report and { efla.autograd.saved_memory(loss) } or nil
  loss:backward()
  loss = nil
  collectgarbage('collect')
  sync()
  if dev ~= 'cpu' then efla.cuda.reset_peak() end
  local t0 = wall()
  for _ = 1, opts.steps do loss = step() end
  sync()
  local dt = (wall() - t0) / opts.steps
  local peak = mem().peak_bytes
  -- one more step, the peak of each phase (where the memory goes)
  local phase = {}
  if dev ~= 'cpu' then
    local function mark(name, fn)
      sync(); efla.cuda.reset_peak()
      local r = fn()
      sync(); phase[#phase + 1] = string.format('%s %.2f', name, mem().peak_bytes / 2 ^ 30)
      return r
    end
    opt:zero_grad()
    local l = mark('forward', function() return model:loss(tok, tgt) end)
    mark('backward', function() l:backward() end)
    mark('clip+adamw', function() optim.clip_grad_norm_(model, 1.0); opt:step() end)
  end
  local tokens = B * T
  print(string.format('%-6s %-9s %-5s %7.1f %10.0f %9.2f %10.0f %9.3f  %s', name, opts.compute,
    opts.delta_rule_noop and 'noop' or 'real', dt * 1e3, tokens / dt, peak / 2 ^ 30, kept / tokens / spec.n_layers,
    loss:item(), string.format('%.1fM params, B=%d T=%d', model:num_parameters() / 1e6, B, T)))
  if #phase > 0 then print('       peak GiB by phase: ' .. table.concat(phase, ', ')) end
  if report then
    local rows, total = report[1], report[2]
    print(string.format('       saved for backward: %.0f B/token/layer in all (%.2f GiB), by op:', total / tokens / spec.n_layers,
      total / 2 ^ 30))
    for _, r in ipairs(rows) do
      if r.bytes > 0 then
        print(string.format('         %-28s %4d nodes %5d tensors %9.0f B/token/layer', r.name, r.nodes, r.tensors,
          r.bytes / tokens / spec.n_layers))
      end
    end
  end
end

print(string.format('efla %s on %s%s', efla.version(), dev,
  dev ~= 'cpu' and (' (' .. efla.cuda.properties().name .. ')') or ''))
print(string.format('%-6s %-9s %-5s %7s %10s %9s %10s %9s  %s', 'model', 'compute', 'delta', 'ms/step', 'tokens/s',
  'peak GiB', 'act B/t/l', 'loss', 'shape'))
local names = opts.model == 'both' and { 'byte', '125m' } or { opts.model }
for _, n in ipairs(names) do
  local ok, err = pcall(run, n)
  if not ok then print(string.format('%-6s failed: %s', n, tostring(err):gsub('\n.*', ''))) end
end
