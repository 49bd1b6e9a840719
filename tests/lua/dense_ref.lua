-- dense_ref.lua: plain dense-matrix arithmetic on Lua tables (rows of numbers) for the tests'
-- independent references: the ODE of a delta-rule step solved by a matrix exponential, with no
-- formula of the operators under test. Loaded with dofile beside testlib.lua.
local M = {}

--- matmul(A [n x m], B [m x p]) -> A B
function M.matmul(A, B)
  local n, m, p = #A, #B, #B[1]
  local C = {}
  for i = 1, n do
    C[i] = {}
    for j = 1, p do
      local s = 0
      for l = 1, m do s = s + A[i][l] * B[l][j] end
      C[i][j] = s
    end
  end
  return C
end

--- expm(Z, bound) -> e^Z by scaling and squaring: a 30-term Taylor series of Z / 2^s, s the
--- smallest with |Z / 2^s|_inf <= bound, then s squarings.
function M.expm(Z, bound)
  local n, norm = #Z, 0
  for i = 1, n do
    local row = 0
    for j = 1, n do row = row + math.abs(Z[i][j]) end
    norm = math.max(norm, row)
  end
  local s = 0
  while norm / 2 ^ s > bound do s = s + 1 end
  local A, E, term = {}, {}, {}
  for i = 1, n do
    A[i], E[i], term[i] = {}, {}, {}
    for j = 1, n do
      A[i][j] = Z[i][j] / 2 ^ s
      E[i][j] = i == j and 1 or 0
      term[i][j] = E[i][j]
    end
  end
  for k = 1, 30 do
    term = M.matmul(term, A)
    for i = 1, n do for j = 1, n do term[i][j] = term[i][j] / k; E[i][j] = E[i][j] + term[i][j] end end
  end
  for _ = 1, s do E = M.matmul(E, E) end
  return E
end

return M
