-- models.lua: whole models built from a plain config table, so that a checkpoint's stored
-- config is enough to rebuild them (efla.load_model). Every model keeps its config in
-- self.config and its builder's name in config.type.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local blocks = require 'efla.nn.blocks'
local DeltaAttention = require 'efla.nn.attention'
local SoftmaxAttention = require 'efla.nn.softmax_attention'
local fused = require 'efla.nn.fused'
local drop = require('efla.nn.temporaries').drop
local init = require 'efla.nn.init_fns'

local models = {}

local function attention_config(cfg)
  return {
    d_model = cfg.d_model, n_heads = cfg.n_heads or 1, head_dim = cfg.head_dim, order = cfg.order or 'exact',
    key_norm = cfg.key_norm, query_norm = cfg.query_norm, short_conv = cfg.short_conv, conv_size = cfg.conv_size,
    output_norm = cfg.output_norm, output_gate = cfg.output_gate, beta_bias = cfg.beta_bias, scale = cfg.scale,
    chunk_size = cfg.chunk_size, algorithm = cfg.algorithm, recompute_states = cfg.recompute_states, dtype = cfg.dtype,
    gate = cfg.gate,
  }
end

-- RankDeltaAttention's config from a CausalLM config with rank (docs/RANK_R.md)
local function rank_attention_config(cfg)
  local a = attention_config(cfg)
  a.rank = cfg.rank
  return a
end

--- DeltaReadout{d_model, n_heads = 1, order = 'exact', key_norm, query_norm = 'none', scale = 1,
---   beta_bias = -2, reference_eps = true, chunk_size, algorithm, dtype}: the published sMNIST
--- model's memory layer. q, k, v = Linear(d, d, no bias) (xavier uniform), beta =
--- sigmoid(Linear(d, H)) (PyTorch's default Linear init, bias beta_bias); the delta rule runs
--- over the sequence and the layer returns only the last token's readout S_T^T q_T * scale
--- [B, H * head_dim]: no output projection. The published code L2-normalises q_t inside its
--- loop but reads out with the raw last query, hence query_norm 'none' and scale 1. Its L2
--- normalisation (of DeltaNet's keys) is PyTorch's F.normalize, x / max(|x|, 1e-12), not
--- DeltaAttention's x / sqrt(|x|^2 + 1e-6): background pixels give keys with |k|^2 ~ 1e-3,
--- where the two differ by ~1e-3 relative.
local function normalize_clamped(x)
  return x / x:square():sum(-1, true):sqrt():clamp(1e-12)
end
models.normalize_clamped = normalize_clamped

local DeltaReadout = class.new('DeltaReadout', Module)
models.DeltaReadout = DeltaReadout
function DeltaReadout:__init(c)
  Module.__init(self)
  local d, H = c.d_model, c.n_heads or 1
  if d % H ~= 0 then error(string.format('DeltaReadout: d_model %d is not divisible by n_heads %d', d, H), 3) end
  self.n_heads, self.head_dim = H, d / H
  self.order = c.order or 'exact'
  self.key_norm = c.key_norm or (self.order == 'exact' and 'none' or 'l2')
  self.query_norm = c.query_norm or 'none'
  self.scale, self.reference_eps = c.scale or 1, c.reference_eps ~= false
  self.chunk_size, self.algorithm = c.chunk_size or 64, c.algorithm or 'auto'
  local nobias = { bias = false, dtype = c.dtype }
  self:add_module('q_proj', layers.Linear(d, d, nobias))
  self:add_module('k_proj', layers.Linear(d, d, nobias))
  self:add_module('v_proj', layers.Linear(d, d, nobias))
  self:add_module('b_proj', layers.Linear(d, H, { dtype = c.dtype }))
  init.torch_linear(self.b_proj.weight)
  init.constant(self.b_proj.bias, c.beta_bias or -2)
end
--- forward(h [B, T, d]) -> [B, d]: the memory read out with the last token's query.
function DeltaReadout:forward(h)
  local B, T = h:size(1), h:size(2)
  local H, dh = self.n_heads, self.head_dim
  local q = self.q_proj:forward(h):reshape(B, T, H, dh)
  local k = self.k_proj:forward(h):reshape(B, T, H, dh)
  local v = self.v_proj:forward(h):reshape(B, T, H, dh)
  if self.query_norm == 'l2' then q = normalize_clamped(q) end
  if self.key_norm == 'l2' then k = normalize_clamped(k) end
  local beta = self.b_proj:forward(h):sigmoid()
  -- where the device's delta-rule kernel lacks this dtype (bfloat16 compute on the CPU), the
  -- delta rule runs in float32, as in DeltaAttention
  local low = q:dtype() == 'bfloat16' and not efla.supports(q, 'delta_rule_fwd', 'bfloat16')
  if low then q, k, v, beta = q:float(), k:float(), v:float(), beta:float() end
  local o = efla.ops.delta_rule(q, k, v, beta, { order = self.order, scale = self.scale, output_final_state = false,
    reference_eps = self.reference_eps, chunk_size = self.chunk_size, algorithm = self.algorithm })
  if low then o = o:bfloat16() end
  return o:select(2, T):reshape(B, H * dh)
end
function DeltaReadout:extra_repr()
  return string.format('heads=%d, head_dim=%d, order=%s, key_norm=%s, query_norm=%s, scale=%g, last token only',
    self.n_heads, self.head_dim, tostring(self.order), self.key_norm, self.query_norm, self.scale)
end

--- The two sMNIST architectures SequenceClassifier builds (config.arch):
---   'published'     the EFLA paper's released sMNIST model, layer for layer: h = GELU(W_in x_t
---                   + pos_t) (W_in without bias, PyTorch's default init), one DeltaReadout
---                   (raw last query, no output projection, no residual), LayerNorm on the
---                   readout, Linear classifier (PyTorch's default init, bias included)
---   'efla-variant'  efla's earlier rendition: input projection with bias, a full
---                   DeltaAttention (L2-normalised queries, scale head_dim^-0.5, output
---                   projection) on every token, residual h + attn(h), LayerNorm, classifier
---                   on the last token; every Linear xavier uniform, biases zero
--- A config without arch (checkpoints written before it existed) is 'efla-variant'.
models.SEQUENCE_ARCHS = { published = true, ['efla-variant'] = true }

--- SequenceClassifier{arch = 'efla-variant', input_dim = 1, seq_len = 784, d_model = 64,
---   n_classes = 10, n_heads = 1, order = 'exact', key_norm, query_norm, beta_bias = -2, ...}:
--- the paper's sMNIST model (see models.SEQUENCE_ARCHS for the two architectures): input
--- projection + learned position embedding (std 0.02), GELU, one delta-rule layer,
--- LayerNorm, and a classifier reading the last token.
models.SequenceClassifier = class.new('SequenceClassifier', Module)
function models.SequenceClassifier:__init(cfg)
  Module.__init(self)
  cfg = cfg or {}
  local arch = cfg.arch or 'efla-variant'
  if not models.SEQUENCE_ARCHS[arch] then
    error(string.format("SequenceClassifier: arch must be 'published' or 'efla-variant', got '%s'", tostring(arch)), 3)
  end
  local published = arch == 'published'
  local c = {
    type = 'SequenceClassifier', arch = arch, input_dim = cfg.input_dim or 1, seq_len = cfg.seq_len or 784,
    d_model = cfg.d_model or 64, n_classes = cfg.n_classes or 10, n_heads = cfg.n_heads or 1,
    head_dim = cfg.head_dim, order = cfg.order or 'exact', key_norm = cfg.key_norm,
    query_norm = cfg.query_norm or (published and 'none' or 'l2'), beta_bias = cfg.beta_bias or -2,
    short_conv = cfg.short_conv, conv_size = cfg.conv_size, output_norm = cfg.output_norm,
    output_gate = cfg.output_gate, scale = cfg.scale or (published and 1 or nil),
    reference_eps = published and cfg.reference_eps ~= false or nil,
    chunk_size = cfg.chunk_size, algorithm = cfg.algorithm, dtype = cfg.dtype,
  }
  self.config = c
  if published then
    self:add_module('input_proj', layers.Linear(c.input_dim, c.d_model, { bias = false, dtype = c.dtype }))
    init.torch_linear(self.input_proj.weight)
  else
    self:add_module('input_proj', layers.Linear(c.input_dim, c.d_model, { dtype = c.dtype }))
  end
  self:add_module('pos_emb', layers.Embedding(c.seq_len, c.d_model, { dtype = c.dtype, std = 0.02 }))
  self:add_module('attn', published and DeltaReadout(c) or DeltaAttention(attention_config(c)))
  self:add_module('norm', layers.LayerNorm(c.d_model, { dtype = c.dtype }))
  self:add_module('classifier', layers.Linear(c.d_model, c.n_classes, { dtype = c.dtype }))
  if published then init.torch_linear(self.classifier.weight, self.classifier.bias) end
end

--- forward(x [B, T] or [B, T, input_dim]) -> logits [B, n_classes]
function models.SequenceClassifier:forward(x)
  local c = self.config
  if not efla.is_tensor(x) then error('SequenceClassifier: expected a tensor input, got ' .. type(x), 2) end
  if x:dim() == 2 and c.input_dim == 1 then x = x:unsqueeze(3) end
  if x:dim() ~= 3 or x:size(3) ~= c.input_dim then
    error(string.format('SequenceClassifier: expected x [B, T, %d]%s, got [%s]', c.input_dim,
      c.input_dim == 1 and ' or [B, T]' or '', table.concat(x:size(), ',')), 2)
  end
  local T = x:size(2)
  if T > c.seq_len then
    error(string.format("SequenceClassifier: sequence length %d exceeds the model's seq_len %d", T, c.seq_len), 2)
  end
  local pos = self:cast(self.pos_emb.weight:narrow(1, 1, T))
  local h = (self.input_proj:forward(x) + pos):gelu()
  if c.arch == 'published' then
    return self.classifier:forward(self.norm:forward(self.attn:forward(h)))
  end
  local a = self.attn:forward(h)
  h = self.norm:forward(h + a)
  return self.classifier:forward(h:select(2, T))
end

--- CausalLM{vocab_size = 256, d_model = 128, n_layers = 2, n_heads = 2, order = 'exact',
---   short_conv = true, output_norm = true, mlp_hidden, tie_weights = false, layers = nil |
---   'EEEA' (a pattern of models.LAYER_KINDS letters repeated to n_layers; n_layers defaults to
---   its length), window = 64 (of W layers), rope = true (softmax layers' rotary positions),
---   ...}: token embedding, n_layers blocks of (x + mixer(RMSNorm(x)), then x +
--- SwiGLU(RMSNorm(x))), a final RMSNorm and the output head (the embedding matrix itself when
--- tie_weights). Without a pattern every mixer is the config's delta rule.
models.CausalLM = class.new('CausalLM', Module)

--- The letters of a CausalLM layer pattern (config.layers, repeated to n_layers): which token
--- mixer each layer has. E, D, G, g set the delta rule's order and key normalisation (the
--- config's own order and key_norm apply only without a pattern); G and g need
--- DeltaAttention's gate option.
models.LAYER_KINDS = {
  E = { name = 'EFLA', order = 'exact', key_norm = 'none' },
  D = { name = 'DeltaNet', order = 1, key_norm = 'l2' },
  G = { name = 'gated EFLA', order = 'exact', key_norm = 'none', gate = true },
  g = { name = 'Gated DeltaNet', order = 1, key_norm = 'l2', gate = true },
  A = { name = 'softmax attention', softmax = true },
  W = { name = 'sliding-window attention', softmax = true, window = true },
}
models.DEFAULT_WINDOW = 64

--- models.gate_available() -> true when DeltaAttention has the gate option (G and g layers).
--- A DeltaAttention without it ignores the option, so a gated one has no more parameters.
function models.gate_available()
  if models._gate == nil then
    local g = DeltaAttention { d_model = 4, gate = true }
    models._gate = g.gate == true or g:num_parameters() > DeltaAttention({ d_model = 4 }):num_parameters()
  end
  return models._gate
end

--- models.layer_kinds(pattern, n_layers) -> a list of n_layers letters: the pattern repeated
--- (and cut) to n_layers. Raises a clear error for an unknown letter or a pattern longer than
--- n_layers.
function models.layer_kinds(pattern, n_layers)
  if type(pattern) ~= 'string' or pattern == '' then
    error('CausalLM: layers must be a pattern of layer letters such as \'EEEA\' (E EFLA, D DeltaNet, A softmax attention, ' ..
      'W sliding-window attention, G gated EFLA, g Gated DeltaNet), got ' .. tostring(pattern), 0)
  end
  local bad = pattern:match('[^EDAWGg]')
  if bad then
    error(string.format("CausalLM: layer pattern '%s' has the letter '%s'; the letters are E (EFLA), D (DeltaNet), " ..
      'A (softmax attention), W (sliding-window attention), G (gated EFLA), g (Gated DeltaNet)', pattern, bad), 0)
  end
  if #pattern > n_layers then
    error(string.format("CausalLM: layer pattern '%s' has %d letters but the model has %d layers; use at most %d letters " ..
      '(the pattern repeats to fill the layers) or more layers', pattern, #pattern, n_layers, n_layers), 0)
  end
  local gated = pattern:match('[Gg]')
  if gated and not models.gate_available() then
    error(string.format("CausalLM: layer letter '%s' (%s) needs DeltaAttention's gate option, which this efla does not " ..
      'have yet; use E, D, A or W', gated, models.LAYER_KINDS[gated].name), 0)
  end
  local out = {}
  for i = 1, n_layers do
    local j = (i - 1) % #pattern + 1
    out[i] = pattern:sub(j, j)
  end
  return out
end

-- the token mixer of one layer of kind `letter` (nil: the config's own delta rule)
local function make_mixer(c, letter)
  local kind = letter and models.LAYER_KINDS[letter]
  if kind and kind.softmax then
    return SoftmaxAttention { d_model = c.d_model, n_heads = c.n_heads, head_dim = c.head_dim, rope = c.rope ~= false,
      rope_base = c.rope_base, window = kind.window and (c.window or models.DEFAULT_WINDOW) or nil, dtype = c.dtype }
  end
  -- rank-r keys (docs/RANK_R.md) replace the exact EFLA mixer (the config's own, or an E letter)
  if c.rank and not (kind and (kind.gate or kind.order ~= 'exact')) then
    return require('efla.nn.rank_delta_attention')(rank_attention_config(c))
  end
  local ac = attention_config(c)
  if kind then
    ac.order, ac.key_norm = kind.order, kind.key_norm
    if kind.gate then ac.gate = true end
  end
  local ok, m = pcall(DeltaAttention, ac)
  if not ok then error(m, 0) end
  if ac.gate and not models.gate_available() then
    error(string.format("CausalLM: layer letter '%s' (%s) needs DeltaAttention's gate option, which this efla does not " ..
      'have yet; use E, D, A or W', letter, kind.name), 0)
  end
  return m
end

--- Block: one pre-norm layer of the causal LM (letter: its kind in models.LAYER_KINDS, or
--- nil for the config's delta rule).
local Block = class.new('Block', Module)
models.Block = Block
function Block:__init(c, letter)
  Module.__init(self)
  self:add_module('attn_norm', layers.RMSNorm(c.d_model, { dtype = c.dtype }))
  self:add_module('attn', make_mixer(c, letter))
  self:add_module('mlp_norm', layers.RMSNorm(c.d_model, { dtype = c.dtype }))
  self:add_module('mlp', blocks.SwiGLU(c.d_model, c.mlp_hidden, { dtype = c.dtype }))
end
--- forward(x [, state]) -> x', the mixer's new state (delta-rule memory or KV cache)
function Block:forward(x, state)
  local xn = self.attn_norm:forward(x)
  local a, s = self.attn:forward(xn, state)
  local h = x + a
  drop({ x, h }, xn, a)   -- autograd keeps what backward needs; the boxes go now (efla.nn.temporaries)
  local hn = self.mlp_norm:forward(h)
  local m = self.mlp:forward(hn)
  local y = h + m
  drop({ x, y }, hn, m, h)
  return y, s
end

function models.CausalLM:__init(cfg)
  Module.__init(self)
  cfg = cfg or {}
  local c = {
    type = 'CausalLM', vocab_size = cfg.vocab_size or 256, d_model = cfg.d_model or 128,
    n_layers = cfg.n_layers or 2, n_heads = cfg.n_heads or 2, head_dim = cfg.head_dim,
    order = cfg.order or 'exact', key_norm = cfg.key_norm, query_norm = cfg.query_norm or 'l2',
    short_conv = cfg.short_conv ~= false, conv_size = cfg.conv_size, output_norm = cfg.output_norm ~= false,
    output_gate = cfg.output_gate, beta_bias = cfg.beta_bias or 0, mlp_hidden = cfg.mlp_hidden,
    tie_weights = cfg.tie_weights or false, scale = cfg.scale, chunk_size = cfg.chunk_size,
    algorithm = cfg.algorithm, recompute_states = cfg.recompute_states, dtype = cfg.dtype,
    gate = cfg.gate,
    layers = cfg.layers, window = cfg.window, rope = cfg.rope, rope_base = cfg.rope_base,
  }
  if c.layers ~= nil and cfg.n_layers == nil then c.n_layers = type(c.layers) == 'string' and #c.layers or c.n_layers end
  c.rank = cfg.rank   -- keys per token: RankDeltaAttention (docs/RANK_R.md)
  self.config = c
  local kinds = c.layers ~= nil and models.layer_kinds(c.layers, c.n_layers) or {}
  self:add_module('embed', layers.Embedding(c.vocab_size, c.d_model, { dtype = c.dtype, std = 0.02 }))
  local list = layers.ModuleList()
  for i = 1, c.n_layers do list:add(Block(c, kinds[i])) end
  self:add_module('layers', list)
  self:add_module('norm', layers.RMSNorm(c.d_model, { dtype = c.dtype }))
  if not c.tie_weights then
    self:add_module('head', layers.Linear(c.d_model, c.vocab_size, { bias = false, dtype = c.dtype }))
  end
end

--- forward(tokens int64 [B, T] (1-based ids) [, states]) -> logits [B, T, vocab_size], states.
--- states holds one state per layer (DeltaAttention's memory, SoftmaxAttention's KV cache); pass the
--- returned states to the next call to continue the sequence (recurrent generation).
function models.CausalLM:forward(tokens, states)
  if not efla.is_tensor(tokens) or tokens:dim() ~= 2 or tokens:dtype() ~= 'int64' then
    error(string.format('CausalLM: expected tokens int64 [B, T], got %s',
      efla.is_tensor(tokens) and ('[' .. table.concat(tokens:size(), ',') .. '] ' .. tokens:dtype()) or type(tokens)), 2)
  end
  if states ~= nil and (type(states) ~= 'table' or #states ~= self.config.n_layers) then
    error(string.format('CausalLM: states must be the list of %d layer states a previous call returned', self.config.n_layers), 2)
  end
  local h, out_states = self:forward_hidden(tokens, states)
  local logits = self.head and self.head:forward(h) or h:matmul(self:cast(self.embed.weight):t())
  return logits, out_states
end

--- forward_hidden(tokens [, states]) -> the final normed hidden states [B, T, d_model] (what the
--- output head reads), states. forward = forward_hidden + the head.
function models.CausalLM:forward_hidden(tokens, states)
  if not efla.is_tensor(tokens) or tokens:dim() ~= 2 or tokens:dtype() ~= 'int64' then
    error(string.format('CausalLM: expected tokens int64 [B, T], got %s',
      efla.is_tensor(tokens) and ('[' .. table.concat(tokens:size(), ',') .. '] ' .. tokens:dtype()) or type(tokens)), 2)
  end
  local h = self.embed:forward(tokens)
  local out_states = {}
  for i = 1, self.config.n_layers do
    local h2
    h2, out_states[i] = self.layers[i]:forward(h, states and states[i])
    drop(h2, h)   -- the residual stream between blocks: the next norm saved what it needs
    h = h2
  end
  local y = self.norm:forward(h)
  drop(y, h)
  return y, out_states
end

--- loss(tokens int64 [B, T], targets int64 [B, T] (1-based; ignore_index marks padding),
--- {ignore_index = -100}) -> the 0-d mean next-token cross-entropy, float32 (float64 for a
--- float64 model). The head and the loss run as one fused node (efla.nn.fused.linear_cross_entropy):
--- the [B*T, vocab] logits are formed a chunk of rows at a time and never kept, and nothing
--- waits for the GPU. Same value as cross_entropy(forward(tokens), targets).
function models.CausalLM:loss(tokens, targets, opts)
  local h = self:forward_hidden(tokens)
  if not efla.is_tensor(targets) or targets:dim() ~= 2 or targets:size(1) ~= tokens:size(1) or targets:size(2) ~= tokens:size(2) then
    error(string.format('CausalLM:loss: targets must be int64 [B, T] like tokens [%s]', table.concat(tokens:size(), ',')), 2)
  end
  local w0 = self.head and self.head.weight or self.embed.weight
  local w = self:cast(w0)
  if fused.on(h) then
    local loss = fused.linear_cross_entropy(h, w, targets, { ignore_index = opts and opts.ignore_index })
    drop(w0, h, w)   -- the node computed its gradients already: h and the weight copy can go
    return loss
  end
  local logits = h:matmul(w:t())
  if logits:dtype() == 'bfloat16' then logits = logits:float() end
  return logits:reshape(-1, logits:size(-1)):cross_entropy(targets:reshape(-1), opts)
end

-- name -> class: what build (and so efla.load_model) can make
local registry = { SequenceClassifier = models.SequenceClassifier, CausalLM = models.CausalLM }

--- nn.register(name, class) -> class: lets nn.build and efla.load_model rebuild models of
--- a user class from a stored config whose type is `name`. The class is called with the
--- config table, so it should keep that table (with type = name) in self.config, and a
--- checkpoint should store it as meta.config: checkpoint.save(path, {model =
--- m:state_dict(), meta = {config = m.config}}). Registering a name again replaces it.
function models.register(name, cls)
  if type(name) ~= 'string' or name == '' then
    error('nn.register(name, class): name must be a non-empty string, got ' .. tostring(name), 2)
  end
  local mt = type(cls) == 'table' and getmetatable(cls)
  if type(cls) ~= 'function' and not (mt and mt.__call) then
    error(string.format("nn.register('%s', class): class must be callable with a config table (a class made with efla.class or nn.Module's subclasses), got %s", name, type(cls)), 2)
  end
  registry[name] = cls
  return cls
end

--- nn.build(config) -> a model: calls the class registered under config.type with config
--- (the built-in SequenceClassifier and CausalLM, or any nn.register'ed class).
function models.build(config)
  if type(config) ~= 'table' then
    error('nn.build(config): config must be a table with a type field, got ' .. type(config), 2)
  end
  local builder = registry[config.type or '']
  if not builder then
    local known = {}
    for k in pairs(registry) do known[#known + 1] = k end
    table.sort(known)
    error(string.format("nn.build: unknown model type '%s': if it is your own class, call efla.nn.register('%s', %s) before building or loading it (registered: %s)",
      tostring(config.type), tostring(config.type), tostring(config.type), table.concat(known, ', ')), 2)
  end
  return builder(config)
end

return models
