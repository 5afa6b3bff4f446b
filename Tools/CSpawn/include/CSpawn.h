#ifndef PARLEY_CSPAWN_H
#define PARLEY_CSPAWN_H

#include <spawn.h>

/// posix_spawn_file_actions_addclosefrom_np (glibc ≥ 2.34), which spawn.h declares only under
/// _GNU_SOURCE, so Swift's Glibc module cannot see it: the spawned program inherits no descriptor
/// from `from` up. Returns 0 or an errno value.
int parley_spawn_close_from(posix_spawn_file_actions_t *actions, int from);

#endif
