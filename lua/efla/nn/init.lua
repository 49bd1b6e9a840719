-- efla.nn: modules that own their parameters (Torch's nn, on efla's autograd).
local nn = {}
nn.Module = require 'efla.nn.module'
nn.init = require 'efla.nn.init_fns'
nn.fused = require 'efla.nn.fused'
nn.temporaries = require 'efla.nn.temporaries'
for k, v in pairs(require 'efla.nn.layers') do nn[k] = v end
for k, v in pairs(require 'efla.nn.blocks') do nn[k] = v end
nn.DeltaAttention = require 'efla.nn.attention'
nn.SoftmaxAttention = require 'efla.nn.softmax_attention'
nn.RankDeltaAttention = require 'efla.nn.rank_delta_attention'
local models = require 'efla.nn.models'
nn.SequenceClassifier, nn.CausalLM, nn.Block, nn.build = models.SequenceClassifier, models.CausalLM, models.Block, models.build
nn.register = models.register
local loss = require 'efla.nn.loss'
nn.CrossEntropyLoss, nn.MSELoss = loss.CrossEntropyLoss, loss.MSELoss
nn.functional = { cross_entropy = loss.cross_entropy, mse = loss.mse, l2_normalise = nn.DeltaAttention.l2_normalise }
nn.functional.__doc = 'efla.nn.functional: losses and helpers as plain functions: cross_entropy(logits, target, opts), mse(a, b), l2_normalise(x [, eps]).'

nn.__doc = [[
efla.nn: modules that own their parameters.
  Layers:  Linear(in, out, {bias}), Embedding(n, d), LayerNorm(d), RMSNorm(d), Dropout(p),
           GELU() SiLU() ReLU() Tanh() Sigmoid() Identity(), Sequential(m...), ModuleList(m...),
           Residual(m), SwiGLU(d [, hidden]), ShortConv(channels, {kernel = 4, activation})
  Mixer:   DeltaAttention{d_model, n_heads, order = 'exact'|1..4, key_norm, query_norm,
           short_conv, output_norm, output_gate}: forward(x [, state]) -> y, state
           SoftmaxAttention{d_model, n_heads, window, rope = true}: forward(x [, kv_cache]) -> y, kv_cache
           RankDeltaAttention{d_model, n_heads, rank = 2, ...}: r keys per token, exact (docs/RANK_R.md)
  Models:  SequenceClassifier{...} (sMNIST), CausalLM{..., layers = 'EEEA'} (hybrids); nn.build(config);
           nn.register(name, class) so that nn.build / efla.load_model rebuild your own class
  Losses:  functional.cross_entropy(logits, target, {ignore_index, label_smoothing}),
           functional.mse(a, b), CrossEntropyLoss(opts), MSELoss()
  Fused:   nn.fused.swiglu, short_conv, l2_norm, rms_norm_gated, linear_cross_entropy (one
           autograd node each; modules use them unless nn.fused.enabled = false)
  Memory:  built-in blocks give their intermediate tensors back as soon as they are used, not at
           the next garbage collection (nn.temporaries.enabled = false if a module of yours
           inside one keeps its output)
  Init:    nn.init.xavier_uniform/xavier_normal/normal/uniform/zeros/ones/constant
  Every module: m(x) = m:forward(x), parameters(), named_parameters(), num_parameters(),
           train(), evaluate(), state_dict(), load_state_dict(sd [, strict]), zero_grad(),
           to(dtype|device), tostring(m).
Options take opts.dtype; efla.manual_seed(s) before building makes the weights reproducible.]]

return nn
