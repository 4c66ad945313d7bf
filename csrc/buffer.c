/* buffer.c — a Lua-free growable FIFO of bytes for buffered socket reads (lines, counts,
 * frames): append at the tail, find/consume at the head; no memory held while empty. */
#include "sock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN 512

void strand_buf_init(strand_buf *b) {
  memset(b, 0, sizeof *b);
}

void strand_buf_free(strand_buf *b) {
  free(b->data);
  strand_buf_init(b);
}

int strand_buf_append(strand_buf *b, const char *p, size_t n) {
  if (n == 0) return 0;
  size_t need = b->len + n;
  if (need < b->len) return ENOMEM;                     /* overflow */
  if (b->head + need > b->cap) {
    if (need <= b->cap) {                                /* room enough: slide to the front */
      memmove(b->data, b->data + b->head, b->len);
      b->head = 0;
    } else {
      size_t cap = b->cap ? b->cap : BUF_MIN;
      while (cap < need) {
        if (cap > ((size_t)-1) / 2) { cap = need; break; }
        cap *= 2;
      }
      if (b->head > 0) {
        memmove(b->data, b->data + b->head, b->len);
        b->head = 0;
      }
      char *d = (char *)realloc(b->data, cap);
      if (d == NULL) return ENOMEM;
      b->data = d;
      b->cap = cap;
    }
  }
  memcpy(b->data + b->head + b->len, p, n);
  b->len += n;
  return 0;
}

void strand_buf_consume(strand_buf *b, size_t n) {
  if (n >= b->len) {                  /* empty: give the memory back (idle sockets hold none) */
    strand_buf_free(b);
    return;
  }
  b->head += n;
  b->len -= n;
}

ptrdiff_t strand_buf_find(const strand_buf *b, char c, size_t from) {
  if (from >= b->len) return -1;
  const char *p = strand_buf_peek(b);
  const char *q = (const char *)memchr(p + from, c, b->len - from);
  return q ? q - p : -1;
}
