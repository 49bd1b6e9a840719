-- load_model.lua: efla.load_model(path [, {device = 'cpu'}]) -> model, checkpoint.
-- Rebuilds a model from a checkpoint alone: the stored config (meta.config, with its
-- builder in config.type) makes the module tree, then the stored weights fill it (every
-- name, shape and dtype is checked, all mismatches reported at once). Nothing in the file
-- is executed: the config is JSON.
local checkpoint = require 'efla.checkpoint'

--- efla.load_model(path [, {device = 'cpu'}]) -> model, checkpoint: rebuilds the model a
--- checkpoint's stored config describes (nn.build; user classes need efla.nn.register(name,
--- class) first), loads its weights and puts it in evaluation mode.
return function(path, opts)
  local nn = require 'efla.nn'
  local ck = checkpoint.load(path)
  local config = ck.meta and ck.meta.config
  if type(config) ~= 'table' or not config.type then
    error(string.format('load_model: %s holds no model config (meta.config with a type); it was not saved by a recipe that records its model', path), 2)
  end
  local ok, model = pcall(nn.build, config)
  if not ok then error(string.format('load_model: %s: cannot rebuild the model: %s', path, model), 2) end
  local ok2, err = pcall(model.load_state_dict, model, ck.model)
  if not ok2 then error(string.format('load_model: %s: %s', path, err), 2) end
  if opts and opts.device and opts.device ~= 'cpu' then model:to(opts.device) end
  model:evaluate()
  return model, ck
end
