#define _GNU_SOURCE
#include "CNetNamespace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int parley_enter_network_namespace(const char *name) {
    char path[PATH_MAX];
    if (strchr(name, '/') != NULL) return EINVAL;
    if (snprintf(path, sizeof path, "/var/run/netns/%s", name) >= (int)sizeof path) return ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    // Network namespaces are per thread: only this thread (and sockets it opens) moves.
    int result = setns(fd, CLONE_NEWNET) == 0 ? 0 : errno;
    close(fd);
    return result;
}
