/* fuzz/reader.c — libFuzzer target for the buffered socket reader (csrc/sockio.c over
 * csrc/buffer.c): every read pattern and frames over random segmentation, against a model.
 * needs: csrc/sockio.c   (the checks are in fuzz/reader.lua) */
#define TARGET_SCRIPT "fuzz/reader.lua"
#include "lua_target.h"
