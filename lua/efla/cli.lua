return {main=function(a) print(require("efla.cdef")) return 0 end}
