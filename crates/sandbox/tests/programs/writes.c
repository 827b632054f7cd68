/* Writes outside the workspace: each argument is a path to open for
 * writing (creating it when missing); "mkdir:PATH" makes a directory. */
#include "attack.h"
#include <fcntl.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char what[300];
        if (strncmp(argv[i], "mkdir:", 6) == 0) {
            snprintf(what, sizeof what, "mkdir %s", argv[i] + 6);
            report(what, mkdir(argv[i] + 6, 0755));
            continue;
        }
        snprintf(what, sizeof what, "write %s", argv[i]);
        int fd = open(argv[i], O_WRONLY | O_CREAT, 0644);
        if (fd >= 0 && write(fd, "1", 1) < 0) {
            report(what, -1);
            close(fd);
            continue;
        }
        if (fd >= 0)
            close(fd);
        report(what, fd);
    }
    return 0;
}
