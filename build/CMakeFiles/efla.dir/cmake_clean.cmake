file(REMOVE_RECURSE
  "CMakeFiles/efla.dir/lua/launcher/efla_main.c.o"
  "CMakeFiles/efla.dir/lua/launcher/efla_main.c.o.d"
  "efla"
  "efla.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/efla.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
