/* Namespace, mount and cgroup escapes. */
#include "attack.h"
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int main(void) {
    report("mount tmpfs", mount("none", "/tmp", "tmpfs", 0, NULL));
    report("remount / rw", mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL));
    report("mount cgroup2", mount("none", "/tmp", "cgroup2", 0, NULL));
    report("umount /proc", umount2("/proc", MNT_DETACH));
    report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    report("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/usr", 1 /* OPEN_TREE_CLONE */));
    report("unshare user", unshare(CLONE_NEWUSER));
    report("unshare mount", unshare(CLONE_NEWNS));
    report("unshare net", unshare(CLONE_NEWNET));
    int fd = open("/proc/self/ns/net", O_RDONLY);
    report("setns net", setns(fd, 0));
    report("open /proc/1/ns/mnt", open("/proc/1/ns/mnt", O_RDONLY));
    report("chroot", chroot("/tmp"));
    report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    report("clone newuser", pid);
    struct clone_args args = {.flags = 0, .exit_signal = SIGCHLD};
    pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0)
        _exit(0);
    report("clone3", pid);
    struct stat st;
    report("stat /sys", stat("/sys", &st));
    report("stat /sys/fs/cgroup", stat("/sys/fs/cgroup", &st));
    char line[512];
    FILE *f = fopen("/proc/self/cgroup", "r");
    int lines = 0, rooted = 0;
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        size_t n = strlen(line);
        if (n >= 3 && strcmp(line + n - 3, ":/\n") == 0)
            rooted++;
    }
    printf("cgroup lines rooted at /: %s\n", lines > 0 && lines == rooted ? "all" : "not all");
    return 0;
}
