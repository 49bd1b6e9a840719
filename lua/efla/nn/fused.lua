-- fused.lua: efla.nn.fused, the Lua face of the fused layers of core/ops_fused.c. Each is
-- one autograd node that saves only its inputs and recomputes the cheap intermediates in
-- its backward (the composed ops save every intermediate), with CPU kernels (float32,
-- float64) and CUDA kernels (float32, bfloat16; float32 sums).
--
--   fused.swiglu(gate, up)                          silu(gate) * up
--   fused.swiglu_linear(gate, up, weight)           (silu(gate) * up) @ weight^T
--   fused.short_conv(x, weight [, bias, cache, silu]) causal depthwise conv of x [B,T,C]
--   fused.l2_norm(x [, eps = 1e-6])                  x / sqrt(sum(x^2) + eps), last dim
--   fused.rms_norm_gated(x, gate, weight [, eps])   rms_norm(x, weight) * silu(gate)
--   fused.embedding(weight, index)                  weight rows at 1-based index (no host wait)
--   fused.linear_cross_entropy(h, weight, target [, {ignore_index, chunk_rows}])
--                                                   cross_entropy(h @ weight^T, target)
--
-- nn modules use them whenever efla.nn.fused.enabled is true (the default); set it to
-- false to get the composed ops back (to compare, or to debug a kernel).
local efla = require 'efla'
local I = require 'efla._binding'
local lib = I.lib
local drop = require('efla.nn.temporaries').drop

local fused = { enabled = true }

--- fused.on(x) -> whether modules should take the fused path for activations x: enabled,
--- and x's device has fused kernels for x's dtype (the CPU's compute float32/float64 only).
function fused.on(x)
  return fused.enabled and efla.supports(x, 'swiglu', x:dtype())
end

local function ptr(t, name, fn)
  if t == nil then return nil end
  if not I.is_tensor(t) then I.raise(string.format('%s: %s must be a tensor, got %s', fn, name, type(t))) end
  return t.ptr
end

--- fused.swiglu(gate, up) -> silu(gate) * up (same shapes), one node saving gate and up.
function fused.swiglu(gate, up)
  return I.wrap(lib.efla_swiglu(ptr(gate, 'gate', 'swiglu'), ptr(up, 'up', 'swiglu')))
end

--- fused.swiglu_linear(gate, up, weight [N, M]) -> (silu(gate) * up) @ weight^T: SwiGLU with
--- its down projection as one node that keeps gate, up and the weight (the product is
--- recomputed in backward instead of kept as the projection's input).
function fused.swiglu_linear(gate, up, weight)
  return I.wrap(lib.efla_swiglu_linear(ptr(gate, 'gate', 'swiglu_linear'), ptr(up, 'up', 'swiglu_linear'),
    ptr(weight, 'weight', 'swiglu_linear')))
end

--- fused.short_conv(x [B,T,C], weight [C,K] [, bias [C], cache [B,K-1,C], silu = true]) ->
--- y [B,T,C], y[t,c] = act(bias[c] + sum_j weight[c,j] * x[t-K+j, c]) (1-based j; inputs
--- before the start come from cache, or are zero). One node saving x, weight (, bias, cache).
function fused.short_conv(x, weight, bias, cache, silu)
  if silu == nil then silu = true end
  return I.wrap(lib.efla_short_conv(ptr(x, 'x', 'short_conv'), ptr(weight, 'weight', 'short_conv'),
    ptr(bias, 'bias', 'short_conv'), ptr(cache, 'cache', 'short_conv'), silu and 1 or 0))
end

--- fused.l2_norm(x [, eps = 1e-6]) -> x / sqrt(sum(x^2) + eps) over the last dim (fla's l2norm).
function fused.l2_norm(x, eps)
  return I.wrap(lib.efla_l2_norm(ptr(x, 'x', 'l2_norm'), eps or 1e-6))
end

--- fused.rms_norm_gated(x, gate, weight [D] [, eps = 1e-6]) -> x / sqrt(mean(x^2) + eps) *
--- weight * silu(gate) over the last dim (the output norm and gate of a DeltaNet layer).
function fused.rms_norm_gated(x, gate, weight, eps)
  return I.wrap(lib.efla_rms_norm_gated(ptr(x, 'x', 'rms_norm_gated'), ptr(gate, 'gate', 'rms_norm_gated'),
    ptr(weight, 'weight', 'rms_norm_gated'), eps or 1e-6))
end

--- fused.embedding(weight [V, D], index int64 (1-based, any shape)) -> [..., D]: the rows of weight,
--- like weight:embedding(index) but never waiting for the device (on CUDA an index out of
--- range gives a NaN row instead of an error; the CPU still reports it).
function fused.embedding(weight, index)
  local i = I.c_index(index, 'embedding', weight)
  return I.wrap(lib.efla_embedding_lookup(ptr(weight, 'weight', 'embedding'), i.ptr))
end

--- fused.linear_cross_entropy(h [..., D], weight [V, D], target int64 [...] (1-based), {ignore_index
--- = -100, chunk_rows = auto}) -> the 0-d mean cross-entropy of h @ weight^T over targets that are
--- not ignore_index, float32 (float64 for float64 h). The logits are formed chunk_rows rows at
--- a time and never kept: the gradients are computed in the forward and saved (dh, dW).
--- Nothing waits for the GPU (the mean divides by the target count on the device).
function fused.linear_cross_entropy(h, weight, target, opts)
  if not I.is_tensor(h) or not I.is_tensor(target) then
    I.raise('linear_cross_entropy(h, weight, target): h and target must be tensors')
  end
  local h2 = h:dim() ~= 2 and h:reshape(-1, h:size(-1)) or h
  local target1 = target:dim() ~= 1 and target:reshape(-1) or target
  local ignore = opts and opts.ignore_index or -100
  local t = I.c_index(target1, 'linear_cross_entropy', h2)
  local loss = I.wrap(lib.efla_linear_cross_entropy(h2.ptr, ptr(weight, 'weight', 'linear_cross_entropy'), t.ptr,
    ignore - 1, opts and opts.chunk_rows or 0))
  -- our own views and the 0-based index: their boxes go now, not at the next collection
  drop({ h, target }, h2, target1, t)
  return loss
end

return fused
