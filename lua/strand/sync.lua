-- strand.sync — see csrc/sync.c (the C core) and docs; this module returns it.
return require("strand.core").sync
