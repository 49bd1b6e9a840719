# Empty compiler generated dependencies file for efla.
# This may be replaced when dependencies are built.
