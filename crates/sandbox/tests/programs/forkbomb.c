/* Classic fork bomb: every process forks forever. The first process reports
 * the first failed fork once. */
#include "attack.h"

int main(void) {
    pid_t top = getpid();
    int reported = 0;
    for (;;) {
        pid_t p = fork();
        if (p < 0 && !reported && getpid() == top) {
            printf("fork: %s\n", errname(errno));
            fflush(stdout);
            reported = 1;
        }
    }
}
