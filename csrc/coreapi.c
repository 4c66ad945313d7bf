/* coreapi.c — core.so's side of coreapi.h: the table of internal functions handed to
 * strand/sshcore.so through the registry (the two modules share no symbols). */
#include "coreapi.h"

const strand_core_api strand_core_api_table = {
  STRAND_CORE_ABI, STRAND_ABI_SUM, sizeof(strand_core_api),
#define STRAND_CORE_ENTRY(ret, name, params, args, r) name,
  STRAND_CORE_IMPORTS(STRAND_CORE_ENTRY)
#undef STRAND_CORE_ENTRY
};
