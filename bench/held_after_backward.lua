-- bench/held_after_backward.lua: what a small LM's training step still holds in CPU memory
-- after its backward beyond the new gradients, with the collector stopped so that only
-- efla.nn.temporaries frees anything, with and without it; and what the forward saved
-- (efla.autograd.saved_memory). float32 compute over float64 weights, like mixed precision.
--   efla bench/held_after_backward.lua
-- tests/lua/test_temporaries.lua loads this file for held() and asserts on the same measurement.
local efla = require 'efla'
local nn = efla.nn

local function held(drop_on)
  nn.temporaries.enabled = drop_on
  efla.manual_seed(3)
  local m = nn.CausalLM { vocab_size = 64, d_model = 32, n_layers = 2, n_heads = 2, order = 'exact', short_conv = true,
                          output_norm = true, key_norm = 'l2', query_norm = 'l2', dtype = 'float64' }
  m:set_compute_dtype('float32')
  local tok = efla.randint(1, 65, { 2, 40 })
  local param_bytes = 0
  for _, p in ipairs(m:parameters()) do param_bytes = param_bytes + p:numel() * 8 end
  collectgarbage('collect')
  collectgarbage('stop')
  local base = efla.cpu_live_bytes()
  local loss = m:loss(tok, tok)
  local _, saved = efla.autograd.saved_memory(loss)
  loss:backward()
  local left = efla.cpu_live_bytes() - base - param_bytes
  collectgarbage('restart')
  nn.temporaries.enabled = true
  return left, saved
end

if arg and arg[0] and arg[0]:match('held_after_backward%.lua$') then
  local on, saved = held(true)
  local off = held(false)
  print(string.format('saved by the forward: %d bytes', saved))
  print(string.format('held after the backward beyond the gradients: %d bytes with efla.nn.temporaries, %d without', on, off))
end
return held
