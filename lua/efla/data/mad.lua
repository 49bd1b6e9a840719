-- efla.data.mad: the synthetic tasks of MAD (Poli et al. 2024, "Mechanistic Design and
-- Scaling of Hybrid Architectures"), generated in Lua from the published rules.
--
--   local mad = require 'efla.data.mad'
--   local cfg = mad.config('in-context-recall')            -- the published baseline
--   local x, y = mad.instance('in-context-recall', cfg, rng, true)   -- Lua arrays of tokens
--   local ds = mad.dataset('selective-copying', cfg, {n = 1280, seed = 1, training = false})
--   ds.inputs, ds.targets                                  -- int64 [n, L]: ids = token + 1,
--                                                          --   targets -100 where not scored
-- Tokens are MAD's, 0 .. vocab_size-1; the tensors add 1 (efla's ids start at 1).
-- Instances are drawn from an efla.eval.random stream, so a seed fixes a data set.
--
-- The tasks (V = vocab_size, L = seq_len, "ignore" = not scored):
--   in-context-recall   keys are tokens 0..V/2-1, values V/2..V-1 (multi-query: all V
--                       tokens; else V-1 is a copy prefix). L/2 - 1 key-value pairs, each
--                       key mapped to one value per sequence, then a probe pair whose key
--                       has been seen. Test targets: each value whose key appeared before
--                       (multi-query) or the probe's value; training targets: the next token.
--   noisy-in-context-recall  the same with noise_vocab_size noise tokens taken from the top
--                       of the vocabulary: each pair slot is 2 noise tokens with
--                       probability frac_noise (never ignored ... never scored).
--   fuzzy-in-context-recall  keys and values are motifs of 1..k_motif_size (1..v_motif_size)
--                       distinct tokens (at test time keys have exactly k_motif_size);
--                       pad token V-2 (multi-query: V-1) fills the left; the probe pair is
--                       inserted at a random place and repeated at the end.
--   selective-copying   num_tokens_to_copy tokens from 0..V-3 with L - 2n - 1 blanks (V-2)
--                       scattered before them, a copy token (V-1), then n blanks during
--                       which the n tokens must be reproduced in order.
--   compression         L-1 tokens from 0..V-2 and a compression token V-1; the model
--                       encodes the sequence into its last position and decodes all L.
--   memorization        a fixed key->value map (keys 0..(V-1)/2-1, values above, drawn from
--                       kv_map_seed); L/2 pairs of (key, insert token V-1), the value is the
--                       target at the insert token; memorised across the training set.
local ffi = require 'ffi'
local efla = require 'efla'
local random = require 'efla.eval.random'

local mad = {}

mad.IGNORE = -100
mad.TASKS = { 'in-context-recall', 'noisy-in-context-recall', 'fuzzy-in-context-recall',
  'selective-copying', 'compression', 'memorization' }

--- The published baseline settings (mad-lab configs/tasks/*.yml; MADConfig defaults:
--- multi_query = true, 12,800 training and 1,280 test examples).
mad.BASELINES = {
  ['in-context-recall'] = { vocab_size = 16, seq_len = 128, multi_query = true, n_train = 12800, n_test = 1280 },
  ['noisy-in-context-recall'] = { vocab_size = 32, seq_len = 128, noise_vocab_size = 16, frac_noise = 0.2,
    multi_query = true, n_train = 12800, n_test = 1280 },
  ['fuzzy-in-context-recall'] = { vocab_size = 16, seq_len = 128, k_motif_size = 3, v_motif_size = 3,
    multi_query = true, n_train = 12800, n_test = 1280 },
  ['selective-copying'] = { vocab_size = 16, seq_len = 256, num_tokens_to_copy = 16, n_train = 12800, n_test = 1280 },
  ['compression'] = { vocab_size = 16, seq_len = 32, n_train = 12800, n_test = 1280 },
  ['memorization'] = { vocab_size = 256, seq_len = 32, n_train = 256, n_test = 1280 },
}

local function known(task)
  if not mad.BASELINES[task] then
    error(string.format("mad: unknown task '%s' (known: %s)", tostring(task), table.concat(mad.TASKS, ', ')), 3)
  end
end

--- mad.config(task [, overrides]) -> a copy of the task's published baseline with overrides.
function mad.config(task, overrides)
  known(task)
  local c = {}
  for k, v in pairs(mad.BASELINES[task]) do c[k] = v end
  for k, v in pairs(overrides or {}) do c[k] = v end
  c.noise_vocab_size, c.frac_noise = c.noise_vocab_size or 0, c.frac_noise or 0
  c.k_motif_size, c.v_motif_size = c.k_motif_size or 1, c.v_motif_size or 1
  if c.multi_query == nil then c.multi_query = true end
  return c
end

local function check(cond, task, msg, ...)
  if not cond then error('mad ' .. task .. ': ' .. string.format(msg, ...), 4) end
end

-- ---- recall ---------------------------------------------------------------------------------------

local function in_context_recall(c, rng, training, task)
  local V, L, mq = c.vocab_size, c.seq_len, c.multi_query
  check(L % 2 == 0 and L >= 4, task, 'seq_len must be even and >= 4, got %d', L)
  check(c.frac_noise >= 0 and c.frac_noise < 1, task, 'frac_noise must be in [0, 1), got %g', c.frac_noise)
  check(c.frac_noise == 0 or c.noise_vocab_size > 0, task, 'frac_noise > 0 needs noise_vocab_size > 0')
  local ns = (mq and V or V - 1) - c.noise_vocab_size
  check(ns >= 2, task, 'vocab_size %d leaves %d key/value tokens (need >= 2)', V, ns)
  local nk = math.floor(ns / 2)
  local copy_prefix = V - 1
  local inputs, targets = {}, {}
  local kv, seen, seen_list = {}, {}, {}
  local pairs_n = L / 2
  -- one slot is never noise, so that a key is always presented before the probe
  local not_noise = rng:int(pairs_n - 1)
  for i = 0, pairs_n - 2 do
    local noise = c.frac_noise > 0 and i ~= not_noise and rng:uniform() < c.frac_noise
    if noise then
      for _ = 1, 2 do
        inputs[#inputs + 1] = ns + rng:int(c.noise_vocab_size)
        targets[#targets + 1] = mad.IGNORE
      end
    else
      local k = rng:int(nk)
      local v = kv[k]
      if not v then v = nk + rng:int(ns - nk); kv[k] = v end
      inputs[#inputs + 1], inputs[#inputs + 2] = k, v
      targets[#targets + 1] = mad.IGNORE
      targets[#targets + 1] = (seen[k] and mq) and v or mad.IGNORE
      if not seen[k] then seen[k] = true; seen_list[#seen_list + 1] = k end
    end
  end
  local kp = rng:choice(seen_list)
  if not mq then inputs[#inputs + 1] = copy_prefix; targets[#targets + 1] = mad.IGNORE end
  inputs[#inputs + 1], inputs[#inputs + 2] = kp, kv[kp]
  targets[#targets + 1], targets[#targets + 2] = mad.IGNORE, kv[kp]
  return inputs, targets
end

-- a motif of `size` distinct tokens from first .. first + count - 1, uniformly
local function motif(rng, first, count, size)
  local m, used = {}, {}
  while #m < size do
    local t = first + rng:int(count)
    if not used[t] then used[t] = true; m[#m + 1] = t end
  end
  return m
end
local function key_of(m) return table.concat(m, ',') end

local function fuzzy_recall(c, rng, training, task)
  local V, L, mq, K, Vm = c.vocab_size, c.seq_len, c.multi_query, c.k_motif_size, c.v_motif_size
  local pad = mq and V - 1 or V - 2
  local ns = (mq and V - 1 or V - 2) - c.noise_vocab_size
  local nk = math.floor(ns / 2)
  check(nk >= K and ns - nk >= Vm, task, 'vocab_size %d is too small for key motifs of %d and value motifs of %d distinct tokens', V, K, Vm)
  check(L > 4 * (K + Vm), task, 'seq_len %d is too short for motifs of %d + %d tokens', L, K, Vm)
  local function ksize() return training and (1 + rng:int(K)) or K end
  local kps, vps = ksize(), 1 + rng:int(Vm)
  local kp, vp = motif(rng, 0, nk, kps), motif(rng, nk, ns - nk, vps)
  local kvp = kps + vps
  local probe_at = rng:int(L - 2 * kvp)
  local added = false
  local kv, seen = {}, {}
  local inputs, targets = {}, {}
  local function push(list, tgt)
    for _, t in ipairs(list) do inputs[#inputs + 1] = t; targets[#targets + 1] = tgt == true and t or mad.IGNORE end
  end
  while #inputs < L - kvp - (K + Vm) do
    local ks, vs = ksize(), 1 + rng:int(Vm)
    if #inputs >= probe_at and not added then
      push(kp, false); push(vp, false)
      kv[key_of(kp)] = vp; seen[key_of(kp)] = true
      added = true
    elseif c.frac_noise > 0 and rng:uniform() < c.frac_noise then
      local noise = {}
      for i = 1, ks + vs do noise[i] = ns + rng:int(c.noise_vocab_size) end
      push(noise, false)
    else
      local k = motif(rng, 0, nk, ks)
      local key = key_of(k)
      local v
      if key == key_of(kp) then v = vp; added = true
      else
        v = kv[key]
        if not v then v = motif(rng, nk, ns - nk, vs); kv[key] = v end
      end
      push(k, false)
      push(v, seen[key] and mq)
      seen[key] = true
    end
  end
  if not mq then push({ V - 1 }, false) end
  push(kp, false); push(vp, true)
  -- pad on the left to L + 1 tokens (one is dropped by the shift)
  local n_pad = L + 1 - #inputs
  local pi, pt = {}, {}
  for i = 1, n_pad do pi[i], pt[i] = pad, mad.IGNORE end
  for i = 1, #inputs do pi[n_pad + i], pt[n_pad + i] = inputs[i], targets[i] end
  return pi, pt
end

-- ---- copying, compression, memorisation ----------------------------------------------------------

local function selective_copying(c, rng, training, task)
  local V, L, n = c.vocab_size, c.seq_len, c.num_tokens_to_copy
  check(n and n >= 1, task, 'num_tokens_to_copy must be >= 1')
  check(L > 2 * n + 1, task, 'seq_len %d must exceed 2 * num_tokens_to_copy + 1 = %d', L, 2 * n + 1)
  check(V >= 3, task, 'vocab_size must be >= 3 (a blank and a copy token besides the data)')
  local copy_token, blank = V - 1, V - 2
  local to_copy, before = {}, {}
  for i = 1, n do to_copy[i] = rng:int(V - 2); before[i] = 0 end
  -- each blank lands before a uniformly drawn one of the tokens to copy
  for _ = 1, L - 2 * n - 1 do local j = rng:int(n) + 1; before[j] = before[j] + 1 end
  local inputs, targets = {}, {}
  for i = 1, n do
    for _ = 1, before[i] do inputs[#inputs + 1] = blank end
    inputs[#inputs + 1] = to_copy[i]
  end
  inputs[#inputs + 1] = copy_token
  for i = 1, #inputs do targets[i] = mad.IGNORE end
  for i = 1, n do inputs[#inputs + 1] = blank; targets[#targets + 1] = to_copy[i] end
  return inputs, targets
end

local function compression(c, rng, training, task)
  local V, L = c.vocab_size, c.seq_len
  local ns = V - 1 - c.noise_vocab_size
  check(ns >= 1 and L >= 2, task, 'vocab_size %d / seq_len %d too small', V, L)
  local inputs = {}
  for i = 1, L - 1 do inputs[i] = rng:int(ns) end
  inputs[L] = V - 1
  if c.frac_noise > 0 then
    for i = 1, L - 1 do
      if rng:uniform() < c.frac_noise then inputs[i] = ns + rng:int(c.noise_vocab_size) end
    end
  end
  local targets = {}
  for i = 1, L do targets[i] = inputs[i] end
  return inputs, targets
end

--- mad.kv_map(vocab_size, seed) -> {[key] = value}: memorisation's fixed map over the
--- non-special tokens 0..vocab_size-1 (keys the lower half, values the upper half,
--- both shuffled with the seed and paired in order).
function mad.kv_map(vocab_size, seed)
  local rng = random.Stream(seed)
  local nk = math.floor(vocab_size / 2)
  local keys, values = {}, {}
  for t = 0, nk - 1 do keys[#keys + 1] = t end
  for t = nk, vocab_size - 1 do values[#values + 1] = t end
  rng:shuffle(keys); rng:shuffle(values)
  local map = {}
  for i = 1, math.min(#keys, #values) do map[keys[i]] = values[i] end
  return map, keys
end

local function memorization(c, rng, training, task)
  local V, L = c.vocab_size, c.seq_len
  check(L % 2 == 0, task, 'seq_len must be even, got %d', L)
  local ns = V - 1 - c.noise_vocab_size
  c._kv = c._kv or { mad.kv_map(ns, c.kv_map_seed or 12345) }
  local map, keys = c._kv[1], c._kv[2]
  local inputs, targets = {}, {}
  local not_noise = rng:int(L / 2)
  for i = 0, L / 2 - 1 do
    if c.frac_noise > 0 and i ~= not_noise and rng:uniform() < c.frac_noise then
      for _ = 1, 2 do inputs[#inputs + 1] = ns + rng:int(c.noise_vocab_size); targets[#targets + 1] = mad.IGNORE end
    else
      local k = keys[rng:int(#keys) + 1]
      inputs[#inputs + 1], inputs[#inputs + 2] = k, V - 1
      targets[#targets + 1], targets[#targets + 2] = mad.IGNORE, map[k]
    end
  end
  return inputs, targets
end

-- Tasks whose training targets are the next input token (the recall tasks); the others
-- train on their own targets.
local GENERATORS = {
  ['in-context-recall'] = { fn = in_context_recall, shift = true },
  ['noisy-in-context-recall'] = { fn = in_context_recall, shift = true },
  ['fuzzy-in-context-recall'] = { fn = fuzzy_recall, shift = true },
  ['selective-copying'] = { fn = selective_copying },
  ['compression'] = { fn = compression },
  ['memorization'] = { fn = memorization },
}

--- mad.instance(task, cfg, rng, training) -> inputs, targets (Lua arrays of MAD tokens,
--- targets mad.IGNORE where not scored). The recall tasks are shifted as published: inputs
--- drop the last token, training targets are the next input token and test targets the
--- scored values.
function mad.instance(task, cfg, rng, training)
  known(task)
  local g = GENERATORS[task]
  local x, y = g.fn(cfg, rng, training, task)
  if not g.shift then return x, y end
  local xi, yi = {}, {}
  for i = 1, #x - 1 do
    xi[i] = x[i]
    yi[i] = training and x[i + 1] or y[i + 1]
  end
  return xi, yi
end

--- mad.dataset(task, cfg, {n, seed, training}) -> {inputs, targets: int64 [n, L], task,
--- config, n_scored (targets not ignored)}. Ids are tokens + 1; ignored targets are -100.
function mad.dataset(task, cfg, opts)
  known(task)
  opts = opts or {}
  local n = opts.n or (opts.training and cfg.n_train or cfg.n_test)
  if type(n) ~= 'number' or n < 1 then error('mad.dataset: n must be >= 1, got ' .. tostring(n), 2) end
  local rng = random.Stream(opts.seed or 0)
  local rows_x, rows_y = {}, {}
  for i = 1, n do rows_x[i], rows_y[i] = mad.instance(task, cfg, rng, opts.training) end
  local L = #rows_x[1]
  local x = efla.empty({ n, L }, { dtype = 'int64' })
  local y = efla.empty({ n, L }, { dtype = 'int64' })
  local xp, yp = x:data(), y:data()
  local scored = 0
  for i = 1, n do
    if #rows_x[i] ~= L then error(string.format('mad %s: instance %d has %d tokens, the first %d', task, i, #rows_x[i], L), 2) end
    for t = 1, L do
      xp[(i - 1) * L + t - 1] = rows_x[i][t] + 1
      local v = rows_y[i][t]
      if v == mad.IGNORE then yp[(i - 1) * L + t - 1] = mad.IGNORE
      else yp[(i - 1) * L + t - 1] = v + 1; scored = scored + 1 end
    end
  end
  return { inputs = x, targets = y, task = task, config = cfg, n = n, seq_len = L, n_scored = scored }
end

return mad
