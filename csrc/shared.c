/* shared.c — Manager-style shared dict and list for threads and forked processes: entries live
 * in the object's shared arena (shm.c): numbers as such, other values serialized; strand.shared. */
#include "strand.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define D_RESERVE ((size_t)1 << 29)   /* the most storage one dict or list may use: 512 MiB */

enum { V_NIL, V_INT, V_FLT, V_SER };  /* how a value is stored */

typedef struct d_state {
  int64_t n;              /* entries */
  uint64_t stamp;         /* the last stamp given: every write gets a new one */
  uint64_t slots;         /* dict: bucket heads; list: entry offsets (arena offsets) */
  uint64_t cap;           /* slots (dict: a power of two) */
  /* the journal of a change that takes more than one store, so that if its process dies in
   * the middle the next locker finishes it (d_repair): a dict's rehash, and incr's change of
   * an entry's type (tag and value) */
  uint64_t rh_from, rh_to, rh_cap, rh_cur;   /* rehash: old, new array, new cap, entry moving */
  uint64_t jr_entry, jr_val;                 /* entry, its new value bits (tag jr_tag) */
  uint32_t jr_tag, pad;
} d_state;

/* A test hook (process-local, set only by _test_die in a child that is about to be lost):
 * _exit at the n-th crash point reached, the mutex held, as a SIGKILL at that instant would. */
static int die_at;
#define CRASH_POINT() do { if (die_at > 0 && --die_at == 0) _exit(0); } while (0)

typedef struct d_entry {
  uint64_t next;          /* dict: next in the bucket */
  uint64_t hash;
  uint64_t stamp;         /* when written: update() retries if it changed meanwhile */
  int64_t pid;            /* the process that encoded a V_SER value */
  uint32_t klen, vtag;
  uint64_t vlen;
  /* key bytes (type byte + payload), padded to 8, then the value bytes */
} d_entry;

static void d_destroy(strand_object *o);
static const strand_objtype dict_type = { "strand.dict", d_destroy };
static const strand_objtype list_type = { "strand.list", d_destroy };

#define st_of(s) ((d_state *)strand_shm_state(s))
#define slots_of(s) ((uint64_t *)strand_shm_at(s, st_of(s)->slots))
#define entry_at(s, off) ((d_entry *)strand_shm_at(s, off))
#define kbytes(e) ((char *)(e) + sizeof(d_entry))
#define vbytes(e) (kbytes(e) + (((e)->klen + 7) & ~(size_t)7))

/* {==== keys and values, prepared outside the lock */

typedef struct key { const char *p; size_t len; char tag; char buf[8]; uint64_t hash; } key;
typedef struct val { uint32_t tag; const char *p; size_t len; char num[8]; } val;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

/* Keys are strings, numbers (a float with an integer value is that integer, as in Lua tables)
 * and booleans. */
static void key_get(lua_State *L, int idx, key *k) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
      k->tag = 's';
      k->p = lua_tolstring(L, idx, &k->len);
      break;
    case LUA_TNUMBER: {
      lua_Integer i = 0;
      lua_Number d = lua_tonumber(L, idx);
      if (lua_isinteger(L, idx)) i = lua_tointeger(L, idx);
      if (lua_isinteger(L, idx) || (lua_numbertointeger(d, &i) && (lua_Number)i == d)) {
        k->tag = 'i';
        memcpy(k->buf, &i, 8);
      } else {
        if (d != d) luaL_argerror(L, idx, "key is NaN");
        k->tag = 'f';
        memcpy(k->buf, &d, 8);
      }
      k->p = k->buf;
      k->len = 8;
      break;
    }
    case LUA_TBOOLEAN:
      k->tag = lua_toboolean(L, idx) ? 't' : 'F';
      k->p = k->buf;
      k->len = 0;
      break;
    default:
      luaL_typeerror(L, idx, "string, number or boolean key");
  }
  k->hash = fnv(fnv(14695981039346656037ULL, &k->tag, 1), k->p, k->len);
}

static void key_push(lua_State *L, const char *p, size_t klen) {
  lua_Integer i;
  lua_Number d;
  switch (p[0]) {
    case 's': lua_pushlstring(L, p + 1, klen - 1); break;
    case 'i': memcpy(&i, p + 1, 8); lua_pushinteger(L, i); break;
    case 'f': memcpy(&d, p + 1, 8); lua_pushnumber(L, d); break;
    default: lua_pushboolean(L, p[0] == 't'); break;
  }
}

/* Numbers stay numbers (incr works on them in place); anything else is serialized, and the
 * encoding (which holds references to strand objects in it) is left on the stack. */
static void val_get_arg(lua_State *L, int idx, val *v, const char *fname, int argno) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TNONE) {
    v->tag = V_NIL; v->p = v->num; v->len = 0;
  } else if (t == LUA_TNUMBER) {
    if (lua_isinteger(L, idx)) {
      lua_Integer i = lua_tointeger(L, idx);
      v->tag = V_INT;
      memcpy(v->num, &i, 8);
    } else {
      lua_Number d = lua_tonumber(L, idx);
      v->tag = V_FLT;
      memcpy(v->num, &d, 8);
    }
    v->p = v->num; v->len = 8;
  } else {
    /* refused: "bad argument #2 to 'set' (value.x: cannot copy a coroutine)" */
    if (fname != NULL) strand_serial_encode_arg(L, idx, 1, STRAND_SERIAL_FUNCTIONS, fname, argno);
    else strand_serial_encode(L, idx, 1, STRAND_SERIAL_FUNCTIONS);
    v->tag = V_SER;
    v->p = lua_tolstring(L, -1, &v->len);
  }
}

static void val_get(lua_State *L, int idx, val *v) { val_get_arg(L, idx, v, NULL, 0); }

/* A value that was not stored: drop the references its encoding holds. */
static void val_drop(const val *v) {
  if (v->tag == V_SER) strand_serial_release(v->p, v->len);
}

/* Push a value copied out of the arena. The stored copy stays, with its object references: the
 * decoded values retain their own (NOADOPT). Returns 0, or -1 with a message pushed. */
static int val_push(lua_State *L, uint32_t tag, const char *p, size_t len) {
  lua_Integer i;
  lua_Number d;
  switch (tag) {
    case V_INT: memcpy(&i, p, 8); lua_pushinteger(L, i); return 0;
    case V_FLT: memcpy(&d, p, 8); lua_pushnumber(L, d); return 0;
    case V_SER:
      if (strand_serial_decode(L, p, len, STRAND_SERIAL_FUNCTIONS | STRAND_SERIAL_NOADOPT) == 1)
        return 0;
      return -1;
    default: lua_pushnil(L); return 0;
  }
}

/* }==== */

/* {==== entries (locked) */

static uint64_t entry_new(strand_shm *s, const key *k, const val *v) {
  size_t klen = k ? k->len + 1 : 0;
  uint64_t off = strand_shm_alloc(s, sizeof(d_entry) + ((klen + 7) & ~(size_t)7) + v->len);
  if (off == 0) return 0;
  d_entry *e = entry_at(s, off);
  e->next = 0;
  e->hash = k ? k->hash : 0;
  e->stamp = ++st_of(s)->stamp;
  e->pid = strand_shm_pid();
  e->klen = (uint32_t)klen;
  e->vtag = v->tag;
  e->vlen = v->len;
  if (k) { kbytes(e)[0] = k->tag; memcpy(kbytes(e) + 1, k->p, k->len); }
  memcpy(vbytes(e), v->p, v->len);
  return off;
}

static void entry_free(strand_shm *s, uint64_t off) {
  d_entry *e = entry_at(s, off);
  if (e->vtag == V_SER)
    (e->pid == strand_shm_pid() ? strand_serial_release : strand_serial_release_shared)(
      vbytes(e), e->vlen);
  strand_shm_release(s, off);
}

/* The link (bucket head or next field) that points at k's entry, or at the 0 ending its bucket */
static uint64_t *d_find(strand_shm *s, const key *k) {
  d_state *st = st_of(s);
  if (st->cap == 0) return NULL;
  uint64_t *link = &slots_of(s)[k->hash & (st->cap - 1)];
  while (*link) {
    d_entry *e = entry_at(s, *link);
    if (e->hash == k->hash && e->klen == k->len + 1 && kbytes(e)[0] == k->tag &&
        memcmp(kbytes(e) + 1, k->p, k->len) == 0)
      break;
    link = &e->next;
  }
  return link;
}

/* Move the rehash journaled in st along to its end: every entry still in the old array goes to
 * the new one (the one in flight first), then the new array is installed and the old freed.
 * Each step leaves every entry reachable from the journal, so a repair can call it again. */
static void rh_finish(strand_shm *s) {
  d_state *st = st_of(s);
  uint64_t *from = (uint64_t *)strand_shm_at(s, st->rh_from);
  uint64_t *to = (uint64_t *)strand_shm_at(s, st->rh_to);
  uint64_t mask = st->rh_cap - 1, e = st->rh_cur;
  if (e) {                                  /* the one in flight: where is it? */
    d_entry *ent = entry_at(s, e);
    uint64_t oldcap = st->cap;
    if (from[ent->hash & (oldcap - 1)] != e && to[ent->hash & mask] != e) {
      ent->next = to[ent->hash & mask];     /* out of the old chain, not in the new one yet */
      to[ent->hash & mask] = e;
    }
    st->rh_cur = 0;
  }
  for (uint64_t b = 0; b < st->cap; b++) {
    while ((e = from[b]) != 0) {
      d_entry *ent = entry_at(s, e);
      st->rh_cur = e;
      from[b] = ent->next;
      CRASH_POINT();
      ent->next = to[ent->hash & mask];
      to[ent->hash & mask] = e;
      st->rh_cur = 0;
    }
  }
  uint64_t old = st->rh_from;
  st->slots = st->rh_to;
  CRASH_POINT();
  st->cap = st->rh_cap;
  st->rh_to = 0;                            /* done: the old array is no longer needed */
  st->rh_from = 0;
  strand_shm_release(s, old);
}

/* Slots for one more entry: 0 or an errno. Dict: rehash at 3/4 full; list: double. */
static int d_grow(strand_shm *s, int isdict) {
  d_state *st = st_of(s);
  if (isdict ? (uint64_t)(st->n + 1) * 4 <= st->cap * 3 : (uint64_t)st->n < st->cap) return 0;
  uint64_t cap = st->cap ? st->cap * 2 : 16;
  uint64_t off = strand_shm_alloc(s, cap * 8);
  if (off == 0) return errno;
  uint64_t *to = (uint64_t *)strand_shm_at(s, off);
  memset(to, 0, cap * 8);
  if (st->cap == 0) {
    st->slots = off;
    st->cap = cap;
    return 0;
  }
  if (isdict) {
    st->rh_cur = 0;
    st->rh_cap = cap;
    st->rh_from = st->slots;
    st->rh_to = off;                        /* last: from now on a repair finishes it */
    rh_finish(s);
    return 0;
  }
  uint64_t old = st->slots;
  memcpy(to, strand_shm_at(s, old), (size_t)st->n * 8);
  st->slots = off;                          /* the old array until here, the new one after */
  st->cap = cap;
  strand_shm_release(s, old);
  return 0;
}

static void storage_error(lua_State *L, strand_shm *s, int err) {
  if (err == ENOSPC) luaL_error(L, "%s storage full", s->obj.type->name);
  const char *msg = strand_errmsg(err);
  luaL_error(L, "%s: %s", s->obj.type->name, msg ? msg : strerror(err));
}

/* Copy an entry's value out (locked): small ones into buf (8+ bytes), others malloc'd. */
typedef struct copied { uint32_t tag; size_t len; char *p; char *heap; } copied;

static int value_copy(strand_shm *s, d_entry *e, copied *c, char *scratch) {
  c->tag = e->vtag;
  c->len = e->vlen;
  c->heap = NULL;
  c->p = scratch;
  if (c->len > STRAND_SCRATCH) {
    if ((c->heap = c->p = (char *)malloc(c->len)) == NULL) return ENOMEM;
  }
  memcpy(c->p, vbytes(e), c->len);
  return 0;
}

/* Push the copied value (and free it). */
static void copied_push(lua_State *L, copied *c) {
  int r = val_push(L, c->tag, c->p, c->len);
  free(c->heap);
  if (r < 0) luaL_error(L, "bad shared value: %s", lua_tostring(L, -1));
}

/* }==== */

/* {==== snapshots: keys(), items(), pairs() */

#define PAD8(n) (((size_t)(n) + 7) & ~(size_t)7)
#define ENTRY_SIZE(e) (sizeof(d_entry) + PAD8((e)->klen) + PAD8((e)->vlen))

/* Copy every entry under the lock into a userdata (slot 2), then build what is asked for
 * without the lock. what: 0 array of keys, 1 key -> value table, 2 array of values (list). */
static int d_snapshot(lua_State *L, int what) {
  strand_shm *s = strand_shm_self(L);
  d_state *st = st_of(s);
  int isdict = s->obj.type == &dict_type;
  size_t have = 0, used = 0;
  char *buf = NULL;
  lua_settop(L, 1);
  lua_pushnil(L);
  for (;;) {
    size_t total = 0;
    strand_shm_lockL(L, s);
    uint64_t nslots = isdict ? st->cap : (uint64_t)st->n;
    for (uint64_t i = 0; i < nslots; i++)
      for (uint64_t off = slots_of(s)[i]; off; off = isdict ? entry_at(s, off)->next : 0)
        total += ENTRY_SIZE(entry_at(s, off));
    if (total <= have) {
      for (uint64_t i = 0; i < nslots; i++)
        for (uint64_t off = slots_of(s)[i]; off; off = isdict ? entry_at(s, off)->next : 0) {
          d_entry *e = entry_at(s, off);
          memcpy(buf + used, e, sizeof(d_entry) + PAD8(e->klen) + e->vlen);
          used += ENTRY_SIZE(e);
        }
      strand_shm_unlock(s);
      break;
    }
    strand_shm_unlock(s);
    have = total + total / 4 + 64;                /* grown meanwhile? a little room, retry */
    buf = (char *)lua_newuserdatauv(L, have, 0);
    lua_replace(L, 2);
  }
  lua_newtable(L);
  lua_Integer k = 0;
  for (size_t at = 0; at < used;) {
    d_entry *e = (d_entry *)(buf + at);
    at += ENTRY_SIZE(e);
    if (what == 0) {
      key_push(L, kbytes(e), e->klen);
      lua_rawseti(L, -2, ++k);
      continue;
    }
    if (what == 1) key_push(L, kbytes(e), e->klen);
    if (val_push(L, e->vtag, vbytes(e), e->vlen) < 0)
      luaL_error(L, "bad shared value: %s", lua_tostring(L, -1));
    if (what == 1) lua_rawset(L, -3);
    else lua_rawseti(L, -2, ++k);
  }
  return 1;
}

static int d_keys(lua_State *L) { return d_snapshot(L, 0); }
static int d_items(lua_State *L) { return d_snapshot(L, 1); }
static int l_items(lua_State *L) { return d_snapshot(L, 2); }

static int d_len(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  strand_shm_lockL(L, s);
  int64_t n = st_of(s)->n;
  strand_shm_unlock(s);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* }==== */

/* {==== dict */

/* get(k) -> value | nil; with stamp: also the entry's stamp (0: absent) */
static int d_get_impl(lua_State *L, int stamped) {
  strand_shm *s = strand_shm_self(L);
  key k;
  key_get(L, 2, &k);
  char *scratch = strand_loop_scratch(strand_loop_get(L));
  copied c = { V_NIL, 0, scratch, NULL };
  uint64_t stamp = 0;
  strand_shm_lockL(L, s);
  uint64_t *link = d_find(s, &k);
  int err = 0;
  if (link && *link) {
    d_entry *e = entry_at(s, *link);
    stamp = e->stamp;
    err = value_copy(s, e, &c, scratch);
  }
  strand_shm_unlock(s);
  if (err) return luaL_error(L, "strand.dict: out of memory");
  copied_push(L, &c);
  if (!stamped) return 1;
  lua_pushinteger(L, (lua_Integer)stamp);
  return 2;
}

static int d_get(lua_State *L) { return d_get_impl(L, 0); }
static int d_getv(lua_State *L) { return d_get_impl(L, 1); }

/* Store v at k (nil: remove). expect >= 0: only if the entry's stamp is still expect (0:
 * absent); returns whether it was stored. Raises when the storage is full. */
static int d_store(lua_State *L, strand_shm *s, int kidx, int vidx, int64_t expect,
                   const char *fname) {
  d_state *st = st_of(s);
  key k;
  val v;
  key_get(L, kidx, &k);
  val_get_arg(L, vidx, &v, fname, vidx - 1);
  strand_shm_lockL(L, s);
  int err = 0;
  uint64_t *link = d_find(s, &k);
  uint64_t old = link ? *link : 0;
  if (expect >= 0 && (old ? entry_at(s, old)->stamp : 0) != (uint64_t)expect) {
    strand_shm_unlock(s);
    val_drop(&v);
    return 0;
  }
  if (v.tag == V_NIL) {
    if (old) {
      *link = entry_at(s, old)->next;
      st->n--;
      entry_free(s, old);
    }
  } else {
    if (old == 0 && (err = d_grow(s, 1)) == 0) link = d_find(s, &k);
    uint64_t off = err ? 0 : entry_new(s, &k, &v);
    if (err == 0 && off == 0) err = errno;
    if (off) {
      entry_at(s, off)->next = old ? entry_at(s, old)->next : 0;
      *link = off;
      CRASH_POINT();
      if (old) entry_free(s, old);
      else st->n++;                         /* a death before it: d_repair counts again */
    }
  }
  strand_shm_unlock(s);
  if (err) {
    val_drop(&v);
    storage_error(L, s, err);
  }
  return 1;
}

static int d_set(lua_State *L) {
  d_store(L, strand_shm_self(L), 2, 3, -1, "set");
  return 0;
}

/* _setif(d, k, v, stamp) -> stored? (update's compare-and-set; a value refused is named as
 * update's argument #2's result: "bad argument #2 to 'update' (its result.x: cannot copy ...)") */
static int d_setif(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  lua_Integer stamp = luaL_checkinteger(L, 4);
  lua_pushboolean(L, d_store(L, s, 2, 3, stamp < 0 ? 0 : stamp, "update"));
  return 1;
}

/* incr(k [, n]) -> the new value: atomic; an absent key counts from 0 */
static int d_incr(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  d_state *st = st_of(s);
  key k;
  key_get(L, 2, &k);
  if (lua_isnoneornil(L, 3)) { lua_settop(L, 2); lua_pushinteger(L, 1); }
  luaL_checknumber(L, 3);
  val v;
  val_get(L, 3, &v);
  lua_Integer ri = 0;
  lua_Number rf = 0;
  int isint = 1, err = 0, notnum = 0;
  strand_shm_lockL(L, s);
  uint64_t *link = d_find(s, &k);
  if (link == NULL || *link == 0) {
    if ((err = d_grow(s, 1)) == 0) link = d_find(s, &k);
  }
  if (link && *link) {
    d_entry *e = entry_at(s, *link);
    if (e->vtag == V_INT && v.tag == V_INT) {
      lua_Integer a, b;
      memcpy(&a, vbytes(e), 8); memcpy(&b, v.num, 8);
      ri = (lua_Integer)((lua_Unsigned)a + (lua_Unsigned)b);   /* wraps, as in Lua */
      memcpy(vbytes(e), &ri, 8);
    } else if (e->vtag == V_INT || e->vtag == V_FLT) {
      lua_Integer i;
      lua_Number a, b;
      if (e->vtag == V_INT) { memcpy(&i, vbytes(e), 8); a = (lua_Number)i; }
      else memcpy(&a, vbytes(e), 8);
      if (v.tag == V_INT) { memcpy(&i, v.num, 8); b = (lua_Number)i; }
      else memcpy(&b, v.num, 8);
      rf = a + b;
      isint = 0;
      memcpy(&st->jr_val, &rf, 8);          /* tag and value: two stores, journaled */
      st->jr_tag = V_FLT;
      st->jr_entry = *link;
      e->vtag = V_FLT;
      CRASH_POINT();
      memcpy(vbytes(e), &rf, 8);
      st->jr_entry = 0;
    } else {
      notnum = 1;
    }
    if (!notnum) e->stamp = ++st->stamp;
  } else if (err == 0) {
    uint64_t off = entry_new(s, &k, &v);
    if (off == 0) err = errno;
    else { *link = off; st->n++; }
    isint = v.tag == V_INT;
    memcpy(isint ? (void *)&ri : (void *)&rf, v.num, 8);
  }
  strand_shm_unlock(s);
  if (err) storage_error(L, s, err);
  if (notnum) return luaL_error(L, "strand.dict: incr of a value that is not a number");
  if (isint) lua_pushinteger(L, ri);
  else lua_pushnumber(L, rf);
  return 1;
}

/* d[k]: methods first (d.keys is the method: read such keys with d:get), then entries */
static int d_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) return 1;
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  return d_get_impl(L, 0);
}

static int d_newindex(lua_State *L) {
  d_store(L, strand_shm_self(L), 2, 3, -1, "__newindex");
  return 0;
}

static int l_dict(lua_State *L) {
  strand_shm *s = strand_shm_new(L, sizeof(strand_shm), &dict_type, sizeof(d_state), 0, D_RESERVE);
  if (s == NULL) return strand_shm_fail(L, &dict_type, errno);
  strand_object_push(L, &s->obj);
  return 1;
}

/* }==== */

/* {==== list */

static lua_Integer l_index_arg(lua_State *L, int idx) {
  int isnum;
  lua_Integer i = lua_tointegerx(L, idx, &isnum);
  if (!isnum) luaL_typeerror(L, idx, "integer index");
  return i;
}

static int l_get(lua_State *L) {
  strand_shm *s = strand_shm_self(L);
  lua_Integer i = l_index_arg(L, 2);
  char *scratch = strand_loop_scratch(strand_loop_get(L));
  copied c = { V_NIL, 0, scratch, NULL };
  int err = 0;
  strand_shm_lockL(L, s);
  if (i >= 1 && i <= st_of(s)->n) err = value_copy(s, entry_at(s, slots_of(s)[i - 1]), &c, scratch);
  strand_shm_unlock(s);
  if (err) return luaL_error(L, "strand.list: out of memory");
  copied_push(L, &c);
  return 1;
}

/* set l[i] = v for 1 <= i <= len + 1 (len + 1 appends); returns the new length */
static lua_Integer l_store(lua_State *L, strand_shm *s, lua_Integer i, int vidx, int append,
                           const char *fname) {
  d_state *st = st_of(s);
  luaL_checkany(L, vidx);
  if (lua_isnil(L, vidx)) luaL_argerror(L, vidx, "cannot store nil in a shared list");
  val v;
  val_get_arg(L, vidx, &v, fname, vidx - 1);
  strand_shm_lockL(L, s);
  if (append) i = st->n + 1;
  int err = 0, range = i < 1 || i > st->n + 1;
  if (!range && i == st->n + 1) err = d_grow(s, 0);
  uint64_t off = 0;
  if (!range && !err && (off = entry_new(s, NULL, &v)) == 0) err = errno;
  if (off) {                                /* the slot first: a death between leaves it valid */
    uint64_t *slot = &slots_of(s)[i - 1];
    uint64_t old = i == st->n + 1 ? 0 : *slot;
    *slot = off;
    CRASH_POINT();
    if (old) entry_free(s, old);
    else st->n++;
  }
  lua_Integer n = st->n;
  strand_shm_unlock(s);
  if (range || err) val_drop(&v);
  if (range)                      /* (list(initial) appends: never out of range) */
    luaL_error(L, "bad argument #1 to '%s' (index %I out of range: length %I)", fname ? fname : "set",
               i, n);
  if (err) storage_error(L, s, err);
  return n;
}

static int l_set(lua_State *L) {
  l_store(L, strand_shm_self(L), l_index_arg(L, 2), 3, 0, "set");
  return 0;
}

static int l_append(lua_State *L) {
  lua_pushinteger(L, l_store(L, strand_shm_self(L), 0, 2, 1, "append"));
  return 1;
}

static int l_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));
    return 1;
  }
  lua_settop(L, 2);
  return l_get(L);
}

static int l_newindex(lua_State *L) { return l_set(L); }

/* list(initial)'s item: (list, value), protected (a refusal is renamed by l_list) */
static int l_init_item(lua_State *L) {
  l_store(L, (strand_shm *)lua_touserdata(L, 1), 0, 2, 1, NULL);
  return 0;
}

static int l_list(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  strand_shm *s = strand_shm_new(L, sizeof(strand_shm), &list_type, sizeof(d_state), 0, D_RESERVE);
  if (s == NULL) return strand_shm_fail(L, &list_type, errno);
  strand_object_push(L, &s->obj);                       /* [initial] list */
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_pushcfunction(L, l_init_item);
      lua_pushlightuserdata(L, s);
      if (lua_geti(L, 1, i) == LUA_TNIL)
        luaL_error(L, "bad argument #1 to 'list' (value[%I] is nil: a shared list cannot hold nil)", i);
      if (lua_pcall(L, 2, 0, 0) != LUA_OK) {            /* "value.x: cannot copy ..." */
        const char *m = lua_tostring(L, -1);
        if (m && strncmp(m, "value", 5) == 0)
          luaL_error(L, "bad argument #1 to 'list' (value[%I]%s)", i, m + 5);
        lua_error(L);                                   /* storage full */
      }
      lua_settop(L, 2);
    }
  }
  return 1;
}

/* }==== */

/* The last reference in this process: drop the object references of the values this process
 * encoded (other processes keep theirs, and the region). See q_destroy on locking here. */
static void d_destroy(strand_object *o) {
  strand_shm *s = (strand_shm *)o;
  d_state *st = st_of(s);
  int isdict = o->type == &dict_type;
  int pid = strand_shm_pid();
  if (strand_shm_lock(s) == 0) {
    for (uint64_t i = 0; i < (isdict ? st->cap : (uint64_t)st->n); i++) {
      for (uint64_t off = slots_of(s)[i]; off; off = isdict ? entry_at(s, off)->next : 0) {
        d_entry *e = entry_at(s, off);
        if (e->vtag == V_SER)
          (e->pid == pid ? strand_serial_release : strand_serial_release_shared)(vbytes(e), e->vlen);
      }
    }
    strand_shm_unlock(s);
  }
  strand_shm_free(s);
}

/* {==== a holder's death (strand_shm_on_repair): every change is either one store, ordered so
 * that each state between two stores is valid, or journaled in d_state and finished here; the
 * count of a dict's entries is taken again (an insert or removal may have died between its
 * link and its count). A dying writer's half-built entry is unreachable and goes with the
 * object. update(k, fn) runs fn without the lock, so a death inside fn changes nothing. */

static void d_repair(strand_shm *s) {
  d_state *st = st_of(s);
  if (s->obj.type != &dict_type) return;      /* a list's length is written after its slot */
  if (st->rh_to) rh_finish(s);
  if (st->jr_entry) {
    d_entry *e = entry_at(s, st->jr_entry);
    e->vtag = st->jr_tag;
    memcpy(vbytes(e), &st->jr_val, 8);
    st->jr_entry = 0;
  }
  int64_t n = 0;
  for (uint64_t b = 0; b < st->cap; b++)
    for (uint64_t off = slots_of(s)[b]; off; off = entry_at(s, off)->next) n++;
  st->n = n;
}

/* _test_die(n): this process _exits at the n-th crash point it reaches with a dict's or list's
 * mutex held (a test of the repair: run it in a child only) */
static int l_test_die(lua_State *L) {
  die_at = (int)luaL_checkinteger(L, 1);
  return 0;
}

/* }==== */

/* update(k, fn) in Lua: fn (which may block or raise) runs without the lock, and the result is
 * stored only if nobody wrote k meanwhile; otherwise fn runs again on the newer value. */
static const char shared_lua[] =
  "local dictm, dictmt, getv, setif = ...\n"
  "local type, error, getmetatable, next, pcall, tostring = type, error, getmetatable, next, pcall, tostring\n"
  "function dictm.update(self, k, fn)\n"
  "  local mt = getmetatable(fn)\n"
  "  if type(fn) ~= 'function' and not (type(mt) == 'table' and mt.__call) then\n"
  "    error(\"bad argument #2 to 'update' (function expected, got \" .. type(fn) .. ')', 2)\n"
  "  end\n"
  "  local tk = type(k)\n"
  "  if tk ~= 'string' and tk ~= 'number' and tk ~= 'boolean' then\n"
  "    error(\"bad argument #1 to 'update' (string, number or boolean key expected, got \" .. tk .. ')', 2)\n"
  "  end\n"
  "  if k ~= k then error(\"bad argument #1 to 'update' (key is NaN)\", 2) end\n"
  "  while true do\n"
  "    local old, stamp = getv(self, k)\n"
  "    local new = fn(old)\n"
  "    local ok, stored = pcall(setif, self, k, new, stamp)\n"
  "    if not ok then\n"
  "      error((tostring(stored):gsub(\"^(bad argument #2 to 'update' %()value\", '%1its result')), 2)\n"
  "    end\n"
  "    if stored then return new end\n"
  "  end\n"
  "end\n"
  "dictmt.__pairs = function(self) return next, self:items(), nil end\n";

/* A metamethod of dicts and lists: a closure over the metatable (upvalue 1) and, with up2, the
 * method table (upvalue 2). */
typedef struct { const char *name; lua_CFunction f; int up2; } shm_meta;

/* Sets each of m (ended by a NULL name) in the metatable. Stack: mt methods (unchanged). */
static void set_metamethods(lua_State *L, const shm_meta *m) {
  for (; m->name; m++) {
    lua_pushvalue(L, -2);
    if (m->up2) lua_pushvalue(L, -2);
    lua_pushcclosure(L, m->f, 1 + m->up2);
    lua_setfield(L, -3, m->name);
  }
}

int strand_open_shared(lua_State *L) {
  static const luaL_Reg dict_methods[] = {
    {"get", d_get}, {"set", d_set}, {"keys", d_keys}, {"items", d_items}, {"len", d_len},
    {"incr", d_incr}, {NULL, NULL}
  };
  static const luaL_Reg list_methods[] = {
    {"get", l_get}, {"set", l_set}, {"append", l_append}, {"items", l_items}, {"len", d_len},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"dict", l_dict}, {"list", l_list}, {"_test_die", l_test_die}, {NULL, NULL}
  };
  int top = lua_gettop(L);
  if (strand_load_chunk(L, shared_lua, sizeof shared_lua - 1, "=strand.shared") != LUA_OK)
    lua_error(L);                                       /* chunk */
  strand_shm_type(&dict_type, sizeof(strand_shm), NULL);
  strand_shm_type(&list_type, sizeof(strand_shm), NULL);
  strand_shm_on_repair(&dict_type, d_repair);
  strand_shm_on_repair(&list_type, d_repair);
  strand_shm_newmeta(L, &dict_type, dict_methods, NULL);   /* chunk mt methods */
  static const shm_meta dmeta[] = {
    {"__index", d_index, 1}, {"__newindex", d_newindex, 0}, {"__len", d_len, 0}, {NULL, NULL, 0}
  };
  set_metamethods(L, dmeta);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, d_getv, 1);
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, d_setif, 1);                      /* chunk mt methods getv setif */
  lua_rotate(L, -4, 2);                                 /* chunk getv setif mt methods */
  lua_insert(L, -4);                                    /* chunk methods getv setif mt */
  lua_insert(L, -3);                                    /* chunk methods mt getv setif */
  lua_call(L, 4, 0);
  strand_shm_newmeta(L, &list_type, list_methods, NULL);   /* mt methods */
  static const shm_meta lmeta[] = {
    {"__index", l_index, 1}, {"__newindex", l_newindex, 0}, {"__len", d_len, 0}, {NULL, NULL, 0}
  };
  set_metamethods(L, lmeta);
  lua_settop(L, top);
  luaL_newlib(L, funcs);
  return 1;
}
