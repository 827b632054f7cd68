/* Reads of host files from inside a box. Each argument is a path to open
 * for reading; then the box's own environment is printed, sorted. */
#include "attack.h"
#include <fcntl.h>

extern char **environ;

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char what[300];
        snprintf(what, sizeof what, "read %s", argv[i]);
        int fd = open(argv[i], O_RDONLY);
        if (fd >= 0) {
            char buf[64];
            if (read(fd, buf, sizeof buf) < 0) {
                report(what, -1);
                close(fd);
                continue;
            }
            close(fd);
        }
        report(what, fd);
    }
    int n = 0;
    while (environ[n])
        n++;
    qsort(environ, n, sizeof *environ, cmp);
    printf("environ:");
    for (int i = 0; i < n; i++)
        printf(" %s", environ[i]);
    printf("\n");
    return 0;
}
