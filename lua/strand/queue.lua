-- strand.queue — see csrc/queue.c (the C core) and docs; this module returns it.
return require("strand.core").queue
