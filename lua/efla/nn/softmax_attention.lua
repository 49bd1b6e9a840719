-- softmax_attention.lua: the multi-head softmax-attention token mixer (a Transformer's), for
-- baselines and for hybrids that mix it with delta-rule layers (nn.CausalLM's layer pattern).
--
--   x -> q_proj, k_proj, v_proj -> split heads -> rotary positions on q and k
--     -> efla.ops.attention (causal; a sliding window of W keys when window = W)
--     -> merge heads -> o_proj
--
-- The delta rule orders tokens by its recurrence and needs no positions; softmax attention
-- is blind to order without them, so this layer carries its own rotary position embedding
-- (RoPE, the rotate-half form: pairs (x_i, x_{i+d/2}) turn by the angle pos * base^{-2i/d}).
-- Recurrent inference keeps a KV cache in place of the delta rule's state (see forward).
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'

local SoftmaxAttention = class.new('SoftmaxAttention', Module)

--- SoftmaxAttention{d_model, n_heads = 1, head_dim = d_model / n_heads, window = nil (W: each
---   token sees the W newest tokens, itself included), rope = true, rope_base = 10000,
---   scale (default head_dim^-0.5), dtype}: causal multi-head softmax attention with rotary
--- positions. 4 d_model * n_heads * head_dim parameters (q, k, v, o projections, no biases).
function SoftmaxAttention:__init(cfg)
  Module.__init(self)
  if type(cfg) ~= 'table' or type(cfg.d_model) ~= 'number' then
    error('SoftmaxAttention{d_model = ..., n_heads = ..., ...}: d_model (a number) is required', 3)
  end
  local d = cfg.d_model
  self.d_model, self.n_heads = d, cfg.n_heads or 1
  if cfg.head_dim then
    self.head_dim = cfg.head_dim
  elseif d % self.n_heads ~= 0 then
    error(string.format('SoftmaxAttention: d_model %d is not divisible by n_heads %d (or give head_dim)', d, self.n_heads), 3)
  else
    self.head_dim = d / self.n_heads
  end
  local w = cfg.window
  if w ~= nil and (type(w) ~= 'number' or w < 1 or w % 1 ~= 0) then
    error('SoftmaxAttention: window must be a whole number >= 1 (or nil for full causal attention), got ' .. tostring(w), 3)
  end
  self.window = w
  self.rope = cfg.rope ~= false
  self.rope_base = cfg.rope_base or 10000
  if self.rope and self.head_dim % 2 ~= 0 then
    error(string.format('SoftmaxAttention: rotary positions need an even head_dim, got %d (or give rope = false)', self.head_dim), 3)
  end
  self.scale = cfg.scale
  local inner = self.n_heads * self.head_dim
  local nobias = { bias = false, dtype = cfg.dtype }
  self:add_module('q_proj', layers.Linear(d, inner, nobias))
  self:add_module('k_proj', layers.Linear(d, inner, nobias))
  self:add_module('v_proj', layers.Linear(d, inner, nobias))
  self:add_module('o_proj', layers.Linear(inner, d, nobias))
end

--- attn:rope_tables(pos0, T, like) -> cos, sin [1, T, 1, head_dim/2] of positions pos0 ..
--- pos0+T-1 in like's dtype and device; the angles are made once (float64) and grow by doubling.
function SoftmaxAttention:rope_tables(pos0, T, like)
  local need = pos0 + T
  local c = rawget(self, '_rope')
  if not c or c.n < need then
    local n = math.max(need, c and 2 * c.n or 256)
    local half = self.head_dim / 2
    local inv = {}
    for i = 1, half do inv[i] = self.rope_base ^ (-2 * (i - 1) / self.head_dim) end
    local angles = efla.arange(0, n, { dtype = 'float64' }):reshape(n, 1) * efla.tensor({ inv }, { dtype = 'float64' })
    c = { n = n, cos = angles:cos(), sin = angles:sin(), cast = {} }
    rawset(self, '_rope', c)
  end
  local key = like:dtype() .. '@' .. like:device()
  local t = c.cast[key]
  if not t then
    local function put(x) x = x:to(like:dtype()) if like:device() ~= 'cpu' then x = x:to(like:device()) end return x end
    t = { cos = put(c.cos), sin = put(c.sin) }
    c.cast[key] = t
  end
  local half = self.head_dim / 2
  return t.cos:narrow(1, pos0 + 1, T):reshape(1, T, 1, half), t.sin:narrow(1, pos0 + 1, T):reshape(1, T, 1, half)
end

--- attn:apply_rope(x [B, T, H, head_dim], pos0) -> x with each pair (x_i, x_{i+d/2}) at
--- position pos0 + t rotated by (pos0 + t) * rope_base^{-2(i-1)/head_dim}.
function SoftmaxAttention:apply_rope(x, pos0)
  local T, half = x:size(2), self.head_dim / 2
  local cos, sin = self:rope_tables(pos0, T, x)
  local x1, x2 = x:narrow(4, 1, half), x:narrow(4, half + 1, half)
  return efla.cat({ x1 * cos - x2 * sin, x2 * cos + x1 * sin }, 4)
end

--- forward(x [B, T, d_model] [, state]) -> y [B, T, d_model], new_state.
--- state is the KV cache: {k, v = [B, n, H, head_dim] (the rotated keys and the values of
--- the tokens before x; only the newest `window` with a window), pos = the number of tokens
--- before x}. nil starts a sequence. Feeding a sequence in pieces (even token by token), each
--- call given the previous new_state, gives the same outputs as one call.
function SoftmaxAttention:forward(x, state)
  if not efla.is_tensor(x) or x:dim() ~= 3 or x:size(3) ~= self.d_model then
    error(string.format('SoftmaxAttention: expected x [B, T, %d], got %s', self.d_model,
      efla.is_tensor(x) and ('[' .. table.concat(x:size(), ',') .. ']') or type(x)), 2)
  end
  if state ~= nil and (type(state) ~= 'table' or type(state.pos) ~= 'number') then
    error('SoftmaxAttention: state must be nil or the table {k, v, pos} a previous call returned, got ' .. type(state), 2)
  end
  local B, T = x:size(1), x:size(2)
  local H, dh = self.n_heads, self.head_dim
  local pos0 = state and state.pos or 0
  local q = self.q_proj:forward(x):reshape(B, T, H, dh)
  local k = self.k_proj:forward(x):reshape(B, T, H, dh)
  local v = self.v_proj:forward(x):reshape(B, T, H, dh)
  if self.rope then q, k = self:apply_rope(q, pos0), self:apply_rope(k, pos0) end
  if state and state.k then
    k, v = efla.cat({ state.k, k }, 2), efla.cat({ state.v, v }, 2)
  end
  -- the CPU kernels have no bfloat16: compute in float32 there
  local low = q:dtype() == 'bfloat16' and q:device() == 'cpu'
  local o
  if low then
    o = efla.ops.attention(q:float(), k:float(), v:float(), { window = self.window, scale = self.scale }):bfloat16()
  else
    o = efla.ops.attention(q, k, v, { window = self.window, scale = self.scale })
  end
  local n = k:size(2)
  local keep = self.window and math.min(n, self.window) or n
  local new_state = { k = k:narrow(2, n - keep + 1, keep), v = v:narrow(2, n - keep + 1, keep), pos = pos0 + T }
  return self.o_proj:forward(o:reshape(B, T, H * dh)), new_state
end

function SoftmaxAttention:extra_repr()
  return string.format('heads=%d, head_dim=%d, %s%s', self.n_heads, self.head_dim,
    self.window and ('window=' .. self.window) or 'causal', self.rope and ', rope' or '')
end

return SoftmaxAttention
