/* fuzz/selector.c — libFuzzer target for selectors (csrc/selector.c) through the Lua API:
 * register/modify/unregister/get_key/select sequences against a model, on every backend.
 * needs: csrc/selector.c   (the checks are in fuzz/selector.lua) */
#define TARGET_SCRIPT "fuzz/selector.lua"
#include "lua_target.h"
