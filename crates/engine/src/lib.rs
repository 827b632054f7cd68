//! The engine: languages, compile and run steps, compile cache, verdicts.
//!
//! Synchronous; talks only to the sandbox. A compiled language is compiled
//! once in a persistent workspace with the compile limits; what the compile
//! step leaves in the workspace (read back through the workspace's safe,
//! beneath-only file access) becomes the file set of each test case, which
//! then runs in a fresh box of its own with the run limits. The compile
//! cache keeps such file sets keyed by language, version, compile command
//! and sources; cached copies live in the service's memory, never in a
//! directory untrusted code can write.

#![forbid(unsafe_code)]

pub mod cache;
pub mod catalogue;
mod limits;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use evald_sandbox::{FileSpec, Outcome, RunSpec, Sandbox, SandboxError, Status, Stdin};
use serde::Serialize;

pub use cache::CompileCache;
pub use catalogue::{Catalogue, Language};
pub use limits::{LimitRequest, StageLimits};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            compile: StageLimits::compile_defaults(),
            run: StageLimits::run_defaults(),
            max_cases: 64,
            max_files: 100,
            max_file_bytes: 4 << 20,
            cache_bytes: 256 << 20,
        }
    }
}

/// A source file of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// One test case: input, arguments and optionally the expected output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Case {
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    pub expected_output: Option<Vec<u8>>,
}

/// Verdict of a stage or a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::CompileError => "compile_error",
            Verdict::RuntimeError => "runtime_error",
            Verdict::TimeLimitCpu => "time_limit_cpu",
            Verdict::TimeLimitWall => "time_limit_wall",
            Verdict::MemoryLimit => "memory_limit",
            Verdict::OutputLimit => "output_limit",
            Verdict::WrongAnswer => "wrong_answer",
            Verdict::InternalError => "internal_error",
        }
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
}

/// The result of one sandboxed stage.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub verdict: Verdict,
    pub outcome: Outcome,
}

/// The result of a compile step.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The compile stage; `None` for interpreted languages and cache hits.
    pub stage: Option<StageResult>,
    /// True when the file set came from the compile cache.
    pub cached: bool,
    /// The files every case starts with; empty when compilation failed.
    pub files: Arc<Vec<FileSpec>>,
}

impl Compiled {
    pub fn ok(&self) -> bool {
        self.stage.as_ref().is_none_or(|s| s.verdict == Verdict::Ok)
    }
}

/// Everything about a batch job.
#[derive(Debug, Clone)]
pub struct Job {
    pub language: Arc<Language>,
    /// The first file is the main file.
    pub files: Vec<SourceFile>,
    pub cases: Vec<Case>,
    pub compile_limits: LimitRequest,
    pub run_limits: LimitRequest,
}

/// The result of a batch job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub language: Arc<Language>,
    pub compile: Compiled,
    /// One per case, in order; empty when compilation failed.
    pub cases: Vec<StageResult>,
}

/// Why a job was refused (always the client's fault, except `Sandbox`).
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
    #[error("{0}")]
    Limit(#[from] limits::LimitError),
    #[error("{0}")]
    Spec(#[from] evald_sandbox::SpecError),
    #[error("the sandbox is busy")]
    Busy,
    #[error("sandbox failure: {0}")]
    Sandbox(String),
}

impl From<SandboxError> for EngineError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Spec(s) => EngineError::Spec(s),
            SandboxError::Busy(_) => EngineError::Busy,
            other => EngineError::Sandbox(other.to_string()),
        }
    }
}

/// The engine: installed languages plus the sandbox.
pub struct Engine {
    sandbox: Sandbox,
    config: EngineConfig,
    languages: Vec<Arc<Language>>,
    by_name: HashMap<String, Vec<usize>>,
    cache: CompileCache,
    counter: std::sync::atomic::AtomicU64,
}

impl Engine {
    pub fn new(sandbox: Sandbox, languages: Vec<Arc<Language>>, config: EngineConfig) -> Engine {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, l) in languages.iter().enumerate() {
            for name in std::iter::once(&l.spec.id).chain(&l.spec.aliases) {
                by_name.entry(name.to_ascii_lowercase()).or_default().push(i);
            }
        }
        let cache = CompileCache::new(config.cache_bytes);
        Engine { sandbox, config, languages, by_name, cache, counter: Default::default() }
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
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

    /// Checks the files and cases of a job against the engine's limits.
    pub fn check_files(&self, files: &[SourceFile]) -> Result<(), EngineError> {
        if files.is_empty() {
            return Err(EngineError::NoFiles);
        }
        if files.len() > self.config.max_files {
            return Err(EngineError::TooManyFiles { count: files.len(), max: self.config.max_files });
        }
        let mut seen = std::collections::HashSet::new();
        for f in files {
            evald_proto::path::check_relative_path(&f.path).map_err(evald_sandbox::SpecError::from)?;
            if !seen.insert(evald_proto::path::normalize(&f.path)) {
                return Err(evald_sandbox::SpecError::DuplicateFile(f.path.clone()).into());
            }
            let size = f.content.len() as u64;
            if size > self.config.max_file_bytes {
                return Err(EngineError::FileTooLarge { path: f.path.clone(), size, max: self.config.max_file_bytes });
            }
        }
        Ok(())
    }

    /// Resolves the limits of both stages for `language`.
    pub fn limits(
        &self,
        language: &Language,
        compile: &LimitRequest,
        run: &LimitRequest,
    ) -> Result<(evald_sandbox::Limits, evald_sandbox::Limits), EngineError> {
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
        Ok((
            self.config.compile.resolve("compile", compile, &compile_floor)?,
            self.config.run.resolve("run", run, &run_floor)?,
        ))
    }

    /// Compiles the sources (or finds them in the cache). Interpreted
    /// languages just get their sources as the file set.
    pub fn compile(
        &self,
        language: &Language,
        files: &[SourceFile],
        limits: evald_sandbox::Limits,
    ) -> Result<Compiled, EngineError> {
        self.check_files(files)?;
        let Some(compile) = &language.spec.compile else {
            let files = files
                .iter()
                .map(|f| FileSpec { path: f.path.clone(), content: f.content.clone(), executable: false })
                .collect();
            return Ok(Compiled { stage: None, cached: false, files: Arc::new(files) });
        };
        let argv = expand(compile, files);
        let key = cache::key(language, &argv, files);
        if let Some(files) = self.cache.get(&key) {
            return Ok(Compiled { stage: None, cached: true, files });
        }
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("compile-{}-{n}", std::process::id());
        let workspace = self
            .sandbox
            .create_workspace(&name, limits.disk_bytes)
            .map_err(|e| EngineError::Sandbox(format!("creating a workspace: {e}")))?;
        for f in files {
            workspace
                .write_file(&f.path, &f.content, false)
                .map_err(|e| EngineError::Sandbox(format!("staging {}: {e}", f.path)))?;
        }
        let mut spec = RunSpec::new(argv[0].clone(), argv[1..].to_vec());
        spec.env = language.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        spec.limits = limits;
        let outcome = self.sandbox.run_in(&spec, &workspace)?;
        let verdict = match outcome.status {
            Status::Ok => Verdict::Ok,
            Status::RuntimeError | Status::Signaled => Verdict::CompileError,
            other => Verdict::of(other),
        };
        let mut artifacts = Vec::new();
        if verdict == Verdict::Ok {
            let entries = workspace
                .list(self.config.max_files * 10)
                .map_err(|e| EngineError::Sandbox(format!("listing the workspace: {e}")))?;
            let mut budget = limits.disk_bytes;
            for entry in entries.into_iter().filter(|e| !e.is_dir) {
                let content = workspace
                    .read_file(&entry.path, budget)
                    .map_err(|e| EngineError::Sandbox(format!("collecting {}: {e}", entry.path)))?;
                budget -= content.len() as u64;
                artifacts.push(FileSpec { path: entry.path, content, executable: entry.executable });
            }
        }
        workspace.destroy();
        let artifacts = Arc::new(artifacts);
        if verdict == Verdict::Ok {
            self.cache.insert(key, artifacts.clone());
        }
        Ok(Compiled { stage: Some(StageResult { verdict, outcome }), cached: false, files: artifacts })
    }

    /// The specification of one run of a compiled (or interpreted) program.
    pub fn run_spec(
        &self,
        language: &Language,
        sources: &[SourceFile],
        compiled: &Compiled,
        args: &[String],
        stdin: Stdin,
        limits: evald_sandbox::Limits,
    ) -> RunSpec {
        let mut argv = expand(&language.spec.run, sources);
        argv.extend(args.iter().cloned());
        let mut spec = RunSpec::new(argv[0].clone(), argv[1..].to_vec());
        spec.files = compiled.files.as_ref().clone();
        spec.env = language.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        spec.stdin = stdin;
        spec.limits = limits;
        spec
    }

    /// Compiles once and runs every case (at least one: an empty case list
    /// runs one case with no input). Blocking.
    pub fn run_job(&self, job: &Job) -> Result<JobResult, EngineError> {
        if job.cases.len() > self.config.max_cases {
            return Err(EngineError::TooManyCases { count: job.cases.len(), max: self.config.max_cases });
        }
        let (compile_limits, run_limits) = self.limits(&job.language, &job.compile_limits, &job.run_limits)?;
        let compiled = self.compile(&job.language, &job.files, compile_limits)?;
        let mut cases = Vec::new();
        if compiled.ok() {
            let default_case = [Case::default()];
            let list: &[Case] = if job.cases.is_empty() { &default_case } else { &job.cases };
            for case in list {
                let spec = self.run_spec(
                    &job.language,
                    &job.files,
                    &compiled,
                    &case.args,
                    Stdin::Bytes(case.stdin.clone()),
                    run_limits,
                );
                let outcome = self.sandbox.run(&spec)?;
                let mut verdict = Verdict::of(outcome.status);
                if let (Verdict::Ok, Some(expected)) = (verdict, &case.expected_output) {
                    if !same_output(&outcome.stdout, expected) {
                        verdict = Verdict::WrongAnswer;
                    }
                }
                cases.push(StageResult { verdict, outcome });
            }
        }
        Ok(JobResult { language: job.language.clone(), compile: compiled, cases })
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

fn parse_range(r: &str) -> Option<semver::VersionReq> {
    let plain = !r.is_empty()
        && r.split('.').count() <= 3
        && r.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let text = if plain { format!("={r}") } else { r.to_owned() };
    semver::VersionReq::parse(&text).ok()
}

/// How long a stage may take at most, for request timeouts.
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
    fn output_comparison_ignores_trailing_whitespace_only() {
        assert!(same_output(b"1 2\n3\n\n", b"1 2  \n3"));
        assert!(!same_output(b"1 2\n3\n", b"1  2\n3\n"));
        assert!(!same_output(b"1\n\n2\n", b"1\n2\n"));
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
