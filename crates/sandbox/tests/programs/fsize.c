/* Writes past RLIMIT_FSIZE. With "ignore", SIGXFSZ is ignored and the
 * failing write is reported with the number of bytes written. */
#include "attack.h"
#include <fcntl.h>
#include <signal.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "ignore") == 0)
        signal(SIGXFSZ, SIG_IGN);
    static char chunk[4096];
    int fd = open("/box/big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        report("open", -1);
        return 1;
    }
    long total = 0;
    for (;;) {
        ssize_t n = write(fd, chunk, sizeof chunk);
        if (n < 0) {
            printf("write: %s after %ld bytes\n", errname(errno), total);
            return 0;
        }
        total += n;
    }
}
