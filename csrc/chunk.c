/* chunk.c — the Lua parts embedded in C, compiled once per process: the first state that loads
 * a chunk keeps its bytecode (lua_dump) and every later state, a thread's, loads that instead. */
#include "strand.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Process-wide and written once per chunk, then only read: what threads must share. */
typedef struct compiled { const char *src; char *code; size_t len; } compiled;
#define MAX_CHUNKS 16
static pthread_mutex_t chunks_lock = PTHREAD_MUTEX_INITIALIZER;
static compiled chunks[MAX_CHUNKS];
static int nchunks;

typedef struct dumpbuf { char *p; size_t n, cap; int failed; } dumpbuf;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  dumpbuf *b = (dumpbuf *)ud;
  if (b->failed) return 1;
  if (b->n + sz > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + sz) cap *= 2;
    char *q = (char *)realloc(b->p, cap);
    if (q == NULL) { b->failed = 1; return 1; }
    b->p = q; b->cap = cap;
  }
  memcpy(b->p + b->n, p, sz);
  b->n += sz;
  return 0;
}

static const compiled *find(const char *src) {
  const compiled *r = NULL;
  pthread_mutex_lock(&chunks_lock);
  for (int i = 0; i < nchunks; i++)
    if (chunks[i].src == src) { r = &chunks[i]; break; }
  pthread_mutex_unlock(&chunks_lock);
  return r;
}

/* Keeps the bytecode of the function on top (if there is room and nobody kept it first). */
static void keep(lua_State *L, const char *src) {
  dumpbuf b = { NULL, 0, 0, 0 };
  if (lua_dump(L, dump_writer, &b, 0) != 0 || b.failed) { free(b.p); return; }
  pthread_mutex_lock(&chunks_lock);
  int i;
  for (i = 0; i < nchunks; i++)
    if (chunks[i].src == src) break;
  if (i == nchunks && nchunks < MAX_CHUNKS) {
    chunks[nchunks].src = src; chunks[nchunks].code = b.p; chunks[nchunks].len = b.n;
    nchunks++;
    b.p = NULL;
  }
  pthread_mutex_unlock(&chunks_lock);
  free(b.p);
}

int strand_load_chunk(lua_State *L, const char *src, size_t len, const char *name) {
  const compiled *c = find(src);
  if (c != NULL) return luaL_loadbufferx(L, c->code, c->len, name, "b");
  int r = luaL_loadbufferx(L, src, len, name, "t");
  if (r == LUA_OK) keep(L, src);
  return r;
}
