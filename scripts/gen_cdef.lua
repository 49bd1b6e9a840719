-- gen_cdef.lua: extract the FFI declarations of libefla from core/efla.h.
-- usage: luajit scripts/gen_cdef.lua core/efla.h out/cdef.lua
-- Takes the text between the EFLA_CDEF_BEGIN and EFLA_CDEF_END markers, drops comments,
-- and writes a Lua module returning it, so that the binding never drifts from the header.
local header_path, out_path = arg[1], arg[2]
assert(header_path and out_path, "usage: gen_cdef.lua HEADER OUT")
local f = assert(io.open(header_path, "rb"))
local text = f:read("*a")
f:close()
local body = text:match("/%* EFLA_CDEF_BEGIN %*/(.-)/%* EFLA_CDEF_END %*/")
assert(body, header_path .. ": no EFLA_CDEF_BEGIN/EFLA_CDEF_END markers")
body = body:gsub("/%*.-%*/", ""):gsub("//[^\n]*", "")
assert(not body:find("\n%s*#"), "preprocessor lines are not allowed between the CDEF markers")
local lines = {}
for line in body:gmatch("[^\n]+") do
  if line:find("%S") then lines[#lines + 1] = (line:gsub("%s+$", "")) end
end
local tmp = out_path .. ".tmp"
local o = assert(io.open(tmp, "wb"))
o:write("-- Generated from core/efla.h by scripts/gen_cdef.lua. Do not edit.\nreturn [==[\n",
        table.concat(lines, "\n"), "\n]==]\n")
o:close()
assert(os.rename(tmp, out_path))
