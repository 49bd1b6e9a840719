# Empty dependencies file for efla_lib.
# This may be replaced when dependencies are built.
