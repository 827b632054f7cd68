//! Structural tests on the table and the generated BPF, a small BPF
//! interpreter that checks every rule against the compiled programs, and
//! real-kernel tests that install the policy in a forked child (tests run
//! as threads of one process, so the filter must never reach the parent)
//! and assert the exact errno or signal.

use super::compile::*;
use super::*;
use std::collections::BTreeSet;
use std::sync::OnceLock;

const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// The calling thread's errno, after a failed system call.
fn errno() -> i32 {
    crate::sys::errno().raw_os_error()
}

fn policy() -> &'static SeccompPolicy {
    static POLICY: OnceLock<SeccompPolicy> = OnceLock::new();
    POLICY.get_or_init(|| SeccompPolicy::compile().expect("seccomp policy compiles"))
}

// ---- the table ----------------------------------------------------

#[test]
fn compile_succeeds_with_one_short_program_for_both_actions() {
    let policy = SeccompPolicy::compile().expect("compile");
    let mut actions: Vec<Action> = SeccompPolicy::rules().iter().map(|r| r.action).collect();
    actions.sort();
    actions.dedup();
    assert_eq!(actions, vec![Action::Errno(libc::EPERM), Action::Errno(libc::ENOSYS)]);
    let programs: Vec<_> = policy.programs().collect();
    assert_eq!(programs.len(), 1);
    // About 2 instructions per rule plus the argument checks: the
    // kernel's load time grows with the length.
    assert!(programs[0].len() < 3 * SeccompPolicy::rules().len(), "{} instructions", programs[0].len());
}

#[test]
fn rules_have_no_duplicates_and_a_reason_each() {
    let rules = SeccompPolicy::rules();
    let mut names: Vec<&str> = rules.iter().map(|r| r.syscall).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rules.len(), "duplicate syscall name");
    let mut nrs: Vec<i64> = rules.iter().map(|r| r.nr).collect();
    nrs.sort_unstable();
    nrs.dedup();
    assert_eq!(nrs.len(), rules.len(), "duplicate syscall number");
    for rule in rules {
        assert!(!rule.reason.trim().is_empty(), "{} has no reason", rule.syscall);
    }
}

#[test]
fn duplicate_rule_is_rejected() {
    let rule = SeccompPolicy::rules()[0];
    let err = check_unique(&[rule, rule]).expect_err("duplicate accepted");
    assert!(matches!(err, SeccompError::DuplicateRule { syscall } if syscall == rule.syscall), "{err:?}");
}

#[test]
fn rules_cover_the_design() {
    const DENIED: &[&str] = &[
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        "mount_setattr",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "keyctl",
        "add_key",
        "request_key",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "kcmp",
        "perf_event_open",
        "bpf",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "name_to_handle_at",
        "swapon",
        "swapoff",
        "reboot",
        "syslog",
        "acct",
        "quotactl",
        "quotactl_fd",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "lookup_dcookie",
        "iopl",
        "ioperm",
        "nfsservctl",
        "uselib",
        "ustat",
        "sysfs",
        "_sysctl",
        "fanotify_init",
    ];
    let find = |name: &str| {
        SeccompPolicy::rules()
            .iter()
            .find(|r| r.syscall == name)
            .unwrap_or_else(|| panic!("{name} is not in the policy"))
    };
    for name in DENIED {
        let rule = find(name);
        assert_eq!(rule.when, When::Always, "{name}");
        assert_eq!(rule.action, Action::Errno(libc::EPERM), "{name}");
    }
    assert_eq!(find("clone3").action, Action::Errno(libc::ENOSYS));
    assert_eq!(find("clone3").when, When::Always);
    for name in ["clone", "socket", "ioctl", "personality"] {
        assert_ne!(find(name).when, When::Always, "{name} must be conditional");
        assert_eq!(find(name).action, Action::Errno(libc::EPERM), "{name}");
    }
}

// ---- the generated programs ---------------------------------------

fn assert_insn(insn: &libc::sock_filter, code: u16, jt: u8, jf: u8, k: u32, what: &str) {
    assert_eq!((insn.code, insn.jt, insn.jf, insn.k), (code, jt, jf, k), "{what}");
}

/// `ld [4]; jeq #AUDIT_ARCH_X86_64, 1, 0; ret #KILL_PROCESS`
fn assert_arch_check(insns: &[libc::sock_filter]) {
    assert_insn(&insns[0], BPF_LD_W_ABS, 0, 0, 4, "load seccomp_data.arch");
    assert_insn(&insns[1], BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64, "arch is x86_64");
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    assert_insn(&insns[2], BPF_RET_K, 0, 0, kill, "kill other arches");
}

#[test]
fn first_program_kills_x32_then_checks_the_arch() {
    let first = policy().programs().next().expect("a program");
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    assert_insn(&first[0], BPF_LD_W_ABS, 0, 0, 0, "load seccomp_data.nr");
    assert_insn(&first[1], BPF_JMP_JGE_K, 0, 2, 0x4000_0000, "x32 bit");
    assert_insn(&first[2], BPF_JMP_JEQ_K, 1, 0, u32::MAX, "nr -1 passes");
    assert_insn(&first[3], BPF_RET_K, 0, 0, kill, "kill x32");
    assert_arch_check(&first[4..]);
}

#[test]
fn every_program_checks_the_arch_and_allows_by_default() {
    for (i, insns) in policy().programs().enumerate() {
        let start = if i == 0 { 4 } else { 0 };
        assert_arch_check(&insns[start..]);
        let last = insns.last().expect("non-empty");
        assert_insn(last, BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW, "default allow");
        assert!(insns.len() <= BPF_MAXINSNS);
    }
}

/// A classic BPF interpreter for the instructions `build_program`
/// emits; panics on anything else or on a jump out of bounds.
fn run_bpf(insns: &[libc::sock_filter], data: &[u8; 64]) -> u32 {
    run_bpf_counting(insns, data).0
}

/// [`run_bpf`] that also counts the instructions executed.
fn run_bpf_counting(insns: &[libc::sock_filter], data: &[u8; 64]) -> (u32, usize) {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        let insn = insns[pc];
        pc += 1;
        steps += 1;
        let k = insn.k;
        let jump = |cond: bool| usize::from(if cond { insn.jt } else { insn.jf });
        match insn.code {
            BPF_LD_W_ABS => {
                let at = usize::try_from(k).expect("offset");
                a = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
            }
            0x54 => a &= k,                                // alu and k
            0x05 => pc += usize::try_from(k).expect("ja"), // ja
            BPF_JMP_JEQ_K => pc += jump(a == k),
            0x25 => pc += jump(a > k), // jgt k
            BPF_JMP_JGE_K => pc += jump(a >= k),
            0x45 => pc += jump(a & k != 0), // jset k
            BPF_RET_K => return (k, steps),
            code => panic!("unexpected BPF opcode {code:#x}"),
        }
    }
}

/// What the kernel returns for a call: every filter runs, the action
/// with the highest precedence (lowest as i32) wins, ties go to the most
/// recently installed filter.
fn evaluate(arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, arg) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
    }
    let programs: Vec<&[libc::sock_filter]> = policy().programs().collect();
    let action_only = |ret: u32| (ret & libc::SECCOMP_RET_ACTION_FULL) as i32;
    let mut verdict = libc::SECCOMP_RET_ALLOW;
    for insns in programs.iter().rev() {
        let ret = run_bpf(insns, &data);
        if action_only(ret) < action_only(verdict) {
            verdict = ret;
        }
    }
    verdict
}

fn x86_64(nr: i64, args: [u64; 6]) -> u32 {
    evaluate(AUDIT_ARCH_X86_64, u32::try_from(nr).expect("nr"), args)
}

fn errno_ret(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | errno.unsigned_abs()
}

fn with_arg(index: u8, value: u64) -> [u64; 6] {
    let mut args = [0; 6];
    args[usize::from(index)] = value;
    args
}

#[test]
fn compiled_programs_enforce_every_rule() {
    let allow = libc::SECCOMP_RET_ALLOW;
    let high = 1u64 << 32;
    for rule in SeccompPolicy::rules() {
        let Action::Errno(errno) = rule.action;
        let deny = errno_ret(errno);
        let name = rule.syscall;
        match rule.when {
            When::Always => assert_eq!(x86_64(rule.nr, [0; 6]), deny, "{name}"),
            When::ArgIn { arg, values } => {
                for &v in values {
                    let v = u64::from(v);
                    assert_eq!(x86_64(rule.nr, with_arg(arg, v)), deny, "{name} {v:#x}");
                    let hv = v | high;
                    assert_eq!(x86_64(rule.nr, with_arg(arg, hv)), deny, "{name} {hv:#x}");
                }
                let other = (0..).find(|x| !values.contains(x)).expect("a value not in the list");
                let other = u64::from(other);
                assert_eq!(x86_64(rule.nr, with_arg(arg, other)), allow, "{name}");
            }
            When::ArgNotIn { arg, values } => {
                for &v in values {
                    let v = u64::from(v);
                    assert_eq!(x86_64(rule.nr, with_arg(arg, v)), allow, "{name} {v:#x}");
                }
                let other = (1..).find(|x| !values.contains(x)).expect("a value not in the list");
                let other = u64::from(other);
                assert_eq!(x86_64(rule.nr, with_arg(arg, other)), deny, "{name}");
            }
            When::ArgAnyBit { arg, mask } => {
                for bit in (0..32).map(|s| 1u32 << s).filter(|b| mask & b != 0) {
                    let v = u64::from(bit) | u64::from(!mask & 0xff) | high;
                    assert_eq!(x86_64(rule.nr, with_arg(arg, v)), deny, "{name} {v:#x}");
                }
                let v = u64::from(!mask);
                assert_eq!(x86_64(rule.nr, with_arg(arg, v)), allow, "{name} {v:#x}");
            }
        }
    }
}

#[test]
fn calls_without_a_rule_take_the_short_path() {
    let ruled: BTreeSet<u32> = SeccompPolicy::rules().iter().map(|r| r.nr as u32).collect();
    for (i, insns) in policy().programs().enumerate() {
        let mut longest = 0;
        for nr in 0..512u32 {
            let mut data = [0u8; 64];
            data[0..4].copy_from_slice(&nr.to_le_bytes());
            data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
            let (ret, steps) = run_bpf_counting(insns, &data);
            if !ruled.contains(&nr) {
                assert_eq!(ret, libc::SECCOMP_RET_ALLOW, "program {i}, nr {nr}");
                longest = longest.max(steps);
            }
        }
        // x32 prelude (3), arch check (2), load (1), search, return.
        assert!(longest <= 20, "program {i}: {longest} instructions for an allowed call");
    }
}

#[test]
fn build_program_compiles_each_kind_of_condition() {
    const fn rule(nr: i64, when: When, errno: i32) -> Rule {
        Rule { syscall: "test", nr, when, action: Action::Errno(errno), reason: "test" }
    }
    let rules = [
        rule(7, When::Always, libc::EPERM),
        rule(3, When::ArgIn { arg: 1, values: &[10, 20] }, libc::EPERM),
        rule(9, When::ArgNotIn { arg: 0, values: &[0, 5] }, libc::ENOSYS),
        rule(200, When::ArgAnyBit { arg: 2, mask: 0b1010 }, libc::EPERM),
        rule(1, When::Always, libc::ENOSYS),
    ];
    let insns = build_program(&rules).expect("fits");
    let run = |nr: u32, args: [u64; 6]| {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        run_bpf(&insns, &data)
    };
    let (allow, eperm, enosys) = (libc::SECCOMP_RET_ALLOW, errno_ret(libc::EPERM), errno_ret(libc::ENOSYS));
    for nr in [0, 2, 4, 8, 10, 199, 201, 400] {
        assert_eq!(run(nr, [0; 6]), allow, "nr {nr}");
    }
    assert_eq!(run(7, [0; 6]), eperm);
    assert_eq!(run(1, [0; 6]), enosys);
    assert_eq!(run(3, with_arg(1, 10)), eperm);
    assert_eq!(run(3, with_arg(1, 20)), eperm);
    assert_eq!(run(3, with_arg(1, 30)), allow);
    assert_eq!(run(3, with_arg(0, 10)), allow);
    assert_eq!(run(9, with_arg(0, 0)), allow);
    assert_eq!(run(9, with_arg(0, 5)), allow);
    assert_eq!(run(9, with_arg(0, 6)), enosys);
    assert_eq!(run(200, with_arg(2, 0b0010)), eperm);
    assert_eq!(run(200, with_arg(2, 0b1000)), eperm);
    assert_eq!(run(200, with_arg(2, 0b0101)), allow);
    // Only the low 32 bits of an argument count, as for the kernel.
    assert_eq!(run(3, with_arg(1, 10 | 1 << 32)), eperm);
    let mut i386 = [0u8; 64];
    i386[4..8].copy_from_slice(&AUDIT_ARCH_I386.to_le_bytes());
    assert_eq!(run_bpf(&insns, &i386), libc::SECCOMP_RET_KILL_PROCESS);
    let empty = build_program(&[]).expect("fits");
    assert_eq!(run_bpf(&empty, &[0u8; 64]), libc::SECCOMP_RET_KILL_PROCESS, "arch 0 is not x86_64");
    let too_many: Vec<Rule> = (0..400).map(|nr| rule(nr, When::Always, libc::EPERM)).collect();
    assert!(build_program(&too_many).is_none());
}

#[test]
fn compiled_programs_allow_others_and_kill_foreign_abis() {
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    assert_eq!(x86_64(libc::SYS_getpid, [0; 6]), libc::SECCOMP_RET_ALLOW);
    assert_eq!(x86_64(libc::SYS_execve, [0; 6]), libc::SECCOMP_RET_ALLOW);
    let flags = u64::from((libc::CLONE_VM | libc::CLONE_THREAD | libc::SIGCHLD) as u32);
    assert_eq!(x86_64(libc::SYS_clone, with_arg(0, flags)), libc::SECCOMP_RET_ALLOW);
    // i386 getpid (20) and mount (21).
    assert_eq!(evaluate(AUDIT_ARCH_I386, 20, [0; 6]), kill);
    assert_eq!(evaluate(AUDIT_ARCH_I386, 21, [0; 6]), kill);
    // x32 getpid and mount, and other numbers with bit 30 or 31 set.
    for nr in [0x4000_0027, 0x4000_00a5, 0x8000_0000, 0xffff_fffe] {
        assert_eq!(evaluate(AUDIT_ARCH_X86_64, nr, [0; 6]), kill, "{nr:#x}");
    }
    // -1 is not a system call and is allowed through (the kernel says ENOSYS).
    assert_eq!(evaluate(AUDIT_ARCH_X86_64, u32::MAX, [0; 6]), libc::SECCOMP_RET_ALLOW);
}

// ---- in a real child ----------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// Exit codes of the child for results that are not an errno.
const INSTALL_FAILED: i32 = 200;
const UNEXPECTED_SUCCESS: i32 = 201;
const UNEXPECTED_CHILD: i32 = 202;

/// Forks; the child sets RLIMIT_CORE to 0 (a SIGSYS would dump core),
/// installs `policy` if given, runs `body` and exits with its result.
/// `body` must be async-signal-safe: raw system calls only.
fn run_in_child(policy: Option<&SeccompPolicy>, body: fn() -> i32) -> Outcome {
    // SAFETY: the test process is multi-threaded, so the child may only
    // call async-signal-safe functions: it calls setrlimit, install (prctl
    // and seccomp on pre-built buffers), `body` (raw system calls) and
    // _exit, and never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `no_core` is a valid rlimit for the duration of the call.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        let code = match policy.map_or(Ok(()), SeccompPolicy::install) {
            Ok(()) => body(),
            Err(_) => INSTALL_FAILED,
        };
        // SAFETY: _exit ends the child without running the parent's
        // atexit handlers or destructors.
        unsafe { libc::_exit(code) }
    }
    wait(pid)
}

fn wait(pid: libc::pid_t) -> Outcome {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        assert_eq!(errno(), libc::EINTR, "waitpid");
    }
    if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Outcome::Signaled(libc::WTERMSIG(status))
    } else {
        panic!("unexpected wait status {status:#x}")
    }
}

fn filtered(body: fn() -> i32) -> Outcome {
    run_in_child(Some(policy()), body)
}

/// The errno of a failed call, or UNEXPECTED_SUCCESS.
fn errno_of(rc: libc::c_long) -> i32 {
    if rc == -1 {
        errno()
    } else {
        UNEXPECTED_SUCCESS
    }
}

/// 0 on success, else the errno.
fn ok_of(rc: libc::c_long) -> i32 {
    if rc == -1 {
        errno()
    } else {
        0
    }
}

/// Raw system call with up to six arguments.
fn sys(nr: libc::c_long, args: [libc::c_ulong; 6]) -> libc::c_long {
    let [a, b, c, d, e, f] = args;
    // SAFETY: every call in these tests passes null or invalid pointers
    // only where the kernel checks them (or the filter refuses the call
    // first), so no memory of this process is written unexpectedly.
    unsafe { libc::syscall(nr, a, b, c, d, e, f) }
}

const EPERM: Outcome = Outcome::Exited(libc::EPERM);

#[test]
fn seccomp_mount_is_eperm() {
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_mount, [0; 6]))), EPERM);
}

#[test]
fn seccomp_unshare_newuser_is_eperm() {
    const NEWUSER: libc::c_ulong = libc::CLONE_NEWUSER as libc::c_ulong;
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_unshare, [NEWUSER, 0, 0, 0, 0, 0]))), EPERM);
    // Unfiltered, root may unshare: the EPERM above is the filter's.
    assert_eq!(run_in_child(None, || ok_of(sys(libc::SYS_unshare, [NEWUSER, 0, 0, 0, 0, 0]))), Outcome::Exited(0));
}

#[test]
fn seccomp_clone3_is_enosys() {
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_clone3, [0; 6]))), Outcome::Exited(libc::ENOSYS));
}

/// clone(flags) like fork; 0 if the grandchild ran and exited 0, else
/// the errno or one of the UNEXPECTED codes.
fn clone_and_reap(flags: libc::c_ulong) -> i32 {
    let rc = sys(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]);
    if rc == 0 {
        // SAFETY: in the grandchild; _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    if rc < 0 {
        return errno();
    }
    let Ok(pid) = libc::pid_t::try_from(rc) else {
        return UNEXPECTED_CHILD;
    };
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is our child.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    if reaped == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        0
    } else {
        UNEXPECTED_CHILD
    }
}

#[test]
fn seccomp_clone_with_namespace_flag_is_eperm() {
    assert_eq!(
        filtered(|| {
            let flags = libc::CLONE_NEWNET | libc::SIGCHLD;
            match clone_and_reap(flags as libc::c_ulong) {
                0 => UNEXPECTED_SUCCESS,
                other => other,
            }
        }),
        EPERM
    );
    // High bits that the kernel drops (lower_32_bits) do not hide the flag.
    assert_eq!(
        filtered(|| {
            let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong | 1 << 32;
            match clone_and_reap(flags) {
                0 => UNEXPECTED_SUCCESS,
                other => other,
            }
        }),
        EPERM
    );
}

#[test]
fn seccomp_plain_fork_still_works() {
    assert_eq!(filtered(|| clone_and_reap(libc::SIGCHLD as libc::c_ulong)), Outcome::Exited(0));
    // glibc's fork(3) is clone(SIGCHLD | CLONE_CHILD_SETTID | ...).
    assert_eq!(filtered(libc_fork_and_reap), Outcome::Exited(0));
}

/// fork(3) in the filtered child; 0 if the grandchild ran and exited 0.
fn libc_fork_and_reap() -> i32 {
    // SAFETY: the filtered child is single-threaded; the grandchild only
    // calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the grandchild; _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    if pid < 0 {
        return errno();
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is our child.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    if reaped == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        0
    } else {
        UNEXPECTED_CHILD
    }
}

#[test]
fn seccomp_keyctl_is_eperm() {
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_keyctl, [0, (-3i64) as libc::c_ulong, 0, 0, 0, 0]))), EPERM);
}

#[test]
fn seccomp_io_uring_setup_is_eperm() {
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]))), EPERM);
}

#[test]
fn seccomp_userfaultfd_is_eperm() {
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_userfaultfd, [0; 6]))), EPERM);
}

#[test]
fn seccomp_perf_event_open_is_eperm() {
    assert_eq!(
        filtered(|| {
            let m1 = (-1i64) as libc::c_ulong;
            errno_of(sys(libc::SYS_perf_event_open, [0, 0, m1, m1, 0, 0]))
        }),
        EPERM
    );
}

#[test]
fn seccomp_bpf_is_eperm() {
    assert_eq!(filtered(|| errno_of(sys(libc::SYS_bpf, [0; 6]))), EPERM);
}

#[test]
fn seccomp_ptrace_is_eperm() {
    // PTRACE_TRACEME would succeed unfiltered.
    assert_eq!(
        filtered(|| errno_of(sys(libc::SYS_ptrace, [libc::PTRACE_TRACEME as libc::c_ulong, 0, 0, 0, 0, 0]))),
        EPERM
    );
}

fn socket(domain: libc::c_ulong, kind: libc::c_int) -> libc::c_long {
    let rc = sys(libc::SYS_socket, [domain, kind as libc::c_ulong, 0, 0, 0, 0]);
    if rc >= 0 {
        // SAFETY: `rc` is the fd the kernel just returned to us.
        unsafe { libc::close(rc as libc::c_int) };
    }
    rc
}

#[test]
fn seccomp_socket_families() {
    assert_eq!(filtered(|| errno_of(socket(libc::AF_NETLINK as libc::c_ulong, libc::SOCK_RAW))), EPERM);
    assert_eq!(filtered(|| errno_of(socket(libc::AF_PACKET as libc::c_ulong, libc::SOCK_RAW))), EPERM);
    assert_eq!(filtered(|| errno_of(socket(libc::AF_VSOCK as libc::c_ulong, libc::SOCK_STREAM))), EPERM);
    // The kernel reads the domain as an int; high bits must not bypass.
    assert_eq!(filtered(|| errno_of(socket(libc::AF_NETLINK as libc::c_ulong | 1 << 32, libc::SOCK_RAW))), EPERM);
    assert_eq!(filtered(|| ok_of(socket(libc::AF_INET as libc::c_ulong, libc::SOCK_STREAM))), Outcome::Exited(0));
    assert_eq!(filtered(|| ok_of(socket(libc::AF_UNIX as libc::c_ulong, libc::SOCK_STREAM))), Outcome::Exited(0));
}

#[test]
fn seccomp_ioctl_tiocsti_is_eperm_even_with_high_bits() {
    fn ioctl(request: libc::c_ulong) -> libc::c_long {
        let byte = b'x';
        let arg = &byte as *const u8 as libc::c_ulong;
        sys(libc::SYS_ioctl, [0, request, arg, 0, 0, 0])
    }
    assert_eq!(filtered(|| errno_of(ioctl(libc::TIOCSTI as libc::c_ulong))), EPERM);
    assert_eq!(filtered(|| errno_of(ioctl(libc::TIOCSTI as libc::c_ulong | 1 << 32))), EPERM);
    assert_eq!(filtered(|| errno_of(ioctl(libc::TIOCLINUX as libc::c_ulong))), EPERM);
    // Other requests reach the kernel: TIOCGWINSZ on a bad fd is EBADF.
    assert_eq!(
        filtered(|| {
            let mut ws = [0u16; 4];
            let arg = ws.as_mut_ptr() as libc::c_ulong;
            let bad_fd = (-1i64) as libc::c_ulong;
            errno_of(sys(libc::SYS_ioctl, [bad_fd, libc::TIOCGWINSZ as libc::c_ulong, arg, 0, 0, 0]))
        }),
        Outcome::Exited(libc::EBADF)
    );
}

#[test]
fn seccomp_personality_query_allowed_changes_denied() {
    assert_eq!(filtered(|| ok_of(sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]))), Outcome::Exited(0));
    assert_eq!(filtered(|| ok_of(sys(libc::SYS_personality, [0; 6]))), Outcome::Exited(0));
    assert_eq!(
        filtered(|| errno_of(sys(libc::SYS_personality, [libc::ADDR_NO_RANDOMIZE as libc::c_ulong, 0, 0, 0, 0, 0]))),
        EPERM
    );
}

#[test]
fn seccomp_getpid_allowed() {
    assert_eq!(filtered(|| if sys(libc::SYS_getpid, [0; 6]) > 0 { 0 } else { errno() }), Outcome::Exited(0));
}

#[test]
fn seccomp_x32_syscall_is_killed_with_sigsys() {
    assert_eq!(filtered(|| errno_of(sys(0x4000_0000 + libc::SYS_getpid, [0; 6]))), Outcome::Signaled(libc::SIGSYS));
    // -1 is not x32: it reaches the kernel, which answers ENOSYS.
    assert_eq!(filtered(|| errno_of(sys(-1, [0; 6]))), Outcome::Exited(libc::ENOSYS));
}

/// getpid through the i386 entry point; 0 if it returned our pid.
fn i386_getpid() -> i32 {
    // __NR_getpid on i386.
    let mut rax: i64 = 20;
    // SAFETY: `int 0x80` with eax = 20 takes no arguments and touches no
    // memory; the compat entry may clobber r8-r11 on old kernels, so they
    // are declared clobbered, and it does not use the stack.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") rax,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    if rax == sys(libc::SYS_getpid, [0; 6]) {
        0
    } else {
        UNEXPECTED_CHILD
    }
}

#[test]
fn seccomp_i386_syscall_is_killed_with_sigsys() {
    match run_in_child(None, i386_getpid) {
        Outcome::Exited(0) => {
            assert_eq!(filtered(i386_getpid), Outcome::Signaled(libc::SIGSYS));
        }
        // A kernel without IA32 emulation has no int 0x80 entry: the
        // instruction faults before seccomp could see it.
        Outcome::Signaled(libc::SIGSEGV) => {
            assert_eq!(filtered(i386_getpid), Outcome::Signaled(libc::SIGSEGV));
        }
        other => panic!("unfiltered int 0x80 getpid: {other:?}"),
    }
}
