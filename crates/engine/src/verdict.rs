//! Verdicts of stages and cases, and the output comparison of judges.

use evald_sandbox::Status;

/// Verdict of a stage or a case (a core type: protocols map it to their own
/// wire form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Ok,
    CompileError,
    RuntimeError,
    TimeLimitCpu,
    TimeLimitWall,
    MemoryLimit,
    OutputLimit,
    WrongAnswer,
    InternalError,
}

impl Verdict {
    /// The verdict's name in every protocol.
    pub fn as_str(self) -> &'static str {
        evald_proto::Verdict::from(self).as_str()
    }

    /// The verdict of a run's sandbox status (signals are runtime errors).
    pub fn of(status: Status) -> Verdict {
        match status {
            Status::Ok => Verdict::Ok,
            Status::RuntimeError | Status::Signaled => Verdict::RuntimeError,
            Status::TimeLimitCpu => Verdict::TimeLimitCpu,
            Status::TimeLimitWall => Verdict::TimeLimitWall,
            Status::MemoryLimit => Verdict::MemoryLimit,
            Status::OutputLimit => Verdict::OutputLimit,
            Status::InternalError => Verdict::InternalError,
        }
    }

    /// The verdict of a compile step's status: the one compile-verdict rule
    /// (a compiler that exits non-zero or dies on a signal is a compile
    /// error; limits are what they are).
    pub fn of_compile(status: Status) -> Verdict {
        match status {
            Status::RuntimeError | Status::Signaled => Verdict::CompileError,
            other => Verdict::of(other),
        }
    }
}

impl From<Verdict> for evald_proto::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Ok => evald_proto::Verdict::Ok,
            Verdict::CompileError => evald_proto::Verdict::CompileError,
            Verdict::RuntimeError => evald_proto::Verdict::RuntimeError,
            Verdict::TimeLimitCpu => evald_proto::Verdict::TimeLimitCpu,
            Verdict::TimeLimitWall => evald_proto::Verdict::TimeLimitWall,
            Verdict::MemoryLimit => evald_proto::Verdict::MemoryLimit,
            Verdict::OutputLimit => evald_proto::Verdict::OutputLimit,
            Verdict::WrongAnswer => evald_proto::Verdict::WrongAnswer,
            Verdict::InternalError => evald_proto::Verdict::InternalError,
        }
    }
}

/// Output comparison of judges: trailing whitespace of each line and
/// trailing empty lines are ignored.
pub fn same_output(actual: &[u8], expected: &[u8]) -> bool {
    fn lines(b: &[u8]) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = b.split(|&c| c == b'\n').map(|l| l.trim_ascii_end()).collect();
        while v.last().is_some_and(|l| l.is_empty()) {
            v.pop();
        }
        v
    }
    lines(actual) == lines(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_comparison_ignores_trailing_whitespace_only() {
        assert!(same_output(b"1 2\n3\n\n", b"1 2  \n3"));
        assert!(!same_output(b"1 2\n3\n", b"1  2\n3\n"));
        assert!(!same_output(b"1\n\n2\n", b"1\n2\n"));
    }

    #[test]
    fn a_failing_compiler_is_a_compile_error_and_limits_stay_limits() {
        assert_eq!(Verdict::of_compile(Status::RuntimeError), Verdict::CompileError);
        assert_eq!(Verdict::of_compile(Status::Signaled), Verdict::CompileError);
        assert_eq!(Verdict::of_compile(Status::TimeLimitWall), Verdict::TimeLimitWall);
        assert_eq!(Verdict::of_compile(Status::Ok), Verdict::Ok);
        assert_eq!(Verdict::of(Status::Signaled), Verdict::RuntimeError);
    }
}
