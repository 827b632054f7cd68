/* Tries to re-enable core dumps, then aborts. */
#include "attack.h"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int main(void) {
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    report("setrlimit core", setrlimit(RLIMIT_CORE, &unlimited));
    report("prctl dumpable", prctl(PR_SET_DUMPABLE, 1, 0, 0, 0));
    abort();
}
