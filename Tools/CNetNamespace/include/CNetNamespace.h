// Enter a named network namespace (ip netns) on the calling thread: what the NAT lab needs and
// Swift's Glibc does not export (setns and CLONE_NEWNET need _GNU_SOURCE).
#ifndef PARLEY_CNETNAMESPACE_H
#define PARLEY_CNETNAMESPACE_H

/// Moves the calling thread into /var/run/netns/`name`. Returns 0, or an errno value.
int parley_enter_network_namespace(const char *name);

#endif
