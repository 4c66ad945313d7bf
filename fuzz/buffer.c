/* fuzz/buffer.c — libFuzzer target for csrc/buffer.c (Lua-free): random appends, consumes and
 * finds on a strand_buf against a flat model; the buffer must hold exactly the model's bytes,
 * find what memchr finds, and hold no memory once empty.
 * needs: csrc/buffer.c */
#include "sock.h"

#include <stdlib.h>
#include <string.h>

#define MODEL_MAX (1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char model[MODEL_MAX];
  size_t mlen = 0, i = 0;
  strand_buf b;
  strand_buf_init(&b);
  while (i + 2 <= size) {
    unsigned op = data[i] % 4, arg = data[i + 1];
    i += 2;
    if (op == 0 || op == 1) {                          /* append arg (x16 for op 1) bytes */
      size_t n = op == 0 ? arg : (size_t)arg * 16 + 1;
      if (mlen + n > MODEL_MAX) n = MODEL_MAX - mlen;
      char chunk[256 * 16 + 1];
      for (size_t k = 0; k < n; k++) chunk[k] = (char)(i + k < size ? data[(i + k) % size] : k);
      if (strand_buf_append(&b, chunk, n) != 0) abort();
      memcpy(model + mlen, chunk, n);
      mlen += n;
    } else if (op == 2) {                              /* consume arg (x8) bytes */
      size_t n = (size_t)arg * 8;
      if (n > mlen) n = mlen;
      strand_buf_consume(&b, n);
      memmove(model, model + n, mlen - n);
      mlen -= n;
    } else {                                           /* find byte arg from a position */
      size_t from = i < size ? data[i] * (mlen / 256 + 1) : 0;
      ptrdiff_t got = strand_buf_find(&b, (char)arg, from);
      ptrdiff_t want = -1;
      if (from < mlen) {
        const char *q = (const char *)memchr(model + from, (char)arg, mlen - from);
        if (q) want = q - model;
      }
      if (got != want) abort();
    }
    if (strand_buf_len(&b) != mlen) abort();
    if (mlen && memcmp(strand_buf_peek(&b), model, mlen) != 0) abort();
    if (mlen == 0 && b.blk != NULL) abort();           /* empty: no memory held */
    if (b.blk && b.blk->head + b.blk->len > b.blk->cap) abort();
  }
  strand_buf_free(&b);
  return 0;
}
