/* Denied kernel interfaces, by group (argv[1]): tiocsti, keyring, io_uring,
 * userfaultfd, perf, bpf. */
#include "attack.h"
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    const char *g = argc > 1 ? argv[1] : "";
    if (strcmp(g, "tiocsti") == 0) {
        char c = 'x';
        report("ioctl TIOCSTI", ioctl(0, TIOCSTI, &c));
        /* The kernel ignores the upper 32 bits of the command. */
        report("ioctl TIOCSTI high bits", syscall(SYS_ioctl, 0, (1UL << 32) | TIOCSTI, &c));
        report("ioctl TIOCLINUX", ioctl(0, TIOCLINUX, &c));
        report("ioctl FIONREAD", ioctl(0, FIONREAD, &c) == -1 && errno == ENOTTY ? 0 : -1);
    } else if (strcmp(g, "keyring") == 0) {
        report("add_key", syscall(SYS_add_key, "user", "evald", "secret", 6, KEY_SPEC_SESSION_KEYRING));
        report("request_key", syscall(SYS_request_key, "user", "evald", NULL, KEY_SPEC_SESSION_KEYRING));
        report("keyctl join", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "evald"));
        report("keyctl get", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
    } else if (strcmp(g, "io_uring") == 0) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        report("io_uring_setup", syscall(SYS_io_uring_setup, 8, &p));
        report("io_uring_enter", syscall(SYS_io_uring_enter, 0, 1, 0, 0, NULL, 0));
        report("io_uring_register", syscall(SYS_io_uring_register, 0, 0, NULL, 0));
    } else if (strcmp(g, "userfaultfd") == 0) {
        report("userfaultfd", syscall(SYS_userfaultfd, 0));
    } else if (strcmp(g, "perf") == 0) {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_CPU_CLOCK;
        report("perf_event_open", syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
    } else if (strcmp(g, "bpf") == 0) {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.map_type = BPF_MAP_TYPE_ARRAY;
        a.key_size = 4;
        a.value_size = 4;
        a.max_entries = 1;
        report("bpf map_create", syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a));
        struct bpf_insn prog[] = {{.code = BPF_JMP | BPF_EXIT}};
        memset(&a, 0, sizeof a);
        a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        a.insns = (unsigned long)prog;
        a.insn_cnt = 1;
        a.license = (unsigned long)"GPL";
        report("bpf prog_load", syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a));
    } else {
        return 2;
    }
    return 0;
}
