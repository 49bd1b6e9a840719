-- loss.lua: losses as functions and as modules.
local class = require 'efla.class'
local Module = require 'efla.nn.module'

local loss = {}

--- cross_entropy(logits [N, C], target int64 [N], {ignore_index = -100, label_smoothing = 0})
--- -> 0-d mean loss over the targets that are not ignored.
function loss.cross_entropy(logits, target, opts)
  return logits:cross_entropy(target, opts)
end

--- mse(a, b) -> mean squared error.
function loss.mse(a, b) return (a - b):square():mean() end

loss.CrossEntropyLoss = class.new('CrossEntropyLoss', Module)
function loss.CrossEntropyLoss:__init(opts) Module.__init(self); self.opts = opts or {} end
function loss.CrossEntropyLoss:forward(logits, target) return loss.cross_entropy(logits, target, self.opts) end

loss.MSELoss = class.new('MSELoss', Module)
function loss.MSELoss:forward(a, b) return loss.mse(a, b) end

return loss
