/* Fills each directory given as an argument with one file until a write
 * fails, and reports the error. */
#include "attack.h"
#include <fcntl.h>

int main(int argc, char **argv) {
    static char chunk[64 * 1024];
    memset(chunk, 'f', sizeof chunk);
    for (int i = 1; i < argc; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/fill", argv[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            printf("%s: open %s\n", argv[i], errname(errno));
            continue;
        }
        for (;;) {
            if (write(fd, chunk, sizeof chunk) < 0) {
                printf("%s: %s\n", argv[i], errname(errno));
                break;
            }
        }
        close(fd);
    }
    fflush(stdout);
    return 0;
}
