//! The engine: languages, compile and run steps, the compile cache, verdicts
//! and the node's capacity. The one way into the sandbox for the HTTP
//! crates.
//!
//! - [`Engine::run_job`]: a batch job; a compiled language is compiled once
//!   in a fresh workspace with the compile limits, and what the compile step
//!   leaves there (read back through the workspace's beneath-only file
//!   access) becomes the file set of each test case, which then runs in a
//!   fresh box of its own with the run limits. The compile cache keeps such
//!   file sets keyed by language, version, compile command and sources;
//!   cached copies live in the service's memory, never in a directory
//!   untrusted code can write.
//! - [`Engine::compile`] and [`Engine::start`] + [`Process::drive`]: the
//!   streaming run API (pipes or a terminal) that Piston WebSockets and
//!   sessions use, and `run_job` too. The engine owns argv expansion, the
//!   environment, the limits and the compile-verdict rule.
//! - [`Capacity`]: every call that starts a box takes a [`Permit`], so
//!   batch runs and session processes draw on the same slots and memory.
//! - [`Lifecycle`]: the node's one drain/shutdown signal.
//!
//! Box creation and teardown are blocking (they run on tokio's blocking
//! pool); driving a box is async, one task per running box.

#![forbid(unsafe_code)]

pub mod cache;
mod capacity;
pub mod catalogue;
mod compile;
mod job;
mod lifecycle;
mod limits;
mod process;
mod verdict;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use evald_sandbox::SandboxError;

pub use cache::CompileCache;
pub use capacity::{mem_total, Capacity, CapacityConfig, Permit, Refusal, Ticket};
pub use catalogue::{Catalogue, Language};
pub use compile::{Compiled, Place};
pub use job::{Case, Job, JobResult, StageResult};
pub use lifecycle::{Lifecycle, Phase};
pub use limits::{LimitRequest, StageLimits};
pub use process::{Io, Launch, Process, Program};
pub use verdict::{same_output, Verdict};

/// What the HTTP crates need of the sandbox, through the engine.
pub use evald_sandbox::{
    signal_name, Capture, Control, Entry, FileSpec, Limits, Outcome, Sandbox, SandboxConfig, Sink, Status, Stream,
    Workspace, WorkspaceError, MIN_MEMORY_BYTES, MIN_STACK_BYTES,
};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Defaults and maximums of each stage.
    pub compile: StageLimits,
    pub run: StageLimits,
    /// Most test cases in one job.
    pub max_cases: usize,
    /// Most source files, and the largest one, in bytes.
    pub max_files: usize,
    pub max_file_bytes: u64,
    /// Compile cache capacity in bytes (0 disables it).
    pub cache_bytes: u64,
    /// The node's capacity (its slots are the sandbox's).
    pub capacity: CapacityConfig,
}

impl EngineConfig {
    /// The defaults, with a memory budget for admitted work.
    pub fn new(memory_budget_bytes: u64) -> EngineConfig {
        EngineConfig {
            compile: StageLimits::compile_defaults(),
            run: StageLimits::run_defaults(),
            max_cases: 64,
            max_files: 100,
            max_file_bytes: 4 << 20,
            cache_bytes: 256 << 20,
            capacity: CapacityConfig {
                memory_budget_bytes,
                queue: CapacityConfig::DEFAULT_QUEUE,
                queue_timeout: CapacityConfig::DEFAULT_QUEUE_TIMEOUT,
            },
        }
    }
}

/// A source file of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// Why a request was refused or a step could not run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no files were given")]
    NoFiles,
    #[error("{count} files, more than the maximum of {max}")]
    TooManyFiles { count: usize, max: usize },
    #[error("file {path:?} has {size} bytes, more than the maximum of {max}")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("{count} test cases, more than the maximum of {max}")]
    TooManyCases { count: usize, max: usize },
    /// Two files that cannot both exist.
    #[error("{0}")]
    PathConflict(evald_proto::path::Conflict),
    #[error("{0}")]
    Limit(#[from] limits::LimitError),
    #[error("{0}")]
    Spec(#[from] evald_sandbox::SpecError),
    #[error("this language has no REPL")]
    NoRepl,
    /// Every slot is taken or being torn down (only when more boxes run than
    /// capacity admitted).
    #[error("the sandbox is busy")]
    Busy,
    /// A box could not be started.
    #[error("starting a box: {0}")]
    Start(String),
    #[error("sandbox failure: {0}")]
    Sandbox(String),
    /// This engine was made without a sandbox ([`Engine::without_sandbox`]).
    #[error("this node runs no code")]
    NoSandbox,
}

impl From<SandboxError> for EngineError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Spec(s) => EngineError::Spec(s),
            SandboxError::Busy(_) => EngineError::Busy,
            other => EngineError::Start(other.to_string()),
        }
    }
}

/// Runs blocking sandbox work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| EngineError::Sandbox(format!("a blocking task failed: {e}")))
}

/// The engine: installed languages, the sandbox and the node's capacity.
pub struct Engine {
    sandbox: Option<Sandbox>,
    config: EngineConfig,
    languages: Vec<Arc<Language>>,
    by_name: HashMap<String, Vec<usize>>,
    cache: CompileCache,
    capacity: Capacity,
    counter: AtomicU64,
}

impl Engine {
    /// An engine that runs code in `sandbox`; its capacity has the sandbox's
    /// slots and refuses work as `lifecycle` says.
    pub fn new(sandbox: Sandbox, languages: Vec<Arc<Language>>, config: EngineConfig, lifecycle: &Lifecycle) -> Engine {
        let slots = sandbox.config().slots;
        Engine::build(Some(sandbox), slots, languages, config, lifecycle)
    }

    /// An engine that knows the languages but runs no code: every step that
    /// would start a box answers [`EngineError::NoSandbox`]. For tests and
    /// tools that run nothing (routing, validation, documents), which then
    /// need no root. `slots` sizes its capacity.
    pub fn without_sandbox(
        slots: u32,
        languages: Vec<Arc<Language>>,
        config: EngineConfig,
        lifecycle: &Lifecycle,
    ) -> Engine {
        Engine::build(None, slots, languages, config, lifecycle)
    }

    fn build(
        sandbox: Option<Sandbox>,
        slots: u32,
        languages: Vec<Arc<Language>>,
        config: EngineConfig,
        lifecycle: &Lifecycle,
    ) -> Engine {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, l) in languages.iter().enumerate() {
            for name in std::iter::once(&l.spec.id).chain(&l.spec.aliases) {
                by_name.entry(name.to_ascii_lowercase()).or_default().push(i);
            }
        }
        let cache = CompileCache::new(config.cache_bytes);
        let capacity = Capacity::new(slots, config.capacity, lifecycle.subscribe());
        Engine { sandbox, config, languages, by_name, cache, capacity, counter: AtomicU64::new(0) }
    }

    fn sandbox(&self) -> Result<&Sandbox, EngineError> {
        self.sandbox.as_ref().ok_or(EngineError::NoSandbox)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Installed languages, in catalogue order.
    pub fn languages(&self) -> &[Arc<Language>] {
        &self.languages
    }

    pub fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// The node's capacity: every box started runs under one of its permits.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// Waits (bounded, see [`Capacity`]) for a slot and `memory_bytes`.
    pub async fn admit(&self, memory_bytes: u64) -> Result<Permit, Refusal> {
        self.capacity.admit(memory_bytes).await
    }

    /// Creates a persistent workspace named `name` (letters, digits, `-`,
    /// `_`) of `size_bytes`, for a session. Blocking.
    pub fn create_workspace(&self, name: &str, size_bytes: u64) -> Result<Workspace, EngineError> {
        self.sandbox()?
            .create_workspace(name, size_bytes)
            .map_err(|e| EngineError::Sandbox(format!("creating the workspace {name}: {e}")))
    }

    /// For a process about to exit: waits for the boxes being torn down and
    /// ends the prepared ones. Blocking.
    pub fn shutdown(&self) {
        if let Some(s) = &self.sandbox {
            s.shutdown();
        }
    }

    /// Finds a language by id or alias (case-insensitive) whose version
    /// matches `range`: `*`, `3.x`, `^3.10`, or a plain version such as
    /// `3.11.2` or `3.11`, which must match exactly (as Piston does).
    pub fn resolve(&self, name: &str, range: Option<&str>) -> Option<Arc<Language>> {
        let candidates = self.by_name.get(&name.to_ascii_lowercase())?;
        let req = match range.map(str::trim) {
            None | Some("") | Some("*") | Some("latest") => None,
            Some(r) => Some(parse_range(r)?),
        };
        candidates
            .iter()
            .map(|&i| &self.languages[i])
            .filter(|l| req.as_ref().is_none_or(|r| r.matches(&l.version)))
            .max_by(|a, b| a.version.cmp(&b.version))
            .cloned()
    }

    /// Checks the files of a job against the engine's limits.
    pub fn check_files(&self, files: &[SourceFile]) -> Result<(), EngineError> {
        if files.is_empty() {
            return Err(EngineError::NoFiles);
        }
        if files.len() > self.config.max_files {
            return Err(EngineError::TooManyFiles { count: files.len(), max: self.config.max_files });
        }
        for f in files {
            evald_proto::path::check_relative_path(&f.path).map_err(evald_sandbox::SpecError::from)?;
            let size = f.content.len() as u64;
            if size > self.config.max_file_bytes {
                return Err(EngineError::FileTooLarge { path: f.path.clone(), size, max: self.config.max_file_bytes });
            }
        }
        match evald_proto::path::find_conflict(files.iter().map(|f| f.path.as_str())) {
            Some(conflict) => Err(EngineError::PathConflict(conflict)),
            None => Ok(()),
        }
    }

    /// Resolves the limits of both stages for `language` and checks both
    /// (a limit no box can start under is refused even for a stage that
    /// will not run).
    pub fn limits(
        &self,
        language: &Language,
        compile: &LimitRequest,
        run: &LimitRequest,
    ) -> Result<(Limits, Limits), EngineError> {
        let o = &language.spec.limits;
        let compile_floor = LimitRequest {
            wall_ms: o.compile_wall_ms,
            cpu_ms: o.compile_cpu_ms,
            memory_bytes: o.compile_memory_bytes.or(o.memory_bytes),
            processes: o.compile_processes.or(o.processes),
            open_files: o.open_files,
            ..LimitRequest::default()
        };
        let run_floor = LimitRequest {
            memory_bytes: o.memory_bytes,
            processes: o.processes,
            open_files: o.open_files,
            ..LimitRequest::default()
        };
        let compile = self.config.compile.resolve("compile", compile, &compile_floor)?;
        let run = self.config.run.resolve("run", run, &run_floor)?;
        // Both stages' limits are checked, whether or not a stage will run.
        compile.validate()?;
        run.validate()?;
        Ok((compile, run))
    }

    /// The memory a job of `language` reserves: the larger of its stages'
    /// limits (they run one after the other).
    pub fn reservation(language: &Language, compile: &Limits, run: &Limits) -> u64 {
        if language.compiled() {
            compile.memory_bytes.max(run.memory_bytes)
        } else {
            run.memory_bytes
        }
    }
}

/// Expands `{main}`, `{main_stem}` and `{files}` in a command.
pub fn expand(cmd: &[String], files: &[SourceFile]) -> Vec<String> {
    let main = files.first().map(|f| f.path.as_str()).unwrap_or("");
    let stem = match main.rfind('.') {
        Some(i) if i > main.rfind('/').map_or(0, |s| s + 1) => &main[..i],
        _ => main,
    };
    let mut out = Vec::with_capacity(cmd.len() + files.len());
    for arg in cmd {
        if arg == "{files}" {
            out.extend(files.iter().map(|f| f.path.clone()));
        } else {
            out.push(arg.replace("{main_stem}", stem).replace("{main}", main));
        }
    }
    out
}

fn parse_range(r: &str) -> Option<semver::VersionReq> {
    let plain = !r.is_empty()
        && r.split('.').count() <= 3
        && r.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let text = if plain { format!("={r}") } else { r.to_owned() };
    semver::VersionReq::parse(&text).ok()
}

/// How long a job may take at most, for request timeouts.
pub fn max_job_duration(config: &EngineConfig, cases: usize) -> Duration {
    config.compile.max.wall_time + config.run.max.wall_time * cases.max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str) -> SourceFile {
        SourceFile { path: path.into(), content: vec![] }
    }

    #[test]
    fn placeholders_expand() {
        let cmd: Vec<String> = ["/usr/bin/gcc", "-o", "{main_stem}", "{files}", "-x{main}"].map(String::from).to_vec();
        assert_eq!(
            expand(&cmd, &[src("dir/main.c"), src("util.c")]),
            ["/usr/bin/gcc", "-o", "dir/main", "dir/main.c", "util.c", "-xdir/main.c"]
        );
        assert_eq!(expand(&["{main_stem}".to_string()], &[src("a.b/Main")]), ["a.b/Main"]);
    }

    #[test]
    fn version_ranges_follow_piston() {
        let v = semver::Version::new(3, 11, 2);
        assert!(parse_range("3.11.2").is_some_and(|r| r.matches(&v)));
        assert!(parse_range("3.11").is_some_and(|r| r.matches(&v)));
        assert!(parse_range("3.x").is_some_and(|r| r.matches(&v)));
        assert!(parse_range("3.10").is_some_and(|r| !r.matches(&v)));
        assert!(parse_range("3.12.0").is_some_and(|r| !r.matches(&v)));
        assert!(parse_range("not a version").is_none());
    }
}
