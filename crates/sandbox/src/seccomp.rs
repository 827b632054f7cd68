//! The seccomp policy of the box: a default-allow deny-list plus an
//! architecture check.
//!
//! # What it is
//!
//! The policy is data: [`SeccompPolicy::rules`] is a static table with one
//! [`Rule`] per system call (name, number, argument condition, action and the
//! reason it is there). [`SeccompPolicy::compile`] turns the table into one
//! classic BPF program once, at start-up; [`SeccompPolicy::install`] loads
//! it in the freshly forked child right before `execve`.
//!
//! Denied calls return an errno (`EPERM`, or `ENOSYS` for `clone3`) rather
//! than killing the process: language runtimes probe for features and degrade
//! gracefully when a call fails, and a clear errno is easier to diagnose than a
//! dead process. The only kill is the architecture check.
//!
//! # One short program
//!
//! The program is built here rather than with a filter generator: the
//! kernel pays for a filter's length at every box start (it runs the program
//! once per system call number when loading it, to learn which calls are
//! always allowed, and JIT-compiles it), and `seccompiler`, used at first,
//! emits one comparison per rule in a row and one filter per action: 377
//! instructions in two filters, about 0.27 ms to load. The program here
//! searches the rules' numbers in a binary tree, shares one return per
//! action, and checks arguments only for the few conditional rules: about
//! 140 instructions in one filter. Its layout is documented on
//! `build_program`; the tests run every rule through a BPF interpreter.
//!
//! # Architecture check
//!
//! After the x32 check below, the program compares `seccomp_data.arch` with
//! `AUDIT_ARCH_X86_64` and returns `SECCOMP_RET_KILL_PROCESS` otherwise, so a
//! 32-bit (i386) system call made through `int 0x80` kills the process with `SIGSYS`: the i386 table has
//! different numbers (and calls such as `vm86`) that the deny-list would not
//! catch.
//!
//! x32 system calls are harder: they report `AUDIT_ARCH_X86_64` and differ
//! only by bit 30 (`__X32_SYSCALL_BIT`, `0x4000_0000`) of the number, so
//! `mount` through the x32 entry has a number the deny-list never compares
//! against. The program therefore starts with this prelude:
//!
//! ```text
//! 0: ld  [0]                     ; A = seccomp_data.nr
//! 1: jge #0x40000000, 2, 4       ; below the x32 bit: go on at 4
//! 2: jeq #0xffffffff, 4, 3       ; nr == -1 (tracer "skip" convention): go on
//! 3: ret #SECCOMP_RET_KILL_PROCESS
//! 4: ...                         ; the arch check, then the rules
//! ```
//!
//! `-1` is let through, as libseccomp does, because it is not a system call
//! (the kernel answers `ENOSYS`); every other number with bit 30 or 31 set is
//! x32 or invalid and kills the process. The kill happens whether or not the
//! kernel was built with `CONFIG_X86_X32_ABI`, because seccomp runs before the
//! dispatch.
//!
//! # Arguments compared on 32 bits
//!
//! Every argument condition compares the low 32 bits only, because the kernel
//! itself truncates those arguments: `ioctl`'s command is an `unsigned int`,
//! `socket`'s domain an `int`, `personality` an `unsigned int`, and `clone`
//! uses `lower_32_bits(flags)`. Comparing all 64 bits would let a caller set
//! a high bit that the filter sees and the kernel ignores, e.g.
//! `ioctl(fd, TIOCSTI | 1 << 32)`.
//!
//! # Installing
//!
//! See [`SeccompPolicy::install`]: it must be the last step before `execve`,
//! after every mount, namespace, credential, capability and fd change, because
//! the filter forbids several of those and can never be removed.

use std::collections::BTreeMap;
use std::fmt;

/// What the filter does with a system call that a [`Rule`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// The call fails with this errno and has no effect.
    Errno(i32),
}

/// Which invocations of the system call a [`Rule`] matches.
///
/// All comparisons use the low 32 bits of the argument (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Every invocation.
    Always,
    /// The argument equals one of the values.
    ArgIn {
        /// Index of the argument, 0 to 5.
        arg: u8,
        /// Values that match.
        values: &'static [u32],
    },
    /// The argument equals none of the values.
    ArgNotIn {
        /// Index of the argument, 0 to 5.
        arg: u8,
        /// Values that do not match (the allowed ones).
        values: &'static [u32],
    },
    /// The argument has at least one bit of the mask set.
    ArgAnyBit {
        /// Index of the argument, 0 to 5.
        arg: u8,
        /// Bits of which any one matches.
        mask: u32,
    },
}

/// One entry of the policy table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The system call's name, as in `man 2`.
    pub syscall: &'static str,
    /// Its x86_64 number.
    pub nr: i64,
    /// Which invocations are matched; the others are allowed.
    pub when: When,
    /// What happens to a matched invocation.
    pub action: Action,
    /// Why the rule exists.
    pub reason: &'static str,
}

/// Failure to build the policy; each is a bug in the table or an unsupported
/// platform, never a runtime condition.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The policy is written for x86_64 system call numbers only.
    #[error("seccomp policy is only defined for x86_64, not {arch}")]
    UnsupportedArch {
        /// `std::env::consts::ARCH` of this build.
        arch: &'static str,
    },
    /// A system call appears in two rules of the table.
    #[error("system call {syscall} appears in more than one seccomp rule")]
    DuplicateRule {
        /// The repeated system call.
        syscall: &'static str,
    },
    /// A jump of the program is longer than classic BPF's 8-bit offsets
    /// (far too many rules for one program).
    #[error("the seccomp rules do not fit in one program: a jump is longer than 255 instructions")]
    JumpTooFar,
    /// The program is longer than the kernel accepts (`BPF_MAXINSNS`).
    #[error("the seccomp program has {len} instructions, more than {max}")]
    TooLong {
        /// Its length in instructions.
        len: usize,
        /// The kernel's limit.
        max: usize,
    },
}

/// The kernel's limit on the length of one classic BPF program.
const BPF_MAXINSNS: usize = 4096;

/// Bit 30 of the system call number marks the x32 ABI on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offset of `nr` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
/// Offset of `args[0]` in `struct seccomp_data` (each argument is 8 bytes,
/// low half first on x86_64).
const SECCOMP_DATA_ARGS: u32 = 16;
/// Offset of `arch` in `struct seccomp_data`.
const SECCOMP_DATA_ARCH: u32 = 4;
/// `AUDIT_ARCH_X86_64` from <linux/audit.h>.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

// Classic BPF opcodes, from <linux/bpf_common.h>: class | operation | source.
/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
/// BPF_JMP | BPF_JSET | BPF_K.
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
/// BPF_RET | BPF_K.
const BPF_RET_K: u16 = 0x06;

/// A compiled program, ready to hand to `seccomp(2)`.
struct Program {
    insns: Box<[libc::sock_filter]>,
    /// `insns.len()`, checked at compile time to fit the kernel's limit.
    len: u16,
}

/// The compiled policy: one BPF program per action, built once and installed
/// in each box.
///
/// The `sock_fprog` that points into each program is built on the stack in
/// [`install`](Self::install) rather than stored, so the type holds no raw
/// pointer and is `Send + Sync` without any `unsafe impl`.
pub struct SeccompPolicy {
    /// In installation order.
    programs: Vec<Program>,
}

impl fmt::Debug for SeccompPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lens: Vec<u16> = self.programs.iter().map(|p| p.len).collect();
        f.debug_struct("SeccompPolicy").field("program_lengths", &lens).finish()
    }
}

impl SeccompPolicy {
    /// Compiles [`rules`](Self::rules) into BPF. Call once at start-up.
    pub fn compile() -> Result<Self, SeccompError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(SeccompError::UnsupportedArch { arch: std::env::consts::ARCH });
        }
        check_unique(Self::rules())?;

        let insns = build_program(Self::rules()).ok_or(SeccompError::JumpTooFar)?;
        let len = u16::try_from(insns.len())
            .ok()
            .filter(|&len| usize::from(len) <= BPF_MAXINSNS)
            .ok_or(SeccompError::TooLong { len: insns.len(), max: BPF_MAXINSNS })?;
        let programs = vec![Program { insns: insns.into_boxed_slice(), len }];
        tracing::debug!(
            filters = programs.len(),
            instructions = programs.iter().map(|p| usize::from(p.len)).sum::<usize>(),
            "compiled seccomp policy"
        );
        Ok(Self { programs })
    }

    /// Sets `PR_SET_NO_NEW_PRIVS`, then installs the filters. Returns the
    /// errno of the first failing call.
    ///
    /// Async-signal-safe: no allocation, no lock, only `prctl(2)` and
    /// `seccomp(2)` on buffers built by [`compile`](Self::compile), so it may
    /// run in the child of a multi-threaded `fork`.
    ///
    /// The caller must:
    /// - call it in the child, as the last step before `execve`: after the
    ///   mounts, `pivot_root`, namespaces, cgroup join, rlimits, `setgroups`/
    ///   `setgid`/`setuid`, capability drop and `close_range`, since the filter
    ///   denies several of those (mount family, `unshare`, `setns`, ...) and
    ///   cannot be removed; `execve` itself stays allowed;
    /// - treat an error as fatal and `_exit` without exec: the policy is
    ///   then not (or not completely) in place;
    /// - call it only in the single-threaded child, never in the server: the
    ///   filters (installed without `TSYNC`) bind the calling thread and
    ///   everything it later forks or execs, for good;
    /// - set `RLIMIT_CORE` to 0 before it, as the box does anyway: the
    ///   architecture check kills with `SIGSYS`, whose default action dumps
    ///   core.
    pub fn install(&self) -> Result<(), i32> {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments (1, then
        // unused zeros, passed as unsigned long as the kernel reads them); no
        // memory is read or written.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(errno());
        }
        for program in &self.programs {
            let fprog = libc::sock_fprog { len: program.len, filter: program.insns.as_ptr().cast_mut() };
            // SAFETY: `fprog` lives on this stack frame until the call
            // returns and points to `program.len` valid, initialised
            // instructions owned by `self`; the kernel only reads them
            // (copy_from_user) and keeps its own copy. The mutable pointer is
            // only what the C struct's type requires. The integer arguments
            // are widened to unsigned long, the width the kernel reads.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                    0 as libc::c_ulong,
                    &fprog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(errno());
            }
        }
        Ok(())
    }

    /// The policy table: one rule per system call, with the reason.
    pub fn rules() -> &'static [Rule] {
        RULES
    }

    /// The compiled programs in installation order, for inspection.
    pub fn programs(&self) -> impl Iterator<Item = &[libc::sock_filter]> {
        self.programs.iter().map(|p| &*p.insns)
    }
}

/// The calling thread's errno; async-signal-safe.
fn errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to the calling
    // thread's errno for the lifetime of the thread; reading an int from it
    // neither allocates nor locks.
    unsafe { *libc::__errno_location() }
}

fn check_unique(rules: &[Rule]) -> Result<(), SeccompError> {
    let mut seen = BTreeMap::new();
    for rule in rules {
        if seen.insert(rule.nr, rule.syscall).is_some() {
            return Err(SeccompError::DuplicateRule { syscall: rule.syscall });
        }
    }
    Ok(())
}

/// The x32 check prepended to the first program (see the module docs).
fn x32_prelude() -> [libc::sock_filter; 4] {
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        insn(BPF_JMP_JGE_K, 0, 2, X32_SYSCALL_BIT),
        insn(BPF_JMP_JEQ_K, 1, 0, u32::MAX),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Where a jump of the program under construction goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    /// The next instruction (a load or return: no jump).
    Next,
    /// An instruction of the program, by index.
    At(usize),
    /// The shared `ret ALLOW` at the end.
    Allow,
    /// The shared `ret ERRNO(errno)` at the end.
    Deny(i32),
}

/// Compiles the rules into one classic BPF program:
///
/// ```text
/// 0: ld  [0]                      ; x32 check (see the module docs)
/// 1: jge #0x40000000, 2, 4
/// 2: jeq #0xffffffff, 4, 3
/// 3: ret #KILL_PROCESS
/// 4: ld  [4]                      ; arch
/// 5: jeq #AUDIT_ARCH_X86_64, 1, 0
/// 6: ret #KILL_PROCESS
/// 7: ld  [0]                      ; nr
///    jge #m, right, left          ; binary search over the rules' numbers
///    jeq #n, <rule n>, allow      ; leaves
///    ...                          ; argument checks of conditional rules
///    ret #ERRNO(EPERM)            ; shared returns
///    ret #ERRNO(ENOSYS)
///    ret #ALLOW
/// ```
///
/// A call without a rule costs about 2·log2(rules) instructions. The kernel
/// runs the program once per system call number when it loads it (to find
/// the calls that are always allowed), and JIT-compiles it, so its length is
/// paid at every box start: seccompiler's output (one comparison per rule in
/// a row, 377 instructions in two programs) took about 0.27 ms to load, this
/// one (140 instructions in one program) about 0.07 ms.
///
/// `None` if a jump would be longer than classic BPF's 8-bit offsets.
fn build_program(rules: &[Rule]) -> Option<Vec<libc::sock_filter>> {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.nr);
    let mut code: Vec<(u16, To, To, u32)> = Vec::new();
    for insn in x32_prelude() {
        // The prelude's jumps are relative already; keep them as they are.
        code.push((insn.code, To::At(usize::from(insn.jt)), To::At(usize::from(insn.jf)), insn.k));
    }
    let prelude = code.len();
    code.push((BPF_LD_W_ABS, To::Next, To::Next, SECCOMP_DATA_ARCH));
    code.push((BPF_JMP_JEQ_K, To::At(prelude + 3), To::At(prelude + 2), AUDIT_ARCH_X86_64));
    code.push((BPF_RET_K, To::Next, To::Next, libc::SECCOMP_RET_KILL_PROCESS));
    code.push((BPF_LD_W_ABS, To::Next, To::Next, SECCOMP_DATA_NR));

    /// Emits the search over `rules` (sorted, non-empty); leaves jump to
    /// `Deny` for unconditional rules, else to a placeholder patched when the
    /// rule's checks are placed (recorded in `pending`).
    fn search<'r>(rules: &[&'r Rule], code: &mut Vec<(u16, To, To, u32)>, pending: &mut Vec<(usize, &'r Rule)>) {
        if let [rule] = rules {
            let Action::Errno(errno) = rule.action;
            let hit = if rule.when == When::Always { To::Deny(errno) } else { To::Next };
            if hit == To::Next {
                pending.push((code.len(), rule));
            }
            code.push((BPF_JMP_JEQ_K, hit, To::Allow, rule.nr as u32));
            return;
        }
        let mid = rules.len() / 2;
        let at = code.len();
        code.push((BPF_JMP_JGE_K, To::Next, To::At(at + 1), rules[mid].nr as u32));
        search(&rules[..mid], code, pending);
        code[at].1 = To::At(code.len());
        search(&rules[mid..], code, pending);
    }
    let mut pending = Vec::new();
    if !sorted.is_empty() {
        search(&sorted, &mut code, &mut pending);
    }
    for (leaf, rule) in pending {
        code[leaf].1 = To::At(code.len());
        let Action::Errno(errno) = rule.action;
        let arg_low = |arg: u8| SECCOMP_DATA_ARGS + 8 * u32::from(arg);
        match rule.when {
            When::Always => {}
            When::ArgIn { arg, values } => {
                code.push((BPF_LD_W_ABS, To::Next, To::Next, arg_low(arg)));
                for (i, &v) in values.iter().enumerate() {
                    let miss = if i + 1 == values.len() { To::Allow } else { To::At(code.len() + 1) };
                    code.push((BPF_JMP_JEQ_K, To::Deny(errno), miss, v));
                }
            }
            When::ArgNotIn { arg, values } => {
                code.push((BPF_LD_W_ABS, To::Next, To::Next, arg_low(arg)));
                for (i, &v) in values.iter().enumerate() {
                    let miss = if i + 1 == values.len() { To::Deny(errno) } else { To::At(code.len() + 1) };
                    code.push((BPF_JMP_JEQ_K, To::Allow, miss, v));
                }
            }
            When::ArgAnyBit { arg, mask } => {
                code.push((BPF_LD_W_ABS, To::Next, To::Next, arg_low(arg)));
                code.push((BPF_JMP_JSET_K, To::Deny(errno), To::Allow, mask));
            }
        }
    }
    // Shared returns: one per errno in rule order, then ALLOW last.
    let mut errnos: Vec<i32> = Vec::new();
    for rule in &sorted {
        let Action::Errno(errno) = rule.action;
        if !errnos.contains(&errno) {
            errnos.push(errno);
        }
    }
    let returns = code.len();
    let allow = returns + errnos.len();
    let target = |to: To, i: usize| -> Option<u8> {
        let at = match to {
            To::Next => return Some(0),
            To::At(j) if i < prelude => return u8::try_from(j).ok(),
            To::At(j) => j,
            To::Allow => allow,
            To::Deny(e) => returns + errnos.iter().position(|&x| x == e)?,
        };
        u8::try_from(at.checked_sub(i + 1)?).ok()
    };
    let mut out = Vec::with_capacity(allow + 1);
    for (i, &(op, jt, jf, k)) in code.iter().enumerate() {
        out.push(libc::sock_filter { code: op, jt: target(jt, i)?, jf: target(jf, i)?, k });
    }
    for errno in errnos {
        out.push(libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | errno.unsigned_abs(),
        });
    }
    out.push(libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW });
    Some(out)
}

#[cfg(target_arch = "x86_64")]
use x86_64_table::RULES;

#[cfg(not(target_arch = "x86_64"))]
const RULES: &[Rule] = &[];

#[cfg(target_arch = "x86_64")]
mod x86_64_table {
    use super::{Action, Rule, When};

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

    pub(super) const RULES: &[Rule] = &[
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    //! Structural tests on the table and the generated BPF, a small BPF
    //! interpreter that checks every rule against the compiled programs, and
    //! real-kernel tests that install the policy in a forked child (tests run
    //! as threads of one process, so the filter must never reach the parent)
    //! and assert the exact errno or signal.

    use super::*;
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    const AUDIT_ARCH_I386: u32 = 0x4000_0003;

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
            filtered(|| errno_of(sys(
                libc::SYS_personality,
                [libc::ADDR_NO_RANDOMIZE as libc::c_ulong, 0, 0, 0, 0, 0]
            ))),
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
        let mut rax: i64 = 20; // __NR_getpid on i386
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
}
