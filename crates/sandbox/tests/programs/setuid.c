/* Privilege gains without a setuid binary. */
#include "attack.h"
#include <sys/prctl.h>

int main(void) {
    report("setuid 0", setuid(0));
    report("setresuid 0", setresuid(0, 0, 0));
    report("setgid 0", setgid(0));
    report("clear no_new_privs", prctl(PR_SET_NO_NEW_PRIVS, 0, 0, 0, 0));
    printf("no_new_privs: %d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    return 0;
}
