/* buffer.c — a Lua-free growable FIFO of bytes for buffered socket reads (lines, counts,
 * frames): append at the tail, find/consume at the head. The bookkeeping lives in the same
 * allocation as the bytes, and an empty buffer holds no memory (one NULL pointer). */
#include "sock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN 512

void strand_buf_init(strand_buf *b) {
  b->blk = NULL;
}

void strand_buf_free(strand_buf *b) {
  free(b->blk);
  b->blk = NULL;
}

int strand_buf_append(strand_buf *b, const char *p, size_t n) {
  if (n == 0) return 0;
  strand_bufblk *k = b->blk;
  size_t len = k ? k->len : 0, head = k ? k->head : 0, cap = k ? k->cap : 0;
  size_t need = len + n;
  if (need < len) return ENOMEM;                        /* overflow */
  if (head + need > cap) {
    if (k != NULL && need <= cap) {                     /* room enough: slide to the front */
      memmove(k->data, k->data + head, len);
      k->head = 0;
    } else {
      size_t ncap = cap ? cap : BUF_MIN;
      while (ncap < need) {
        if (ncap > ((size_t)-1) / 2) { ncap = need; break; }
        ncap *= 2;
      }
      if (ncap > (size_t)-1 - sizeof *k) return ENOMEM;
      if (k != NULL && head > 0) {
        memmove(k->data, k->data + head, len);
        k->head = 0;
      }
      strand_bufblk *d = (strand_bufblk *)realloc(k, sizeof *k + ncap);
      if (d == NULL) return ENOMEM;
      if (k == NULL) d->head = d->len = d->scanned = 0;
      d->cap = ncap;
      b->blk = k = d;
    }
  }
  memcpy(k->data + k->head + k->len, p, n);
  k->len += n;
  return 0;
}

void strand_buf_consume(strand_buf *b, size_t n) {
  strand_bufblk *k = b->blk;
  if (k == NULL) return;
  if (n >= k->len) {                  /* empty: give the memory back (idle sockets hold none) */
    strand_buf_free(b);
    return;
  }
  k->head += n;
  k->len -= n;
  k->scanned = 0;
}

ptrdiff_t strand_buf_find(const strand_buf *b, char c, size_t from) {
  const strand_bufblk *k = b->blk;
  if (k == NULL || from >= k->len) return -1;
  const char *p = k->data + k->head;
  const char *q = (const char *)memchr(p + from, c, k->len - from);
  return q ? q - p : -1;
}
