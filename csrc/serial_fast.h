/* serial_fast.h — serial.c's plain integers read and written inline, for the per-item loops of
 * serial.c and poollink.c (a pool worker's map chunk); every other value goes the long way. */
#ifndef STRAND_SERIAL_FAST_H
#define STRAND_SERIAL_FAST_H

#include <stdint.h>
#include <lua.h>

/* serial.c's tags (checked there): an integer 0..63 in the tag itself, else INT + zigzag varint */
#define SERF_INT 3
#define SERF_SMALLINT 0xc0

/* The integer at *pp (p < end) if it is one in at most 3 varint bytes: *v set, *pp moved on, 1;
 * else 0 (nothing read). */
static inline int serf_get_int(const unsigned char **pp, const unsigned char *end, lua_Integer *v) {
  const unsigned char *p = *pp;
  unsigned tag = *p;
  if (tag >= SERF_SMALLINT) { *v = (lua_Integer)(tag - SERF_SMALLINT); *pp = p + 1; return 1; }
  if (tag != SERF_INT || end - p < 4) return 0;
  uint64_t b0 = p[1], b1 = p[2], b2 = p[3], z;
  if (b0 < 0x80) { z = b0; p += 2; }
  else if (b1 < 0x80) { z = (b0 & 0x7f) | b1 << 7; p += 3; }
  else if (b2 < 0x80) { z = (b0 & 0x7f) | (b1 & 0x7f) << 7 | b2 << 14; p += 4; }
  else return 0;
  *v = (lua_Integer)((z >> 1) ^ (0 - (z & 1)));
  *pp = p;
  return 1;
}

/* An integer written to o (room for 11 bytes); the bytes written. */
static inline size_t serf_put_int(unsigned char *o, lua_Integer v) {
  uint64_t u = (uint64_t)v;
  if (u < 64) { o[0] = (unsigned char)(SERF_SMALLINT + u); return 1; }
  o[0] = SERF_INT;
  u = (u << 1) ^ (0 - (u >> 63));
  if (u < 0x4000) {                       /* 1 or 2 bytes, 3 bytes: without a loop */
    if (u < 0x80) { o[1] = (unsigned char)u; return 2; }
    o[1] = (unsigned char)(u | 0x80); o[2] = (unsigned char)(u >> 7);
    return 3;
  }
  if (u < 0x200000) {
    o[1] = (unsigned char)(u | 0x80); o[2] = (unsigned char)((u >> 7) | 0x80);
    o[3] = (unsigned char)(u >> 14);
    return 4;
  }
  size_t n = 1;
  while (u >= 0x80) { o[n++] = (unsigned char)(u | 0x80); u >>= 7; }
  o[n++] = (unsigned char)u;
  return n;
}

#endif
