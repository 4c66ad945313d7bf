/* serial.c — copying Lua values between states and processes: encode values into one flat
 * byte string (version byte + type tags), decode it in another state; strand.serial. */
#include "strand.h"
#include "serial_fast.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

/* {==== format
 *
 *   string  = VERSION hdrflags varint(count) value*count       (nothing may follow)
 *   value   = NIL | FALSE | TRUE | SMALLINT+v (v < 64) | INT zigzag-varint | FLOAT 8 bytes LE
 *           | SHORTSTR+len bytes (len < 64) | STR varint(len) bytes
 *           | TABLE u32(narr) u32(nrec) value*narr (key value)*nrec
 *           | TABLEMT u32(narr) u32(nrec) value*narr (key value)*nrec value(metatable)
 *           | REF varint(i)                             (i-th table/function/object met so far)
 *           | FUNC u32(len) bytecode byte(nups) upvalue*nups
 *           | GLOBALS | MODULE str(name) | MODFIELD str(name "\0" key)
 *           | OBJECT str(typename) u64(pointer | 2^63 + arena offset) u64(mac)
 *   upvalue = value | UPJOIN varint(i) byte(n)         (shares upvalue n of function REF i)
 *   str     = varint(len) bytes      (integers little-endian; u32/u64 fixed width)
 * Tables, functions and objects are numbered in the order they start (preorder), so a value
 * can refer back to any container that encloses it (cycles) or came before it (sharing).
 * OBJECT carries a keyed hash of pointer and type, so bytes that this process (or a fork of
 * it) did not produce are never taken for an object. */

#define SER_VERSION   0x01
#define HDR_OBJECTS   0x01   /* holds OBJECT: references to retain/release */
#define HDR_REFS      0x02   /* holds REF/UPJOIN: the decoder keeps a table of containers */

enum { T_NIL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE, T_REF, T_FUNC, T_GLOBALS,
       T_MODULE, T_MODFIELD, T_OBJECT, T_UPJOIN, T_TABLEMT };
#define T_SHORTSTR 0x80      /* 0x80..0xbf: string of length tag-0x80 */
#define T_SMALLINT 0xc0      /* 0xc0..0xff: integer tag-0xc0 */

#define MAXDEPTH   200       /* nested tables/functions */
#define MAXNAME    255       /* type names in OBJECT */
#define SERIAL_NOADOPT 0x100 /* private: decode retains objects instead of adopting the refs */

_Static_assert(sizeof(lua_Number) == 8, "strand.serial expects a double lua_Number");
_Static_assert(SERF_INT == T_INT && SERF_SMALLINT == T_SMALLINT, "serial_fast.h's tags");

/* }==== */

/* {==== object reference authentication: SipHash-2-4 with a per-process random key.
 * The key is written once (pthread_once) and inherited by forked children. */

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static uint64_t mac_key[2];

static void mac_init(void) {
  unsigned char k[16];
  ssize_t got = getrandom(k, sizeof k, 0);
  if (got != (ssize_t)sizeof k) {            /* no getrandom: weaker, but still unguessable
                                                by a peer that cannot see this process */
    uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&got;
    for (int i = 0; i < 16; i++) { t = t * 6364136223846793005ULL + 1442695040888963407ULL;
                                    k[i] = (unsigned char)(t >> 56); }
  }
  memcpy(mac_key, k, sizeof k);
}

void strand_serial_key(void) { pthread_once(&mac_once, mac_init); }

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2; \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0; \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); } while (0)

static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) { p[i] = (unsigned char)v; v >>= 8; }
}

static uint64_t siphash(const unsigned char *m, size_t len) {
  pthread_once(&mac_once, mac_init);
  uint64_t v0 = mac_key[0] ^ 0x736f6d6570736575ULL, v1 = mac_key[1] ^ 0x646f72616e646f6dULL;
  uint64_t v2 = mac_key[0] ^ 0x6c7967656e657261ULL, v3 = mac_key[1] ^ 0x7465646279746573ULL;
  size_t i;
  for (i = 0; i + 8 <= len; i += 8) {
    uint64_t w = get64(m + i);
    v3 ^= w; SIPROUND; SIPROUND; v0 ^= w;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t j = 0; i + j < len; j++) b |= (uint64_t)m[i + j] << (8 * j);
  v3 ^= b; SIPROUND; SIPROUND; v0 ^= b;
  v2 ^= 0xff; SIPROUND; SIPROUND; SIPROUND; SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* mac of (pointer, type name): name has namelen <= MAXNAME bytes */
static uint64_t object_mac(uint64_t ptr, const char *name, size_t namelen) {
  unsigned char m[8 + MAXNAME];
  put64(m, ptr);
  memcpy(m + 8, name, namelen);
  return siphash(m, 8 + namelen);
}

/* }==== */

/* {==== walking an encoding without Lua: object references (retain/release/validate) */

typedef struct cursor { const unsigned char *p, *end; } cursor;

static inline __attribute__((always_inline)) int rd_varint(cursor *c, uint64_t *v) {
  const unsigned char *p = c->p;
  if (c->end - p >= 3) {                       /* up to 3 bytes (21 bits) without a loop */
    uint64_t b0 = p[0], b1 = p[1], b2 = p[2];
    if (b0 < 0x80) { *v = b0; c->p = p + 1; return 1; }
    if (b1 < 0x80) { *v = (b0 & 0x7f) | b1 << 7; c->p = p + 2; return 1; }
    if (b2 < 0x80) { *v = (b0 & 0x7f) | (b1 & 0x7f) << 7 | b2 << 14; c->p = p + 3; return 1; }
  }
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (c->p >= c->end) return 0;
    unsigned b = *c->p++;
    if (shift == 63 && b > 1) return 0;        /* more than 64 bits */
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) { *v = r; return 1; }
  }
  return 0;
}

static int rd_u32(cursor *c, uint32_t *v) {
  if (c->end - c->p < 4) return 0;
  *v = (uint32_t)c->p[0] | (uint32_t)c->p[1] << 8 | (uint32_t)c->p[2] << 16
     | (uint32_t)c->p[3] << 24;
  c->p += 4;
  return 1;
}

static int skip(cursor *c, uint64_t n) {
  if ((uint64_t)(c->end - c->p) < n) return 0;
  c->p += n;
  return 1;
}

/* str = varint(len) bytes: sets *s and *len without copying */
static int rd_str(cursor *c, const char **s, size_t *len) {
  uint64_t n;
  if (!rd_varint(c, &n) || (uint64_t)(c->end - c->p) < n) return 0;
  *s = (const char *)c->p; *len = (size_t)n;
  c->p += n;
  return 1;
}

/* OBJECT body after the tag: checks the mac; *o is the object (only then valid to use) */
static int rd_object(cursor *c, uint64_t *ref, const char **name, size_t *namelen) {
  if (!rd_str(c, name, namelen) || *namelen > MAXNAME || c->end - c->p < 16) return 0;
  uint64_t ptr = get64(c->p), mac = get64(c->p + 8);
  c->p += 16;
  if (object_mac(ptr, *name, *namelen) != mac) return 0;
  *ref = ptr;
  return 1;
}

/* Walk a whole encoding iteratively (no recursion, so garbage cannot overflow the C stack);
 * calls act on each object when act != NULL. Returns 1 when the structure is well formed. */
/* An OBJECT's u64: a process-local pointer, or (bit 63) the arena offset of a shared object's
 * head, valid in the whole family: the string then holds a family reference (aref). */
#define REF_SHARED ((uint64_t)1 << 63)

static void ref_release(uint64_t ref) {
  if (ref & REF_SHARED) strand_shm_aref(ref & ~REF_SHARED, -1);
  else strand_object_release((strand_object *)(uintptr_t)ref);
}
static void ref_release_shared(uint64_t ref) {
  if (ref & REF_SHARED) strand_shm_aref(ref & ~REF_SHARED, -1);
}
static void ref_retain(uint64_t ref) {
  if (ref & REF_SHARED) strand_shm_aref(ref & ~REF_SHARED, 1);
  else strand_object_retain((strand_object *)(uintptr_t)ref);
}

static int walk(const char *s, size_t len, void (*act)(uint64_t ref)) {
  cursor c = { (const unsigned char *)s, (const unsigned char *)s + len };
  uint64_t pending;
  if (len < 2 || c.p[0] != SER_VERSION) return 0;
  c.p += 2;
  if (!rd_varint(&c, &pending)) return 0;
  while (pending > 0) {
    if (c.p >= c.end || pending > (uint64_t)(c.end - c.p)) return 0;  /* >= 1 byte per value */
    pending--;
    unsigned tag = *c.p++;
    uint64_t n; uint32_t n32; const char *name; size_t nl; uint64_t o;
    if (tag >= T_SMALLINT) continue;
    if (tag >= T_SHORTSTR) { if (!skip(&c, tag - T_SHORTSTR)) return 0; continue; }
    switch (tag) {
      case T_NIL: case T_FALSE: case T_TRUE: case T_GLOBALS: break;
      case T_INT: case T_REF: if (!rd_varint(&c, &n)) return 0; break;
      case T_FLOAT: if (!skip(&c, 8)) return 0; break;
      case T_STR: case T_MODULE: case T_MODFIELD: if (!rd_str(&c, &name, &nl)) return 0; break;
      case T_TABLE: case T_TABLEMT:
        if (tag == T_TABLEMT) pending++;
        if (!rd_u32(&c, &n32)) return 0;
        pending += n32;
        if (!rd_u32(&c, &n32)) return 0;
        pending += 2 * (uint64_t)n32;
        break;
      case T_FUNC:
        if (!rd_u32(&c, &n32) || !skip(&c, n32) || !skip(&c, 1)) return 0;
        pending += c.p[-1];
        break;
      case T_UPJOIN: if (!rd_varint(&c, &n) || !skip(&c, 1)) return 0; break;
      case T_OBJECT:
        if (!rd_object(&c, &o, &name, &nl)) return 0;
        if (act) act(o);
        break;
      default: return 0;
    }
  }
  return c.p == c.end;
}

void strand_serial_release(const char *p, size_t len) {
  if (len >= 2 && (p[1] & HDR_OBJECTS) && walk(p, len, NULL))
    walk(p, len, ref_release);
}

void strand_serial_release_shared(const char *p, size_t len) {
  if (len >= 2 && (p[1] & HDR_OBJECTS) && walk(p, len, NULL))
    walk(p, len, ref_release_shared);
}

static __thread int local_refs __attribute__((tls_model("initial-exec")));   /* family_only's count */
static void count_local(uint64_t ref) { if (!(ref & REF_SHARED)) local_refs++; }

int strand_serial_family_only(const char *p, size_t len) {
  if (len < 2 || !(p[1] & HDR_OBJECTS)) return 1;
  local_refs = 0;
  if (!walk(p, len, count_local)) return 0;
  return local_refs == 0;
}

/* The encoding on the stack's top stays if it is family-only, else its references are dropped
 * and it becomes nil (the encoders for another process of the family). Returns 1. */
int strand_serial_family_or_nil(lua_State *L) {
  size_t len;
  const char *p = lua_tolstring(L, -1, &len);
  if (!strand_serial_family_only(p, len)) {
    strand_serial_release(p, len);
    lua_pushnil(L);
  }
  return 1;
}

/* }==== */

/* {==== encoding */

enum { P_TOP, P_INDEX, P_KEY, P_KEYOF, P_UPVAL, P_META };
typedef struct pathel {
  int kind;
  int idx;                  /* P_KEY/P_KEYOF: stack index of the key */
  lua_Integer i;            /* P_TOP: argument number (0: "value"); P_INDEX: array index */
  const char *name;         /* P_UPVAL */
} pathel;

typedef struct encoder {
  lua_State *L;
  unsigned char *b;         /* output: init, then the userdata at slot buf */
  size_t n, cap;
  int flags;
  /* stack slots: the buffer userdata; the first container; the identity cache; module table
   * -> name; function -> "module\0key" (all but the first lazy, nil until needed) */
  int buf, first, cache, mods, funcs;
  lua_Integer nrefs;        /* tables/functions/objects numbered so far */
  int scans;                /* tables checked against package.loaded by a plain scan */
  unsigned char hdr;
  int plen;
  const char *fname;        /* a refusal names argument argno (+ the value's place) of fname */
  int argno;
  pathel path[MAXDEPTH + 2];
  unsigned char init[512];
} encoder;

static void enc_value(encoder *e, int idx);

/* Render the path of the value being encoded (at most ~12 elements) and raise with msg. */
static void enc_error(encoder *e, const char *msg) {
  lua_State *L = e->L;
  luaL_Buffer b;
  char tmp[64];
  luaL_buffinit(L, &b);
  if (e->fname != NULL) {         /* "bad argument #N to 'f' (value...: msg)": value N is args[i] */
    lua_Integer i = e->plen > 0 && e->path[0].i > 0 ? e->path[0].i - 1 : 0;
    snprintf(tmp, sizeof tmp, "bad argument #%lld to '", (long long)(e->argno + i));
    luaL_addstring(&b, tmp);
    luaL_addstring(&b, e->fname);
    luaL_addstring(&b, "' (");
  }
  for (int k = 0; k < e->plen; k++) {
    const pathel *pe = &e->path[k];
    if (e->plen > 12 && k == 6) { luaL_addstring(&b, "..."); k = e->plen - 6; continue; }
    if (pe->kind == P_TOP) {
      if (pe->i == 0 || e->fname != NULL) luaL_addstring(&b, "value");
      else { snprintf(tmp, sizeof tmp, "args[%lld]", (long long)pe->i); luaL_addstring(&b, tmp); }
    } else if (pe->kind == P_INDEX) {
      snprintf(tmp, sizeof tmp, "[%lld]", (long long)pe->i); luaL_addstring(&b, tmp);
    } else if (pe->kind == P_UPVAL) {
      luaL_addstring(&b, ".<upvalue "); luaL_addstring(&b, pe->name); luaL_addchar(&b, '>');
    } else if (pe->kind == P_KEYOF) {
      luaL_addstring(&b, "[<key>]");
    } else if (pe->kind == P_META) {
      luaL_addstring(&b, ".<metatable>");
    } else switch (lua_type(L, pe->idx)) {
      case LUA_TSTRING: {
        size_t l; const char *s = lua_tolstring(L, pe->idx, &l);
        int ident = l > 0 && l <= 40 && !(s[0] >= '0' && s[0] <= '9');
        for (size_t j = 0; ident && j < l; j++)
          ident = (s[j] == '_' || (s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')
                   || (s[j] >= '0' && s[j] <= '9'));
        if (ident) { luaL_addchar(&b, '.'); luaL_addlstring(&b, s, l); break; }
        luaL_addstring(&b, "[\"");
        for (size_t j = 0; j < l && j < 40; j++)
          luaL_addchar(&b, (s[j] >= 32 && s[j] < 127 && s[j] != '"') ? s[j] : '?');
        luaL_addstring(&b, l > 40 ? "...\"]" : "\"]");
        break;
      }
      case LUA_TNUMBER:
        if (lua_isinteger(L, pe->idx))
          snprintf(tmp, sizeof tmp, "[%lld]", (long long)lua_tointeger(L, pe->idx));
        else snprintf(tmp, sizeof tmp, "[%.14g]", (double)lua_tonumber(L, pe->idx));
        luaL_addstring(&b, tmp);
        break;
      case LUA_TBOOLEAN:
        luaL_addstring(&b, lua_toboolean(L, pe->idx) ? "[true]" : "[false]");
        break;
      default:
        snprintf(tmp, sizeof tmp, "[<%s>]", luaL_typename(L, pe->idx)); luaL_addstring(&b, tmp);
    }
  }
  luaL_addstring(&b, ": ");
  luaL_addstring(&b, msg);
  if (e->fname != NULL) luaL_addchar(&b, ')');
  luaL_pushresult(&b);
  lua_error(L);
}

static void grow(encoder *e, size_t need) {
  size_t cap = e->cap;
  while (cap - e->n < need) {
    if (cap > ((size_t)-1) / 2) luaL_error(e->L, "strand.serial: encoding too large");
    cap *= 2;
  }
  unsigned char *nb = (unsigned char *)lua_newuserdatauv(e->L, cap, 0);
  memcpy(nb, e->b, e->n);
  lua_replace(e->L, e->buf);              /* the old userdata (if any) becomes garbage */
  e->b = nb; e->cap = cap;
}

#define ROOM(e, k) do { if ((e)->cap - (e)->n < (size_t)(k)) grow((e), (k)); } while (0)

static void put_byte(encoder *e, unsigned c) { ROOM(e, 1); e->b[e->n++] = (unsigned char)c; }

static void put_bytes(encoder *e, const void *s, size_t l) {
  ROOM(e, l); memcpy(e->b + e->n, s, l); e->n += l;
}

static void put_varint(encoder *e, uint64_t v) {
  ROOM(e, 10);
  while (v >= 0x80) { e->b[e->n++] = (unsigned char)(v | 0x80); v >>= 7; }
  e->b[e->n++] = (unsigned char)v;
}

static size_t put_hole(encoder *e, size_t k) { ROOM(e, k); e->n += k; return e->n - k; }

static void patch_u32(encoder *e, size_t at, uint64_t v) {
  if (v > 0xffffffffu) luaL_error(e->L, "strand.serial: value too large to encode");
  for (int i = 0; i < 4; i++) e->b[at + i] = (unsigned char)(v >> (8 * i));
}

static void put_str(encoder *e, const char *s, size_t l) { put_varint(e, l); put_bytes(e, s, l); }

static int lazy_table(encoder *e, int slot) {
  if (lua_isnil(e->L, slot)) { lua_newtable(e->L); lua_replace(e->L, slot); }
  return slot;
}

/* Whether the module named name (at the top of package.loaded, a string) is made fresh in every
 * state by a C opener — the standard libraries and strand.core: a Lua function a program stores
 * in one of them is not there in the receiver, so it is copied like any Lua function rather
 * than named (and looking for Lua functions there is skipped: most of a thread start's scan). */
static int fresh_module(lua_State *L, int nameidx) {
#define FRESH(s) { s, sizeof s - 1 }
  static const struct { const char *s; size_t n; } fresh[] = {
    FRESH(LUA_GNAME), FRESH(LUA_LOADLIBNAME), FRESH(LUA_COLIBNAME), FRESH(LUA_TABLIBNAME),
    FRESH(LUA_IOLIBNAME), FRESH(LUA_OSLIBNAME), FRESH(LUA_STRLIBNAME), FRESH(LUA_MATHLIBNAME),
    FRESH(LUA_UTF8LIBNAME), FRESH(LUA_DBLIBNAME), FRESH("strand.core") };
#undef FRESH
  size_t n;
  const char *name = lua_tolstring(L, nameidx, &n);
  for (size_t i = 0; i < sizeof fresh / sizeof fresh[0]; i++)
    if (n == fresh[i].n && memcmp(name, fresh[i].s, n) == 0) return 1;
  return 0;
}

/* Better name for the same module or function: shorter, then smaller (deterministic). */
static int better(lua_State *L, int cand, int cur) {
  size_t lc, lu;
  const char *c = lua_tolstring(L, cand, &lc), *u = lua_tolstring(L, cur, &lu);
  return lc < lu || (lc == lu && memcmp(c, u, lc) < 0);
}

/* map[key at -2] = name at -1 unless map already has a better name; pops both */
static void map_offer(lua_State *L, int map) {
  lua_pushvalue(L, -2);
  if (lua_rawget(L, map) != LUA_TNIL && !better(L, -2, -1)) { lua_pop(L, 3); return; }
  lua_pop(L, 1);
  lua_rawset(L, map);
}

/* Reverse lookups of package.loaded, built once per encode on first need:
 * mods: module table -> name; funcs: function -> "name\0key" (module[key], one level deep;
 * Lua functions of _G and the other fresh modules are copied, not named). */
static void build_maps(encoder *e, int funcs) {
  lua_State *L = e->L;
  int map = lazy_table(e, funcs ? e->funcs : e->mods);
  luaL_checkstack(L, 8, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int globals = loaded + 1;
  if (lua_istable(L, loaded)) {
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
      size_t nl;
      if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1)
          || strlen(lua_tolstring(L, -2, &nl)) != nl) { lua_pop(L, 1); continue; }
      if (!funcs) { lua_pushvalue(L, -2); map_offer(L, map); continue; }
      int mod = lua_gettop(L);
      int fresh = lua_rawequal(L, mod, globals) || fresh_module(L, mod - 1);
      lua_pushnil(L);
      while (lua_next(L, mod)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_isfunction(L, -1)
            && !(fresh && !lua_iscfunction(L, -1))) {
          lua_pushvalue(L, mod - 1); lua_pushlstring(L, "", 1); lua_pushvalue(L, -4);
          lua_concat(L, 3);                      /* key value "name\0key" */
          map_offer(L, map);
        } else lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
}

/* Pushes the by-name entry for the value at idx (or nil); builds the map on first use. */
static int by_name(encoder *e, int idx, int funcs) {
  int *slot = funcs ? &e->funcs : &e->mods;
  if (lua_isnil(e->L, *slot)) build_maps(e, funcs);
  lua_pushvalue(e->L, idx);
  return lua_rawget(e->L, *slot) != LUA_TNIL;
}

/* Pushes the name of the loaded module that is the table at idx (or nil). The first tables
 * are looked up by scanning package.loaded: most values hold few tables, and building the
 * reverse map costs several scans. */
static int module_name(encoder *e, int idx) {
  lua_State *L = e->L;
  if (e->scans >= 4) return by_name(e, idx, 0);
  e->scans++;
  lua_pushnil(L);                                    /* best name so far */
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
    int best = lua_gettop(L) - 1;
    lua_pushnil(L);
    while (lua_next(L, best + 1)) {
      size_t nl;
      if (lua_rawequal(L, -1, idx) && lua_type(L, -2) == LUA_TSTRING
          && strlen(lua_tolstring(L, -2, &nl)) == nl && (lua_isnil(L, best) || better(L, -2, best))) {
        lua_pushvalue(L, -2);
        lua_replace(L, best);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return !lua_isnil(L, -1);
}

/* Pushes the best "name\0key" under which the value at idx (absolute) stands as a string-keyed
 * field of a loaded module, package.loaded[name][key], or nil; returns whether it found one.
 * skip_fresh leaves out _G and the other fresh modules (their Lua functions are copied). */
static int module_field(lua_State *L, int idx, int skip_fresh) {
  luaL_checkstack(L, 10, NULL);
  lua_pushnil(L);                                    /* best "name\0key" so far */
  int best = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
    int loaded = best + 2;
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
      size_t nl;
      if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)
          && strlen(lua_tolstring(L, -2, &nl)) == nl
          && !(skip_fresh && (lua_rawequal(L, -1, best + 1) || fresh_module(L, -2)))) {
        int mod = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, mod)) {
          if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
            lua_pushvalue(L, mod - 1); lua_pushlstring(L, "", 1); lua_pushvalue(L, -4);
            lua_concat(L, 3);
            if (lua_isnil(L, best) || better(L, -1, best)) lua_replace(L, best);
            else lua_pop(L, 1);
          }
          lua_pop(L, 1);
        }
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, best);
  return !lua_isnil(L, best);
}

/* Pushes the best "name\0key" of the function at idx among the fields of loaded modules (or
 * nil), the entry build_maps would make, by scanning: a value holds few functions (a thread's
 * function: one), and building the reverse map costs more than a scan per function. Lua
 * functions of _G and the other fresh modules are copied, so those are not scanned for them. */
static int func_name(encoder *e, int idx) {
  if (e->scans >= 4) return by_name(e, idx, 1);
  e->scans++;
  return module_field(e->L, idx, !lua_iscfunction(e->L, idx));
}

/* The identity cache: value -> number (and upvalue id -> link). Until a second container
 * comes, the first one waits in slot first and no table is made (most values have one). */
static int cache_table(encoder *e) {
  lua_State *L = e->L;
  if (lua_isnil(L, e->cache)) {
    lua_createtable(L, 0, 4);
    if (e->nrefs == 1) { lua_pushvalue(L, e->first); lua_pushinteger(L, 1); lua_rawset(L, -3); }
    lua_replace(L, e->cache);
  }
  return e->cache;
}

/* Emits a back-reference if the value at idx was numbered before; returns 1 if it did. */
static int enc_ref(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Integer i;
  if (e->nrefs == 0) return 0;
  if (lua_isnil(L, e->cache)) {
    if (!lua_rawequal(L, idx, e->first)) return 0;
    i = 1;
  } else {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->cache) != LUA_TNUMBER) { lua_pop(L, 1); return 0; }
    i = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  put_byte(e, T_REF); put_varint(e, (uint64_t)i);
  e->hdr |= HDR_REFS;
  return 1;
}

/* Numbers the table/function/object at idx (the decoder numbers it at the same point). */
static void enc_number(encoder *e, int idx) {
  lua_State *L = e->L;
  if (e->nrefs == 0) { e->nrefs = 1; lua_pushvalue(L, idx); lua_replace(L, e->first); return; }
  int cache = cache_table(e);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++e->nrefs);
  lua_rawset(L, cache);
}

static void enter(encoder *e) {
  if (e->plen > MAXDEPTH) {
    e->plen = 1;
    enc_error(e, "nesting deeper than 200 levels");
  }
  luaL_checkstack(e->L, 8, "strand.serial: nesting too deep");
}

/* the globals table, modules and functions need {functions=true} */
static void need_functions(encoder *e, const char *what) {
  if (!(e->flags & STRAND_SERIAL_FUNCTIONS))
    enc_error(e, lua_pushfstring(e->L, "cannot copy %s (only with {functions=true})", what));
}

static void enc_value(encoder *e, int idx);

/* A metatable: the module table itself or a table field of a loaded module (module[key], one
 * level deep) crosses by name, like module functions; any other is copied by the copy rule. */
static void enc_metatable(encoder *e, int idx) {
  lua_State *L = e->L;
  if (enc_ref(e, idx)) return;
  int ismod = module_name(e, idx);
  lua_pop(L, 1);
  if (ismod) { enc_value(e, idx); return; }          /* the module itself: by name */
  if (!module_field(L, idx, 0)) {                    /* not a class of a module: a copy */
    lua_pop(L, 1);
    enc_value(e, idx);
    return;
  }
  size_t l; const char *s = lua_tolstring(L, -1, &l);
  if (!(e->flags & STRAND_SERIAL_FUNCTIONS))
    enc_error(e, lua_pushfstring(L, "cannot copy class '%s.%s' (only with {functions=true})",
                                 s, s + strlen(s) + 1));
  put_byte(e, T_MODFIELD); put_str(e, s, l);
  lua_pop(L, 1);
}

static void enc_table(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int isglobals = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  if (isglobals) { need_functions(e, "the globals table"); put_byte(e, T_GLOBALS); return; }
  if (enc_ref(e, idx)) return;
  if (module_name(e, idx)) {                       /* a loaded module: by name */
    size_t l; const char *s = lua_tolstring(L, -1, &l);
    if (!(e->flags & STRAND_SERIAL_FUNCTIONS))
      enc_error(e, lua_pushfstring(L, "cannot copy module '%s' (only with {functions=true})", s));
    put_byte(e, T_MODULE); put_str(e, s, l);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  int mt = lua_getmetatable(L, idx) ? lua_gettop(L) : 0;
  enc_number(e, idx);
  enter(e);
  put_byte(e, mt ? T_TABLEMT : T_TABLE);
  size_t hole = put_hole(e, 8);      /* narr, nrec: known once the table is walked */
  pathel *pe = &e->path[e->plen++];
  uint64_t narr = 0, nrec = 0;
  int inarray = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {         /* one pass: 1, 2, ... first (array values), then pairs */
    int k = lua_gettop(L) - 1;
    if (inarray && lua_isinteger(L, k) && (uint64_t)lua_tointeger(L, k) == narr + 1) {
      pe->kind = P_INDEX; pe->i = (lua_Integer)++narr;
      enc_value(e, k + 1);
    } else {
      inarray = 0;
      pe->kind = P_KEYOF; pe->idx = k;
      enc_value(e, k);
      pe->kind = P_KEY;
      enc_value(e, k + 1);
      nrec++;
    }
    lua_pop(L, 1);
  }
  patch_u32(e, hole, narr);
  patch_u32(e, hole + 4, nrec);
  if (mt) {                          /* a class of a loaded module: by name; else a copy */
    pe->kind = P_META;
    enc_metatable(e, mt);
    lua_remove(L, mt);
  }
  e->plen--;
}

/* lua_dump writer: append to the output */
static int enc_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  put_bytes((encoder *)ud, p, sz);
  return 0;
}

static void enc_function(encoder *e, int idx) {
  lua_State *L = e->L;
  need_functions(e, "a function");
  if (enc_ref(e, idx)) return;
  if (func_name(e, idx)) {
    size_t l; const char *s = lua_tolstring(L, -1, &l);
    put_byte(e, T_MODFIELD); put_str(e, s, l);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  if (lua_iscfunction(L, idx)) enc_error(e, "cannot copy a C function");
  enc_number(e, idx);
  lua_Integer self = e->nrefs;       /* numbered before its upvalues: recursion, cycles */
  enter(e);
  put_byte(e, T_FUNC);
  size_t hole = put_hole(e, 4), start = e->n;
  lua_pushvalue(L, idx);
  lua_dump(L, enc_writer, e, 0);
  lua_pop(L, 1);
  patch_u32(e, hole, e->n - start);
  size_t nupsat = e->n;
  put_byte(e, 0);
  pathel *pe = &e->path[e->plen++];
  pe->kind = P_UPVAL;
  int i;
  for (i = 1; (pe->name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    /* an environment that is a table with a metatable (busted's sandbox, a strict-mode
     * _ENV...) cannot be copied: the function gets the receiver's globals instead. A plain
     * table environment is copied like any value; the globals table is sent as GLOBALS. */
    if (strcmp(pe->name, "_ENV") == 0 && lua_type(L, -1) == LUA_TTABLE &&
        lua_getmetatable(L, -1)) {
      lua_pop(L, 1);
      put_byte(e, T_GLOBALS);
      lua_pop(L, 1);
      continue;
    }
    /* an upvalue shared with a function met before is joined, not copied */
    int cache = cache_table(e);                    /* (made on the first upvalue: none, none) */
    lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
    if (lua_rawget(L, cache) == LUA_TNUMBER) {
      lua_Integer link = lua_tointeger(L, -1);
      put_byte(e, T_UPJOIN); put_varint(e, (uint64_t)(link >> 8)); put_byte(e, link & 0xff);
      e->hdr |= HDR_REFS;
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
    lua_pushinteger(L, self << 8 | i);
    lua_rawset(L, cache);
    enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  e->b[nupsat] = (unsigned char)(i - 1);
  e->plen--;
}

static void enc_userdata(encoder *e, int idx) {
  lua_State *L = e->L;
  strand_object *o = strand_object_test(L, idx);
  if (o != NULL) {
    if (enc_ref(e, idx)) return;
    const char *why = strand_object_crossing(o);
    if (why) enc_error(e, why);
    enc_number(e, idx);
    const char *name = o->type->name;
    size_t nl = strlen(name);
    if (nl > MAXNAME) enc_error(e, "strand object type name too long");
    uint64_t off = strand_shm_offset(o);
    uint64_t ptr = off ? (off | REF_SHARED) : (uint64_t)(uintptr_t)o;
    unsigned char tail[16];
    put64(tail, ptr); put64(tail + 8, object_mac(ptr, name, nl));
    put_byte(e, T_OBJECT); put_str(e, name, nl); put_bytes(e, tail, 16);
    e->hdr |= HDR_OBJECTS;
    return;
  }
  const char *tname = NULL;
  if (lua_getmetatable(L, idx)) {
    if (lua_getfield(L, -1, "__strand_object") == LUA_TBOOLEAN)
      enc_error(e, "cannot copy a closed strand object");
    if (lua_getfield(L, -2, "__name") == LUA_TSTRING) tname = lua_tostring(L, -1);
  }
  if (tname == NULL) enc_error(e, "cannot copy a userdata");
  enc_error(e, lua_pushfstring(L, "cannot copy a userdata (%s)", tname));
}

static void enc_value(encoder *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put_byte(e, T_NIL); break;
    case LUA_TBOOLEAN: put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        if (v >= 0 && v < 64) put_byte(e, T_SMALLINT + (unsigned)v);
        else {
          uint64_t u = (uint64_t)v;
          put_byte(e, T_INT); put_varint(e, (u << 1) ^ (0 - (u >> 63)));
        }
      } else {
        lua_Number d = lua_tonumber(L, idx);
        uint64_t bits; unsigned char b8[8];
        memcpy(&bits, &d, 8); put64(b8, bits);
        put_byte(e, T_FLOAT); put_bytes(e, b8, 8);
      }
      break;
    case LUA_TSTRING: {
      size_t l; const char *s = lua_tolstring(L, idx, &l);
      if (l < 64) { put_byte(e, T_SHORTSTR + (unsigned)l); put_bytes(e, s, l); }
      else { put_byte(e, T_STR); put_str(e, s, l); }
      break;
    }
    case LUA_TTABLE: enc_table(e, idx); break;
    case LUA_TFUNCTION: enc_function(e, idx); break;
    case LUA_TUSERDATA: enc_userdata(e, idx); break;
    case LUA_TLIGHTUSERDATA: enc_error(e, "cannot copy a light userdata"); break;
    case LUA_TTHREAD: enc_error(e, "cannot copy a coroutine"); break;
    default: enc_error(e, "cannot copy this value"); break;
  }
}

static void retain_one(uint64_t ref) { ref_retain(ref); }

/* The encoder's slots pushed (base + 1..5) and its header written for n values. */
static void enc_begin(encoder *e, lua_State *L, int n, int flags) {
  luaL_checkstack(L, 16, NULL);
  int base = lua_gettop(L);
  for (int k = 0; k < 5; k++) lua_pushnil(L);
  e->L = L; e->b = e->init; e->n = 0; e->cap = sizeof e->init; e->flags = flags;
  e->buf = base + 1; e->first = base + 2; e->cache = base + 3; e->mods = base + 4;
  e->funcs = base + 5;
  e->nrefs = 0; e->scans = 0; e->hdr = 0; e->plen = 0;
  e->fname = NULL; e->argno = 0;
  put_byte(e, SER_VERSION); put_byte(e, 0); put_varint(e, (uint64_t)(n > 0 ? n : 0));
}

/* The string pushed in place of the encoder's slots. */
static void enc_end(encoder *e) {
  lua_State *L = e->L;
  e->b[1] = e->hdr;
  lua_pushlstring(L, (const char *)e->b, e->n);
  lua_replace(L, e->buf);
  lua_settop(L, e->buf);
  if (e->hdr & HDR_OBJECTS) {          /* the string owns one reference per OBJECT */
    size_t len; const char *s = lua_tolstring(L, -1, &len);
    walk(s, len, retain_one);
  }
}

static void encode_values(lua_State *L, int first, int n, int flags, const char *fname, int argno) {
  encoder e;
  first = lua_absindex(L, first);
  enc_begin(&e, L, n, flags);
  e.fname = fname; e.argno = argno;
  for (int i = 0; i < n; i++) {
    e.path[0].kind = P_TOP; e.path[0].i = n == 1 ? 0 : i + 1;
    e.plen = 1;
    enc_value(&e, first + i);
  }
  enc_end(&e);
}

void strand_serial_encode(lua_State *L, int first, int n, int flags) {
  encode_values(L, first, n, flags, NULL, 0);
}

void strand_serial_encode_arg(lua_State *L, int first, int n, int flags, const char *fname,
                              int argno) {
  encode_values(L, first, n, flags, fname, argno);
}

/* The list {t[i], ..., t[j], n = j - i + 1} encoded as one value (after a leading true when
 * lead), as strand_serial_encode would encode that table, without making it: t[k] read once
 * each (lua_geti), no walk with lua_next. A map chunk and its results cross this way. */
static void encode_list(lua_State *L, int t, lua_Integer i, lua_Integer j, int lead, int flags,
                        const char *fname, int argno) {
  encoder e;
  t = lua_absindex(L, t);
  lua_Integer count = j >= i ? j - i + 1 : 0;
  if (count > (lua_Integer)UINT32_MAX) luaL_error(L, "strand.serial: list too long");
  enc_begin(&e, L, lead ? 2 : 1, flags);
  e.fname = fname; e.argno = argno;
  if (lead) put_byte(&e, T_TRUE);
  lua_newtable(L);                   /* stands for the list, numbered 1 as the decoder does */
  lua_replace(L, e.first);
  e.nrefs = 1;
  put_byte(&e, T_TABLE);
  size_t hole = put_hole(&e, 8);
  patch_u32(&e, hole, (uint64_t)count);
  patch_u32(&e, hole + 4, 1);
  e.path[0].kind = P_TOP; e.path[0].i = 0;
  pathel *pe = &e.path[1];
  pe->kind = P_INDEX;
  e.plen = 2;
  /* t[k] as lua_geti reads it: raw when t has no metatable (no __index to call) */
  int raw = !lua_getmetatable(L, t);
  if (!raw) lua_pop(L, 1);
  if (count > 0 && (uint64_t)count < ((size_t)-1) / 8) ROOM(&e, (size_t)count * 4 + 32);
  int top = lua_gettop(L) + 1;
  luaL_checkstack(L, 40, "strand.serial: list");
  for (lua_Integer k0 = 0; k0 < count; k0 += 32) {         /* 32 items read, then encoded */
    int nb = count - k0 < 32 ? (int)(count - k0) : 32;
    unsigned char tts[32];
    if (raw) for (int b = 0; b < nb; b++) tts[b] = (unsigned char)lua_rawgeti(L, t, i + k0 + b);
    else for (int b = 0; b < nb; b++) tts[b] = (unsigned char)lua_geti(L, t, i + k0 + b);
    ROOM(&e, 11 * 32);               /* room for 32 integers: written through locals */
    for (int b = 0; b < nb; b++) {
      int at = top + b, tt = tts[b];
      if (tt == LUA_TNUMBER && lua_isinteger(L, at)) {       /* plain values inline */
        e.n += serf_put_int(e.b + e.n, lua_tointeger(L, at));
        continue;
      } else if (tt == LUA_TSTRING) {
        size_t l; const char *str = lua_tolstring(L, at, &l);
        if (l < 64) { ROOM(&e, 1 + l); e.b[e.n++] = (unsigned char)(T_SHORTSTR + l);
                      memcpy(e.b + e.n, str, l); e.n += l; }
        else { put_byte(&e, T_STR); put_str(&e, str, l); }
      } else {
        pe->i = i + k0 + b;            /* (its key in t: a message names t[k], not the k-th item) */
        enc_value(&e, at);
      }
      ROOM(&e, 11 * 32);             /* (the integers after this one still fit) */
    }
    lua_settop(L, top - 1);
  }
  put_byte(&e, T_SHORTSTR + 1); put_byte(&e, 'n');
  lua_pushinteger(L, count);
  enc_value(&e, top);
  lua_settop(L, top - 1);
  enc_end(&e);
}

void strand_serial_encode_list(lua_State *L, int t, lua_Integer i, lua_Integer j, int lead,
                               int flags) {
  encode_list(L, t, i, j, lead, flags, NULL, 0);
}

void strand_serial_encode_list_arg(lua_State *L, int t, lua_Integer i, lua_Integer j, int flags,
                                   const char *fname, int argno) {
  encode_list(L, t, i, j, 0, flags, fname, argno);
}

/* }==== */

/* {==== decoding: runs inside lua_pcall so that bad input becomes a message, never a raise */

typedef struct decoder {
  cursor c;
  int flags;
  int depth;
  int refs;                 /* stack slot of the table of numbered values (nil: HDR_REFS unset) */
  lua_Integer nrefs;
  size_t budget;            /* table slots decode may still make ahead (see dec_table) */
} decoder;

static void dec_value(lua_State *L, decoder *d);

static void __attribute__((noreturn)) dec_fail(lua_State *L, const char *why) {
  lua_pushfstring(L, "malformed serial data: %s", why);
  lua_error(L);
  __builtin_unreachable();
}

#define TRUSTED_ONLY " (decode with {functions=true} only from a trusted source)"

static void dec_trusted(lua_State *L, decoder *d, const char *what) {
  if (!(d->flags & STRAND_SERIAL_FUNCTIONS))
    luaL_error(L, "%s are not allowed" TRUSTED_ONLY, what);
}

static uint64_t dec_varint(lua_State *L, decoder *d) {
  uint64_t v;
  if (!rd_varint(&d->c, &v)) dec_fail(L, "truncated or bad varint");
  return v;
}

static size_t dec_count(lua_State *L, decoder *d, uint64_t n, uint64_t per) {
  if (n > (uint64_t)(d->c.end - d->c.p) / per || n > INT_MAX)
    dec_fail(L, "count larger than the data");
  return (size_t)n;
}

static void dec_number(lua_State *L, decoder *d) {    /* the value at the top */
  d->nrefs++;
  if (!lua_isnil(L, d->refs)) { lua_pushvalue(L, -1); lua_rawseti(L, d->refs, d->nrefs); }
}

static void dec_enter(lua_State *L, decoder *d) {
  if (++d->depth > MAXDEPTH) dec_fail(L, "nesting deeper than 200 levels");
  luaL_checkstack(L, 8, "strand.serial: nesting too deep");
}

static void dec_table(lua_State *L, decoder *d, int hasmt) {
  uint32_t narr, nrec;
  if (!rd_u32(&d->c, &narr) || !rd_u32(&d->c, &nrec)) dec_fail(L, "truncated");
  dec_count(L, d, narr, 1);
  dec_count(L, d, nrec, 2);
  dec_enter(L, d);
  /* the counts are only promises until the values arrive: the slots made ahead come out of a
   * budget of one per byte of input (every value takes a byte at least, so honest data never
   * runs out), so a hostile header claiming huge tables at every level cannot make decode
   * allocate more than the input's size over */
  size_t pa = narr < d->budget ? narr : d->budget;
  d->budget -= pa;
  size_t ph = nrec < d->budget ? nrec : d->budget;
  d->budget -= ph;
  lua_createtable(L, (int)pa, (int)ph);
  dec_number(L, d);
  int t = lua_gettop(L);
  for (uint32_t i = 1; i <= narr; i++) {
    dec_value(L, d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (uint32_t i = 0; i < nrec; i++) {
    dec_value(L, d);
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      dec_fail(L, "nil or NaN table key");
    dec_value(L, d);
    lua_rawset(L, t);
  }
  if (hasmt) {
    dec_value(L, d);
    if (!lua_istable(L, -1)) dec_fail(L, "metatable is not a table");
    lua_setmetatable(L, t);
  }
  d->depth--;
}

typedef struct chunk { const char *p; size_t n; } chunk;

static const char *dec_reader(lua_State *L, void *ud, size_t *size) {
  chunk *ck = (chunk *)ud;
  *size = ck->n;
  ck->n = 0;
  return *size ? ck->p : NULL;
}

/* the i-th numbered value, pushed */
static void dec_getref(lua_State *L, decoder *d, uint64_t i) {
  if (lua_isnil(L, d->refs) || i < 1 || i > (uint64_t)d->nrefs) dec_fail(L, "bad back-reference");
  lua_rawgeti(L, d->refs, (lua_Integer)i);
}

static void dec_function(lua_State *L, decoder *d) {
  dec_trusted(L, d, "functions");
  uint32_t len;
  if (!rd_u32(&d->c, &len) || (uint64_t)(d->c.end - d->c.p) < (uint64_t)len + 1)
    dec_fail(L, "truncated function");
  chunk ck = { (const char *)d->c.p, len };
  d->c.p += len;
  dec_enter(L, d);
  if (lua_load(L, dec_reader, &ck, "=(strand.serial)", "b") != LUA_OK)
    dec_fail(L, lua_tostring(L, -1));
  int f = lua_gettop(L);
  dec_number(L, d);
  unsigned nups = *d->c.p++;
  lua_Debug ar;
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  if (ar.nups != nups) dec_fail(L, "upvalue count does not match the function");
  for (unsigned i = 1; i <= nups; i++) {
    if (d->c.p < d->c.end && *d->c.p == T_UPJOIN) {   /* share another function's upvalue */
      d->c.p++;
      uint64_t j = dec_varint(L, d);
      if (d->c.p >= d->c.end) dec_fail(L, "truncated");
      int n = *d->c.p++;
      dec_getref(L, d, j);
      if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) || n < 1
          || lua_getupvalue(L, -1, n) == NULL) dec_fail(L, "bad upvalue link");
      lua_pop(L, 1);
      lua_upvaluejoin(L, f, (int)i, -1, n);
      lua_pop(L, 1);
      continue;
    }
    dec_value(L, d);
    lua_setupvalue(L, f, (int)i);
  }
  d->depth--;
}

/* package.loaded[name], else require(name) (only reached with {functions=true}) */
static void dec_module(lua_State *L, const char *name) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, name) != LUA_TNIL) { lua_remove(L, -2); return; }
  lua_pop(L, 2);
  if (lua_getglobal(L, "require") != LUA_TFUNCTION)
    luaL_error(L, "cannot load module '%s': no require", name);
  lua_pushstring(L, name);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    luaL_error(L, "cannot load module '%s': %s", name, lua_tostring(L, -1));
}

static void dec_byname(lua_State *L, decoder *d, int field) {
  const char *s; size_t l;
  dec_trusted(L, d, field ? "functions" : "modules");
  if (!rd_str(&d->c, &s, &l)) dec_fail(L, "truncated");
  lua_pushlstring(L, s, l);            /* NUL-terminated copy: "name" or "name\0key" */
  const char *name = lua_tostring(L, -1);
  size_t nl = strlen(name);
  if (nl == 0 || (field && nl == l) || (!field && nl != l)) dec_fail(L, "bad module name");
  dec_module(L, name);
  if (field) {
    lua_pushlstring(L, name + nl + 1, l - nl - 1);
    int ft = lua_type(L, -2) == LUA_TTABLE ? lua_gettable(L, -2) : LUA_TNONE;
    if (ft != LUA_TFUNCTION && ft != LUA_TTABLE)   /* a function, or a class (metatable) */
      luaL_error(L, "module field %s.%s is not a function here", name, name + nl + 1);
    lua_remove(L, -2);
  }
  lua_remove(L, -2);
}

static void dec_object(lua_State *L, decoder *d) {
  uint64_t ref; const char *s; size_t l; strand_object *o;
  char name[MAXNAME + 1];
  if (!rd_object(&d->c, &ref, &s, &l)) dec_fail(L, "bad object reference");
  memcpy(name, s, l); name[l] = '\0';
  const strand_objtype *t = strand_objtype_find(name);
  if (t == NULL && strncmp(name, "strand.", 7) == 0) {
    /* made by a state of a module no state of this process has opened yet (a pool worker's
     * sync.lock() to a parent that never loaded strand.sync): its area opens, as require would */
    strand_core_open_areas(L);
    t = strand_objtype_find(name);
  }
  if (t == NULL) dec_fail(L, "bad object reference");
  if (ref & REF_SHARED) {              /* this process's object for it, found or made */
    o = strand_shm_view(ref & ~REF_SHARED, t);
    if (o == NULL) dec_fail(L, "cannot use a shared object here (out of memory?)");
  } else {
    o = (strand_object *)(uintptr_t)ref;
    if (o->type != t) dec_fail(L, "bad object reference");
    strand_object_retain(o);           /* the string's own reference is dropped at the end */
  }
  strand_object_push(L, o);
  dec_number(L, d);
}

static void dec_value(lua_State *L, decoder *d) {
  cursor *c = &d->c;
  if (c->p >= c->end) dec_fail(L, "truncated");
  unsigned tag = *c->p++;
  if (tag >= T_SMALLINT) { lua_pushinteger(L, (lua_Integer)(tag - T_SMALLINT)); return; }
  if (tag >= T_SHORTSTR) {
    size_t l = tag - T_SHORTSTR;
    if ((size_t)(c->end - c->p) < l) dec_fail(L, "truncated string");
    lua_pushlstring(L, (const char *)c->p, l);
    c->p += l;
    return;
  }
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      uint64_t z = dec_varint(L, d);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (0 - (z & 1))));
      break;
    }
    case T_FLOAT: {
      if (c->end - c->p < 8) dec_fail(L, "truncated number");
      uint64_t bits = get64(c->p); lua_Number v;
      memcpy(&v, &bits, 8);
      c->p += 8;
      lua_pushnumber(L, v);
      break;
    }
    case T_STR: {
      const char *s; size_t l;
      if (!rd_str(c, &s, &l)) dec_fail(L, "truncated string");
      lua_pushlstring(L, s, l);
      break;
    }
    case T_TABLE: dec_table(L, d, 0); break;
    case T_TABLEMT: dec_table(L, d, 1); break;
    case T_REF: dec_getref(L, d, dec_varint(L, d)); break;
    case T_FUNC: dec_function(L, d); break;
    case T_GLOBALS:
      dec_trusted(L, d, "modules");
      lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
      break;
    case T_MODULE: dec_byname(L, d, 0); break;
    case T_MODFIELD: dec_byname(L, d, 1); break;
    case T_OBJECT: dec_object(L, d); break;
    default: dec_fail(L, "bad type tag");
  }
}

typedef struct decjob { const char *p; size_t len; int flags; } decjob;

/* lua_pcall'ed: (job) -> the decoded values */
static int dec_run(lua_State *L) {
  const decjob *job = (const decjob *)lua_touserdata(L, 1);
  decoder d;
  d.c.p = (const unsigned char *)job->p; d.c.end = d.c.p + job->len;
  d.flags = job->flags; d.depth = 0; d.nrefs = 0; d.budget = job->len;
  lua_settop(L, 0);
  if (job->len < 2) dec_fail(L, "truncated");
  if (d.c.p[0] != SER_VERSION) dec_fail(L, "unknown version");
  unsigned hdr = d.c.p[1];
  if (hdr & ~(unsigned)(HDR_OBJECTS | HDR_REFS)) dec_fail(L, "bad header");
  d.c.p += 2;
  if (hdr & HDR_REFS) lua_newtable(L); else lua_pushnil(L);
  d.refs = 1;
  size_t n = dec_count(L, &d, dec_varint(L, &d), 1);
  if (n > 1000000) dec_fail(L, "too many values");
  luaL_checkstack(L, (int)n + 8, "strand.serial: too many values");
  for (size_t i = 0; i < n; i++) dec_value(L, &d);
  if (d.c.p != d.c.end) dec_fail(L, "trailing bytes");
  return (int)n;
}

int strand_serial_decode(lua_State *L, const char *p, size_t len, int flags) {
  decjob job = { p, len, flags };
  int top = lua_gettop(L);
  luaL_checkstack(L, 4, NULL);
  lua_pushcfunction(L, dec_run);
  lua_pushlightuserdata(L, &job);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (st == LUA_ERRMEM) lua_error(L);
  if (st != LUA_OK) {
    if (!lua_isstring(L, -1)) { lua_pop(L, 1); lua_pushliteral(L, "malformed serial data"); }
    return -1;
  }
  /* the values hold their own references now: drop the ones the string held */
  if (!(flags & SERIAL_NOADOPT) && (p[1] & HDR_OBJECTS)) walk(p, len, ref_release);
  return lua_gettop(L) - top;
}

/* dec_into_run (lua_pcall'ed): (job, dest) -> the count placed, or nothing when the data is
 * not "true, list" without back-references (the caller then decodes it the usual way) */
typedef struct intojob { const char *p; size_t len; int flags; lua_Integer first; } intojob;

static int dec_into_run(lua_State *L) {
  const intojob *job = (const intojob *)lua_touserdata(L, 1);
  decoder d;
  d.c.p = (const unsigned char *)job->p; d.c.end = d.c.p + job->len;
  d.flags = job->flags; d.depth = 0; d.nrefs = 0; d.budget = job->len;
  lua_settop(L, 2);
  if (job->len < 13 || d.c.p[0] != SER_VERSION || (d.c.p[1] & ~(unsigned)HDR_OBJECTS)
      || d.c.p[2] != 2 || d.c.p[3] != T_TRUE || d.c.p[4] != T_TABLE)
    return 0;
  d.c.p += 5;
  lua_pushnil(L);                    /* no back-references: no table of numbered values */
  d.refs = 3;
  uint32_t narr, nrec;
  if (!rd_u32(&d.c, &narr) || !rd_u32(&d.c, &nrec)) dec_fail(L, "truncated");
  dec_count(L, &d, narr, 1);
  dec_count(L, &d, nrec, 2);
  dec_enter(L, &d);
  d.nrefs = 1;
  lua_Integer at = job->first;
  for (uint32_t k = 0; k < narr; k++) {
    const unsigned char *p = d.c.p;           /* integers and short strings inline */
    unsigned tag = p < d.c.end ? *p : 0;
    lua_Integer v;
    if (tag != 0 && serf_get_int(&d.c.p, d.c.end, &v)) lua_pushinteger(L, v);
    else if (tag >= T_SHORTSTR && tag < T_SMALLINT
             && (size_t)(d.c.end - p - 1) >= tag - T_SHORTSTR) {
      lua_pushlstring(L, (const char *)p + 1, tag - T_SHORTSTR);
      d.c.p = p + 1 + (tag - T_SHORTSTR);
    } else {
      d.c.p = p;
      dec_value(L, &d);
    }
    lua_rawseti(L, 2, at + k);
  }
  for (uint32_t k = 0; k < nrec; k++) {   /* the list's own fields (its n): not placed */
    dec_value(L, &d);
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      dec_fail(L, "nil or NaN table key");
    dec_value(L, &d);
    lua_pop(L, 2);
  }
  if (d.c.p != d.c.end) dec_fail(L, "trailing bytes");
  lua_pushinteger(L, (lua_Integer)narr);
  return 1;
}

int strand_serial_decode_into(lua_State *L, const char *p, size_t len, int flags, int dest,
                              lua_Integer first) {
  intojob job = { p, len, flags, first };
  dest = lua_absindex(L, dest);
  luaL_checkstack(L, 4, NULL);
  lua_pushcfunction(L, dec_into_run);
  lua_pushlightuserdata(L, &job);
  lua_pushvalue(L, dest);
  int st = lua_pcall(L, 2, 1, 0);
  if (st == LUA_ERRMEM) lua_error(L);
  if (st != LUA_OK) {
    if (!lua_isstring(L, -1)) { lua_pop(L, 1); lua_pushliteral(L, "malformed serial data"); }
    return -2;
  }
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return -1; }
  lua_Integer n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (!(flags & SERIAL_NOADOPT) && (p[1] & HDR_OBJECTS)) walk(p, len, ref_release);
  return (int)n;
}

/* }==== */

/* {==== a list item by item: a pool worker runs a map chunk in C (poollink.c), reading the
 * chunk's items from the job (as strand_serial_encode_list wrote them) and writing the results'
 * "true, list" frame itself while they are plain values. The bytes are those the functions above
 * read and write: nothing here changes the format. */

int strand_serial_list_open(const char *p, size_t len, strand_serial_list *l) {
  const unsigned char *u = (const unsigned char *)p;
  /* VERSION hdr varint(1) TABLE narr nrec: one table, no back-references (objects allowed) */
  if (len < 12 || u[0] != SER_VERSION || (u[1] & ~(unsigned)HDR_OBJECTS) || u[2] != 1
      || u[3] != T_TABLE)
    return 0;
  cursor c = { u + 4, u + len };
  uint32_t narr, nrec;
  if (!rd_u32(&c, &narr) || !rd_u32(&c, &nrec)) return 0;
  if (narr > (size_t)(c.end - c.p) || nrec > (size_t)(c.end - c.p) / 2) return 0;
  l->p = (const char *)c.p; l->end = (const char *)c.end;
  l->count = narr; l->nrec = nrec;
  return 1;
}

/* the value at the cursor pushed (the fast cases inline); malformed data raises */
static void list_value(lua_State *L, strand_serial_list *l, int flags, int nilslot) {
  const unsigned char *p = (const unsigned char *)l->p, *end = (const unsigned char *)l->end;
  if (p < end) {
    unsigned tag = *p;
    if (tag >= T_SMALLINT) { lua_pushinteger(L, (lua_Integer)(tag - T_SMALLINT)); l->p++; return; }
    if (tag >= T_SHORTSTR && (size_t)(end - p - 1) >= tag - T_SHORTSTR) {
      lua_pushlstring(L, (const char *)p + 1, tag - T_SHORTSTR);
      l->p += 1 + (tag - T_SHORTSTR);
      return;
    }
    if (tag == T_INT) {
      cursor c = { p + 1, end };
      uint64_t z;
      if (rd_varint(&c, &z)) {
        lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (0 - (z & 1))));
        l->p = (const char *)c.p;
        return;
      }
    }
  }
  decoder d;
  d.c.p = p; d.c.end = end;
  d.flags = flags; d.depth = 0; d.refs = nilslot; d.nrefs = 0; d.budget = (size_t)(end - p);
  dec_value(L, &d);
  l->p = (const char *)d.c.p;
}

void strand_serial_list_next(lua_State *L, strand_serial_list *l, int flags, int nilslot)
  __attribute__((alias("list_value")));

void strand_serial_list_end(lua_State *L, strand_serial_list *l, int flags, int nilslot) {
  for (uint32_t k = 0; k < l->nrec; k++) {     /* the list's own fields (its n): read, dropped */
    list_value(L, l, flags, nilslot);
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      dec_fail(L, "nil or NaN table key");
    list_value(L, l, flags, nilslot);
    lua_pop(L, 2);
  }
  l->nrec = 0;
  if (l->p != l->end) dec_fail(L, "trailing bytes");
}

size_t strand_serial_list_head(char *o, uint32_t count) {
  unsigned char *u = (unsigned char *)o;
  u[0] = SER_VERSION; u[1] = 0; u[2] = 2; u[3] = T_TRUE; u[4] = T_TABLE;
  for (int i = 0; i < 4; i++) u[5 + i] = (unsigned char)(count >> (8 * i));
  u[9] = 1; u[10] = u[11] = u[12] = 0;            /* nrec = 1: its n */
  return STRAND_SERIAL_LIST_HEAD;
}

/* an integer as encode writes it */
static size_t put_int(unsigned char *o, lua_Integer v) {
  uint64_t u = (uint64_t)v;
  if (u < 64) { o[0] = (unsigned char)(T_SMALLINT + u); return 1; }
  size_t n = 0;
  o[n++] = T_INT;
  u = (u << 1) ^ (0 - (u >> 63));
  while (u >= 0x80) { o[n++] = (unsigned char)(u | 0x80); u >>= 7; }
  o[n++] = (unsigned char)u;
  return n;
}

size_t strand_serial_list_tail(char *o, uint32_t count) {
  unsigned char *u = (unsigned char *)o;
  u[0] = T_SHORTSTR + 1; u[1] = 'n';
  return 2 + put_int(u + 2, (lua_Integer)count);
}

size_t strand_serial_put_plain(lua_State *L, int idx, char *o, size_t room) {
  unsigned char *u = (unsigned char *)o;
  if (room < 10) return 10;
  if (lua_isinteger(L, idx)) return put_int(u, lua_tointeger(L, idx));
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER: {
      lua_Number d = lua_tonumber(L, idx);
      uint64_t bits;
      memcpy(&bits, &d, 8);
      u[0] = T_FLOAT; put64(u + 1, bits);
      return 9;
    }
    case LUA_TSTRING: {
      size_t l; const char *s = lua_tolstring(L, idx, &l);
      size_t n = 0;
      if (room - 10 < l) return l + 10;
      if (l < 64) u[n++] = (unsigned char)(T_SHORTSTR + l);
      else {
        u[n++] = T_STR;
        uint64_t v = l;
        while (v >= 0x80) { u[n++] = (unsigned char)(v | 0x80); v >>= 7; }
        u[n++] = (unsigned char)v;
      }
      memcpy(u + n, s, l);
      return n + l;
    }
    case LUA_TNIL: u[0] = T_NIL; return 1;
    case LUA_TBOOLEAN: u[0] = lua_toboolean(L, idx) ? T_TRUE : T_FALSE; return 1;
    default: return 0;
  }
}

/* }==== */

/* {==== strand.serial */

static int opt_functions(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_getfield(L, arg, "functions");
  int on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return on ? STRAND_SERIAL_FUNCTIONS : 0;
}

/* encode(value [, {functions=true}]) -> string. The string holds a reference to every strand
 * object in value for as long as the process lives (it can be decoded any number of times). */
static int s_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int flags = opt_functions(L, 2);
  strand_serial_encode(L, 1, 1, flags);
  return 1;
}

/* decode(str [, {functions=false}]) -> value | nil, message */
static int s_decode(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  int flags = opt_functions(L, 2) | SERIAL_NOADOPT;
  lua_settop(L, 2);
  int n = strand_serial_decode(L, p, len, flags);
  if (n >= 0) return n;
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

int strand_open_serial(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "encode", s_encode }, { "decode", s_decode }, { NULL, NULL }
  };
  /* the key now, not at the first encoding: a process forked before this one encodes would
   * draw a key of its own, and its references would not verify here */
  pthread_once(&mac_once, mac_init);
  luaL_newlib(L, funcs);
  return 1;
}

/* }==== */
