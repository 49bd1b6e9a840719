file(REMOVE_RECURSE
  "CMakeFiles/efla_cdef"
  "lua/efla/cdef.lua"
)

# Per-language clean rules from dependency scanning.
foreach(lang )
  include(CMakeFiles/efla_cdef.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
