/* fuzz/serial.c — libFuzzer target for strand_serial_decode (csrc/serial.c) on untrusted bytes
 * ({functions=false}, the path data from a socket takes): never crash, hang or raise, never
 * allocate more than 4 MiB + 128 bytes per input byte; whatever decodes must re-encode, and
 * decode again to the same values. The same bytes also go through the list readers of a pool's
 * map (strand_serial_decode_into, and list_open/next/end item by item): never crash, refuse
 * with a message. Seeds: fuzz/corpus/serial/ (valid encodings). */
#include "fuzz.h"

/* Legitimate decoding turns one input byte into at most ~50 bytes of Lua values (a 1-byte
 * integer becomes a 16-byte array slot, a 2-byte pair a 24..48-byte hash node, plus stack and
 * garbage); 128 per byte leaves room, a pre-allocation driven by a lying count does not fit. */
#define BUDGET(len) ((size_t)4 << 20) + (size_t)128 * (len)

static const char *SAME =
  "local function same(a, b, seen)\n"
  "  local ta = type(a)\n"
  "  if ta ~= type(b) then return false end\n"
  "  if ta == 'number' then\n"
  "    if math.type(a) ~= math.type(b) then return false end\n"
  "    if math.type(a) == 'float' then return string.pack('<d', a) == string.pack('<d', b) end\n"
  "    return a == b\n"
  "  elseif ta == 'table' then\n"
  "    if seen[a] ~= nil then return seen[a] == b end\n"
  "    seen[a] = b\n"
  "    if not same(getmetatable(a), getmetatable(b), seen) then return false end\n"
  "    local na, nb = 0, 0\n"
  "    for k, v in next, a do\n"
  "      na = na + 1\n"
  "      local kb = k\n"
  "      if type(k) == 'table' then kb = seen[k] end\n"
  "      if kb ~= nil then\n"
  "        local vb = rawget(b, kb)\n"
  "        if vb == nil or not same(v, vb, seen) then return false end\n"
  "      end\n"
  "    end\n"
  "    for _ in next, b do nb = nb + 1 end\n"
  "    return na == nb\n"
  "  elseif ta == 'userdata' then return true end\n"
  "  return rawequal(a, b)\n"
  "end\n"
  "return function(n, ...)\n"
  "  local v = table.pack(...)\n"
  "  local seen = {}\n"
  "  for i = 1, n do if not same(v[i], v[n + i], seen) then return i end end\n"
  "  return 0\n"
  "end\n";

typedef struct job { const uint8_t *p; size_t len; int n; } job;

/* (job) -> decoded values; records how many (-1: refused with a message, left on the stack) */
static int decode(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  j->n = strand_serial_decode(L, (const char *)j->p, j->len, 0);
  return lua_gettop(L);
}

/* values... -> encode(values...) */
static int encode(lua_State *L) {
  strand_serial_encode(L, 1, lua_gettop(L), 0);
  return 1;
}

/* (job) -> the list read item by item, as a pool worker reads a chunk (each item dropped) */
static int list_items(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  lua_settop(L, 1);
  lua_pushnil(L);                          /* 2: the decoder's nil (no back-references) */
  strand_serial_list l;
  if (!strand_serial_list_open((const char *)j->p, j->len, &l)) return 0;
  for (uint32_t k = 0; k < l.count; k++) {
    strand_serial_list_next(L, &l, 0, 2);
    lua_settop(L, 2);
  }
  strand_serial_list_end(L, &l, 0, 2);
  j->n = (int)l.count;
  return 0;
}

/* (job) -> decode_into a new table from its key 1: job->n its result (-2: with a message) */
static int into(lua_State *L) {
  job *j = (job *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_newtable(L);
  j->n = strand_serial_decode_into(L, (const char *)j->p, j->len, 0, 1, 1);
  if (j->n == -2 && (lua_gettop(L) != 2 || !lua_isstring(L, -1)))
    fuzz_fail("decode_into refused without a message");
  if (j->n >= 0 && lua_gettop(L) != 1) fuzz_fail("decode_into left %d values", lua_gettop(L));
  return 0;
}

/* the list readers on the same bytes: a decode_into, the item-by-item reader */
static void list_readers(const uint8_t *data, size_t size) {
  fuzz_mem m;
  lua_State *L = fuzz_state(&m, BUDGET(size));
  job j = { data, size, -3 };
  lua_pushcfunction(L, into);
  lua_pushlightuserdata(L, &j);
  int st = lua_pcall(L, 1, 0, 0);
  if (st == LUA_ERRMEM && m.refused)
    fuzz_fail("decode_into of %zu bytes wanted more than %zu bytes of memory", size, (size_t)BUDGET(size));
  if (st != LUA_OK) fuzz_fail("decode_into raised (it must return -2 and a message): %s", lua_tostring(L, -1));
  if (j.n < -2) fuzz_fail("decode_into returned %d", j.n);
  lua_settop(L, 0);
  j.n = -2;
  lua_pushcfunction(L, list_items);
  lua_pushlightuserdata(L, &j);
  st = lua_pcall(L, 1, 0, 0);
  if (st == LUA_ERRMEM && m.refused)
    fuzz_fail("reading a list of %zu bytes wanted more than %zu bytes of memory", size, (size_t)BUDGET(size));
  if (st != LUA_OK) {
    const char *e = lua_tostring(L, -1);
    if (e == NULL || (strncmp(e, "malformed serial data", 21) != 0 && strstr(e, "not allowed") == NULL
                      && strstr(e, "stack overflow") == NULL))
      fuzz_fail("unexpected list reader error: %s", e ? e : "(not a string)");
  }
  lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  list_readers(data, size);
  fuzz_mem m;
  lua_State *L = fuzz_state(&m, BUDGET(size));
  job j = { data, size, -2 };
  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, &j);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (st == LUA_ERRMEM && m.refused)
    fuzz_fail("decoding %zu bytes wanted more than %zu bytes of memory", size, (size_t)BUDGET(size));
  if (st != LUA_OK)
    fuzz_fail("decode raised (it must return a message): %s", lua_tostring(L, -1));
  if (j.n < 0) {
    if (lua_gettop(L) != 1 || !lua_isstring(L, -1))
      fuzz_fail("refused input without a message string");
    if (strncmp(lua_tostring(L, -1), "malformed serial data", 21) != 0
        && strstr(lua_tostring(L, -1), "not allowed") == NULL
        && strstr(lua_tostring(L, -1), "stack overflow") == NULL)
      fuzz_fail("unexpected refusal message: %s", lua_tostring(L, -1));
    lua_close(L);
    return 0;
  }
  if (j.n != lua_gettop(L)) fuzz_fail("decode said %d values, pushed %d", j.n, lua_gettop(L));
  /* the property checks may use more memory than the budget */
  m.limit = (size_t)-1;
  int n = j.n;
  if (!lua_checkstack(L, n + 8)) { lua_close(L); return 0; }
  lua_pushcfunction(L, encode);
  for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
  if (lua_pcall(L, n, 1, 0) != LUA_OK)
    fuzz_fail("encode refused what decode produced: %s", lua_tostring(L, -1));
  size_t elen;
  const char *enc = lua_tolstring(L, -1, &elen);
  job j2 = { (const uint8_t *)enc, elen, -2 };
  int encidx = lua_gettop(L);              /* values(1..n) enc */
  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, &j2);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK || j2.n < 0)
    fuzz_fail("a re-encoding does not decode: %s", lua_tostring(L, -1));
  if (j2.n != n) fuzz_fail("re-decoding gave %d values instead of %d", j2.n, n);
  /* stack: v1..vn enc w1..wn */
  lua_remove(L, encidx);
  if (luaL_loadstring(L, SAME) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    fuzz_fail("compare: %s", lua_tostring(L, -1));
  lua_insert(L, 1);
  lua_pushinteger(L, n);
  lua_insert(L, 2);
  if (lua_pcall(L, 2 * n + 1, 1, 0) != LUA_OK) {
    /* a very deep value can overflow the comparison's own recursion: not a finding */
    lua_close(L);
    return 0;
  }
  if (lua_tointeger(L, -1) != 0)
    fuzz_fail("value %d differs after encode/decode", (int)lua_tointeger(L, -1));
  lua_close(L);
  return 0;
}
