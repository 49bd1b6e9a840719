-- efla.nn: modules that own their parameters (Torch's nn, on efla's autograd).
local nn = {}
nn.Module = require 'efla.nn.module'
nn.init = require 'efla.nn.init_fns'
for k, v in pairs(require 'efla.nn.layers') do nn[k] = v end
for k, v in pairs(require 'efla.nn.blocks') do nn[k] = v end
nn.DeltaAttention = require 'efla.nn.attention'
local models = require 'efla.nn.models'
nn.SequenceClassifier, nn.CausalLM, nn.build = models.SequenceClassifier, models.CausalLM, models.build
local loss = require 'efla.nn.loss'
nn.CrossEntropyLoss, nn.MSELoss = loss.CrossEntropyLoss, loss.MSELoss
nn.functional = { cross_entropy = loss.cross_entropy, mse = loss.mse }
return nn
