-- strand.shared — see csrc/shared.c (the C core) and docs; this module returns it.
return require("strand.core").shared
