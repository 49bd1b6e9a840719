-- efla/nn/temporaries.lua: efla's built-in layers give their intermediate tensors back as soon
-- as they are used, instead of when Lua's collector next runs. Without this a GPU training
-- step keeps a forward's worth of temporaries (the projections before their norms, the
-- branch outputs before the residual adds) on the card until the next collection: about a
-- gigabyte for the byte-level LM of bench/lm_step_gpu.lua. Autograd keeps what backward needs
-- through its own references, so nothing it saved is lost.
--
-- A layer only drops tensors that it made itself or got from its own submodules. If you put a
-- module of your own inside an efla block and it keeps (or returns again) its output, set
-- efla.nn.temporaries.enabled = false: a dropped tensor reads as an empty [0] tensor.
local tensor = require 'efla.tensor'

local temporaries = { enabled = true }

--- temporaries.drop(keep, t1, t2, ...): hands back each ti that is a tensor and is not kept;
--- keep is a tensor the caller still uses (the layer's input, its result), a list of them, or nil.
function temporaries.drop(keep, ...)
  if not temporaries.enabled then return end
  local keep_list = type(keep) == 'table' and keep or nil
  for i = 1, select('#', ...) do
    local t = select(i, ...)
    local kept = rawequal(t, keep)
    if keep_list then
      for j = 1, #keep_list do kept = kept or rawequal(t, keep_list[j]) end
    end
    if t ~= nil and not kept and tensor.is_tensor(t) then tensor._drop_box(t) end
  end
end

return temporaries
