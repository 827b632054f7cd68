/* Lists the open descriptors (except the one used for listing) and where
 * the standard ones lead. */
#include "attack.h"
#include <dirent.h>

int main(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        report("opendir", -1);
        return 1;
    }
    int self = dirfd(d), fds[64], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.' && atoi(e->d_name) != self)
            fds[n++] = atoi(e->d_name);
    closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (fds[j] < fds[i]) {
                int t = fds[i];
                fds[i] = fds[j];
                fds[j] = t;
            }
    printf("fds:");
    for (int i = 0; i < n; i++)
        printf(" %d", fds[i]);
    printf("\n");
    for (int fd = 0; fd < 3; fd++) {
        char path[32], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        target[len < 0 ? 0 : len] = 0;
        if (strncmp(target, "pipe:", 5) == 0)
            target[4] = 0;
        printf("%d -> %s\n", fd, target);
    }
    return 0;
}
