//! The system calls that rustix does not wrap (or wraps only as `unsafe`),
//! one call per `unsafe` block, and the helpers every part of the crate
//! shares: errno, polling, waiting for and killing through a pidfd, writing
//! and reading whole buffers.
//!
//! Everything here is async-signal-safe (no allocation, no lock) unless its
//! documentation says otherwise: the template builder, the zygote's
//! children and the payload call it after a fork or a vfork.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{pidfd_send_signal, Pid, Signal};

/// The calling thread's errno, after a failed libc call.
pub(crate) fn errno() -> Errno {
    // `last_os_error` reads errno and allocates nothing.
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// `Ok(value)` when a libc call returned no error (`r >= 0`).
fn check<T: Copy + Default + PartialOrd>(r: T) -> Result<T, Errno> {
    if r < T::default() {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Ends the calling process at once (no atexit handlers, no unwinding).
pub(crate) fn exit(code: c_int) -> ! {
    // SAFETY: `_exit` takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// Who a fork or clone returned to.
pub(crate) enum Forked {
    Child,
    /// The child's pid, and its pidfd when one was asked for.
    Parent {
        pid: Pid,
        pidfd: Option<OwnedFd>,
    },
}

/// glibc's `fork`, which leaves the allocator usable in the child.
///
/// # Safety
/// In a multi-threaded process the child may only use async-signal-safe
/// code until it execs or exits (the zygote is forked from the reaper
/// thread and runs only `launch`'s code; see `launch::zygote`).
pub(crate) unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: the caller keeps the child's contract above.
    let pid = check(unsafe { libc::fork() })?;
    Ok(match Pid::from_raw(pid) {
        None => Forked::Child,
        Some(pid) => Forked::Parent { pid, pidfd: None },
    })
}

/// A fork-like `clone` with `flags` (namespaces, `CLONE_PIDFD`), signalling
/// `SIGCHLD` at the child's end; with `CLONE_PIDFD` the parent gets the
/// child's pidfd.
///
/// # Safety
/// As [`fork`], and more so: glibc does not know about the child, so it
/// must not rely on glibc's per-process state either (the zygote is
/// single-threaded, so its children may still allocate).
pub(crate) unsafe fn clone_process(flags: c_int) -> Result<Forked, Errno> {
    let mut pidfd: c_int = -1;
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    let pidfd_out: *mut c_int = &mut pidfd;
    // SAFETY: no new stack and no CLONE_VM: the child gets a copy of this
    // process, like fork; the kernel writes the pidfd to `pidfd_out`.
    let pid = check(unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, pidfd_out, 0usize, 0usize) })?;
    Ok(match Pid::from_raw(pid as i32) {
        None => Forked::Child,
        // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor that
        // nothing else owns; without it `pidfd` is still -1.
        Some(pid) => Forked::Parent { pid, pidfd: (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }) },
    })
}

/// A stack for a child started with [`clone_vfork`]: anonymous memory,
/// unmapped when dropped.
pub(crate) struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    pub(crate) fn new(len: usize) -> Result<Stack, Errno> {
        use rustix::mm::{MapFlags, ProtFlags};
        let flags = MapFlags::PRIVATE | MapFlags::STACK;
        // SAFETY: a new anonymous mapping at an address the kernel picks;
        // nothing else refers to it.
        let base = unsafe {
            rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, flags)
        }?;
        Ok(Stack { base, len })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by no child any more
        // (`clone_vfork` returns once the child exec'd or exited).
        let _ = unsafe { rustix::mm::munmap(self.base, self.len) };
    }
}

/// Starts `entry(arg)` in a child that shares this process's memory on
/// `stack` (`CLONE_VM | CLONE_VFORK`), and returns its pid once it has
/// exec'd or exited: the cheapest process start, copying no page tables.
///
/// # Safety
/// `arg` must stay valid until this returns. The child runs on this
/// process's memory while the caller is suspended: `entry` may not
/// allocate, lock, unwind or write anything of the caller's but what `arg`
/// allows, and must end in `execve` or `_exit`.
pub(crate) unsafe fn clone_vfork(
    entry: extern "C" fn(*mut c_void) -> c_int,
    stack: &mut Stack,
    arg: *mut c_void,
) -> Result<Pid, Errno> {
    // The stack grows down from the end of the mapping.
    let top = stack.base.cast::<u8>().wrapping_add(stack.len).cast::<c_void>();
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: `top` is the end of a live, writable mapping of `len` bytes;
    // the caller keeps `entry`'s and `arg`'s contract.
    let pid = check(unsafe { libc::clone(entry, top, flags, arg) })?;
    Pid::from_raw(pid).ok_or(Errno::INVAL)
}

/// `execve(program, argv, envp)`; returns only on failure.
///
/// `argv` and `envp` must end with a null pointer; every other element is
/// the pointer of a live, NUL-terminated string.
pub(crate) fn execve(program: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
    if argv.last().is_some_and(|p| !p.is_null()) || envp.last().is_some_and(|p| !p.is_null()) {
        return Errno::INVAL;
    }
    // SAFETY: the program path is NUL-terminated; both arrays end with a
    // null pointer and hold live strings (the caller's contract above).
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}

/// Closes every descriptor of this process except those in `keep`.
///
/// # Safety
/// No owner of a closed descriptor (an `OwnedFd` of this process's memory)
/// may use or close it afterwards: call it in a fresh child that never
/// returns to such owners.
pub(crate) unsafe fn close_all_except(keep: &mut [RawFd]) -> Result<(), Errno> {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &fd in keep.iter() {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd > next {
            // SAFETY: closes descriptors of this process only; the caller
            // keeps the ownership contract above.
            check(unsafe { libc::close_range(next, fd - 1, 0) })?;
        }
        next = next.max(fd + 1);
    }
    // SAFETY: as above.
    check(unsafe { libc::close_range(next, u32::MAX, 0) })?;
    Ok(())
}

/// Closes a descriptor that no `OwnedFd` of this process will close.
///
/// # Safety
/// `fd`'s owner, if any, must never use or close it afterwards.
pub(crate) unsafe fn close(fd: RawFd) {
    // SAFETY: the caller's contract above.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// Blocks every signal in the calling thread (children inherit the mask).
pub(crate) fn block_signals_in_thread() {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the set it is given.
    unsafe { libc::sigfillset(all.as_mut_ptr()) };
    // SAFETY: initialised just above; only this thread's mask changes.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), std::ptr::null_mut()) };
}

/// Unblocks every signal of this (single-threaded) process.
pub(crate) fn unblock_signals() {
    let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(none.as_mut_ptr()) };
    // SAFETY: initialised just above.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut()) };
}

/// Sets `SIGCHLD` to be ignored (children are then reaped by the kernel)
/// or back to its default.
pub(crate) fn ignore_children(ignore: bool) {
    let action = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: SIG_IGN and SIG_DFL are not handlers: no code of ours runs
    // on the signal.
    unsafe { libc::signal(libc::SIGCHLD, action) };
}

/// Gives the free memory at the top of the heap back to the kernel.
/// Allocates nothing, but takes the allocator's lock: only in a
/// single-threaded process (the zygote).
pub(crate) fn trim_heap() {
    // SAFETY: malloc_trim takes an integer and only walks glibc's heap.
    unsafe { libc::malloc_trim(0) };
}

/// Processors the kernel has configured (a box cannot use more at once).
pub(crate) fn processors() -> u32 {
    // SAFETY: sysconf only reads a system setting.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    u32::try_from(n).unwrap_or(1).max(1)
}

/// Sends `signal` (any number the kernel accepts) to the process group
/// `group`.
pub(crate) fn signal_group(group: Pid, signal: c_int) -> Result<(), Errno> {
    // SAFETY: kill takes two integers; a negative pid names a group.
    check(unsafe { libc::kill(-group.as_raw_nonzero().get(), signal) }).map(drop)
}

/// Sets `IFF_UP` on `lo` of the current network namespace.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    let sock = socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    // SAFETY: ifreq is plain old data (names, numbers, a union of those);
    // all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as c_char;
    req.ifr_name[1] = b'o' as c_char;
    // SAFETY: SIOCGIFFLAGS fills the flags of the live ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) })?;
    // SAFETY: the kernel filled `ifru_flags` of the union just above.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as i16;
    // SAFETY: SIOCSIFFLAGS reads the live ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req as *const libc::ifreq) })?;
    Ok(())
}

/// Installs the classic BPF program `filter` as the calling thread's
/// seccomp filter (`no_new_privs` must be set).
pub(crate) fn seccomp_set_filter(filter: &[libc::sock_filter]) -> Result<(), Errno> {
    let len = u16::try_from(filter.len()).map_err(|_| Errno::INVAL)?;
    let prog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    let prog_ptr: *const libc::sock_fprog = &prog;
    // SAFETY: `prog` lives until the call returns and points to `len`
    // initialised instructions; the kernel only reads them (and keeps its
    // own copy). The mutable pointer is only what the C type asks for.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong, 0, prog_ptr) };
    check(rc).map(drop)
}

/// Whether `fd` is readable within `timeout` (`None`: waits for it). A poll
/// error counts as readable: there is nothing to wait for.
pub(crate) fn readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> bool {
    let timeout = timeout
        .map(|t| Timespec { tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX), tv_nsec: t.subsec_nanos().into() });
    loop {
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(n) => return n > 0,
            Err(Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

/// Whether the process behind `pidfd` has exited (now, without waiting).
pub(crate) fn exited(pidfd: BorrowedFd<'_>) -> bool {
    readable(pidfd, Some(Duration::ZERO))
}

/// Waits until the process behind `pidfd` has exited (box inits are not
/// our children: the zygote's, reaped by the kernel). A box init exits only
/// after every process of its pid namespace is gone.
pub(crate) fn wait_exited(pidfd: BorrowedFd<'_>) {
    readable(pidfd, None);
}

/// Kills the process behind `pidfd`; one that is already gone is fine.
pub(crate) fn kill(pidfd: impl AsFd) {
    let _ = pidfd_send_signal(pidfd, Signal::KILL);
}

/// Writes all of `data` to a file or pipe.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(Errno::PIPE),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends all of `data` on a socket (no `SIGPIPE` when the peer is gone).
pub(crate) fn send_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match rustix::net::send(fd, data, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(Errno::PIPE),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until `buf` is full; `Ok(false)` at an end of file before that.
pub(crate) fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<bool, Errno> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The largest resident set (bytes) of this process (`RUSAGE_SELF`) or of
/// its waited-for descendants (`RUSAGE_CHILDREN`), from `getrusage`; 0 if
/// the call fails.
pub(crate) fn max_rss_bytes(who: c_int) -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` writes one `rusage` into the buffer it is given.
    if unsafe { libc::getrusage(who, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: zero-initialised, then filled by the kernel; all plain integers.
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_maxrss).unwrap_or(0).saturating_mul(1024)
}
