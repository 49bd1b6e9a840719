-- bench/smnist_export.lua: write efla's sMNIST split as raw bytes, so that another framework
-- (bench/torch_smnist_train.py) trains on exactly the digits efla trains and tests on.
--
--   efla bench/smnist_export.lua [--dataset mnist|fashion] --out DIR
-- writes DIR/<split>_images.u8 (N*784 bytes, row-major 28x28, pixel = round(255 x)) and
-- DIR/<split>_labels.u8 (N bytes, 0-based class) for split = train, test.
local efla = require 'efla'
local ffi = require 'ffi'

local args = efla.args.parse(arg, {
  name = 'bench/smnist_export.lua',
  description = "Write efla's sMNIST train/test split as raw bytes for other frameworks.",
  { '--dataset', default = 'mnist', choices = { 'mnist', 'fashion' }, help = 'which data set' },
  { '--out', default = '/tmp/smnist-export', help = 'output folder' },
})

efla.data.mkdir_p(args.out)
for _, split in ipairs({ 'train', 'test' }) do
  local ds = efla.data[args.dataset] { split = split }
  local images, labels = ds.images:contiguous(), ds.labels:contiguous()
  local n = images:size(1)
  local label_ptr = labels:data()            -- int64, 1-based class indices (labels kept alive above)
  local label_bytes = ffi.new('uint8_t[?]', n)
  for i = 0, n - 1 do label_bytes[i] = tonumber(label_ptr[i]) - 1 end
  local function put(name, ptr, bytes)
    local f = assert(io.open(string.format('%s/%s_%s', args.out, split, name), 'wb'))
    f:write(ffi.string(ptr, bytes))
    f:close()
  end
  put('images.u8', images:data(), n * 784)
  put('labels.u8', label_bytes, n)
  print(string.format('%s %s: %d images -> %s/%s_*.u8', args.dataset, split, n, args.out, split))
end
