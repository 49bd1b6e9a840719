# Empty custom commands generated dependencies file for efla_cdef.
# This may be replaced when dependencies are built.
