/* Double fork + setsid: the grandchild ignores hang-up and termination and
 * sleeps, keeping stdout open; the payload itself exits at once. */
#include "attack.h"
#include <signal.h>
#include <sys/wait.h>

int main(void) {
    pid_t p = fork();
    if (p < 0) {
        report("fork", -1);
        return 1;
    }
    if (p == 0) {
        setsid();
        if (fork() == 0) {
            signal(SIGHUP, SIG_IGN);
            signal(SIGTERM, SIG_IGN);
            for (;;)
                sleep(1000);
        }
        _exit(0);
    }
    waitpid(p, NULL, 0);
    printf("daemonized\n");
    return 0;
}
