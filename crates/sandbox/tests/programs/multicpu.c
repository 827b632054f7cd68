/* Four children each burn 0.3 s of their own CPU time; the parent waits. */
#include "attack.h"
#include <sys/wait.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
    for (int i = 0; i < 4; i++) {
        pid_t p = fork();
        if (p < 0) {
            report("fork", -1);
            return 1;
        }
        if (p == 0) {
            while (cpu_seconds() < 0.3)
                __asm__ volatile("" ::: "memory");
            _exit(0);
        }
    }
    int done = 0, status;
    while (wait(&status) > 0)
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            done++;
    printf("children: %d\n", done);
    return 0;
}
