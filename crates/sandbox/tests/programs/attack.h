/* Shared helpers of the escape-test attack programs: every attempt prints one
 * line "<what>: OK" or "<what>: <ERRNO NAME>", which the tests compare
 * exactly. */
#ifndef ATTACK_H
#define ATTACK_H
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline const char *errname(int e) {
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

/* Prints the result of a call that returns -1 and sets errno on failure. */
static inline void report(const char *what, long rc) {
    if (rc == -1)
        printf("%s: %s\n", what, errname(errno));
    else
        printf("%s: OK\n", what);
    fflush(stdout);
}
#endif
