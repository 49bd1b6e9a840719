-- test_lua_layout.lua: how efla's Lua modules fit together: tensor.lua's extension point
-- (methods and properties are registered, clashes refused), the private binding module,
-- AdamW's kernel and the device controls in their own modules under the old public names.
-- Run: build/efla tests/lua/test_lua_layout.lua [name-pattern]
local efla = require 'efla'
local tensor = require 'efla.tensor'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok

local function raised(f, ...)
  local good, err = pcall(f, ...)
  return not good and tostring(err) or nil
end

test('register_methods adds methods and refuses a clash unless asked to replace', function()
  tensor.register_methods({ twice_for_test = function(x) return x * 2 end })
  eq(efla.ones(3):twice_for_test():sum():item(), 6)
  local err = raised(tensor.register_methods, { sum = function() end })
  ok(err and err:find("already have a method 'sum'", 1, true), tostring(err))
  eq(efla.ones(3):sum():item(), 3, 'the refused registration left sum alone')
  tensor.register_methods({ twice_for_test = function(x) return x * 3 end }, true)
  eq(efla.ones(3):twice_for_test():sum():item(), 9)
  err = raised(tensor.register_methods, { [1] = 'not a function' })
  ok(err and err:find('name = function', 1, true), tostring(err))
end)

test('register_properties: a getter, a setter, read-only ones and clashes', function()
  local store = {}
  tensor.register_properties({
    tag_for_test = { get = function(x) return store[tostring(x:numel())] end,
      set = function(x, v) store[tostring(x:numel())] = v end },
    numel_twice_for_test = { get = function(x) return 2 * x:numel() end },
  })
  local x = efla.zeros(4)
  x.tag_for_test = 'hello'
  eq(x.tag_for_test, 'hello')
  eq(x.numel_twice_for_test, 8)
  local err = raised(function() x.numel_twice_for_test = 1 end)
  ok(err and err:find("cannot set field 'numel_twice_for_test'", 1, true), tostring(err))
  err = raised(tensor.register_properties, { grad = { get = function() end } })
  ok(err and err:find("already have a field 'grad'", 1, true), tostring(err))
  err = raised(tensor.register_properties, { size = { get = function() end } })
  ok(err and err:find("already have a field 'size'", 1, true), 'a property may not hide a method: ' .. tostring(err))
end)

test('autograd registers its properties and methods through the extension point', function()
  local names = {}
  for _, n in ipairs(tensor.property_names()) do names[n] = true end
  for _, n in ipairs({ 'grad', 'requires_grad', 'is_leaf', 'grad_fn', 'shape', 'ndim' }) do ok(names[n], n) end
  local x = efla.tensor({ 1, 2, 3 }, { dtype = 'float64' }):requires_grad_()
  local y = (x * x):sum()
  eq(y.grad_fn, 'sum')
  y:backward()
  eq(x.grad:totable(), { 2, 4, 6 })
  x.grad = nil
  eq(x.grad, nil)
  ok(tensor.getters == nil and tensor.setters == nil, 'the property tables are not handed out')
end)

test('the private binding is efla.internal, and the library modules use it directly', function()
  local binding = require 'efla._binding'
  ok(efla.internal == binding)
  for _, k in ipairs({ 'ffi', 'lib', 'raise', 'check', 'checkp', 'last_error', 'wrap', 'is_tensor', 'cdim' }) do
    ok(binding[k] ~= nil, 'binding.' .. k)
  end
  -- no module of efla's reaches the binding through the public table
  local pending = {}
  local root = package.searchpath('efla.tensor', package.path):match('^(.*/efla/)tensor%.lua$')
  local p = io.popen("cd '" .. root .. "' && find . -name '*.lua' | sort")
  local offenders = {}
  for rel in p:lines() do
    rel = rel:gsub('^%./', '')
    local f = io.open(root .. rel)
    local text = f:read('*a')
    f:close()
    if rel ~= 'init.lua' and rel ~= '_binding.lua' and not pending[rel] and
      (text:find('%.internal%.') or text:find('=%s*[%w_%.%(%)\' ]*%.internal%s*\n')) then
      offenders[#offenders + 1] = rel
    end
  end
  p:close()
  eq(offenders, {}, 'modules that use efla.internal instead of require "efla._binding"')
end)

test('AdamW step and device controls keep their public names', function()
  eq(efla.adamw_step_, require('efla.optim.adamw_step'))
  local p = efla.tensor({ 1 }, { dtype = 'float64' })
  local m, v = efla.zeros(1, { dtype = 'float64' }), efla.zeros(1, { dtype = 'float64' })
  efla.adamw_step_(p, efla.tensor({ 0.5 }, { dtype = 'float64' }), m, v, 0.1, 0.9, 0.999, 1e-8, 0, 1)
  -- step 1: m_hat = g, v_hat = g^2, so p moves by lr * g / (|g| + eps)
  ok(math.abs(p:item() - (1 - 0.1 * 0.5 / (0.5 + 1e-8))) < 1e-12, tostring(p:item()))
  ok(math.abs(m:item() - 0.05) < 1e-15 and math.abs(v:item() - 0.00025) < 1e-15)
  local err = raised(efla.adamw_step_, p, 'grad', m, v, 0.1, 0.9, 0.999, 1e-8, 0, 1)
  ok(err and err:find('adamw_step_: grad must be a tensor', 1, true), tostring(err))
  local cuda = require 'efla.cuda'
  ok(efla.cuda == cuda)
  eq(efla.cuda_memory_stats, cuda.memory_stats)
  eq(efla.cuda_set_tf32, cuda.set_tf32)
  eq(efla.has_cuda(), cuda.has_backend())
  eq(efla.device_count('cuda'), cuda.device_count())
  eq(cuda.is_available(), efla.has_cuda() and efla.device_count('cuda') > 0)
  err = raised(efla.device_count, 'tpu')
  ok(err and err:find("only 'cuda' devices", 1, true), tostring(err))
end)

t.done()
