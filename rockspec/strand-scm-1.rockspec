rockspec_format = "3.0"
package = "strand"
version = "scm-1"
source = {
  url = "git+https://github.com/strand-lua/strand.git",
}
description = {
  summary = "Coroutine concurrency and networking for Lua 5.4: tasks, sockets, selectors, threads, queues, processes, SSH",
  detailed = [[
strand gives Lua what Python programmers get from socket, selectors, threading, queue,
multiprocessing, concurrent.futures, gevent and paramiko: every blocking call is a coroutine
yielding on I/O readiness inside a C event loop.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBSSH2 = { header = "libssh2.h", library = "ssh2" },
}
build = {
  type = "make",
  build_target = "all",
  install_target = "install",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA = "$(LUA)",
    SSH2_CFLAGS = "-I$(LIBSSH2_INCDIR)",
    SSH2_LIBS = "-L$(LIBSSH2_LIBDIR) -lssh2",
    BUILD = "build-rock",
  },
  install_variables = {
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    BUILD = "build-rock",
  },
}
