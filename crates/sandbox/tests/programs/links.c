/* Link tricks. "fresh": hard links from host-visible files into the box's
 * writable file systems. "plant TARGET_DIR": in a persistent workspace,
 * plants `out` -> TARGET_DIR/secret, `dir` -> TARGET_DIR, `fifo`, and tries
 * a hard link to /usr/bin/su. */
#include "attack.h"
#include <sys/stat.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "fresh") == 0) {
        report("link /usr/bin/su /box/su", link("/usr/bin/su", "/box/su"));
        report("link /etc/passwd /box/passwd", link("/etc/passwd", "/box/passwd"));
        report("link /usr/bin/su /tmp/su", link("/usr/bin/su", "/tmp/su"));
        report("symlink /etc/passwd /box/out", symlink("/etc/passwd", "/box/out"));
        report("mkfifo /box/fifo", mkfifo("/box/fifo", 0644));
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "plant") == 0) {
        char target[512];
        snprintf(target, sizeof target, "%s/secret", argv[2]);
        report("symlink out", symlink(target, "out"));
        report("symlink dir", symlink(argv[2], "dir"));
        report("mkfifo fifo", mkfifo("fifo", 0644));
        report("link su", link("/usr/bin/su", "su"));
        return 0;
    }
    return 2;
}
