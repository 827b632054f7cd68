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

mod compile;
mod table;

use std::fmt;

use rustix::io::Errno;

use compile::{build_program, check_unique, BPF_MAXINSNS};
use table::RULES;

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
    pub fn install(&self) -> Result<(), Errno> {
        rustix::thread::set_no_new_privs(true)?;
        for program in &self.programs {
            crate::sys::seccomp_set_filter(&program.insns)?;
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
