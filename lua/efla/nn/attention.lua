-- attention.lua: the multi-head EFLA / DeltaNet token mixer.
--
-- q, k, v and beta come from projections of x; beta = sigmoid(b_proj(x)) in (0, 1). The
-- delta-rule operator (efla.ops.delta_rule) integrates the memory ODE with the chosen
-- order: 'exact' is EFLA, 1 is DeltaNet's Euler step, 2-4 Runge-Kutta (efla-math §2).
-- EFLA can leave keys unnormalised (its transition e^{-beta*lambda} stays in (0, 1]);
-- DeltaNet needs L2-normalised keys, hence the per-method defaults below.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local blocks = require 'efla.nn.blocks'
local init = require 'efla.nn.init_fns'

local DeltaAttention = class.new('DeltaAttention', Module)

local function l2_normalise(x, eps)
  return x * (x:square():sum(x:dim(), true) + (eps or 1e-6)):rsqrt()
end

--- DeltaAttention{d_model, n_heads = 1, head_dim = d_model / n_heads, order = 'exact',
---   key_norm = ('none' for exact, 'l2' otherwise), query_norm = 'l2', short_conv = false,
---   output_norm = false, output_gate = false, beta_bias = 0, chunk_size = 64,
---   algorithm = 'auto', dtype}
function DeltaAttention:__init(cfg)
  Module.__init(self)
  assert(type(cfg) == 'table' and cfg.d_model, 'DeltaAttention{d_model = ..., ...}: d_model is required')
  local d = cfg.d_model
  self.n_heads = cfg.n_heads or 1
  self.head_dim = cfg.head_dim or math.floor(d / self.n_heads)
  if self.head_dim * self.n_heads ~= d and not cfg.head_dim then
    error(string.format('DeltaAttention: d_model %d is not divisible by n_heads %d', d, self.n_heads), 2)
  end
  self.order = cfg.order or 'exact'
  self.key_norm = cfg.key_norm or (self.order == 'exact' and 'none' or 'l2')
  self.query_norm = cfg.query_norm or 'l2'
  self.chunk_size, self.algorithm = cfg.chunk_size or 64, cfg.algorithm or 'auto'
  local inner, opts = self.n_heads * self.head_dim, { dtype = cfg.dtype }
  self:add_module('q_proj', layers.Linear(d, inner, { bias = false, dtype = cfg.dtype }))
  self:add_module('k_proj', layers.Linear(d, inner, { bias = false, dtype = cfg.dtype }))
  self:add_module('v_proj', layers.Linear(d, inner, { bias = false, dtype = cfg.dtype }))
  self:add_module('b_proj', layers.Linear(d, self.n_heads, opts))
  init.constant(self.b_proj.bias, cfg.beta_bias or 0)
  if cfg.short_conv then
    for _, n in ipairs({ 'q_conv', 'k_conv', 'v_conv' }) do
      self:add_module(n, blocks.ShortConv(inner, { kernel = 4, activation = 'silu', dtype = cfg.dtype }))
    end
  end
  if cfg.output_norm then self:add_module('o_norm', layers.RMSNorm(self.head_dim, opts)) end
  if cfg.output_gate then self:add_module('g_proj', layers.Linear(d, inner, { bias = false, dtype = cfg.dtype })) end
  self:add_module('o_proj', layers.Linear(inner, d, { bias = false, dtype = cfg.dtype }))
end

--- forward(x [B, T, D] [, state [B, H, dk, dv]]) -> y [B, T, D], final state.
function DeltaAttention:forward(x, state)
  local B, T = x:size(1), x:size(2)
  local H, dh = self.n_heads, self.head_dim
  local q, k, v = self.q_proj:forward(x), self.k_proj:forward(x), self.v_proj:forward(x)
  if self.q_conv then q, k, v = self.q_conv:forward(q), self.k_conv:forward(k), self.v_conv:forward(v) end
  q, k, v = q:view(B, T, H, dh), k:view(B, T, H, dh), v:view(B, T, H, dh)
  if self.query_norm == 'l2' then q = l2_normalise(q) end
  if self.key_norm == 'l2' then k = l2_normalise(k) end
  local beta = self.b_proj:forward(x):sigmoid()
  local o, final = efla.ops.delta_rule(q, k, v, beta, {
    order = self.order, initial_state = state, output_final_state = true,
    chunk_size = self.chunk_size, algorithm = self.algorithm,
  })
  if self.o_norm then o = self.o_norm:forward(o) end
  if self.g_proj then o = o * self.g_proj:forward(x):view(B, T, H, dh):silu() end
  return self.o_proj:forward(o:reshape(B, T, H * dh)), final
end

function DeltaAttention:extra_repr()
  return string.format('heads=%d, head_dim=%d, order=%s, key_norm=%s, query_norm=%s',
    self.n_heads, self.head_dim, tostring(self.order), self.key_norm, self.query_norm)
end

return DeltaAttention
