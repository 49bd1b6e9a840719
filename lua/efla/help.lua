-- efla/help.lua: short docstrings for the public functions, and help(x).
--
--   help()            an overview of efla
--   help(x)           a tensor: what it is, and its methods by topic
--   help(efla.randn)  a function: its signature and what it does
--   help('view')      by name; help(efla.nn) a module: its fields
--   help(efla.nn.DeltaAttention)   a class: its doc and its methods
--
-- Tensor methods have the short texts below (H.docs); everything else is documented by
-- the `---` comments above its definition in the Lua sources (efla/docstrings.lua reads
-- them on demand), and a module by the comment at the top of its file.
local docstrings = require 'efla.docstrings'
local H = {}

-- Names that modules load on first access (a metatable __index), so pairs() misses them.
H.lazy_fields = {
  ['efla.data'] = { 'idx', 'cache', 'loader', 'transforms', 'text', 'Dataset', 'DataLoader', 'Sampler', 'mnist', 'fashion' },
}

-- The modules under efla, for the overview and for the test that everything has help.
H.modules = {
  { 'nn', 'modules: layers, DeltaAttention, SequenceClassifier, CausalLM, losses, nn.build, nn.register' },
  { 'ops', 'the delta-rule operator: delta_rule, delta_rule_step, delta_rule_alpha' },
  { 'optim', 'SGD, Adam, AdamW, gradient clipping, learning-rate schedules' },
  { 'foreach', 'multi-tensor ops over a list (the gradients): sum_squares, scale_' },
  { 'data', 'MNIST / Fashion-MNIST, text corpora, DataLoader, corruptions' },
  { 'checkpoint', 'HDF5 checkpoints: save, load, a last-N-plus-best manager' },
  { 'load_model', 'efla.load_model(path): a model rebuilt from a checkpoint' },
  { 'autograd', 'custom Functions, gradcheck, no_grad' },
  { 'cuda', 'GPU devices, memory statistics, synchronize' },
  { 'distributed', 'data-parallel training: init, collectives (NCCL, TCP), DataParallel, ZeRO-1; efla-run starts the ranks' },
  { 'args', 'command-line options with --help for scripts' },
  { 'progress', 'progress bars' },
  { 'plot', 'gnuplot line plots' },
  { 'csv', 'CSV files' },
  { 'json', 'JSON encode/decode' },
  { 'sys', 'files, folders, processes, atomic writes, CRC-32 (lua-posix, zlib)' },
}

-- Topics, in order, for the overview and for help(tensor).
H.topics = {
  { 'Creation', { 'tensor', 'zeros', 'ones', 'empty', 'full', 'zeros_like', 'ones_like', 'full_like',
    'arange', 'range', 'linspace', 'from_buffer' } },
  { 'Random', { 'rand', 'randn', 'bernoulli', 'randint', 'randperm', 'manual_seed', 'rng_state', 'set_rng_state' } },
  { 'Metadata', { 'size', 'dim', 'numel', 'dtype', 'type', 'device', 'is_contiguous', 'stride', 'item', 'totable',
    'data', 'to_buffer' } },
  { 'Casts and moves', { 'to', 'float', 'double', 'long', 'bool', 'bfloat16', 'cuda', 'cpu', 'clone', 'contiguous' } },
  { 'Views', { 'view', 'reshape', 'flatten', 't', 'transpose', 'permute', 'narrow', 'select', 'expand', 'squeeze',
    'unsqueeze', 'split', 'chunk' } },
  { 'In place', { 'fill_', 'zero_', 'copy_', 'add_', 'sub_', 'mul_', 'div_' } },
  { 'Elementwise', { 'add', 'sub', 'mul', 'div', 'pow', 'neg', 'exp', 'expm1', 'log', 'log1p', 'sqrt', 'rsqrt', 'abs',
    'tanh', 'sigmoid', 'relu', 'gelu', 'silu', 'sin', 'cos', 'sign', 'square', 'reciprocal', 'clamp', 'maximum',
    'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'where', 'masked_fill', 'tril', 'triu' } },
  { 'Reductions', { 'sum', 'mean', 'max', 'min', 'prod', 'logsumexp', 'var', 'std', 'norm', 'argmax', 'argmin',
    'all', 'any', 'allclose' } },
  { 'Linear algebra and nn', { 'matmul', 'softmax', 'log_softmax', 'cross_entropy', 'layer_norm', 'rms_norm' } },
  { 'Indexing and joining', { 'index_select', 'gather', 'scatter_add', 'embedding', 'one_hot', 'cat', 'stack' } },
  { 'Scans, sorting, sampling, convolution', { 'cumsum', 'sort', 'topk', 'multinomial', 'einsum', 'pad', 'softplus',
    'log_sigmoid', 'conv1d' } },
  { 'Autograd', { 'backward', 'grad', 'requires_grad', 'requires_grad_', 'grad_fn', 'detach', 'zero_grad',
    'no_grad', 'enable_grad', 'set_grad_enabled', 'autograd.Function', 'gradcheck' } },
  { 'Library', { 'version', 'set_default_dtype', 'get_default_dtype', 'num_threads', 'set_num_threads',
    'has_cuda', 'device_count', 'supports', 'synchronize', 'live_tensors', 'cpu_live_bytes', 'device_live_bytes', 'set_gc_callback', 'help' } },
}

local D = {}
H.docs = D
-- creation
D.tensor = "efla.tensor(data [, {dtype=, device=, requires_grad=}]): a new tensor from a number, a nested table of numbers (or booleans: dtype bool), a table of tensors (stacked) or a tensor (copied). Default dtype float32."
D.zeros = "efla.zeros(size... [, opts]): zeros; sizes as numbers or one table: efla.zeros(2, 3), efla.zeros({2, 3}, {dtype='float64'})."
D.ones = "efla.ones(size... [, opts]): ones."
D.empty = "efla.empty(size... [, opts]): uninitialised values."
D.full = "efla.full(size..., value [, opts]): every element = value: efla.full({2, 2}, 7)."
D.zeros_like = "efla.zeros_like(x [, opts]): zeros with x's shape, dtype and device (ones_like, empty_like, rand_like, randn_like too)."
D.ones_like = "efla.ones_like(x [, opts]): ones with x's shape, dtype and device."
D.full_like = "efla.full_like(x, value [, opts])."
D.arange = "efla.arange([start,] stop [, step] [, opts]): start, start+step, ... < stop. Integral arguments give int64."
D.range = "efla.range(a, b [, step] [, opts]): Torch7's inclusive range a .. b."
D.linspace = "efla.linspace(start, stop, steps [, opts]): steps evenly spaced values, both ends included."
D.from_buffer = "efla.from_buffer(data, sizes [, dtype]): a CPU tensor copied from a cdata pointer or a string of raw row-major values."
-- random
D.rand = "efla.rand(size... [, opts]): uniform in [0, 1). The generator is counter-based (Philox): same seed, same numbers on every device."
D.randn = "efla.randn(size... [, opts]): standard normal."
D.bernoulli = "efla.bernoulli(size..., p [, opts]) or efla.bernoulli(probs): 1 with probability p, else 0."
D.randint = "efla.randint(low, high, size... [, opts]): int64 in [low, high), high excluded (Python's and PyTorch's rule); efla.randint(high, {sizes}) draws from [0, high). For 1-based indices or class labels 1..n use efla.randint(1, n + 1, ...)."
D.randperm = "efla.randperm(n [, opts]): a random permutation of 1..n (int64), 1-based so that it indexes directly (x:index_select(1, efla.randperm(x:size(1)))); note the contrast with randint's half-open [low, high)."
D.manual_seed = "efla.manual_seed(seed): restarts the generator."
D.rng_state = "efla.rng_state() -> {seed=, offset=}: the generator state (plain numbers, fit for a checkpoint)."
D.set_rng_state = "efla.set_rng_state(state): restores a state from efla.rng_state()."
-- metadata
D.size = "x:size() -> efla.Size (a table of numbers); x:size(d) -> number. Dims are 1-based; -1 is the last. Also x.shape."
D.dim = "x:dim() -> number of dims (also x.ndim)."
D.numel = "x:numel() -> number of elements."
D.dtype = "x:dtype() -> 'float32', 'float64', 'bfloat16', 'int64', 'uint8' or 'bool'."
D.type = "x:type() -> the dtype name; x:type(dtype) -> x cast to dtype."
D.device = "x:device() -> 'cpu' or 'cuda:N'."
D.is_contiguous = "x:is_contiguous() -> true if row-major without gaps."
D.stride = "x:stride([d]) -> strides in elements (a table, or the one of dim d)."
D.item = "x:item() -> the number in a one-element tensor (a boolean for bool)."
D.totable = "x:totable() -> nested Lua tables of numbers (a number for 0-d)."
D.data = "x:data() -> a typed pointer to the first element (CPU; keep x alive while you use it)."
D.to_buffer = "x:to_buffer([ptr, nbytes]) -> the raw values as a string, or copied to ptr."
-- casts
D.to = "x:to(dtype | device | tensor | {dtype=, device=}): a copy with that dtype/device (x itself when nothing changes)."
D.float = "x:float(): as float32 (double, long, bool, bfloat16, byte likewise)."
D.double = "x:double(): as float64."
D.long = "x:long(): as int64."
D.bool = "x:bool(): as bool."
D.bfloat16 = "x:bfloat16(): as bfloat16."
D.cuda = "x:cuda([n=0]): on device cuda:n."
D.cpu = "x:cpu(): on the CPU."
D.clone = "x:clone(): a contiguous copy (differentiable)."
D.contiguous = "x:contiguous(): x if already contiguous, else a contiguous copy."
-- views
D.view = "x:view(size...): the same storage seen with another shape (-1 infers one size); fails if the strides don't allow it."
D.reshape = "x:reshape(size...): a view when possible, else a copy."
D.flatten = "x:flatten(): 1-d."
D.t = "x:t(): transpose of a 2-d tensor."
D.transpose = "x:transpose(d1, d2): swaps two dims (a view)."
D.permute = "x:permute(d...): reorders all dims: x:permute(3, 1, 2)."
D.narrow = "x:narrow(dim, start, length): length entries from position start (1-based) along dim; a view."
D.select = "x:select(dim, i): the slice at position i (1-based; -1 the last) along dim, which is removed; x[i] is x:select(1, i)."
D.expand = "x:expand(size...): broadcast size-1 dims to larger sizes without copying (-1 keeps a size)."
D.squeeze = "x:squeeze([dim]): drops size-1 dims (or that one dim)."
D.unsqueeze = "x:unsqueeze(dim): inserts a size-1 dim at position dim (1..ndim+1; -1 appends)."
D.split = "x:split(size | {sizes} [, dim=1]): a table of views."
D.chunk = "x:chunk(n [, dim=1]): n nearly equal views."
-- in place
D.fill_ = "x:fill_(v): every element = v; returns x."
D.zero_ = "x:zero_(): every element = 0; returns x."
D.copy_ = "x:copy_(src): copies src (broadcast, cast, any device) into x; returns x."
D.add_ = "x:add_(y): x = x + y in place (sub_, mul_, div_, pow_ likewise); y a tensor or a number."
D.sub_ = "x:sub_(y): x = x - y in place."
D.mul_ = "x:mul_(y): x = x * y in place."
D.div_ = "x:div_(y): x = x / y in place."
-- elementwise
D.add = "x:add(y), x + y: elementwise sum with broadcasting; numbers on either side. (*, /, -, ^ likewise; * is elementwise, use matmul for products of matrices; == compares identity, use :eq.)"
D.sub = "x:sub(y), x - y."
D.mul = "x:mul(y), x * y: elementwise."
D.div = "x:div(y), x / y."
D.pow = "x:pow(y), x ^ y."
for _, n in ipairs({ 'neg', 'exp', 'expm1', 'log', 'log1p', 'sqrt', 'rsqrt', 'abs', 'tanh', 'sigmoid', 'relu',
  'gelu', 'silu', 'sin', 'cos', 'sign', 'square', 'reciprocal' }) do
  D[n] = string.format("x:%s(): elementwise %s (differentiable).", n, n)
end
D.clamp = "x:clamp(lo, hi): limits values to [lo, hi]; nil means no bound."
D.maximum = "x:maximum(y): elementwise larger value."
D.minimum = "x:minimum(y): elementwise smaller value."
for _, n in ipairs({ 'eq', 'ne', 'lt', 'le', 'gt', 'ge' }) do
  D[n] = string.format("x:%s(y): elementwise comparison -> bool tensor.", n)
end
D.where = "efla.where(cond, a, b): a where cond is true, else b (numbers allowed); x:where(cond, y) is efla.where(cond, x, y)."
D.masked_fill = "x:masked_fill(mask, value): value where the bool mask is true."
D.tril = "x:tril([k=0]): lower triangle (entries above diagonal k zeroed)."
D.triu = "x:triu([k=0]): upper triangle."
-- reductions
D.sum = "x:sum([dim [, keepdim]]): dim a number or a table of dims; all dims when nil. Reduced dims are dropped unless keepdim."
D.mean = "x:mean([dim [, keepdim]])."
D.max = "x:max(): the largest value (0-d); x:max(dim [, keepdim]) -> values, indices (1-based); x:max(y): elementwise."
D.min = "x:min(): like max."
D.prod = "x:prod([dim [, keepdim]])."
D.logsumexp = "x:logsumexp([dim [, keepdim]]): log(sum(exp(x))), computed stably."
D.var = "x:var([dim [, keepdim [, correction=1]]]): variance (correction 1: unbiased)."
D.std = "x:std([dim [, keepdim [, correction=1]]])."
D.norm = "x:norm([p=2 [, dim [, keepdim]]])."
D.argmax = "x:argmax([dim [, keepdim]]): 1-based positions of the largest values (flattened when dim is nil)."
D.argmin = "x:argmin([dim [, keepdim]])."
D.all = "x:all() -> true if every element is nonzero."
D.any = "x:any() -> true if some element is nonzero."
D.allclose = "x:allclose(y [, rtol=1e-5 [, atol=1e-8]]) -> boolean."
-- nn
D.matmul = "a:matmul(b): matrix product with numpy rules: 1-d @ 1-d, 2-d @ 2-d, batched with broadcast batch dims."
for _, n in ipairs({ 'mm', 'bmm', 'mv', 'dot' }) do
  D[n] = "a:" .. n .. "(b): Torch7's name for a:matmul(b) (the shapes decide: matrix, batched, matrix-vector or dot product)."
end
D.nDimension = "x:nDimension(): Torch7's name for x:dim()."
D.nElement = "x:nElement(): Torch7's name for x:numel()."
D.greater = "x:greater(y): the same as x:gt(y), elementwise x > y as bool."
D.less = "x:less(y): the same as x:lt(y), elementwise x < y as bool."
D.describe_value = "efla.describe_value(v) -> what v is, in words (\"nil\", \"a string ('abc')\"), for error messages."
D.need_tensor = "efla.need_tensor(v, op, what) -> v, or an error naming op, what and the value when v is not a tensor."
D.softmax = "x:softmax([dim=-1])."
D.log_softmax = "x:log_softmax([dim=-1])."
D.cross_entropy = "logits:cross_entropy(target [, {ignore_index=-100, label_smoothing=0}]): mean softmax cross-entropy; logits [N,C], target int64 [N] of 1-based classes."
D.layer_norm = "x:layer_norm([weight [, bias [, eps=1e-5]]]): normalises the last dim."
D.rms_norm = "x:rms_norm([weight [, eps=1e-6]])."
-- indexing
D.index_select = "x:index_select(dim, index): entries at the 1-based positions in index (int64 tensor or table) along dim."
D.gather = "x:gather(dim, index): out[i][j] = x[index[i][j]][j] (dim 1) etc.; 1-based index."
D.scatter_add = "x:scatter_add(dim, index, src): a copy of x with src added at the 1-based positions of index."
D.embedding = "efla.embedding(weight, index) or weight:embedding(index): rows of weight [V,D] at 1-based index -> [..., D]."
D.one_hot = "index:one_hot([num_classes]): int64 [..., num_classes] with a 1 at each 1-based class."
D.cat = "efla.cat({t1, t2, ...} [, dim=1]) or efla.cat(t1, t2 [, dim]): joins along an existing dim."
D.stack = "efla.stack({t1, t2, ...} [, dim=1]): joins along a new dim."
-- autograd
D.backward = "y:backward([grad [, retain_graph]]): accumulates dy/dx into x.grad of every leaf x that requires grad. grad may be left out when y has one element."
D.grad = "x.grad: the accumulated gradient of a leaf (nil when none). x.grad = nil drops it."
D.requires_grad = "x.requires_grad: true when gradients flow to x; efla.randn(3, {requires_grad=true})."
D.requires_grad_ = "x:requires_grad_([flag=true]): marks a leaf; returns x."
D.grad_fn = "x.grad_fn: the name of the op that made x ('mul', ...), nil for leaves."
D.detach = "x:detach(): same storage, no history."
D.zero_grad = "x:zero_grad() / efla.zero_grad(params): drop the gradients."
D.no_grad = "efla.no_grad(fn, ...): runs fn with gradient recording off; restores the mode even on error."
D.enable_grad = "efla.enable_grad(fn, ...): runs fn with recording on."
D.set_grad_enabled = "efla.set_grad_enabled(flag) -> the previous setting."
D['autograd.Function'] = "efla.autograd.Function{forward=function(ctx, ...) ... end, backward=function(ctx, grad_out...) ... end [, name=]}: a differentiable function written in Lua. forward runs without recording; ctx:save_for_backward(t...) keeps tensors (ctx.saved_tensors in backward); backward returns one gradient (or nil) per forward argument. Call it: F(x, y)."
D.gradcheck = "efla.gradcheck(f, inputs [, {eps=1e-6, atol=1e-5, rtol=1e-4}]) -> ok, report, worst: analytic gradients of f against central finite differences (float64 inputs)."
-- library
D.version = "efla.version() -> the library version."
D.set_default_dtype = "efla.set_default_dtype('float64'): the dtype of new floating tensors (float32 at start)."
D.get_default_dtype = "efla.get_default_dtype()."
D.num_threads = "efla.num_threads() -> the OpenMP threads CPU kernels use (default: the cores, or OMP_NUM_THREADS)."
D.set_num_threads = "efla.set_num_threads(n): CPU kernels use at most n threads from now on (OpenBLAS follows). Kernels on small tensors (below ~32K elements) run on one thread whatever n is, since waking threads costs more than it saves; idle threads sleep (the efla command sets OMP_WAIT_POLICY=passive unless you set it), so a small experiment runs at single-thread speed or better. Set 1 when you run several processes side by side."
D.has_cuda = "efla.has_cuda(): true when the CUDA backend is built in."
D.device_count = "efla.device_count('cuda'): number of CUDA devices."
D.supports = "efla.supports(device, kernel, dtype) -> true when the device's backend has that kernel (core/backend_ops.h) for that dtype, e.g. efla.supports('cpu', 'delta_rule_fwd', 'bfloat16') is false; efla.supports() lists the kernel names."
D.synchronize = "efla.synchronize([device='cuda']): waits for queued work."
D.live_tensors = "efla.live_tensors(): tensor structs alive in C (leak checks)."
D.cpu_live_bytes = "efla.cpu_live_bytes(): bytes held by CPU storages."
D.device_live_bytes = "efla.device_live_bytes(): bytes held by tensor storages on every GPU together (0 without one); the Lua side collects garbage when it grows, since Lua sees only the small tensor boxes."
D.set_gc_callback = "efla.set_gc_callback([enable=true]): lets the CUDA allocator run a Lua GC before giving up (on by default with CUDA)."
D.help = "help([x]): this overview; help(x) for a tensor, function, module or name."
-- further methods and functions
D.byte = "x:byte(): as uint8."
D.float32 = "x:float32(): as float32 (the same as x:float())."
D.float64 = "x:float64(): as float64 (the same as x:double())."
D.int64 = "x:int64(): as int64 (the same as x:long())."
D.element_size = "x:element_size() -> bytes per element of x's dtype."
D.expand_as = "x:expand_as(y): x broadcast to y's shape (a view)."
D.view_as = "x:view_as(y): x:view with y's shape."
D.reshape_as = "x:reshape_as(y): x:reshape with y's shape."
D.is_cuda = "x:is_cuda() -> true when x lives on a CUDA device."
D.is_floating_point = "x:is_floating_point() -> true for float32, float64 and bfloat16."
D.is_same_storage = "x:is_same_storage(y) -> true when x and y are views of one storage."
D.storage_offset = "x:storage_offset() -> the offset of x's first element in its storage (elements, 0-based as in C)."
D.lerp = "x:lerp(y, w): x + (y - x) * w (w a number or a tensor; differentiable)."
D.maximum_ = "x:maximum_(y): x = max(x, y) elementwise, in place."
D.minimum_ = "x:minimum_(y): x = min(x, y) elementwise, in place."
D.pow_ = "x:pow_(y): x = x ^ y in place."
D.empty_like = "efla.empty_like(x [, opts]): uninitialised values with x's shape, dtype and device."
D.rand_like = "efla.rand_like(x [, opts]): uniform [0, 1) values with x's shape, dtype and device."
D.randn_like = "efla.randn_like(x [, opts]): standard normal values with x's shape, dtype and device."
D.is_tensor = "efla.is_tensor(v) -> true when v is an efla tensor."
D.is_grad_enabled = "efla.is_grad_enabled() -> true when operations record history for backward."
D['autograd.is_grad_enabled'] = D.is_grad_enabled
D.cuda_empty_cache = "efla.cuda_empty_cache([dev='cuda']): gives the CUDA allocator's cached free blocks back to the driver (also efla.cuda.empty_cache)."
D.cuda_reset_peak = "efla.cuda_reset_peak([dev='cuda']): restarts the peak-memory statistic (also efla.cuda.reset_peak)."
D.Size = "efla.Size: the table x:size() returns: a list of sizes with :numel(), :totable() and == by value."
D['Size.numel'] = "size:numel() -> the product of the sizes."
D['Size.totable'] = "size:totable() -> a plain Lua list of the sizes."

-- The names a function is known by (efla.lt and x:less are one function), from the
-- efla table and its submodules.
local function find_names(fn, efla)
  local names = {}
  for k, v in pairs(efla) do if v == fn then names[#names + 1] = k end end
  for k, v in pairs(efla.Tensor) do if v == fn then names[#names + 1] = k end end
  for k, v in pairs(efla.autograd) do if v == fn then names[#names + 1] = 'autograd.' .. k end end
  for k, v in pairs(package.loaded) do
    if type(v) == 'table' and type(k) == 'string' and k:match('^efla%.') then
      for k2, v2 in pairs(v) do if v2 == fn then names[#names + 1] = k:sub(6) .. '.' .. k2 end end
    end
  end
  table.sort(names)
  return names
end
local function find_name(fn, efla) return find_names(fn, efla)[1] end

local function wrap_text(s, indent, width)
  width = width or 78
  local out, line = {}, indent
  for word in s:gmatch('%S+') do
    if #line + #word + 1 > width and #line > #indent then
      out[#out + 1] = line
      line = indent
    end
    line = line .. (#line > #indent and ' ' or '') .. word
  end
  out[#out + 1] = line
  return table.concat(out, '\n')
end

local function overview()
  local lines = {
    'efla: tensors, autograd and the delta rule, from LuaJIT.',
    '',
    '  local x = efla.randn(4, 3, {requires_grad=true})',
    '  local y = (x:tanh() * x):sum()',
    '  y:backward()          -- x.grad now holds dy/dx',
    '',
    'Dims and indices are 1-based (-1 is the last); every method is also a function',
    '(efla.tanh(x) == x:tanh()). help(x) for a tensor x, help(efla.randn) or help("view").',
  }
  for _, topic in ipairs(H.topics) do
    lines[#lines + 1] = ''
    lines[#lines + 1] = topic[1] .. ':'
    lines[#lines + 1] = wrap_text(table.concat(topic[2], ' '), '  ')
  end
  lines[#lines + 1] = ''
  lines[#lines + 1] = 'Modules (help(efla.nn) etc. describes one):'
  for _, m in ipairs(H.modules) do
    lines[#lines + 1] = string.format('  efla.%-11s %s', m[1], m[2])
  end
  return table.concat(lines, '\n')
end

local function tensor_help(x, efla)
  local fmt = require 'efla.format'
  local lines = { 'A tensor: ' .. fmt.footer(x), '', 'Properties: shape ndim grad requires_grad grad_fn is_leaf',
    'Indexing: x[i] (1-based select on dim 1), x[{i, {a, b}}], x[i] = v', 'Methods:' }
  local listed = {}
  for _, topic in ipairs(H.topics) do
    local names = {}
    for _, n in ipairs(topic[2]) do
      if efla.Tensor[n] then names[#names + 1] = n; listed[n] = true end
    end
    if #names > 0 then lines[#lines + 1] = wrap_text(topic[1] .. ': ' .. table.concat(names, ' '), '  ') end
  end
  local others = {}
  for n in pairs(efla.Tensor) do if not listed[n] then others[#others + 1] = n end end
  table.sort(others)
  if #others > 0 then lines[#lines + 1] = wrap_text('Also: ' .. table.concat(others, ' '), '  ') end
  lines[#lines + 1] = ''
  lines[#lines + 1] = 'help("name") describes one method.'
  return table.concat(lines, '\n')
end

-- A class: made by class.new (it has __name), or a callable table that is its own
-- __index (data.DataLoader); either way its metatable makes it callable.
local function is_class(t)
  if type(t) ~= 'table' then return false end
  if type(rawget(t, '__name')) ~= 'string' and rawget(t, '__index') ~= t then return false end
  local mt = getmetatable(t)
  return mt ~= nil and mt.__call ~= nil
end

-- The public fields of a table, sorted (no _private names, no metamethods).
local function public_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) == 'string' and not k:match('^_') then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

-- One line per public field: "  name  summary".
local function field_lines(t, lines)
  for _, k in ipairs(public_keys(t)) do
    local v = t[k]
    local doc = H.doc_of(v)
    local summary = doc and docstrings.summary(doc) or type(v)
    lines[#lines + 1] = string.format('  %-18s %s', k, summary)
  end
end

--- help.method_doc(cls, name) -> the doc of method `name` of class cls; an override
--- without its own doc has the doc of the method it overrides.
function H.method_doc(cls, name)
  local c = cls
  while c do
    local f = rawget(c, name)
    local doc = f and docstrings.of_function(f)
    if doc then return doc end
    c = rawget(c, '__parent')
  end
  return nil
end

-- The name a table has in the module that exports it ('DataLoader'), if any.
local function loaded_field_name(t)
  for k, m in pairs(package.loaded) do
    if type(m) == 'table' and type(k) == 'string' and k:match('^efla') then
      for k2, v in pairs(m) do if v == t and type(k2) == 'string' then return k2 end end
    end
  end
end

local function class_help(cls)
  local lines = { 'class ' .. (rawget(cls, '__name') or loaded_field_name(cls) or '?') .. (rawget(cls, '__parent') and (' (a ' .. cls.__parent.__name .. ')') or '') }
  local doc = H.doc_of(cls)
  if doc then lines[#lines + 1] = doc end
  local own = {}
  for _, k in ipairs(public_keys(cls)) do
    if type(cls[k]) == 'function' and k ~= 'extra_repr' then own[#own + 1] = k end
  end
  if #own > 0 then
    lines[#lines + 1] = ''
    lines[#lines + 1] = 'Methods:'
    for _, k in ipairs(own) do
      local d = H.method_doc(cls, k)
      lines[#lines + 1] = string.format('  %-18s %s', k, d and docstrings.summary(d) or '')
    end
  end
  if rawget(cls, '__parent') then
    lines[#lines + 1] = string.format('Inherited: help(%s) for the methods of %s.',
      cls.__parent.__name == 'Module' and 'efla.nn.Module' or cls.__parent.__name, cls.__parent.__name)
  end
  return table.concat(lines, '\n')
end

local function module_help(m, name)
  if type(m.__doc) == 'string' then return m.__doc end
  local lines = {}
  local doc = name and docstrings.of_module(name)
  lines[#lines + 1] = doc or ((name or 'A table') .. ':')
  lines[#lines + 1] = ''
  lines[#lines + 1] = 'Fields:'
  field_lines(m, lines)
  return table.concat(lines, '\n')
end

-- The module name a table was loaded as ('efla.nn'), if any.
local function loaded_name(t)
  for k, v in pairs(package.loaded) do
    if v == t and type(k) == 'string' and k ~= '_G' then return k end
  end
end

--- help.doc_of(v) -> the documentation text of a public value (function, class, module),
--- or nil when it has none. The test of "every public name has help" asks this.
function H.doc_of(v)
  local efla = require 'efla'
  if type(v) == 'function' then
    local doc = docstrings.of_function(v)
    if doc then return doc end
    for _, name in ipairs(find_names(v, efla)) do
      if D[name] then return D[name] end
    end
    return nil
  end
  if is_class(v) then
    if type(rawget(v, '__doc')) == 'string' then return v.__doc end
    local init = rawget(v, '__init') or rawget(v, 'new')
    return (init and docstrings.of_function(init)) or (rawget(v, '__name') and docstrings.of_class(v)) or nil
  end
  if type(v) == 'table' then
    if type(rawget(v, '__doc')) == 'string' then return v.__doc end
    for k, w in pairs(efla) do
      if w == v and D[k] then return D[k] end
    end
    local name = loaded_name(v)
    return name and docstrings.of_module(name) or nil
  end
  return nil
end

-- efla.nn.Linear from 'nn.Linear' or 'efla.nn.Linear' (nil when there is no such name).
local function resolve(path)
  local efla = require 'efla'
  local v = efla
  for part in path:gsub('^efla%.', ''):gmatch('[^%.:]+') do
    if type(v) ~= 'table' then return nil end
    local ok, w = pcall(function() return v[part] end)
    if not ok or w == nil then return nil end
    v = w
  end
  return v
end

--- help.text(x) -> the help text for x (what help(x) prints)
function H.text(x)
  local efla = require 'efla'
  if x == nil then return overview() end
  if efla.is_tensor(x) then return tensor_help(x, efla) end
  if type(x) == 'string' then
    local key = x:gsub('^efla%.', ''):gsub('^Tensor[.:]', ''):gsub('^x:', '')
    if D[key] then return D[key] end
    local v = resolve(x)
    if v ~= nil and v ~= x then return H.text(v) end
    return 'No help for "' .. x .. '". help() lists what there is.'
  end
  if type(x) == 'function' then
    local doc = H.doc_of(x)
    if doc then return doc end
    local name = find_name(x, efla)
    if name then return name .. ': no description yet.' end
    return 'A Lua function (not one of efla\'s).'
  end
  if is_class(x) then return class_help(x) end
  if type(x) == 'table' then
    if x == efla then return overview() end
    return module_help(x, loaded_name(x))
  end
  return 'A ' .. type(x) .. ': ' .. tostring(x)
end

-- A plain table with functions is an API table (nn.functional); one without is data.
local function has_functions(t)
  for _, v in pairs(t) do if type(v) == 'function' then return true end end
  return false
end

--- help.public_values() -> { {name, value [, class, method]}, ... }: every public name of efla: the
--- functions of efla and efla.Tensor, the modules of H.modules, their functions and
--- classes, the classes' own methods and nested tables (efla.nn.functional, ...).
function H.public_values()
  local efla = require 'efla'
  local out, seen = {}, {}
  local function add(name, v) out[#out + 1] = { name, v } end
  local function walk(prefix, t, depth)
    if seen[t] or depth > 3 then return end
    seen[t] = true
    for _, k in ipairs(H.lazy_fields[prefix] or {}) do local _ = t[k] end
    for _, k in ipairs(public_keys(t)) do
      local v = t[k]
      local name = prefix .. '.' .. k
      if type(v) == 'function' then
        add(name, v)
      elseif is_class(v) then
        if not seen[v] then
          seen[v] = true
          add(name, v)
          for _, m in ipairs(public_keys(v)) do
            if type(rawget(v, m)) == 'function' and m ~= 'extra_repr' then
              out[#out + 1] = { name .. ':' .. m, rawget(v, m), v, m }
            end
          end
        end
      elseif k:match('_mt$') then
        -- a metatable (json.array_mt): not documentation material
      elseif type(v) == 'table' and (v.__doc or getmetatable(v) == nil and has_functions(v)) then
        if not seen[v] then add(name, v); walk(name, v, depth + 1) end
      end
    end
  end
  seen[efla.internal] = true
  seen[efla.dtypes] = true
  seen[efla.Tensor] = true
  for _, m in ipairs(H.modules) do
    local v = efla[m[1]]
    add('efla.' .. m[1], v)
    if type(v) == 'table' then walk('efla.' .. m[1], v, 1) end
  end
  walk('efla', efla, 1)
  for _, k in ipairs(public_keys(efla.Tensor)) do add('efla.Tensor.' .. k, efla.Tensor[k]) end
  return out
end

--- help.entry_doc(entry) -> the doc of one entry of help.public_values(), or nil.
function H.entry_doc(e)
  if e[3] then return H.method_doc(e[3], e[4]) end
  return H.doc_of(e[2])
end

--- help(x): prints the help text for x
function H.help(x) print(H.text(x)) end

return H
