//! The native API (`/api/v1`).
//!
//! Requests refuse unknown fields, so a typo in a limit name is a 400
//! rather than a silently ignored setting.

use serde::{Deserialize, Serialize};

use crate::Verdict;

/// The error body of every native error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_body`.
    pub code: String,
    /// A human sentence, lowercase, no trailing period.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

/// `GET /api/v1/languages` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Language {
    pub id: String,
    pub name: String,
    /// Detected on this host, semver.
    pub version: String,
    pub aliases: Vec<String>,
    pub compiled: bool,
    pub repl: bool,
}

/// How a file's `content` is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Relative path in the workspace; the first file is the main file.
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// When given, a run that succeeds but prints something else (trailing
    /// whitespace of lines and trailing empty lines aside) is `wrong_answer`.
    #[serde(default)]
    pub expected_output: Option<String>,
}

/// Requested limits of one stage; absent fields take the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageLimits {
    pub wall_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub processes: Option<u32>,
    pub output_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub compile: StageLimits,
    #[serde(default)]
    pub run: StageLimits,
}

/// `POST /api/v1/runs` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Language id or alias.
    pub language: String,
    /// A semver range (`3.x`, `*`, `3.11.2`); default the newest installed.
    #[serde(default)]
    pub version: Option<String>,
    pub files: Vec<File>,
    /// Stdin and args of the single case run when `cases` is absent.
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub cases: Option<Vec<Case>>,
    #[serde(default)]
    pub limits: Limits,
    /// Default true: answer when done; false: 202 with an id to poll.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// One sandboxed stage (compile, or a case's run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub status: Verdict,
    pub exit_code: Option<i32>,
    /// Signal name such as `SIGKILL`.
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub cpu_ms: u64,
    pub wall_ms: u64,
    pub memory_bytes: u64,
    /// Compile stage only: the result came from the compile cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub id: String,
    pub language: String,
    pub version: String,
    /// Present for compiled languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<Stage>,
    /// One per case (one when `cases` was absent); empty after a failed
    /// compilation.
    pub cases: Vec<Stage>,
    /// `compile_error`, else the status of the first case that is not
    /// `ok`, else `ok`.
    pub status: Verdict,
}

/// `202` answer of `wait: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
}

/// `GET /api/v1/runs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub id: String,
    pub state: JobState,
    /// Present when `state` is `done` and the job ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    /// Present when `state` is `done` and the job was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}
