//! A started box: its handles, its limits and how its outcome is made.
//!
//! [`Running::drive`] (in `drive`) runs a box to its end; the other public
//! methods serve callers that drive a box themselves until they move to it.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::Pid;

use crate::cgroup::BoxCgroup;
use crate::launch::{Channel, InitReport, Op, PayloadStep, Step};
use crate::outcome::{verdict, Facts, Outcome, Status};
use crate::pool::SlotGuard;
use crate::reaper::Teardown;
use crate::spec::Limits;
use crate::sys;

/// The shortest interval between two samples of a box's CPU time.
const CPU_POLL: Duration = Duration::from_millis(10);

/// A running box. Drop kills it and removes its cgroups.
///
/// Run it to its end with [`Running::drive`]. Callers not yet on `drive`
/// take its stdio with the `take_*` methods (all non-blocking), wait for
/// [`Running::pidfd`] to become readable (the box's init exited), then call
/// [`Running::wait`], calling [`Running::check_limits`] every few
/// milliseconds meanwhile.
pub struct Running {
    /// Moves to the reaper with the cgroup when the outcome is known.
    pub(crate) slot: Option<SlotGuard>,
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    /// The init's socket: its report comes on it. `None` while (and once)
    /// the driver reads it.
    pub(crate) status_read: Option<OwnedFd>,
    /// The init's report, once read.
    pub(crate) report: Option<InitReport>,
    pub(crate) cgroup: Option<BoxCgroup>,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
    pub(crate) pty: Option<OwnedFd>,
    pub(crate) limits: Limits,
    pub(crate) started: Instant,
    /// When the CPU time is next worth reading: a box cannot use more CPU
    /// time than `cpus` times the wall time, so until then it cannot have
    /// reached its limit.
    pub(crate) cpu_check_at: Instant,
    pub(crate) cpus: u32,
    pub(crate) killed: Facts,
    pub(crate) finished: bool,
    /// The root-building steps, to name the one that failed.
    pub(crate) ops: Vec<Op>,
}

/// An outcome as [`Running::finish`] makes it: without output, plus the
/// text evald itself has for the program's stderr (why it could not start).
pub(crate) struct Finished {
    pub outcome: Outcome,
    pub notice: Option<Vec<u8>>,
}

impl Running {
    /// Host pid of the box's init.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Resizes a terminal (only for `Stdin::Pty`, given the master fd).
    pub(crate) fn resize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
        let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        Ok(rustix::termios::tcsetwinsize(master, size)?)
    }

    /// Sends `signal` to the program's process group (like a terminal's ^C).
    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))?;
        let payload = children.split_whitespace().next().and_then(|p| p.parse().ok()).and_then(Pid::from_raw);
        let Some(payload) = payload else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the program is not running"));
        };
        // The payload leads its own session and process group.
        Ok(sys::signal_group(payload, signal)?)
    }

    /// Enforces the wall-clock and CPU limits; returns the limit that was hit
    /// (the box is then being killed).
    pub(crate) fn check_limits(&mut self) -> Option<Status> {
        if self.finished {
            return None;
        }
        if self.started.elapsed() >= self.limits.wall_time {
            self.killed.wall_exceeded = true;
            self.kill();
            return Some(Status::TimeLimitWall);
        }
        let now = Instant::now();
        if now < self.cpu_check_at {
            return None;
        }
        if let Some(Ok(ns)) = self.cgroup.as_ref().map(|c| c.cpu_ns()) {
            let used = Duration::from_nanos(ns);
            if used > self.limits.cpu_time {
                self.killed.cpu_exceeded = true;
                self.kill();
                return Some(Status::TimeLimitCpu);
            }
            self.cpu_check_at = now + ((self.limits.cpu_time - used) / self.cpus).max(CPU_POLL);
        } else {
            self.cpu_check_at = now + CPU_POLL;
        }
        None
    }

    /// Records that the caller stopped reading output because of the output
    /// limit, and kills the box.
    pub(crate) fn output_limit_hit(&mut self) {
        self.killed.output_exceeded = true;
        self.kill();
    }

    /// Kills every process of the box: SIGKILL to its init (whose pid
    /// namespace dies with it) and through its cgroup, without waiting (the
    /// driver awaits the init's end; the reaper waits for the rest).
    pub fn kill(&mut self) {
        sys::kill(&self.pidfd);
        if let Some(Err(e)) = self.cgroup.as_ref().map(|c| c.kill_now()) {
            tracing::warn!(error = %e, "killing box processes");
        }
    }

    /// Time until the next limit check is due.
    pub(crate) fn next_check(&self) -> Duration {
        let left = self.limits.wall_time.saturating_sub(self.started.elapsed());
        left.min(self.cpu_check_at.saturating_duration_since(Instant::now()))
    }

    /// The outcome, once the init reported (or ended): its report, the
    /// cgroup's accounting and the limits hit; then hands the box to the
    /// reaper. Without a report it waits for the init's end first. Runs
    /// once; output is the caller's.
    pub(crate) fn finish(&mut self) -> Finished {
        let wall_time = self.started.elapsed();
        self.finished = true;
        let report = match self.report {
            Some(report) => Some(report),
            None => {
                // Wait for the init's end (the pidfd is readable, or the
                // box was killed); its report, if any, is on its socket.
                sys::wait_exited(self.pidfd.as_fd());
                let chan = self.status_read.take().map(Channel::from_fd);
                chan.and_then(|c| c.recv::<InitReport>().ok()).map(|received| received.message)
            }
        };
        // `finish` runs once, before the cgroup moves to the reaper.
        let usage = self.cgroup.as_ref().map(BoxCgroup::usage);
        let mut facts = self.killed;
        let mut error = None;
        let mut notice = None;
        let mut payload_rss = None;
        match report {
            Some(InitReport::Exited { wait_status, max_rss }) => {
                payload_rss = Some(max_rss);
                if libc::WIFEXITED(wait_status) {
                    facts.exit_code = Some(libc::WEXITSTATUS(wait_status));
                } else if libc::WIFSIGNALED(wait_status) {
                    facts.signal = Some(libc::WTERMSIG(wait_status));
                }
            }
            Some(InitReport::SetupFailed {
                step: step @ Step::Payload(PayloadStep::Exec | PayloadStep::Cwd),
                errno,
            }) => {
                // The program could not start: like a shell, exit 127 (not
                // found) or 126 (not executable), with the reason on stderr.
                let e = io::Error::from_raw_os_error(errno);
                facts.exit_code = Some(if errno == libc::ENOENT { 127 } else { 126 });
                notice = Some(format!("evald: {}: {e}\n", step.name()).into_bytes());
            }
            Some(InitReport::SetupFailed { step, errno }) => {
                let e = io::Error::from_raw_os_error(errno);
                facts.internal_error = true;
                let what = match step {
                    Step::Op(i) => self.ops.get(i as usize).map_or_else(|| step.name().to_owned(), Op::describe),
                    other => other.name().to_owned(),
                };
                error = Some(format!("the box failed while {what}: {e}"));
            }
            Some(InitReport::Moved(_)) => {
                facts.internal_error = true;
                error = Some("the box init answered its plan with Moved".into());
            }
            None => {
                // No report: the init was killed (by us for a limit, or by
                // the OOM killer) before the payload ended.
                facts.signal = Some(libc::SIGKILL);
            }
        }
        let (cpu_time, memory_bytes, process_limit_hit) = match &usage {
            Some(Ok(u)) => {
                facts.oom_killed = u.oom_killed;
                (
                    Duration::from_nanos(u.cpu_ns),
                    memory_figure(u.memory_peak_bytes, payload_rss, self.limits.memory_bytes),
                    u.pids_max_hit,
                )
            }
            Some(Err(e)) => {
                facts.internal_error = true;
                error = Some(format!("reading the box's usage: {e}"));
                (Duration::ZERO, 0, false)
            }
            None => {
                facts.internal_error = true;
                error = Some("reading the box's usage: the box was already finished".into());
                (Duration::ZERO, 0, false)
            }
        };
        if cpu_time > self.limits.cpu_time {
            facts.cpu_exceeded = true;
        }
        self.hand_to_reaper();
        let outcome = Outcome {
            status: verdict(&facts),
            exit_code: facts.exit_code,
            signal: facts.signal,
            cpu_time,
            wall_time,
            memory_bytes,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            process_limit_hit,
            error,
        };
        Finished { outcome, notice }
    }

    /// Passes the init, the cgroups and the slot to the reaper thread, or
    /// tears them down here if it is gone.
    fn hand_to_reaper(&mut self) {
        let (Some(cgroup), Some(slot)) = (self.cgroup.take(), self.slot.take()) else { return };
        let pidfd = match self.pidfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                // Without a second descriptor, finish here.
                tracing::warn!(error = %e, "duplicating a pidfd");
                self.kill();
                sys::wait_exited(self.pidfd.as_fd());
                drop(cgroup);
                drop(slot);
                return;
            }
        };
        Teardown { pidfd, cgroup, slot }.hand_over();
    }
}

impl Drop for Running {
    /// A box dropped before its end (its driver was dropped): killed, and
    /// handed to the reaper, which waits for its end; nothing here blocks.
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
            self.finished = true;
            self.hand_to_reaper();
        }
    }
}

/// The memory figure of a run: the larger of the box cgroup's peak above
/// the run's start (every process of the box together, what the limit is
/// enforced on) and the largest resident set of one of its processes
/// (`ru_maxrss`, which includes the shared library pages it mapped).
///
/// The kernel charges a cgroup in per-CPU batches of 64 pages, kept as a
/// per-CPU stock, so the cgroup's peak is only resolved to 64 pages per CPU
/// (a small program may charge nothing new at all, and a large one appear up
/// to that much smaller); the resident set is exact for one process and
/// never below the init's own (about 1.6 MiB: the program starts on the
/// init's memory before `execve`). So no program that ran reports 0. The
/// resident set also counts shared pages charged elsewhere, so it is capped
/// at the memory limit (an OOM-killed program reports at most its limit).
pub(crate) fn memory_figure(cgroup_peak: u64, payload_rss: Option<u64>, limit: u64) -> u64 {
    cgroup_peak.max(payload_rss.unwrap_or(0).min(limit))
}

#[cfg(test)]
mod tests {
    use super::memory_figure;

    #[test]
    fn the_memory_figure_is_the_larger_of_the_cgroup_peak_and_the_resident_set() {
        const MIB: u64 = 1 << 20;
        // Several processes: the cgroup's sum is larger.
        assert_eq!(memory_figure(40 * MIB, Some(22 * MIB), 64 * MIB), 40 * MIB);
        // A small program the cgroup did not resolve: its resident set.
        assert_eq!(memory_figure(0, Some(1700 << 10), 64 * MIB), 1700 << 10);
        assert_eq!(memory_figure(20 * MIB - 10_000, Some(21 * MIB), 64 * MIB), 21 * MIB);
        // Shared pages on top of an OOM-killed program: at most the limit.
        assert_eq!(memory_figure(64 * MIB - 4096, Some(72 * MIB), 64 * MIB), 64 * MIB);
        // No report (the box was killed): the cgroup's figure.
        assert_eq!(memory_figure(64 * MIB, None, 64 * MIB), 64 * MIB);
    }
}
