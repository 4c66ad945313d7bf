/* fuzz/fuzz.h — shared by the libFuzzer targets: a Lua state per input whose allocator counts
 * every byte (so "allocates without bound" is a failure, not an OOM kill), and fuzz_fail(). */
#ifndef STRAND_FUZZ_H
#define STRAND_FUZZ_H

#include "strand.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((visibility("default"))) int luaopen_strand_core(lua_State *L);

/* {==== counting allocator */

typedef struct fuzz_mem {
  size_t used, peak, limit;   /* bytes live, most ever live, refusal threshold */
  int refused;                /* an allocation was refused (the state raised "not enough memory") */
} fuzz_mem;

static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  fuzz_mem *m = (fuzz_mem *)ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    m->used -= osize;
    free(ptr);
    return NULL;
  }
  if (nsize > osize && m->used + (nsize - osize) > m->limit) {
    m->refused = 1;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (p == NULL) return NULL;
  m->used = m->used - osize + nsize;
  if (m->used > m->peak) m->peak = m->used;
  return p;
}

/* }==== */

static void __attribute__((noreturn, format(printf, 1, 2))) fuzz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FUZZ FAILURE: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  fflush(stderr);
  abort();
}

/* A fresh state with the standard libraries and strand.core loaded (package.loaded), the
 * Lua layer of the tree on package.path. */
static lua_State *fuzz_state(fuzz_mem *m, size_t limit) {
  memset(m, 0, sizeof *m);
  m->limit = (size_t)-1;
  lua_State *L = lua_newstate(fuzz_alloc, m);
  if (L == NULL) fuzz_fail("cannot create a Lua state");
  luaL_openlibs(L);
#ifdef STRAND_ROOT
  lua_getglobal(L, "package");
  lua_pushstring(L, STRAND_ROOT "/lua/?.lua;" STRAND_ROOT "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
#endif
  luaL_requiref(L, "strand.core", luaopen_strand_core, 0);
  lua_pop(L, 1);
  m->limit = m->used + limit;   /* the budget counts from here */
  return L;
}

#endif
