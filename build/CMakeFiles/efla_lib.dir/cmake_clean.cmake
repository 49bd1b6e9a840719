file(REMOVE_RECURSE
  "CMakeFiles/efla_lib.dir/core/autograd.c.o"
  "CMakeFiles/efla_lib.dir/core/autograd.c.o.d"
  "CMakeFiles/efla_lib.dir/core/backend.c.o"
  "CMakeFiles/efla_lib.dir/core/backend.c.o.d"
  "CMakeFiles/efla_lib.dir/core/cpu/backend_cpu.c.o"
  "CMakeFiles/efla_lib.dir/core/cpu/backend_cpu.c.o.d"
  "CMakeFiles/efla_lib.dir/core/cpu/memory.c.o"
  "CMakeFiles/efla_lib.dir/core/cpu/memory.c.o.d"
  "CMakeFiles/efla_lib.dir/core/error.c.o"
  "CMakeFiles/efla_lib.dir/core/error.c.o.d"
  "CMakeFiles/efla_lib.dir/core/library.c.o"
  "CMakeFiles/efla_lib.dir/core/library.c.o.d"
  "CMakeFiles/efla_lib.dir/core/rng.c.o"
  "CMakeFiles/efla_lib.dir/core/rng.c.o.d"
  "CMakeFiles/efla_lib.dir/core/shape.c.o"
  "CMakeFiles/efla_lib.dir/core/shape.c.o.d"
  "CMakeFiles/efla_lib.dir/core/tensor.c.o"
  "CMakeFiles/efla_lib.dir/core/tensor.c.o.d"
  "CMakeFiles/efla_lib.dir/core/views.c.o"
  "CMakeFiles/efla_lib.dir/core/views.c.o.d"
  "libefla.pdb"
  "libefla.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/efla_lib.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
