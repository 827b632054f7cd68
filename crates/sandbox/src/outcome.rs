//! The result of one run: verdict, usage and captured output.

use std::time::Duration;

use serde::{Serialize, Serializer};

/// The closed set of verdicts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exited with code 0.
    Ok,
    /// Exited with a non-zero code.
    RuntimeError,
    /// Killed by a signal that no limit explains.
    Signaled,
    /// Used more CPU time than allowed.
    TimeLimitCpu,
    /// Ran longer than the wall-clock limit.
    TimeLimitWall,
    /// Killed by the out-of-memory killer of its cgroup.
    MemoryLimit,
    /// Wrote more than the output limit to stdout or stderr.
    OutputLimit,
    /// The sandbox itself failed; the program may not have run.
    InternalError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::RuntimeError => "runtime_error",
            Status::Signaled => "signaled",
            Status::TimeLimitCpu => "time_limit_cpu",
            Status::TimeLimitWall => "time_limit_wall",
            Status::MemoryLimit => "memory_limit",
            Status::OutputLimit => "output_limit",
            Status::InternalError => "internal_error",
        }
    }
}

/// What happened to a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub status: Status,
    /// Exit code when the program exited.
    pub exit_code: Option<i32>,
    /// Signal number when the program was killed by a signal.
    pub signal: Option<i32>,
    /// CPU time of every process of the box.
    #[serde(rename = "cpu_ms", serialize_with = "as_millis")]
    pub cpu_time: Duration,
    #[serde(rename = "wall_ms", serialize_with = "as_millis")]
    pub wall_time: Duration,
    /// Peak memory of the box's cgroup.
    pub memory_bytes: u64,
    #[serde(serialize_with = "lossy_utf8")]
    pub stdout: Vec<u8>,
    #[serde(serialize_with = "lossy_utf8")]
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The process limit was reached at least once (a fork or clone failed).
    pub process_limit_hit: bool,
    /// What failed, for `internal_error`.
    pub error: Option<String>,
}

impl Outcome {
    /// An outcome for a run that failed inside the sandbox machinery.
    pub fn internal(error: String) -> Self {
        Outcome {
            status: Status::InternalError,
            exit_code: None,
            signal: None,
            cpu_time: Duration::ZERO,
            wall_time: Duration::ZERO,
            memory_bytes: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            process_limit_hit: false,
            error: Some(error),
        }
    }
}

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_micros() as f64) / 1000.0)
}

fn lossy_utf8<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// Name of a signal number, e.g. `SIGKILL`.
pub fn signal_name(n: i32) -> String {
    let name = match n {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        other => return format!("SIG{other}"),
    };
    name.to_owned()
}

/// Facts gathered after a run, from which the verdict follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    pub internal_error: bool,
    pub oom_killed: bool,
    pub cpu_exceeded: bool,
    pub wall_exceeded: bool,
    pub output_exceeded: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// Verdict precedence: internal error > memory > cpu time > wall time >
/// output > signal > exit code.
pub(crate) fn verdict(f: &Facts) -> Status {
    if f.internal_error {
        Status::InternalError
    } else if f.oom_killed {
        Status::MemoryLimit
    } else if f.cpu_exceeded {
        Status::TimeLimitCpu
    } else if f.wall_exceeded {
        Status::TimeLimitWall
    } else if f.output_exceeded {
        Status::OutputLimit
    } else if f.signal.is_some() {
        Status::Signaled
    } else if f.exit_code == Some(0) {
        Status::Ok
    } else {
        Status::RuntimeError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_memory_cpu_wall_output_signal_exit() {
        let all = Facts {
            internal_error: false,
            oom_killed: true,
            cpu_exceeded: true,
            wall_exceeded: true,
            output_exceeded: true,
            exit_code: None,
            signal: Some(9),
        };
        assert_eq!(verdict(&all), Status::MemoryLimit);
        let f = Facts { oom_killed: false, ..all };
        assert_eq!(verdict(&f), Status::TimeLimitCpu);
        let f = Facts { cpu_exceeded: false, ..f };
        assert_eq!(verdict(&f), Status::TimeLimitWall);
        let f = Facts { wall_exceeded: false, ..f };
        assert_eq!(verdict(&f), Status::OutputLimit);
        let f = Facts { output_exceeded: false, ..f };
        assert_eq!(verdict(&f), Status::Signaled);
        let f = Facts { signal: None, exit_code: Some(3), ..f };
        assert_eq!(verdict(&f), Status::RuntimeError);
        let f = Facts { exit_code: Some(0), ..f };
        assert_eq!(verdict(&f), Status::Ok);
        let f = Facts { internal_error: true, ..all };
        assert_eq!(verdict(&f), Status::InternalError);
    }

    #[test]
    fn outcome_serializes_times_in_milliseconds() {
        let mut o = Outcome::internal("x".into());
        o.cpu_time = Duration::from_micros(1500);
        let v = serde_json::to_value(&o).expect("serializes");
        assert_eq!(v["cpu_ms"], 1.5);
        assert_eq!(v["status"], "internal_error");
    }
}
