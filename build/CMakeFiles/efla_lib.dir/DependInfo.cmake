
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/core/autograd.c" "CMakeFiles/efla_lib.dir/core/autograd.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/autograd.c.o.d"
  "/work/main/core/backend.c" "CMakeFiles/efla_lib.dir/core/backend.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/backend.c.o.d"
  "/work/main/core/cpu/backend_cpu.c" "CMakeFiles/efla_lib.dir/core/cpu/backend_cpu.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/cpu/backend_cpu.c.o.d"
  "/work/main/core/cpu/memory.c" "CMakeFiles/efla_lib.dir/core/cpu/memory.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/cpu/memory.c.o.d"
  "/work/main/core/error.c" "CMakeFiles/efla_lib.dir/core/error.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/error.c.o.d"
  "/work/main/core/library.c" "CMakeFiles/efla_lib.dir/core/library.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/library.c.o.d"
  "/work/main/core/rng.c" "CMakeFiles/efla_lib.dir/core/rng.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/rng.c.o.d"
  "/work/main/core/shape.c" "CMakeFiles/efla_lib.dir/core/shape.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/shape.c.o.d"
  "/work/main/core/tensor.c" "CMakeFiles/efla_lib.dir/core/tensor.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/tensor.c.o.d"
  "/work/main/core/views.c" "CMakeFiles/efla_lib.dir/core/views.c.o" "gcc" "CMakeFiles/efla_lib.dir/core/views.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
