/* What /dev offers: the sorted listing, device nodes that must not exist,
 * and mknod. */
#include "attack.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    DIR *d = opendir("/dev");
    char *names[128];
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 128)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    qsort(names, n, sizeof *names, cmp);
    printf("/dev:");
    for (int i = 0; i < n; i++)
        printf(" %s", names[i]);
    printf("\n");
    const char *absent[] = {"/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda",
                            "/dev/console", "/dev/fuse", "/dev/net/tun", "/dev/userfaultfd"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) {
        char what[64];
        snprintf(what, sizeof what, "open %s", absent[i]);
        report(what, open(absent[i], O_RDWR));
    }
    report("open /dev/tty", open("/dev/tty", O_RDWR));
    report("mknod /tmp/mem", mknod("/tmp/mem", S_IFCHR | 0666, makedev(1, 1)));
    report("mknod /box/sda", mknod("/box/sda", S_IFBLK | 0666, makedev(8, 0)));
    report("mknod /dev/mem", mknod("/dev/mem", S_IFCHR | 0666, makedev(1, 1)));
    return 0;
}
