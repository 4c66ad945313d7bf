/* sftp.c — SFTP over a libssh2 session: the sftp object (path and directory operations) and
 * remote files (read/write/seek/stat, and the C copy loops behind sftp:get/put). */
#include "ssh.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sftp {
  ssh_child h;
  LIBSSH2_SFTP *sftp;          /* right after the header: ssh.c's sess_free shuts it down */
  ssh_lock lock;               /* every request of this SFTP session and of its files */
} sftp;

typedef struct rfile {
  ssh_child h;
  LIBSSH2_SFTP_HANDLE *hd;
  LIBSSH2_SFTP *sftp;
  char *buf;                   /* copy buffer of _pull/_push (allocated on first use) */
  size_t cap, off, len;        /* _push: bytes buf[off..len) read locally, not acknowledged yet */
  size_t inflight;             /* _push: the most bytes handed to libssh2 at once */
  int isdir;
  int readahead;               /* the last transfer on the handle was a read (see write_ready) */
} rfile;

#define SFTP_PULLBUF (1024 * 1024)       /* _pull's read size: libssh2 asks 4x that ahead */
#define SFTP_PUSHBUF (1024 * 1024)       /* _push's sliding buffer (see push_step) */
#define SFTP_WRITE_AHEAD (512 * 1024)    /* f:write's bytes in flight (push_step's best figure) */

static sftp *check_sftp(lua_State *L) {
  sftp *f = ssh_check(L, 1, SSH_SFTP_META);
  if (f->sftp == NULL) luaL_error(L, "attempt to use a closed sftp");
  return f;
}

static rfile *check_file(lua_State *L) {
  rfile *f = ssh_check(L, 1, SSH_FILE_META);
  if (f->hd == NULL) luaL_error(L, "attempt to use a closed sftp file");
  return f;
}

typedef struct fxmap { unsigned long fx; const char *msg, *code; } fxmap;
static const fxmap fxerrors[] = {
  { LIBSSH2_FX_EOF, "end of file", "EOF" },
  { LIBSSH2_FX_NO_SUCH_FILE, "no such file", "ENOENT" },
  { LIBSSH2_FX_PERMISSION_DENIED, "permission denied", "EACCES" },
  { LIBSSH2_FX_FAILURE, "failure", "EIO" },
  { LIBSSH2_FX_OP_UNSUPPORTED, "operation not supported", "ENOTSUP" },
  { LIBSSH2_FX_NO_SUCH_PATH, "no such file", "ENOENT" },
  { LIBSSH2_FX_FILE_ALREADY_EXISTS, "file exists", "EEXIST" },
  { LIBSSH2_FX_WRITE_PROTECT, "read-only file system", "EROFS" },
  { LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM, "no space left on device", "ENOSPC" },
  { LIBSSH2_FX_DIR_NOT_EMPTY, "directory not empty", "ENOTEMPTY" },
  { LIBSSH2_FX_NOT_A_DIRECTORY, "not a directory", "ENOTDIR" },
  { LIBSSH2_FX_INVALID_FILENAME, "invalid file name", "EINVAL" },
  { LIBSSH2_FX_LINK_LOOP, "too many levels of symbolic links", "ELOOP" },
  { 0, NULL, NULL }
};

static int sftp_fail(lua_State *L, ssh_sess *S, LIBSSH2_SFTP *sp, int rc) {
  if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL && sp) {
    unsigned long fx = libssh2_sftp_last_error(sp);
    for (const fxmap *e = fxerrors; e->msg; e++)
      if (e->fx == fx) return strand_fail_msg(L, e->msg, e->code);
    lua_pushnil(L);
    lua_pushfstring(L, "sftp error %d", (int)fx);
    lua_pushliteral(L, "ESFTP");
    return 3;
  }
  return ssh_fail(L, S, rc);
}

static const char *type_name(unsigned long perm) {
  switch (perm & LIBSSH2_SFTP_S_IFMT) {
    case LIBSSH2_SFTP_S_IFREG: return "file";
    case LIBSSH2_SFTP_S_IFDIR: return "dir";
    case LIBSSH2_SFTP_S_IFLNK: return "link";
    case LIBSSH2_SFTP_S_IFIFO: return "fifo";
    case LIBSSH2_SFTP_S_IFSOCK: return "socket";
    case LIBSSH2_SFTP_S_IFCHR: return "char";
    case LIBSSH2_SFTP_S_IFBLK: return "block";
    default: return "unknown";
  }
}

static void push_attrs(lua_State *L, const LIBSSH2_SFTP_ATTRIBUTES *a) {
  lua_createtable(L, 0, 7);
  if (a->flags & LIBSSH2_SFTP_ATTR_SIZE) {
    lua_pushinteger(L, (lua_Integer)a->filesize);
    lua_setfield(L, -2, "size");
  }
  if (a->flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) {
    lua_pushinteger(L, (lua_Integer)(a->permissions & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushstring(L, type_name(a->permissions));
    lua_setfield(L, -2, "type");
  }
  if (a->flags & LIBSSH2_SFTP_ATTR_UIDGID) {
    lua_pushinteger(L, (lua_Integer)a->uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)a->gid);
    lua_setfield(L, -2, "gid");
  }
  if (a->flags & LIBSSH2_SFTP_ATTR_ACMODTIME) {
    lua_pushinteger(L, (lua_Integer)a->mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)a->atime);
    lua_setfield(L, -2, "atime");
  }
}

static int sftp_closer(ssh_child *h) {
  sftp *f = (sftp *)h;
  if (f->sftp == NULL) return 0;
  int rc = libssh2_sftp_shutdown(f->sftp);
  if (rc == LIBSSH2_ERROR_EAGAIN) return rc;
  f->sftp = NULL;
  return 0;
}

static int file_closer(ssh_child *h) {
  rfile *r = (rfile *)h;
  if (r->hd) {
    int rc = libssh2_sftp_close_handle(r->hd);
    if (rc == LIBSSH2_ERROR_EAGAIN) return rc;
    r->hd = NULL;
  }
  free(r->buf);
  r->buf = NULL;
  return 0;
}

/* {==== session:sftp() */

static int init_step(lua_State *L, ssh_sess *S) {
  LIBSSH2_SFTP *sp = libssh2_sftp_init(S->s);
  if (sp == NULL) {
    int rc = libssh2_session_last_errno(S->s);
    if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    return ssh_fail(L, S, rc);
  }
  sftp *f = lua_touserdata(L, -2);
  f->sftp = sp;
  f->h.dead = 0;
  f->h.closer = sftp_closer;
  f->h.lock = &f->lock;
  lua_pushvalue(L, -2);
  return 1;
}

/* s:sftp([timeout]) -> sftp */
static int s_sftp(lua_State *L) {
  ssh_sess *S = ssh_check(L, 1, SSH_SESSION_META);
  lua_settop(L, 2);
  ssh_child_new(L, sizeof(sftp), 1, SSH_K_SFTP, SSH_SFTP_META);
  ssh_push_deadline(L, S, 2);
  return ssh_call(L, init_step);
}

const luaL_Reg ssh_session_sftp_methods[] = { { "sftp", s_sftp }, { NULL, NULL } };

/* }==== */

/* {==== path operations: (sftp, path [, arg [, arg]]) with the deadline on top */

static int stat_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t pl;
  const char *p = lua_tolstring(L, 2, &pl);
  int how = (int)lua_tointeger(L, 3);
  LIBSSH2_SFTP_ATTRIBUTES a;
  memset(&a, 0, sizeof a);
  if (how == LIBSSH2_SFTP_SETSTAT) {
    a.flags = LIBSSH2_SFTP_ATTR_PERMISSIONS;
    a.permissions = (unsigned long)lua_tointeger(L, 4);
  }
  int rc = libssh2_sftp_stat_ex(f->sftp, p, (unsigned)pl, how, &a);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return sftp_fail(L, S, f->sftp, rc);
  if (how == LIBSSH2_SFTP_SETSTAT) lua_pushboolean(L, 1);
  else push_attrs(L, &a);
  return 1;
}

/* Stack on entry: 1 sftp, 2 path, 3 (the `how` slot), 4 arg, 5 timeout. */
static int path_op(lua_State *L, int how, ssh_step step) {
  sftp *f = check_sftp(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 5);
  lua_pushinteger(L, how);
  lua_replace(L, 3);
  ssh_push_deadline(L, f->h.S, 5);
  return ssh_call(L, step);
}

/* (sftp, path [, timeout]) -> the path_op layout */
static int one_arg(lua_State *L, int how, ssh_step step) {
  lua_settop(L, 3);
  lua_pushnil(L);
  lua_insert(L, 3);
  lua_pushnil(L);
  lua_insert(L, 3);
  return path_op(L, how, step);
}

/* (sftp, path, arg [, timeout]) -> the path_op layout */
static int two_args(lua_State *L, int how, ssh_step step) {
  lua_settop(L, 4);
  lua_pushnil(L);
  lua_insert(L, 3);
  return path_op(L, how, step);
}

static int f_stat(lua_State *L) { return one_arg(L, LIBSSH2_SFTP_STAT, stat_step); }
static int f_lstat(lua_State *L) { return one_arg(L, LIBSSH2_SFTP_LSTAT, stat_step); }
static int f_chmod(lua_State *L) {
  luaL_checkinteger(L, 3);
  return two_args(L, LIBSSH2_SFTP_SETSTAT, stat_step);
}

static int simple_result(lua_State *L, ssh_sess *S, LIBSSH2_SFTP *sp, int rc) {
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return sftp_fail(L, S, sp, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int mkdir_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t pl;
  const char *p = lua_tolstring(L, 2, &pl);
  return simple_result(L, S, f->sftp, libssh2_sftp_mkdir_ex(f->sftp, p, (unsigned)pl,
                                                            (long)lua_tointeger(L, 4)));
}

static int f_mkdir(lua_State *L) {
  lua_Integer mode = luaL_optinteger(L, 3, 0755);
  lua_settop(L, 4);
  lua_pushinteger(L, mode);
  lua_replace(L, 3);
  return two_args(L, 0, mkdir_step);
}

static int rmdir_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t pl;
  const char *p = lua_tolstring(L, 2, &pl);
  return simple_result(L, S, f->sftp, libssh2_sftp_rmdir_ex(f->sftp, p, (unsigned)pl));
}

static int remove_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t pl;
  const char *p = lua_tolstring(L, 2, &pl);
  return simple_result(L, S, f->sftp, libssh2_sftp_unlink_ex(f->sftp, p, (unsigned)pl));
}

static int f_rmdir(lua_State *L) { return one_arg(L, 0, rmdir_step); }
static int f_remove(lua_State *L) { return one_arg(L, 0, remove_step); }

static int rename_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t al, bl;
  const char *a = lua_tolstring(L, 2, &al), *b = lua_tolstring(L, 4, &bl);
  return simple_result(L, S, f->sftp, libssh2_sftp_rename_ex(f->sftp, a, (unsigned)al, b,
      (unsigned)bl, LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC |
      LIBSSH2_SFTP_RENAME_NATIVE));
}

static int symlink_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t al, bl;
  /* sftp:symlink(target, linkpath): libssh2 sends its `path` first, and OpenSSH's server reads
   * the first as the link's target (the long-standing argument swap), so target goes as path */
  const char *a = lua_tolstring(L, 2, &al), *b = lua_tolstring(L, 4, &bl);
  int rc = libssh2_sftp_symlink_ex(f->sftp, a, (unsigned)al, (char *)b, (unsigned)bl,
                                   LIBSSH2_SFTP_SYMLINK);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc == 0 || rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {   /* a STATUS reply: see link_step */
    lua_pushboolean(L, 0);
    return 1;
  }
  return sftp_fail(L, S, f->sftp, rc);
}

static int f_rename(lua_State *L) { luaL_checkstring(L, 3); return two_args(L, 0, rename_step); }
static int f_symlink(lua_State *L) { luaL_checkstring(L, 3); return two_args(L, 0, symlink_step); }

static int link_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t pl;
  const char *p = lua_tolstring(L, 2, &pl);
  char buf[4096];
  int rc = libssh2_sftp_symlink_ex(f->sftp, p, (unsigned)pl, buf, sizeof buf,
                                   (int)lua_tointeger(L, 3));
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  /* libssh2 1.10's sftp_symlink (SYMLINK, READLINK, REALPATH) takes a STATUS reply's request id
   * for its status code: a refusal comes back as success with no name when the id is 0, else as
   * LIBSSH2_ERROR_SFTP_PROTOCOL with the id as the "last error", and a SYMLINK carried out as a
   * failure. Either way a STATUS arrived and its code is unknown: `false`, and the Lua side asks
   * the server with (l)stat what the matter is (lua/strand/ssh.lua). A name is never empty. */
  if (rc == 0 || rc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc < 0) return sftp_fail(L, S, f->sftp, rc);
  lua_pushlstring(L, buf, (size_t)rc);
  return 1;
}

static int f_readlink(lua_State *L) { return one_arg(L, LIBSSH2_SFTP_READLINK, link_step); }
static int f_realpath(lua_State *L) { return one_arg(L, LIBSSH2_SFTP_REALPATH, link_step); }

/* }==== */

/* {==== opening files and directories: the new rfile sits under the deadline */

static int open_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  size_t pl;
  const char *p = lua_tolstring(L, 2, &pl);
  rfile *r = lua_touserdata(L, -2);
  LIBSSH2_SFTP_HANDLE *hd = libssh2_sftp_open_ex(f->sftp, p, (unsigned)pl,
      (unsigned long)lua_tointeger(L, 3), (long)lua_tointeger(L, 4),
      r->isdir ? LIBSSH2_SFTP_OPENDIR : LIBSSH2_SFTP_OPENFILE);
  if (hd == NULL) {
    int rc = libssh2_session_last_errno(S->s);
    if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
    return sftp_fail(L, S, f->sftp, rc);
  }
  r->hd = hd;
  r->sftp = f->sftp;
  r->h.dead = 0;
  r->h.closer = file_closer;
  r->h.lock = &f->lock;        /* f outlives r: it is r's uservalue */
  lua_pushvalue(L, -2);
  return 1;
}

static unsigned long open_flags(lua_State *L, const char *mode) {
  unsigned long fl;
  switch (mode[0]) {
    case 'r': fl = LIBSSH2_FXF_READ; break;
    case 'w': fl = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC; break;
    case 'a': fl = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_APPEND; break;
    case 'x': fl = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_EXCL; break;   /* Python's */
    default: luaL_argerror(L, 3, "invalid mode"); return 0;
  }
  const char *rest = mode + 1;
  if (*rest == 'b') rest++;
  if (*rest == '+') { fl |= LIBSSH2_FXF_READ | LIBSSH2_FXF_WRITE; rest++; }
  if (*rest == 'b') rest++;
  if (*rest == 'x') { fl |= LIBSSH2_FXF_EXCL; rest++; }
  if (*rest) luaL_argerror(L, 3, "invalid mode");
  return fl;
}

/* sftp:open(path [, mode [, perms [, timeout]]]) -> file; mode as io.open ("r", "w", "a", "r+",
 * "w+", "a+"; "b" ignored; "x" appended, or alone as Python's "x": fail if it exists) */
static int f_open(lua_State *L) {
  sftp *f = check_sftp(L);
  luaL_checkstring(L, 2);
  unsigned long fl = open_flags(L, luaL_optstring(L, 3, "r"));
  lua_Integer perms = luaL_optinteger(L, 4, 0644);
  lua_settop(L, 5);
  lua_pushinteger(L, (lua_Integer)fl);
  lua_replace(L, 3);
  lua_pushinteger(L, perms);
  lua_replace(L, 4);
  ssh_child_new(L, sizeof(rfile), 1, SSH_K_FILE, SSH_FILE_META);
  ssh_push_deadline(L, f->h.S, 5);
  return ssh_call(L, open_step);
}

static int f_opendir(lua_State *L) {
  sftp *f = check_sftp(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  lua_pushinteger(L, 0);
  lua_insert(L, 3);
  lua_pushinteger(L, 0);
  lua_insert(L, 4);    /* 1 sftp, 2 path, 3 flags, 4 perms, 5 timeout */
  rfile *r = ssh_child_new(L, sizeof(rfile), 1, SSH_K_FILE, SSH_FILE_META);
  r->isdir = 1;
  ssh_push_deadline(L, f->h.S, 5);
  return ssh_call(L, open_step);
}

/* }==== */

/* {==== files */

static void rfile_release(rfile *r) {
  if (r->hd && !r->h.dead) (void)libssh2_sftp_close_handle(r->hd);
  r->hd = NULL;
  ssh_child_unlink(&r->h);   /* also a dead one: a failed open leaves its child linked */
  r->h.dead = 1;
  free(r->buf);
  r->buf = NULL;
}

static int r_gc(lua_State *L) {
  rfile_release(luaL_checkudata(L, 1, SSH_FILE_META));
  return 0;
}

static int fclose_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  int rc = libssh2_sftp_close_handle(r->hd);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  r->hd = NULL;
  rfile_release(r);
  if (rc) return sftp_fail(L, S, r->sftp, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* f:close() -> true (idempotent) */
static int r_close(lua_State *L) {
  rfile *r = luaL_checkudata(L, 1, SSH_FILE_META);
  if (r->hd == NULL || r->h.dead || r->h.S->s == NULL) {
    rfile_release(r);
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  ssh_push_deadline(L, r->h.S, 2);
  return ssh_call(L, fclose_step);
}

static int fread_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  char *buf = strand_loop_scratch(strand_loop_get(L));
  r->readahead = 1;
  ssize_t n = libssh2_sftp_read(r->hd, buf, (size_t)lua_tointeger(L, 2));
  if (n == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (n < 0) return sftp_fail(L, S, r->sftp, (int)n);
  if (n == 0) { lua_pushnil(L); return 1; }
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* f:_read(max [, timeout]) -> up to max bytes | nil at the end */
static int r_read(lua_State *L) {
  rfile *r = check_file(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n > 0, 2, "must be positive");
  if (n > STRAND_SCRATCH) n = STRAND_SCRATCH;
  lua_settop(L, 3);
  lua_pushinteger(L, n);
  lua_replace(L, 2);
  ssh_push_deadline(L, r->h.S, 3);
  return ssh_call(L, fread_step);
}

/* libssh2 1.10 counts the read-ahead requests of a read as data sent: a write after a read on
 * the same handle has "nothing left to send" and returns 0 for ever. A seek to the position
 * (libssh2's tell: what was read) drops the read-ahead, as C's stdio wants a seek between a read
 * and a write; the file position stays where the reads left it. */
static void write_ready(rfile *r) {
  if (!r->readahead) return;
  libssh2_sftp_seek64(r->hd, libssh2_sftp_tell64(r->hd));
  r->readahead = 0;
}

static int fwrite_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  size_t len;
  const char *d = lua_tolstring(L, 2, &len);
  size_t off = (size_t)lua_tointeger(L, 3), turn = off;
  write_ready(r);
  while (off < len) {
    if (off - turn >= SSH_TURN_BYTES) {   /* a long write: the others' turn first */
      lua_pushinteger(L, (lua_Integer)off);
      lua_replace(L, 3);
      return SSH_YIELD;
    }
    /* at most SFTP_WRITE_AHEAD handed to libssh2 at once: it sends all it is given (up to the
     * channel's window), which then drains whatever this task does meanwhile (push_step) */
    size_t give = len - off < SFTP_WRITE_AHEAD ? len - off : SFTP_WRITE_AHEAD;
    ssize_t n = libssh2_sftp_write(r->hd, d + off, give);
    /* 0: nothing acknowledged yet while the first piece waits for the window (see push_step):
     * wait, as for EAGAIN (calling again at once looped here without end) */
    if (n == LIBSSH2_ERROR_EAGAIN || n == 0) {
      lua_pushinteger(L, (lua_Integer)off);
      lua_replace(L, 3);
      return SSH_AGAIN;
    }
    if (n < 0) return sftp_fail(L, S, r->sftp, (int)n);
    off += (size_t)n;
  }
  lua_pushvalue(L, 1);
  return 1;
}

/* f:write(data [, timeout]) -> f | nil, err */
static int r_write(lua_State *L) {
  rfile *r = check_file(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  ssh_push_deadline(L, r->h.S, 3);
  lua_pushinteger(L, 0);
  lua_replace(L, 3);
  return ssh_call(L, fwrite_step);
}

static int fstat_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  LIBSSH2_SFTP_ATTRIBUTES a;
  memset(&a, 0, sizeof a);
  int rc = libssh2_sftp_fstat_ex(r->hd, &a, 0);
  if (rc == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (rc) return sftp_fail(L, S, r->sftp, rc);
  push_attrs(L, &a);
  return 1;
}

static int r_stat(lua_State *L) {
  rfile *r = check_file(L);
  lua_settop(L, 2);
  ssh_push_deadline(L, r->h.S, 2);
  return ssh_call(L, fstat_step);
}

static int r_seekto(lua_State *L) {
  rfile *r = check_file(L);
  lua_Integer pos = luaL_checkinteger(L, 2);
  luaL_argcheck(L, pos >= 0, 2, "position must be >= 0");
  libssh2_sftp_seek64(r->hd, (libssh2_uint64_t)pos);
  r->readahead = 0;
  lua_pushinteger(L, pos);
  return 1;
}

static int r_tell(lua_State *L) {
  rfile *r = check_file(L);
  lua_pushinteger(L, (lua_Integer)libssh2_sftp_tell64(r->hd));
  return 1;
}

static int readdir_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  char name[1024];
  LIBSSH2_SFTP_ATTRIBUTES a;
  memset(&a, 0, sizeof a);
  int n = libssh2_sftp_readdir_ex(r->hd, name, sizeof name, NULL, 0, &a);
  if (n == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  if (n < 0) return sftp_fail(L, S, r->sftp, n);
  if (n == 0) { lua_pushnil(L); return 1; }
  lua_pushlstring(L, name, (size_t)n);
  push_attrs(L, &a);
  return 2;
}

/* d:_readdir([timeout]) -> name, attrs | nil at the end */
static int r_readdir(lua_State *L) {
  rfile *r = check_file(L);
  lua_settop(L, 2);
  ssh_push_deadline(L, r->h.S, 2);
  return ssh_call(L, readdir_step);
}

static FILE *check_lfile(lua_State *L, int idx) {
  luaL_Stream *p = luaL_checkudata(L, idx, LUA_FILEHANDLE);
  if (p->closef == NULL || p->f == NULL) luaL_argerror(L, idx, "closed file");
  return p->f;
}

static int ensure_buf(lua_State *L, rfile *r, size_t cap) {
  if (r->buf && r->cap == cap) return 0;
  free(r->buf);
  r->off = r->len = 0;
  r->buf = malloc(cap);
  if (r->buf == NULL) { r->cap = 0; return strand_fail(L, ENOMEM); }
  r->cap = cap;
  return 0;
}

/* remote -> local: copies until `limit` bytes moved (or the end); pushes the count (0 at end) */
static int pull_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  FILE *out = check_lfile(L, 2);
  lua_Integer limit = lua_tointeger(L, 3), done = lua_tointeger(L, 4), turn = done;
  for (;;) {
    if (done - turn >= SSH_TURN_BYTES) {  /* the data keeps coming: the others' turn first */
      lua_pushinteger(L, done);
      lua_replace(L, 4);
      return SSH_YIELD;
    }
    r->readahead = 1;
    ssize_t n = libssh2_sftp_read(r->hd, r->buf, r->cap);
    if (n == LIBSSH2_ERROR_EAGAIN) {
      lua_pushinteger(L, done);
      lua_replace(L, 4);
      return SSH_AGAIN;
    }
    if (n < 0) return sftp_fail(L, S, r->sftp, (int)n);
    if (n == 0) break;
    if (fwrite(r->buf, 1, (size_t)n, out) != (size_t)n) return strand_fail(L, errno ? errno : EIO);
    done += n;
    if (done >= limit) break;
  }
  lua_pushinteger(L, done);
  return 1;
}

/* f:_pull(luafile, limit [, timeout]) and f:_push(luafile, limit [, timeout]): check the
 * arguments, lay out the stack (1 f, 2 file, 3 limit, 4 done, 5 deadline) and run the copy step */
static int copy_call(lua_State *L, ssh_step step, size_t cap) {
  rfile *r = check_file(L);
  check_lfile(L, 2);
  luaL_checkinteger(L, 3);
  lua_settop(L, 4);
  if (ensure_buf(L, r, cap)) return 3;
  ssh_push_deadline(L, r->h.S, 4);
  lua_pushinteger(L, 0);
  lua_replace(L, 4);
  return ssh_call(L, step);
}

/* f:_pull(luafile, limit [, timeout]) -> bytes copied this call (0: the remote file ended) */
static int r_pull(lua_State *L) { return copy_call(L, pull_step, SFTP_PULLBUF); }

/* local -> remote: copies until `limit` bytes acknowledged (or the local end); pushes the count.
 * libssh2 1.10 sends every 30000-byte piece of the buffer it is given at once, then reports one
 * acknowledged piece per call and wants the same bytes again from the first unacknowledged one;
 * it queues nothing beyond the end of that buffer. With a fixed buffer refilled only once all of
 * it is acknowledged, the requests in flight fall to none at the end of each buffer. So the buffer
 * slides (once half of it is acknowledged, the rest moves to the front and the file fills it up)
 * and libssh2 is always given `inflight` bytes: a steady pipeline. `inflight` is a quarter of the
 * server's channel window (512 KiB against OpenSSH), at most half the buffer: at the window
 * libssh2 returns EAGAIN from the send without looking at the acknowledgements it has decoded,
 * and the pipeline stalls until the server opens the window again (measured here: 2-4 MiB in
 * flight ran at half the speed; 256 KiB-1 MiB alike, 512 KiB best). */
static int push_step(lua_State *L, ssh_sess *S) {
  rfile *r = lua_touserdata(L, 1);
  FILE *in = check_lfile(L, 2);
  lua_Integer limit = lua_tointeger(L, 3), done = lua_tointeger(L, 4), turn = done;
  write_ready(r);
  if (r->inflight == 0) {
    /* the window now (the initial size libssh2 1.10 reports for an SFTP channel is 0) */
    unsigned long window = 0, initial = 0;
    LIBSSH2_CHANNEL *ch = libssh2_sftp_get_channel(r->sftp);
    if (ch) window = libssh2_channel_window_write_ex(ch, &initial);
    if (initial > window) window = initial;
    r->inflight = window / 4;
    if (r->inflight > r->cap / 2) r->inflight = r->cap / 2;
    if (r->inflight < 32768) r->inflight = 32768;
  }
  for (;;) {
    if (done - turn >= SSH_TURN_BYTES) {  /* acknowledgements keep coming: the others' turn */
      lua_pushinteger(L, done);
      lua_replace(L, 4);
      return SSH_YIELD;
    }
    if (r->off >= r->cap / 2) {
      memmove(r->buf, r->buf + r->off, r->len - r->off);
      r->len -= r->off;
      r->off = 0;
    }
    if (r->len < r->cap && !feof(in)) {
      size_t n = fread(r->buf + r->len, 1, r->cap - r->len, in);
      if (n == 0 && ferror(in)) return strand_fail(L, errno ? errno : EIO);
      r->len += n;
    }
    if (r->off == r->len) break;          /* everything read is acknowledged: the local end */
    size_t give = r->len - r->off;
    if (give > r->inflight) give = r->inflight;
    ssize_t n = libssh2_sftp_write(r->hd, r->buf + r->off, give);
    /* 0: nothing acknowledged yet while the first piece waits for the server's window (no
     * EAGAIN from the socket): waiting is right, calling again at once would spin */
    if (n == LIBSSH2_ERROR_EAGAIN || n == 0) {
      lua_pushinteger(L, done);
      lua_replace(L, 4);
      return SSH_AGAIN;
    }
    if (n < 0) return sftp_fail(L, S, r->sftp, (int)n);
    r->off += (size_t)n;
    done += n;
    if (done >= limit) break;
  }
  lua_pushinteger(L, done);
  return 1;
}

/* f:_push(luafile, limit [, timeout]) -> bytes written this call (0: the local file ended) */
static int r_push(lua_State *L) { return copy_call(L, push_step, SFTP_PUSHBUF); }

static int r_tostring(lua_State *L) {
  rfile *r = luaL_checkudata(L, 1, SSH_FILE_META);
  lua_pushfstring(L, "sftp file (%s)", r->hd && !r->h.dead ? "open" : "closed");
  return 1;
}

/* }==== */

static int sftp_gc(lua_State *L) {
  sftp *f = luaL_checkudata(L, 1, SSH_SFTP_META);
  ssh_lock_close(&f->lock);
  if (f->sftp && !f->h.dead) (void)libssh2_sftp_shutdown(f->sftp);
  f->sftp = NULL;
  ssh_child_unlink(&f->h);   /* also a dead one: a failed init leaves its child linked */
  f->h.dead = 1;
  return 0;
}

static int shutdown_step(lua_State *L, ssh_sess *S) {
  sftp *f = lua_touserdata(L, 1);
  /* its files first (their handles belong to it), each closed cooperatively */
  for (ssh_child *c = S->children; c; ) {
    ssh_child *next = c->next;
    if (c->kind == SSH_K_FILE && !c->dead && ((rfile *)c)->sftp == f->sftp) {
      if (file_closer(c) == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
      c->dead = 1;
      ssh_child_unlink(c);
    }
    c = next;
  }
  if (sftp_closer(&f->h) == LIBSSH2_ERROR_EAGAIN) return SSH_AGAIN;
  ssh_child_unlink(&f->h);
  f->h.dead = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* sftp:close() -> true (idempotent; files still open are closed with it; bounded: 2 s) */
static int f_close(lua_State *L) {
  sftp *f = luaL_checkudata(L, 1, SSH_SFTP_META);
  if (f->sftp == NULL || f->h.dead || f->h.S->s == NULL) {
    f->sftp = NULL;
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, strand_now() + 2.0);
  return ssh_call(L, shutdown_step);
}

static const luaL_Reg sftp_methods[] = {
  { "open", f_open }, { "_opendir", f_opendir }, { "stat", f_stat }, { "lstat", f_lstat },
  { "chmod", f_chmod }, { "mkdir", f_mkdir }, { "rmdir", f_rmdir }, { "remove", f_remove },
  { "rename", f_rename }, { "_symlink", f_symlink }, { "_readlink", f_readlink },
  { "_realpath", f_realpath }, { "close", f_close }, { NULL, NULL }
};

static const luaL_Reg file_methods[] = {
  { "_read", r_read }, { "write", r_write }, { "stat", r_stat }, { "_seekto", r_seekto },
  { "_tell", r_tell }, { "_readdir", r_readdir }, { "_pull", r_pull }, { "_push", r_push },
  { "close", r_close }, { NULL, NULL }
};

static void newmeta(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                    lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  luaL_setfuncs(L, ssh_lock_methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__close");
  if (tostring) {
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

void ssh_open_sftp(lua_State *L) {
  newmeta(L, SSH_SFTP_META, sftp_methods, sftp_gc, NULL);
  newmeta(L, SSH_FILE_META, file_methods, r_gc, r_tostring);
}
