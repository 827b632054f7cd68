//! What to run and under which limits: the run specification and its validation.
//!
//! Every field is checked by [`RunSpec::validate`] before anything is created on
//! the host, so a bad specification changes nothing.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the program's standard input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stdin {
    /// `/dev/null`.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A pipe whose write end the caller gets from [`crate::Running`].
    Pipe,
    /// A pseudo-terminal of this size on stdin, stdout and stderr; the caller
    /// gets the master side from [`crate::Running`].
    Pty { rows: u16, cols: u16 },
}

/// Network access of the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// An empty network namespace: no interface is up, not even loopback.
    #[default]
    None,
    /// A private network namespace with only its own loopback interface up.
    Loopback,
}

/// The limits of one run. Every field must be non-zero and at most the
/// matching field of [`Limits::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time from start to end.
    pub wall_time: Duration,
    /// CPU time of all processes of the box together.
    pub cpu_time: Duration,
    /// Memory of all processes of the box (and of its tmpfs files); swap is off.
    pub memory_bytes: u64,
    /// Processes and threads alive at once.
    pub processes: u32,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: u32,
    /// Bytes kept per output stream; more is an `output_limit` verdict.
    pub output_bytes: u64,
    /// Size of each tmpfs of the box: the workspace, `/tmp` and `/dev/shm`.
    pub disk_bytes: u64,
    /// Stack of each process (RLIMIT_STACK), at least [`MIN_STACK_BYTES`].
    pub stack_bytes: u64,
    /// Address space of each process (RLIMIT_AS), on top of the box's
    /// memory limit; `None`: no per-process bound.
    pub process_memory_bytes: Option<u64>,
}

impl Limits {
    /// The largest value accepted for each limit.
    pub const MAX: Limits = Limits {
        wall_time: Duration::from_secs(3600),
        cpu_time: Duration::from_secs(3600),
        memory_bytes: 16 << 30,
        processes: 4096,
        file_size_bytes: 4 << 30,
        open_files: 65536,
        output_bytes: 1 << 30,
        disk_bytes: 4 << 30,
        stack_bytes: 4 << 30,
        process_memory_bytes: Some(16 << 30),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(5),
            memory_bytes: 256 << 20,
            processes: 64,
            file_size_bytes: 64 << 20,
            open_files: 256,
            output_bytes: 1 << 20,
            disk_bytes: 64 << 20,
            stack_bytes: DEFAULT_STACK_BYTES,
            process_memory_bytes: None,
        }
    }
}

/// A file placed in the box's workspace before the program starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Relative path inside the workspace; sub-directories are created.
    pub path: String,
    pub content: Vec<u8>,
    /// Mode bit: executable by the box user.
    pub executable: bool,
}

/// Everything about one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Program path as seen inside the box. A name without `/` is looked up
    /// in `/usr/local/bin`, `/usr/bin` and `/bin`.
    pub program: String,
    /// Arguments after `argv[0]` (which is `program`).
    pub args: Vec<String>,
    /// The whole environment of the program (nothing is inherited); `PATH`,
    /// `HOME`, `LANG` and (with a PTY) `TERM` get defaults when absent.
    pub env: Vec<(String, String)>,
    /// Working directory inside the box; default the workspace, `/box`.
    pub cwd: String,
    pub files: Vec<FileSpec>,
    pub stdin: Stdin,
    pub limits: Limits,
    pub network: Network,
}

impl RunSpec {
    /// A spec that runs `program` with `args`, default limits, no files.
    pub fn new(program: impl Into<String>, args: Vec<String>) -> Self {
        RunSpec {
            program: program.into(),
            args,
            env: Vec::new(),
            cwd: crate::WORKSPACE_DIR.to_owned(),
            files: Vec::new(),
            stdin: Stdin::Null,
            limits: Limits::default(),
            network: Network::None,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.program.is_empty() {
            return Err(SpecError::MissingProgram);
        }
        no_nul("program", &self.program)?;
        for arg in &self.args {
            no_nul("argument", arg)?;
        }
        let arg_bytes: usize = self.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + self.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
        if arg_bytes > MAX_ARG_BYTES {
            return Err(SpecError::ArgumentsTooLarge { bytes: arg_bytes, max: MAX_ARG_BYTES });
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(SpecError::BadEnvName(name.clone()));
            }
            no_nul("environment value", value)?;
        }
        if !self.cwd.starts_with('/') {
            return Err(SpecError::BadCwd(self.cwd.clone()));
        }
        no_nul("working directory", &self.cwd)?;
        if self.cwd.split('/').any(|c| c == "..") {
            return Err(SpecError::BadCwd(self.cwd.clone()));
        }
        self.limits.validate()?;
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for file in &self.files {
            check_relative_path(&file.path)?;
            if !seen.insert(evald_proto::path::normalize(&file.path)) {
                return Err(SpecError::DuplicateFile(file.path.clone()));
            }
            total += file.content.len() as u64;
        }
        if self.files.len() > MAX_FILES {
            return Err(SpecError::TooManyFiles { count: self.files.len(), max: MAX_FILES });
        }
        if total > self.limits.disk_bytes {
            return Err(SpecError::FilesTooLarge { bytes: total, max: self.limits.disk_bytes });
        }
        if let Stdin::Pty { rows, cols } = self.stdin {
            if rows == 0 || cols == 0 {
                return Err(SpecError::BadTerminalSize { rows, cols });
            }
        }
        Ok(())
    }
}

impl Limits {
    /// Checks every limit: non-zero, at most [`Limits::MAX`], and at least
    /// what a box needs to start its program at all.
    pub fn validate(&self) -> Result<(), SpecError> {
        let l = self;
        let m = &Limits::MAX;
        let checks: [(&'static str, u128, u128); 10] = [
            ("wall_time", l.wall_time.as_millis(), m.wall_time.as_millis()),
            ("cpu_time", l.cpu_time.as_millis(), m.cpu_time.as_millis()),
            ("memory_bytes", l.memory_bytes.into(), m.memory_bytes.into()),
            ("processes", l.processes.into(), m.processes.into()),
            ("file_size_bytes", l.file_size_bytes.into(), m.file_size_bytes.into()),
            ("open_files", l.open_files.into(), m.open_files.into()),
            ("output_bytes", l.output_bytes.into(), m.output_bytes.into()),
            ("disk_bytes", l.disk_bytes.into(), m.disk_bytes.into()),
            ("stack_bytes", l.stack_bytes.into(), m.stack_bytes.into()),
            (
                "process_memory_bytes",
                l.process_memory_bytes.unwrap_or(MIN_MEMORY_BYTES).into(),
                m.process_memory_bytes.unwrap_or(u64::MAX).into(),
            ),
        ];
        for (name, value, max) in checks {
            if value == 0 {
                return Err(SpecError::ZeroLimit(name));
            }
            if value > max {
                return Err(SpecError::LimitTooLarge { name, max });
            }
        }
        if l.memory_bytes < MIN_MEMORY_BYTES {
            return Err(SpecError::MemoryTooSmall { min: MIN_MEMORY_BYTES });
        }
        if l.process_memory_bytes.is_some_and(|b| b < MIN_MEMORY_BYTES) {
            return Err(SpecError::MemoryTooSmall { min: MIN_MEMORY_BYTES });
        }
        if l.stack_bytes < MIN_STACK_BYTES {
            return Err(SpecError::StackTooSmall { min: MIN_STACK_BYTES });
        }
        if l.open_files < MIN_OPEN_FILES {
            return Err(SpecError::OpenFilesTooSmall { min: MIN_OPEN_FILES });
        }
        if l.processes < MIN_PROCESSES {
            return Err(SpecError::ProcessesTooFew { min: MIN_PROCESSES });
        }
        Ok(())
    }
}

/// Largest total size of arguments and environment.
pub const MAX_ARG_BYTES: usize = 1 << 20;
/// Most files in one specification.
pub const MAX_FILES: usize = 1000;
/// Below this a box cannot even start its init process.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;
/// Below this `execve` has no room for the program's arguments.
pub const MIN_STACK_BYTES: u64 = 128 << 10;
/// The stack of a box's processes unless asked (Linux's usual 8 MiB).
pub const DEFAULT_STACK_BYTES: u64 = 8 << 20;
/// Below this the payload cannot get its standard streams.
pub const MIN_OPEN_FILES: u32 = 4;
/// The box's init counts as one process: below this the program cannot
/// start.
pub const MIN_PROCESSES: u32 = 2;

fn no_nul(what: &'static str, s: &str) -> Result<(), SpecError> {
    if s.contains('\0') {
        return Err(SpecError::NulByte(what));
    }
    Ok(())
}

/// Checks a workspace path with the API's path rule
/// ([`evald_proto::path::check_relative_path`]).
pub(crate) fn check_relative_path(path: &str) -> Result<(), SpecError> {
    evald_proto::path::check_relative_path(path).map_err(SpecError::from)
}

/// Why a specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("missing program")]
    MissingProgram,
    #[error("{0} contains a NUL byte")]
    NulByte(&'static str),
    #[error("arguments and environment take {bytes} bytes, more than {max}")]
    ArgumentsTooLarge { bytes: usize, max: usize },
    #[error("invalid environment variable name {0:?}")]
    BadEnvName(String),
    #[error("working directory {0:?} must be an absolute path without `..`")]
    BadCwd(String),
    #[error("limit {0} must be greater than zero")]
    ZeroLimit(&'static str),
    #[error("limit {name} exceeds the maximum of {max}")]
    LimitTooLarge { name: &'static str, max: u128 },
    #[error("memory limit must be at least {min} bytes")]
    MemoryTooSmall { min: u64 },
    #[error("stack limit must be at least {min} bytes")]
    StackTooSmall { min: u64 },
    #[error("open files limit must be at least {min}")]
    OpenFilesTooSmall { min: u32 },
    #[error("processes limit must be at least {min} (the box's init is one)")]
    ProcessesTooFew { min: u32 },
    #[error("invalid file path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("duplicate file {0:?}")]
    DuplicateFile(String),
    #[error("{count} files, more than the maximum of {max}")]
    TooManyFiles { count: usize, max: usize },
    #[error("files take {bytes} bytes, more than the disk limit of {max}")]
    FilesTooLarge { bytes: u64, max: u64 },
    #[error("terminal size {rows}x{cols} must be non-zero")]
    BadTerminalSize { rows: u16, cols: u16 },
}

impl From<evald_proto::path::PathError> for SpecError {
    fn from(e: evald_proto::path::PathError) -> Self {
        SpecError::BadPath { path: e.path, reason: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec::new("/bin/true", vec![])
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn missing_program_is_refused() {
        let s = RunSpec::new("", vec![]);
        assert_eq!(s.validate(), Err(SpecError::MissingProgram));
    }

    #[test]
    fn nul_bytes_are_refused() {
        let mut s = spec();
        s.args.push("a\0b".into());
        assert_eq!(s.validate(), Err(SpecError::NulByte("argument")));
        let mut s = spec();
        s.program = "/bin/tr\0ue".into();
        assert_eq!(s.validate(), Err(SpecError::NulByte("program")));
    }

    #[test]
    fn zero_and_absurd_limits_are_refused() {
        let mut s = spec();
        s.limits.wall_time = Duration::ZERO;
        assert_eq!(s.validate(), Err(SpecError::ZeroLimit("wall_time")));
        let mut s = spec();
        s.limits.memory_bytes = 1 << 50;
        assert_eq!(s.validate(), Err(SpecError::LimitTooLarge { name: "memory_bytes", max: 16 << 30 }));
        let mut s = spec();
        s.limits.processes = 0;
        assert_eq!(s.validate(), Err(SpecError::ZeroLimit("processes")));
        let mut s = spec();
        s.limits.memory_bytes = 1024;
        assert_eq!(s.validate(), Err(SpecError::MemoryTooSmall { min: MIN_MEMORY_BYTES }));
        let mut s = spec();
        s.limits.process_memory_bytes = Some(1024);
        assert_eq!(s.validate(), Err(SpecError::MemoryTooSmall { min: MIN_MEMORY_BYTES }));
        s.limits.process_memory_bytes = Some(1 << 50);
        assert_eq!(s.validate(), Err(SpecError::LimitTooLarge { name: "process_memory_bytes", max: 16 << 30 }));
        let mut s = spec();
        s.limits.stack_bytes = 0;
        assert_eq!(s.validate(), Err(SpecError::ZeroLimit("stack_bytes")));
        s.limits.stack_bytes = 4096;
        assert_eq!(s.validate(), Err(SpecError::StackTooSmall { min: MIN_STACK_BYTES }));
        let mut s = spec();
        s.limits.processes = 1;
        assert_eq!(s.validate(), Err(SpecError::ProcessesTooFew { min: MIN_PROCESSES }));
        assert_eq!(s.limits.validate(), Err(SpecError::ProcessesTooFew { min: MIN_PROCESSES }));
    }

    #[test]
    fn workspace_paths_are_checked() {
        for (path, reason) in [
            ("../x", "`..` is not allowed"),
            ("a/../../x", "`..` is not allowed"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("", "empty path"),
            ("a\0b", "contains a NUL byte"),
            ("./a", "empty or `.` component"),
            ("a/", "ends with `/`"),
        ] {
            let mut s = spec();
            s.files.push(FileSpec { path: path.into(), content: vec![], executable: false });
            assert_eq!(s.validate(), Err(SpecError::BadPath { path: path.into(), reason }), "path {path:?}");
        }
    }

    #[test]
    fn duplicate_files_are_refused() {
        let mut s = spec();
        for p in ["dir/a", "dir//a"] {
            s.files.push(FileSpec { path: p.into(), content: vec![], executable: false });
        }
        assert_eq!(s.validate(), Err(SpecError::DuplicateFile("dir//a".into())));
    }

    #[test]
    fn oversized_files_and_arguments_are_refused() {
        let mut s = spec();
        s.limits.disk_bytes = 10;
        s.files.push(FileSpec { path: "f".into(), content: vec![0; 11], executable: false });
        assert_eq!(s.validate(), Err(SpecError::FilesTooLarge { bytes: 11, max: 10 }));
        let mut s = spec();
        s.args.push("x".repeat(MAX_ARG_BYTES));
        assert!(matches!(s.validate(), Err(SpecError::ArgumentsTooLarge { .. })));
    }

    #[test]
    fn bad_env_and_cwd_are_refused() {
        let mut s = spec();
        s.env.push(("A=B".into(), "c".into()));
        assert_eq!(s.validate(), Err(SpecError::BadEnvName("A=B".into())));
        let mut s = spec();
        s.cwd = "box".into();
        assert_eq!(s.validate(), Err(SpecError::BadCwd("box".into())));
        let mut s = spec();
        s.cwd = "/box/../etc".into();
        assert_eq!(s.validate(), Err(SpecError::BadCwd("/box/../etc".into())));
    }
}
