-- attention.lua: the multi-head EFLA / DeltaNet token mixer.
--
-- q, k, v and beta come from projections of x; beta = sigmoid(b_proj(x)) in (0, 1), one
-- per head and token. The delta-rule operator (efla.ops.delta_rule) integrates the memory
-- ODE with the chosen order: 'exact' is EFLA, 1 is DeltaNet's Euler step, 2-4 Runge-Kutta
-- (docs/MATH.md §2). EFLA can leave keys unnormalised (its transition e^{-beta*lambda} stays
-- in (0, 1]); DeltaNet needs L2-normalised keys, hence the per-order default of key_norm.
--
--   x -> q_proj, k_proj, v_proj [-> causal short convs + SiLU] -> split heads
--     -> [L2 norm of q] [L2 norm of k] -> delta rule (beta = sigmoid(b_proj(x))
--        [, log-decay g = -exp(A_log) * softplus(a_proj(x) + dt_bias) when gate = true])
--     -> [RMSNorm per head] [* SiLU(g_proj(x))] -> merge heads -> o_proj
--
-- gate = true adds Gated DeltaNet's decay to the memory ODE (docs/MATH.md §6): with order
-- 'exact' that is gated EFLA, with order 1 Gated DeltaNet.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local blocks = require 'efla.nn.blocks'
local init = require 'efla.nn.init_fns'
local fused = require 'efla.nn.fused'
local drop = require('efla.nn.temporaries').drop

local DeltaAttention = class.new('DeltaAttention', Module)

--- x / sqrt(sum(x^2) + eps) over the last dim (flash-linear-attention's l2norm).
--- One fused node (saving x only) unless efla.nn.fused.enabled is false.
local function l2_normalise(x, eps)
  if fused.on(x) then return fused.l2_norm(x, eps or 1e-6) end
  return x * (x:square():sum(-1, true) + (eps or 1e-6)):rsqrt()
end
DeltaAttention.l2_normalise = l2_normalise

local function parse_order(order)
  if order == nil or order == 'exact' then return 'exact' end
  local n = tonumber(order)
  if n and n >= 1 and n <= 4 and n % 1 == 0 then return n end
  error(string.format("DeltaAttention: order must be 'exact' or 1, 2, 3, 4 (got %s)", tostring(order)), 4)
end

local function parse_norm(v, what, default)
  if v == nil then return default end
  if v == false then return 'none' end
  if v == 'none' or v == 'l2' then return v end
  error(string.format("DeltaAttention: %s must be 'none' or 'l2' (got %s)", what, tostring(v)), 4)
end

-- The decay gate's parameters, initialised as Gated DeltaNet (and Mamba2) do: a rate
-- A = exp(A_log) drawn from U(1, 16) per head, and dt_bias = softplus^-1(dt) with dt
-- log-uniform in [1e-3, 1e-1], so that at the start g = -A * dt spans slow and fast memories.
-- (U(1, 16) rather than U(0, 16): log(A) stays finite.)
local function add_decay_gate(self, cfg)
  if self.order ~= 'exact' and self.order ~= 1 then
    error(string.format("DeltaAttention: gate = true needs order 'exact' (gated EFLA) or 1 (Gated DeltaNet), got %s",
      tostring(self.order)), 4)
  end
  local H, opts = self.n_heads, { dtype = cfg.dtype }
  self:add_module('a_proj', layers.Linear(self.d_model, H, { bias = false, dtype = cfg.dtype }))
  local A = init.uniform(efla.empty({ H }, opts), 1, 16)
  local dt = (init.uniform(efla.empty({ H }, opts), math.log(1e-3), math.log(1e-1))):exp():clamp(1e-4, math.huge)
  efla.no_grad(function()
    self:register_parameter('A_log', A:log():detach())
    -- softplus^-1(dt) = dt + log(1 - e^-dt) = dt + log(-expm1(-dt))
    self:register_parameter('dt_bias', (dt + (-(-dt):expm1()):log()):detach())
  end)
end

--- DeltaAttention{d_model, n_heads = 1, head_dim = d_model / n_heads, order = 'exact',
---   key_norm = ('none' for 'exact', 'l2' otherwise), query_norm = 'l2', short_conv = false,
---   conv_size = 4, output_norm = false, output_gate = false, beta_bias = 0, scale
---   (default head_dim^-0.5), chunk_size = 64, algorithm = 'auto', recompute_states = false
---   (true: the delta rule's backward recomputes the per-chunk states instead of keeping them,
---   4 * H * head_dim^2 / chunk_size bytes per token less), gate = false (a per-head decay
---   e^g of the memory computed from x as Gated DeltaNet does: gated EFLA with order 'exact',
---   Gated DeltaNet with order 1; cpu and cuda), dtype}
function DeltaAttention:__init(cfg)
  Module.__init(self)
  if type(cfg) ~= 'table' or type(cfg.d_model) ~= 'number' then
    error('DeltaAttention{d_model = ..., n_heads = ..., ...}: d_model (a number) is required', 3)
  end
  local d = cfg.d_model
  self.d_model = d
  self.n_heads = cfg.n_heads or 1
  if cfg.head_dim then
    self.head_dim = cfg.head_dim
  elseif d % self.n_heads ~= 0 then
    error(string.format('DeltaAttention: d_model %d is not divisible by n_heads %d (or give head_dim)', d, self.n_heads), 3)
  else
    self.head_dim = d / self.n_heads
  end
  self.order = parse_order(cfg.order)
  self.key_norm = parse_norm(cfg.key_norm, 'key_norm', self.order == 'exact' and 'none' or 'l2')
  self.query_norm = parse_norm(cfg.query_norm, 'query_norm', 'l2')
  self.scale = cfg.scale
  self.chunk_size, self.algorithm = cfg.chunk_size or 64, cfg.algorithm or 'auto'
  self.recompute_states = cfg.recompute_states or false
  local inner = self.n_heads * self.head_dim
  local nobias = { bias = false, dtype = cfg.dtype }
  self:add_module('q_proj', layers.Linear(d, inner, nobias))
  self:add_module('k_proj', layers.Linear(d, inner, nobias))
  self:add_module('v_proj', layers.Linear(d, inner, nobias))
  self:add_module('b_proj', layers.Linear(d, self.n_heads, { dtype = cfg.dtype }))
  init.constant(self.b_proj.bias, cfg.beta_bias or 0)
  if cfg.short_conv then
    for _, n in ipairs({ 'q_conv', 'k_conv', 'v_conv' }) do
      self:add_module(n, blocks.ShortConv(inner, { kernel = cfg.conv_size or 4, activation = 'silu', dtype = cfg.dtype }))
    end
  end
  if cfg.output_norm then self:add_module('o_norm', layers.RMSNorm(self.head_dim, { dtype = cfg.dtype })) end
  if cfg.output_gate then self:add_module('g_proj', layers.Linear(d, inner, nobias)) end
  if cfg.gate then add_decay_gate(self, cfg) end
  self:add_module('o_proj', layers.Linear(inner, d, nobias))
end

--- attn:log_decay(x [B, T, d_model]) -> g [B, T, H] <= 0: the gate's per-token, per-head
--- log-decay, g = -exp(A_log) * softplus(a_proj(x) + dt_bias) (gate = true only).
function DeltaAttention:log_decay(x)
  local a = self.a_proj:forward(x) + self:cast(self.dt_bias)
  return -(self:cast(self.A_log):exp() * a:softplus())
end

--- DeltaAttention.check_call(layer, x, state, who) -> state as a table: the checks every
--- delta-rule mixer makes on forward's arguments (x [B, T, d_model]; state nil, a bare S
--- tensor or the table a previous call returned), with errors naming the layer `who`.
function DeltaAttention.check_call(layer, x, state, who)
  if not efla.is_tensor(x) or x:dim() ~= 3 or x:size(3) ~= layer.d_model then
    error(string.format('%s: expected x [B, T, %d], got %s', who, layer.d_model,
      efla.is_tensor(x) and ('[' .. table.concat(x:size(), ',') .. ']') or type(x)), 3)
  end
  if efla.is_tensor(state) then state = { S = state } end
  if state ~= nil and type(state) ~= 'table' then
    error(who .. ': state must be nil, a tensor or the table a previous call returned, got ' .. type(state), 3)
  end
  return state or {}
end

--- DeltaAttention.project_qkv(layer, x, state, new_state) -> q, k, v [B, T, H, head_dim]: the
--- projections, the short convolutions (their caches read from state, written to new_state)
--- and the query/key normalisation, shared by every delta-rule mixer.
function DeltaAttention.project_qkv(layer, x, state, new_state)
  local B, T, H, dh = x:size(1), x:size(2), layer.n_heads, layer.head_dim
  -- each stage's input is a temporary of this layer (autograd keeps what backward needs):
  -- hand it back once the next stage has it (efla.nn.temporaries)
  local function next_stage(t, y) drop({ x, y }, t) return y end
  local function qkv(proj, conv, norm, conv_key)
    local t = proj:forward(x)
    if conv then
      local c
      c, new_state[conv_key] = conv:forward(t, state[conv_key])
      t = next_stage(t, c)
    end
    t = next_stage(t, t:reshape(B, T, H, dh))
    if norm == 'l2' then t = next_stage(t, l2_normalise(t)) end
    return t
  end
  return qkv(layer.q_proj, layer.q_conv, layer.query_norm, 'q_conv'), qkv(layer.k_proj, layer.k_conv, layer.key_norm, 'k_conv'),
         qkv(layer.v_proj, layer.v_conv, 'none', 'v_conv')
end

--- forward(x [B, T, d_model] [, state]) -> y [B, T, d_model], new_state.
--- state carries everything recurrent inference needs: {S = [B, H, head_dim, head_dim]
--- (the delta-rule memory), q_conv, k_conv, v_conv = [B, conv_size-1, H*head_dim] (the
--- short convolutions' last inputs, when short_conv is on)}. nil starts from zeros; a
--- bare tensor is taken as S. Feeding a sequence in pieces (even token by token), each
--- call given the previous new_state, gives the same outputs as one call.
function DeltaAttention:forward(x, state)
  state = DeltaAttention.check_call(self, x, state, 'DeltaAttention')
  local B, T = x:size(1), x:size(2)
  local H, dh = self.n_heads, self.head_dim
  local new_state = {}
  local q, k, v = DeltaAttention.project_qkv(self, x, state, new_state)
  local b = self.b_proj:forward(x)
  local beta = b:sigmoid()
  drop(x, b)
  local g = self.A_log and self:log_decay(x) or nil
  -- where the device's delta-rule kernel lacks this dtype (bfloat16 on the CPU), compute in
  -- float32 (the state is float32 for bfloat16 inputs on every device)
  local low = q:dtype() == 'bfloat16' and not efla.supports(q, 'delta_rule_fwd', 'bfloat16')
  if low then q, k, v, beta = q:float(), k:float(), v:float(), beta:float() end
  if low and g then g = g:float() end
  local o, o2
  o, new_state.S = efla.ops.delta_rule(q, k, v, beta, {
    order = self.order, scale = self.scale, initial_state = state.S, output_final_state = true,
    chunk_size = self.chunk_size, algorithm = self.algorithm, recompute_states = self.recompute_states,
    log_decay = g,
  })
  drop(x, q, k, v, beta, g)   -- the operator keeps its own references for backward
  if low then o2 = o:bfloat16(); drop(x, o); o = o2 end
  if self.o_norm and self.g_proj and fused.on(o) then
    -- RMSNorm(o) * weight * SiLU(gate) as one node (saves o, the gate and the weight)
    local on = self.o_norm
    local gate = self.g_proj:forward(x)
    local gate4, oc = gate:reshape(B, T, H, dh), self:cast(o)
    o2 = fused.rms_norm_gated(oc, gate4, on:cast(on.weight), on.eps)
    drop({ x, o2 }, o, oc, gate, gate4)
    o = o2
  else
    if self.o_norm then
      o2 = self.o_norm:forward(o)
      drop({ x, o2 }, o)
      o = o2
    end
    if self.g_proj then
      local gate = self.g_proj:forward(x)
      local gate4 = gate:reshape(B, T, H, dh)
      local act = gate4:silu()
      o2 = o * act
      drop({ x, o2 }, o, gate, gate4, act)
      o = o2
    end
  end
  local flat = o:reshape(B, T, H * dh)
  local y = self.o_proj:forward(flat)
  drop({ x, y }, o, flat)
  return y, new_state
end

function DeltaAttention:extra_repr()
  local extras = ''
  if self.q_conv then extras = extras .. ', short_conv=' .. self.q_conv.kernel end
  if self.o_norm then extras = extras .. ', output_norm' end
  if self.g_proj then extras = extras .. ', output_gate' end
  if self.A_log then extras = extras .. ', gate' end
  return string.format('heads=%d, head_dim=%d, order=%s, key_norm=%s, query_norm=%s%s',
    self.n_heads, self.head_dim, tostring(self.order), self.key_norm, self.query_norm, extras)
end

return DeltaAttention
