/* Writes to stdout (or stderr with "stderr") forever. */
#include "attack.h"

int main(int argc, char **argv) {
    int fd = (argc > 1 && strcmp(argv[1], "stderr") == 0) ? 2 : 1;
    static char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    for (;;) {
        if (write(fd, chunk, sizeof chunk) < 0)
            return 1;
    }
}
