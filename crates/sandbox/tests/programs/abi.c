/* Foreign system call ABIs: "i386" calls getpid through int $0x80, "x32"
 * through the x32 bit. Both must kill the process with SIGSYS. */
#include "attack.h"
#include <sys/syscall.h>

int main(int argc, char **argv) {
    printf("before\n");
    fflush(stdout);
    long r = -1;
    if (argc > 1 && strcmp(argv[1], "i386") == 0) {
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    } else if (argc > 1 && strcmp(argv[1], "x32") == 0) {
        r = syscall(0x40000000L | SYS_getpid);
    }
    printf("survived: %ld\n", r);
    return 0;
}
