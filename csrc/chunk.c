/* chunk.c — the Lua parts embedded in C, compiled once per process: the first state that loads
 * a chunk keeps its bytecode (lua_dump) and every later state, a thread's, loads that instead. */
#include "strand.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* {==== strand's own Lua modules in threads
 *
 * A thread's function that captures `strand` (or strand.x) makes the thread require it, and
 * compiling lua/strand/init.lua was most of such a start. strand_chunk_searcher replaces the
 * standard Lua searcher of a thread's state and does what it does (package.searchpath over
 * package.path, load the file, the same messages), except that the bytecode of "strand" and
 * "strand.*" files is kept per process and loaded again while the file is unchanged (same
 * device, inode, size and mtime). */

typedef struct modfile {
  char *path; dev_t dev; ino_t ino; off_t size; struct timespec mtime;
  char *code; size_t len;
} modfile;
#define MAX_MODFILES 32
static modfile modfiles[MAX_MODFILES];
static int nmodfiles;

static int same_file(const modfile *m, const char *path, const struct stat *st) {
  return strcmp(m->path, path) == 0 && m->dev == st->st_dev && m->ino == st->st_ino
         && m->size == st->st_size && m->mtime.tv_sec == st->st_mtim.tv_sec
         && m->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Loads the kept bytecode of path (pushes the function, returns 1), or returns 0. The load runs
 * under the lock (lua_load never raises: it returns its errors), so a newer version replacing
 * the bytecode cannot free it meanwhile. */
static int load_kept(lua_State *L, const char *path, const struct stat *st, const char *chunkname) {
  int r = -1;
  pthread_mutex_lock(&chunks_lock);
  for (int i = 0; i < nmodfiles; i++)
    if (same_file(&modfiles[i], path, st)) {
      r = luaL_loadbufferx(L, modfiles[i].code, modfiles[i].len, chunkname, "b");
      break;
    }
  pthread_mutex_unlock(&chunks_lock);
  if (r == -1) return 0;
  if (r != LUA_OK) { lua_pop(L, 1); return 0; }
  return 1;
}

/* Keeps the bytecode of the function on top for path (replacing an older version's). */
static void keep_file(lua_State *L, const char *path, const struct stat *st) {
  dumpbuf b = { NULL, 0, 0, 0 };
  char *p = strdup(path);
  if (p == NULL || lua_dump(L, dump_writer, &b, 0) != 0 || b.failed) { free(p); free(b.p); return; }
  pthread_mutex_lock(&chunks_lock);
  int i;
  for (i = 0; i < nmodfiles; i++)
    if (strcmp(modfiles[i].path, path) == 0) break;
  if (i < MAX_MODFILES) {
    modfile *m = &modfiles[i];
    char *oldp = i < nmodfiles ? m->path : NULL, *oldc = i < nmodfiles ? m->code : NULL;
    m->path = p; m->dev = st->st_dev; m->ino = st->st_ino; m->size = st->st_size;
    m->mtime = st->st_mtim; m->code = b.p; m->len = b.n;
    if (i == nmodfiles) nmodfiles++;
    p = oldp; b.p = oldc;
  }
  pthread_mutex_unlock(&chunks_lock);
  free(p);
  free(b.p);
}

static int is_strand_module(const char *name) {
  return strncmp(name, "strand", 6) == 0 && (name[6] == '\0' || name[6] == '.');
}

int strand_chunk_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, LUA_LOADLIBNAME);                 /* package */
  if (!lua_istable(L, -1)) luaL_error(L, "'package' is not loaded");
  lua_getfield(L, -1, "path");
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "'package.path' must be a string");
  lua_getfield(L, -2, "searchpath");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -3);
  lua_call(L, 2, 2);                                    /* filename | nil, message */
  if (lua_isnil(L, -2)) return 1;                      /* not found: the message */
  lua_pop(L, 1);
  const char *filename = lua_tostring(L, -1);
  const char *chunkname = lua_pushfstring(L, "@%s", filename);
  struct stat st;
  int cacheable = is_strand_module(name) && stat(filename, &st) == 0;
  if (!(cacheable && load_kept(L, filename, &st, chunkname))) {
    if (luaL_loadfilex(L, filename, NULL) != LUA_OK)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, filename,
                        lua_tostring(L, -1));
    if (cacheable) keep_file(L, filename, &st);
  }
  lua_pushstring(L, filename);                          /* 2nd argument to the loader */
  return 2;
}

/* }==== */

/* The kept bytecode goes with the library: when the last state that loaded strand closes (Lua
 * unloads the module), nothing can load it any more, and memcheck would call it lost. */
__attribute__((destructor)) static void chunks_free(void) {
  pthread_mutex_lock(&chunks_lock);
  for (int i = 0; i < nchunks; i++) free(chunks[i].code);
  nchunks = 0;
  for (int i = 0; i < nmodfiles; i++) { free(modfiles[i].path); free(modfiles[i].code); }
  nmodfiles = 0;
  pthread_mutex_unlock(&chunks_lock);
}
