-- loss.lua: losses as functions (nn.functional) and as modules.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'

local loss = {}

local function shape_str(x) return '[' .. table.concat(x:size(), ',') .. ']' end

--- cross_entropy(logits [..., C], target int64 [...] (1-based classes),
---   {ignore_index = -100, label_smoothing = 0}) -> 0-d mean loss over the targets that
--- are not ignore_index. With smoothing e the target distribution is (1 - e) on the class
--- plus e/C on every class: loss = (1 - e) * nll + e * mean_c(-log p_c) (PyTorch's rule).
--- Leading dims are flattened, so [B, T, V] logits with [B, T] targets work as is.
--- bfloat16 logits (mixed precision) are taken to float32 first: the loss is float32.
function loss.cross_entropy(logits, target, opts)
  if not efla.is_tensor(logits) or not efla.is_tensor(target) then
    error('cross_entropy(logits, target): both must be tensors', 2)
  end
  if logits:dim() < 1 or target:dim() ~= logits:dim() - 1 then
    error(string.format('cross_entropy: logits %s need targets with one dim fewer, got %s', shape_str(logits), shape_str(target)), 2)
  end
  if logits:dim() ~= 2 then
    for d = 1, target:dim() do
      if target:size(d) ~= logits:size(d) then
        error(string.format('cross_entropy: logits %s and target %s differ in dim %d', shape_str(logits), shape_str(target), d), 2)
      end
    end
    logits = logits:reshape(-1, logits:size(-1))
    target = target:reshape(-1)
  end
  if logits:dtype() == 'bfloat16' then logits = logits:float() end
  return logits:cross_entropy(target, opts)
end

--- mse(a, b) -> the mean of (a - b)^2 over every element (b broadcasts against a).
function loss.mse(a, b) return (a - b):square():mean() end

--- CrossEntropyLoss({ignore_index, label_smoothing}): forward(logits, target)
loss.CrossEntropyLoss = class.new('CrossEntropyLoss', Module)
function loss.CrossEntropyLoss:__init(opts) Module.__init(self); self.opts = opts or {} end
function loss.CrossEntropyLoss:forward(logits, target) return loss.cross_entropy(logits, target, self.opts) end
function loss.CrossEntropyLoss:extra_repr()
  local o = self.opts
  return string.format('ignore_index=%d, label_smoothing=%g', o.ignore_index or -100, o.label_smoothing or 0)
end

--- MSELoss(): forward(a, b)
loss.MSELoss = class.new('MSELoss', Module)
function loss.MSELoss:forward(a, b) return loss.mse(a, b) end

return loss
