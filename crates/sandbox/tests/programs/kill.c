/* Signals and tracing aimed at the box's init and at a host pid (argv[1]). */
#include "attack.h"
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

int main(int argc, char **argv) {
    pid_t host = argc > 1 ? atoi(argv[1]) : 0;
    report("kill 1 SIGKILL", kill(1, SIGKILL));
    report("kill 1 SIGTERM", kill(1, SIGTERM));
    char what[64];
    snprintf(what, sizeof what, "kill host pid SIGKILL");
    report(what, kill(host, SIGKILL));
    report("kill -1 SIGKILL", kill(-1, SIGKILL));
    report("ptrace attach 1", ptrace(PTRACE_ATTACH, 1, 0, 0));
    report("ptrace traceme", ptrace(PTRACE_TRACEME, 0, 0, 0));
    char buf[8];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    report("process_vm_readv 1", process_vm_readv(1, &local, 1, &remote, 1, 0));
    report("kcmp", syscall(SYS_kcmp, getpid(), 1, 0, 0, 0));
    printf("alive\n");
    return 0;
}
