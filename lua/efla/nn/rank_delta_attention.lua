-- rank_delta_attention.lua: the token mixer of rank-r EFLA (docs/RANK_R.md): every token
-- writes r key/value pairs into the memory in one exact step,
--   S <- S + K^T f(K K^T) (V - K S),  f(G) = G^-1 (I - e^{-beta G}),
-- through efla.ops.delta_rule_rank.
--
-- Equal parameters to DeltaAttention: q, k, v, beta and the output projection are the same
-- Linear layers (head_dim keys, values and queries, the same dk x dv state per head). The r
-- keys of a token are r learned reweightings of its one projected key, k_i = k * key_mix[h,i],
-- and likewise v_i = v * value_mix[h,i]: 2 r H head_dim extra numbers (under 1 % of the layer
-- at the LM sizes), so r = 1, 2, 4 differ in the update, not in capacity. key_mix starts at
-- 1 + 0.5 N(0,1) per coordinate, so the r keys start linearly independent. (Splitting the
-- projected key into r pieces of head_dim / r instead would put the keys in orthogonal
-- coordinate blocks: K K^T diagonal and the update r decoupled rank-1 steps.)
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local blocks = require 'efla.nn.blocks'
local init = require 'efla.nn.init_fns'
local DeltaAttention = require 'efla.nn.attention'

local RankDeltaAttention = class.new('RankDeltaAttention', Module)

--- RankDeltaAttention{d_model, n_heads = 1, rank = 2 (keys per token, 1..8), head_dim =
---   d_model / n_heads, order = 'exact' | 1..4, key_norm = 'none' | 'l2' (of the projected
---   key, before the mixes), query_norm = 'l2', short_conv = false, conv_size = 4,
---   output_norm = false, beta_bias = 0, scale (default head_dim^-0.5), dtype}:
---   forward(x [B,T,d_model] [, state]) -> y, new_state ({S = [B,H,head_dim,head_dim], and the
---   convolutions' caches}); feeding a sequence in pieces gives the outputs of one call.
function RankDeltaAttention:__init(cfg)
  Module.__init(self)
  if type(cfg) ~= 'table' or type(cfg.d_model) ~= 'number' then
    error('RankDeltaAttention{d_model = ..., n_heads = ..., rank = ...}: d_model (a number) is required', 3)
  end
  local d = cfg.d_model
  self.d_model, self.n_heads = d, cfg.n_heads or 1
  self.rank = cfg.rank or 2
  if type(self.rank) ~= 'number' or self.rank < 1 or self.rank > 8 or self.rank % 1 ~= 0 then
    error(string.format('RankDeltaAttention: rank must be a whole number 1..8 (keys per token), got %s', tostring(cfg.rank)), 3)
  end
  if cfg.head_dim then
    self.head_dim = cfg.head_dim
  elseif d % self.n_heads ~= 0 then
    error(string.format('RankDeltaAttention: d_model %d is not divisible by n_heads %d (or give head_dim)', d, self.n_heads), 3)
  else
    self.head_dim = d / self.n_heads
  end
  self.order = cfg.order or 'exact'
  self.key_norm = cfg.key_norm or (self.order == 'exact' and 'none' or 'l2')
  self.query_norm = cfg.query_norm or 'l2'
  self.scale = cfg.scale
  local H, dh, inner = self.n_heads, self.head_dim, self.n_heads * self.head_dim
  local nobias = { bias = false, dtype = cfg.dtype }
  self:add_module('q_proj', layers.Linear(d, inner, nobias))
  self:add_module('k_proj', layers.Linear(d, inner, nobias))
  self:add_module('v_proj', layers.Linear(d, inner, nobias))
  self:add_module('b_proj', layers.Linear(d, H, { dtype = cfg.dtype }))
  init.constant(self.b_proj.bias, cfg.beta_bias or 0)
  local function mix()   -- 1 + 0.5 N(0, 1): r distinct (independent) reweightings
    return (efla.randn({ H, self.rank, dh }, { dtype = cfg.dtype }) * 0.5 + 1):detach()
  end
  self:register_parameter('key_mix', mix())
  self:register_parameter('value_mix', mix())
  if self.rank == 1 then   -- one key: the mixes start at 1, so r = 1 starts as DeltaAttention
    efla.no_grad(function() self.key_mix:fill_(1); self.value_mix:fill_(1) end)
  end
  if cfg.short_conv then
    for _, n in ipairs({ 'q_conv', 'k_conv', 'v_conv' }) do
      self:add_module(n, blocks.ShortConv(inner, { kernel = cfg.conv_size or 4, activation = 'silu', dtype = cfg.dtype }))
    end
  end
  if cfg.output_norm then self:add_module('o_norm', layers.RMSNorm(dh, { dtype = cfg.dtype })) end
  self:add_module('o_proj', layers.Linear(inner, d, nobias))
end

function RankDeltaAttention:forward(x, state)
  state = DeltaAttention.check_call(self, x, state, 'RankDeltaAttention')
  local B, T, H, dh, r = x:size(1), x:size(2), self.n_heads, self.head_dim, self.rank
  local new_state = {}
  local q, k, v = DeltaAttention.project_qkv(self, x, state, new_state)
  local K = k:reshape(B, T, H, 1, dh) * self:cast(self.key_mix):reshape(1, 1, H, r, dh)
  local V = v:reshape(B, T, H, 1, dh) * self:cast(self.value_mix):reshape(1, 1, H, r, dh)
  local beta = self.b_proj:forward(x):sigmoid()
  -- where the device's rank-r kernel lacks bfloat16 (the CPU), compute in float32
  local low = q:dtype() == 'bfloat16' and not efla.supports(q, 'delta_rule_rank_fwd', 'bfloat16')
  if low then q, K, V, beta = q:float(), K:float(), V:float(), beta:float() end
  local o
  o, new_state.S = efla.ops.delta_rule_rank(q, K, V, beta, {
    order = self.order, scale = self.scale, initial_state = state.S, output_final_state = true,
  })
  if low then o = o:bfloat16() end
  if self.o_norm then o = self.o_norm:forward(o) end
  return self.o_proj:forward(o:reshape(B, T, H * dh)), new_state
end

function RankDeltaAttention:extra_repr()
  return string.format('heads=%d, head_dim=%d, rank=%d, order=%s, key_norm=%s, query_norm=%s%s%s',
    self.n_heads, self.head_dim, self.rank, tostring(self.order), self.key_norm, self.query_norm,
    self.q_conv and (', short_conv=' .. self.q_conv.kernel) or '', self.o_norm and ', output_norm' or '')
end

return RankDeltaAttention
