//! The policy as data: one rule per system call, with the reason it is
//! there. Written for x86_64's system call numbers.

#[cfg(target_arch = "x86_64")]
pub(super) use x86_64::RULES;

#[cfg(not(target_arch = "x86_64"))]
pub(super) const RULES: &[super::Rule] = &[];

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::super::{Action, Rule, When};

    const EPERM: Action = Action::Errno(libc::EPERM);
    const ENOSYS: Action = Action::Errno(libc::ENOSYS);

    const fn deny(syscall: &'static str, nr: i64, reason: &'static str) -> Rule {
        Rule { syscall, nr, when: When::Always, action: EPERM, reason }
    }

    const MOUNT: &str = "changes the mount table; the box's filesystem view is fixed before exec";
    const NEW_MOUNT_API: &str = "new mount API (open_tree/fsopen family); changes or creates mounts like mount(2)";
    const KEYRING: &str = "kernel keyrings are not namespaced and are a frequent exploit target";
    const IO_URING: &str = "io_uring is a large, often exploited attack surface, and the \
                            operations it performs are not seen by seccomp";
    const KEXEC: &str = "replaces the running kernel";
    const MODULE: &str = "loads or unloads kernel code";
    const SWAP: &str = "changes host-wide swap devices";
    const CLOCK: &str = "the system clock is host-wide";
    const OBSOLETE: &str = "obsolete interface no runtime needs; less reachable kernel code";
    const IO_PORTS: &str = "direct access to I/O ports";

    /// The namespace flags of clone(2). CLONE_NEWTIME (0x80) falls inside
    /// CSIGNAL, the exit-signal byte of clone(2)'s flags, where the kernel
    /// rejects it as an invalid signal (EINVAL); it is in the mask anyway so
    /// the list matches the namespaces unshare and clone3 know.
    const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWTIME) as u32;

    pub(in crate::seccomp) const RULES: &[Rule] = &[
        // Mounts and the root.
        deny("mount", libc::SYS_mount, MOUNT),
        deny("umount2", libc::SYS_umount2, MOUNT),
        deny("pivot_root", libc::SYS_pivot_root, MOUNT),
        deny("chroot", libc::SYS_chroot, "changes the root; with a kept directory fd it is the classic chroot escape"),
        deny("mount_setattr", libc::SYS_mount_setattr, NEW_MOUNT_API),
        deny("open_tree", libc::SYS_open_tree, NEW_MOUNT_API),
        deny("move_mount", libc::SYS_move_mount, NEW_MOUNT_API),
        deny("fsopen", libc::SYS_fsopen, NEW_MOUNT_API),
        deny("fsconfig", libc::SYS_fsconfig, NEW_MOUNT_API),
        deny("fsmount", libc::SYS_fsmount, NEW_MOUNT_API),
        deny("fspick", libc::SYS_fspick, NEW_MOUNT_API),
        // Namespaces.
        deny(
            "unshare",
            libc::SYS_unshare,
            "new namespaces (a user namespace exposes kernel code otherwise reachable only by \
             root); the box's namespaces are set up before exec",
        ),
        deny("setns", libc::SYS_setns, "joins another namespace, e.g. through an inherited or passed namespace fd"),
        Rule {
            syscall: "clone",
            nr: libc::SYS_clone,
            when: When::ArgAnyBit { arg: 0, mask: CLONE_NS_FLAGS },
            action: EPERM,
            reason: "clone with a CLONE_NEW* flag creates namespaces like unshare; fork, vfork \
                     and threads stay allowed",
        },
        Rule {
            syscall: "clone3",
            nr: libc::SYS_clone3,
            when: When::Always,
            action: ENOSYS,
            reason: "its flags are in a struct in memory that seccomp cannot read, so the clone \
                     namespace check cannot apply; ENOSYS makes glibc and other libcs fall back \
                     to clone",
        },
        // Keyrings.
        deny("keyctl", libc::SYS_keyctl, KEYRING),
        deny("add_key", libc::SYS_add_key, KEYRING),
        deny("request_key", libc::SYS_request_key, KEYRING),
        // Other processes.
        deny(
            "ptrace",
            libc::SYS_ptrace,
            "inspects and controls other processes; also an old source of seccomp bypasses",
        ),
        deny("process_vm_readv", libc::SYS_process_vm_readv, "reads another process's memory"),
        deny("process_vm_writev", libc::SYS_process_vm_writev, "writes another process's memory"),
        deny("pidfd_getfd", libc::SYS_pidfd_getfd, "copies a file descriptor out of another process"),
        deny("kcmp", libc::SYS_kcmp, "compares kernel objects of other processes, leaking their ordering"),
        // Kernel attack surface.
        deny("perf_event_open", libc::SYS_perf_event_open, "large, often exploited kernel surface and a side channel"),
        deny("bpf", libc::SYS_bpf, "loads programs into the kernel; a large, often exploited surface"),
        deny(
            "userfaultfd",
            libc::SYS_userfaultfd,
            "pauses the kernel mid-copy at will, the standard tool for widening race windows \
             in exploits",
        ),
        deny("io_uring_setup", libc::SYS_io_uring_setup, IO_URING),
        deny("io_uring_enter", libc::SYS_io_uring_enter, IO_URING),
        deny("io_uring_register", libc::SYS_io_uring_register, IO_URING),
        // The kernel itself.
        deny("kexec_load", libc::SYS_kexec_load, KEXEC),
        deny("kexec_file_load", libc::SYS_kexec_file_load, KEXEC),
        deny("init_module", libc::SYS_init_module, MODULE),
        deny("finit_module", libc::SYS_finit_module, MODULE),
        deny("delete_module", libc::SYS_delete_module, MODULE),
        // Files by handle.
        deny(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            "opens any file of a filesystem by handle, ignoring the mount namespace and root \
             (the 'shocker' container escape)",
        ),
        deny(
            "name_to_handle_at",
            libc::SYS_name_to_handle_at,
            "produces the handles open_by_handle_at consumes and leaks inode identities",
        ),
        // Host administration.
        deny("swapon", libc::SYS_swapon, SWAP),
        deny("swapoff", libc::SYS_swapoff, SWAP),
        deny("reboot", libc::SYS_reboot, "reboots or halts the host"),
        deny("syslog", libc::SYS_syslog, "reads the kernel log, which leaks addresses and other boxes' activity"),
        deny("acct", libc::SYS_acct, "switches host-wide process accounting"),
        deny("quotactl", libc::SYS_quotactl, "changes host-wide disk quotas"),
        deny("quotactl_fd", libc::SYS_quotactl_fd, "changes host-wide disk quotas"),
        deny("settimeofday", libc::SYS_settimeofday, CLOCK),
        deny("clock_settime", libc::SYS_clock_settime, CLOCK),
        deny("clock_adjtime", libc::SYS_clock_adjtime, CLOCK),
        deny("adjtimex", libc::SYS_adjtimex, CLOCK),
        Rule {
            syscall: "personality",
            nr: libc::SYS_personality,
            when: When::ArgNotIn { arg: 0, values: &[0, 0xffff_ffff] },
            action: EPERM,
            reason: "changing the execution domain can disable ASLR (ADDR_NO_RANDOMIZE) or make \
                     data executable (READ_IMPLIES_EXEC); the query 0xffffffff and PER_LINUX (0) \
                     stay allowed because runtimes such as the JVM call them",
        },
        deny("fanotify_init", libc::SYS_fanotify_init, "watches or blocks file access across whole filesystems"),
        // Obsolete or hardware interfaces; vm86 and vm86old exist only on
        // i386, which the architecture check refuses.
        deny("lookup_dcookie", libc::SYS_lookup_dcookie, "kernel profiling interface that maps cookies to paths"),
        deny("iopl", libc::SYS_iopl, IO_PORTS),
        deny("ioperm", libc::SYS_ioperm, IO_PORTS),
        deny("nfsservctl", libc::SYS_nfsservctl, OBSOLETE),
        deny("uselib", libc::SYS_uselib, OBSOLETE),
        deny("ustat", libc::SYS_ustat, OBSOLETE),
        deny("sysfs", libc::SYS_sysfs, OBSOLETE),
        deny("_sysctl", libc::SYS__sysctl, OBSOLETE),
        // Arguments.
        Rule {
            syscall: "socket",
            nr: libc::SYS_socket,
            when: When::ArgIn {
                arg: 0,
                values: &[libc::AF_PACKET as u32, libc::AF_VSOCK as u32, libc::AF_NETLINK as u32],
            },
            action: EPERM,
            reason: "raw packets (AF_PACKET), host-VM sockets (AF_VSOCK) and the kernel's \
                     configuration interfaces (AF_NETLINK); glibc's getaddrinfo and getifaddrs \
                     degrade gracefully when netlink fails",
        },
        Rule {
            syscall: "ioctl",
            nr: libc::SYS_ioctl,
            when: When::ArgIn { arg: 1, values: &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32] },
            action: EPERM,
            reason: "TIOCSTI pushes input into a terminal as if its owner typed it; TIOCLINUX \
                     can do the same on a virtual console through selection paste",
        },
    ];
}
