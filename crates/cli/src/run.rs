//! `evald run`: a program of a catalogued language, run on this machine the
//! way the native API runs it (the same name resolution, limits, compile
//! step, compile cache and verdicts), but behaving like the program itself:
//! its output streamed as it comes, its standard input from a file or
//! this process's, its exit code as evald's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use evald_engine::catalogue::{self, Catalogue, LanguageFile};
use evald_engine::{
    signal_name, Capture, Compiled, Control, Engine, EngineConfig, EngineError, Io, JobResult, Language, Launch,
    Lifecycle, LimitRequest, Limits, Outcome, Place, Program, Sink, SourceFile, StageResult, Stream, Verdict,
};
use tokio::sync::mpsc;

use crate::compile_cache::DiskCache;
use crate::flags::SandboxFlags;

/// The exit codes of `evald run` (its `--help` prints this; README.md and
/// docs/operations.md hold the same table).
pub const EXIT_CODES: &str = "\
Exit codes:
  N      the program's own exit code (verdict ok, or runtime_error with an exit code)
  2      refused before anything ran: a bad flag, an unknown language or extension,
         a language not installed, a file that cannot be read, a limit out of range
  121    compile_error (the compiler's output is on stderr)
  122    output_limit
  123    memory_limit
  124    time_limit_cpu or time_limit_wall (as timeout(1))
  125    evald itself failed (internal_error, the sandbox, the catalogue)
  128+N  the program was killed by signal N (runtime_error; 139 is SIGSEGV)
Every code but the program's own comes with a one-line reason on stderr,
`evald: <verdict>: ...` (none with --json, whose status says it).";

/// `evald run`'s exit code for a compile error.
pub const EXIT_COMPILE_ERROR: u8 = 121;
pub const EXIT_OUTPUT_LIMIT: u8 = 122;
pub const EXIT_MEMORY_LIMIT: u8 = 123;
pub const EXIT_TIME_LIMIT: u8 = 124;
pub const EXIT_EVALD_FAILED: u8 = 125;
/// A refusal before anything ran, as clap's usage errors.
pub const EXIT_REFUSED: u8 = 2;

/// A run refused before anything ran (exit code [`EXIT_REFUSED`]).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct RunArgs {
    /// Source files; the first is the main file, whose extension names the
    /// language unless --language does
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Language id or alias, as the API accepts them (`evald languages`
    /// lists them), e.g. python, py, c++, cpp
    #[arg(long, short)]
    language: Option<String>,
    /// Standard input: a file, or - for this process's standard input
    /// (streamed to the program as it comes); default none
    #[arg(long)]
    stdin: Option<PathBuf>,
    /// Print the result as the native API answers POST /api/v1/runs (JSON)
    /// instead of the program's output
    #[arg(long)]
    json: bool,
    /// Wall-clock limit of the run in milliseconds (default the API's)
    #[arg(long)]
    wall_ms: Option<u64>,
    /// CPU time limit of the run in milliseconds (default the API's)
    #[arg(long)]
    cpu_ms: Option<u64>,
    /// Memory limit of the run in bytes (default the API's, or the
    /// language's floor)
    #[arg(long)]
    memory: Option<u64>,
    /// Process and thread limit of the run (default the API's)
    #[arg(long)]
    processes: Option<u32>,
    /// Most bytes of output (stdout and stderr each) (default the API's)
    #[arg(long)]
    output_bytes: Option<u64>,
    /// Where compilations are kept between runs (root's, mode 0700)
    #[arg(long, env = "EVALD_CACHE_DIR", default_value = "/var/cache/evald/compile")]
    cache_dir: PathBuf,
    #[command(flatten)]
    sandbox: SandboxFlags,
    /// Arguments passed to the program
    #[arg(last = true)]
    args: Vec<String>,
}

/// The program's standard input.
enum Input {
    Bytes(Vec<u8>),
    /// This process's standard input, passed on as it comes.
    Stream,
}

pub fn run(args: RunArgs, languages_dir: &Path) -> Result<ExitCode> {
    let catalogue = Catalogue::load_dir(languages_dir)
        .with_context(|| format!("loading the language catalogue (--languages-dir {})", languages_dir.display()))?;
    let spec = choose(&catalogue, args.language.as_deref(), &args.files[0])?;
    let language = catalogue::detect_installed(&Catalogue { files: vec![spec.clone()] }).pop().ok_or_else(|| {
        Refused(format!(
            "{} is not installed on this host (`evald languages install {}` installs it)",
            spec.id, spec.id
        ))
    })?;
    let mut sources = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let content = std::fs::read(path).map_err(|e| Refused(format!("reading {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Refused(format!("{} has no usable file name", path.display())))?;
        sources.push(SourceFile { path: name.to_owned(), content });
    }
    let stdin = match &args.stdin {
        None => Input::Bytes(Vec::new()),
        Some(p) if p.as_os_str() == "-" => Input::Stream,
        Some(p) => Input::Bytes(std::fs::read(p).map_err(|e| Refused(format!("reading {}: {e}", p.display())))?),
    };
    if args.args.iter().any(|a| a.contains('\0')) {
        return Err(Refused("an argument contains a NUL byte".into()).into());
    }
    let request = LimitRequest {
        wall_ms: args.wall_ms,
        cpu_ms: args.cpu_ms,
        memory_bytes: args.memory,
        processes: args.processes,
        output_bytes: args.output_bytes,
        ..LimitRequest::default()
    };
    let config = EngineConfig::new(evald_engine::mem_total().context("reading the machine's memory size")?);
    let lifecycle = Lifecycle::new();
    // Checked by an engine that runs nothing: a refused run creates nothing.
    let checker = Engine::without_sandbox(1, vec![language.clone()], config.clone(), &lifecycle);
    checker.check_files(&sources).map_err(|e| Refused(e.to_string()))?;
    let limits = checker.limits(&language, &LimitRequest::default(), &request).map_err(|e| Refused(e.to_string()))?;
    drop(checker);

    let cache = DiskCache::new(args.cache_dir.clone());
    let key = language
        .spec
        .compile
        .as_ref()
        .map(|cmd| evald_engine::cache::key(&language, &evald_engine::expand(cmd, &sources), &sources));
    // Two slots: a box's teardown overlaps the next box's start.
    let (sandbox, state_dir) = crate::local_sandbox(&args.sandbox, "run", 2).map_err(|e| {
        if running_as_root() {
            e
        } else {
            e.context("evald run needs root (the sandbox makes namespaces and cgroups): run it with sudo")
        }
    })?;
    let engine = Engine::new(sandbox, vec![language.clone()], config, &lifecycle);
    if let Some((key, files)) = key.as_ref().and_then(|k| Some((k, cache.load(k)?))) {
        // `evald run` shows a compile's output only when it fails, so none is kept.
        engine.cache().insert(*key, Arc::new(files), Arc::default());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let job = Job { language: language.clone(), sources, args: args.args.clone(), limits, stdin, json: args.json };
    let result = runtime.block_on(execute(&engine, job));
    engine.shutdown();
    drop(engine);
    drop(runtime);
    let _ = std::fs::remove_dir_all(state_dir);
    let result = result?;
    if let (Some(key), Some(stage)) = (&key, &result.compile.stage) {
        if stage.verdict == Verdict::Ok {
            cache.store(key, &result.compile.files);
        }
    }
    let (code, reason) = exit_status(&result, &limits);
    if args.json {
        let id = uuid::Uuid::new_v4().simple().to_string();
        println!("{}", serde_json::to_string_pretty(&evald_server::runs::result(id, &result))?);
    } else {
        if let Some(stage) = result.compile.stage.as_ref().filter(|s| s.verdict != Verdict::Ok) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&stage.outcome.stdout);
            let _ = err.write_all(&stage.outcome.stderr);
        }
        if let Some(reason) = reason {
            eprintln!("evald: {reason}");
        }
    }
    Ok(ExitCode::from(code))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The language of a run: `--language` by id or alias (case-insensitive,
/// as the API resolves names), else the main file's extension: the
/// language whose id or alias it is (aliases list the usual extensions),
/// else the one whose main file has it.
fn choose<'c>(catalogue: &'c Catalogue, name: Option<&str>, main: &Path) -> Result<&'c LanguageFile, Refused> {
    let named = |n: &str| {
        catalogue
            .files
            .iter()
            .find(|f| f.id.eq_ignore_ascii_case(n) || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(n)))
    };
    if let Some(name) = name {
        return named(name).ok_or_else(|| {
            let hint = if name.starts_with('/') {
                format!(
                    "; --language takes a language name, and `evald box FILE --interpreter {name}` runs a file with an interpreter in a bare box"
                )
            } else {
                String::new()
            };
            Refused(format!("unknown language {name:?} (`evald languages` lists the installed ones){hint}"))
        });
    }
    let file = main.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((_, ext)) = file.rsplit_once('.').filter(|(stem, ext)| !stem.is_empty() && !ext.is_empty()) else {
        return Err(Refused(format!(
            "cannot tell the language of {}: it has no extension; name one with --language",
            main.display()
        )));
    };
    if let Some(f) = named(ext) {
        return Ok(f);
    }
    let by_main: Vec<&LanguageFile> = catalogue
        .files
        .iter()
        .filter(|f| f.main.rsplit_once('.').is_some_and(|(_, e)| e.eq_ignore_ascii_case(ext)))
        .collect();
    match by_main[..] {
        [one] => Ok(one),
        [] => Err(Refused(format!(
            "no language has the extension .{ext} (of {}); name one with --language",
            main.display()
        ))),
        _ => {
            let ids: Vec<&str> = by_main.iter().map(|f| f.id.as_str()).collect();
            Err(Refused(format!("the extension .{ext} is used by {}; name one with --language", ids.join(", "))))
        }
    }
}

/// Everything about one run.
struct Job {
    language: Arc<Language>,
    sources: Vec<SourceFile>,
    args: Vec<String>,
    /// Compile and run limits.
    limits: (Limits, Limits),
    stdin: Input,
    json: bool,
}

/// Output as it comes: to this process's stdout and stderr, or kept for
/// `--json`.
enum Output {
    Through,
    Kept(Capture),
}

impl Sink for Output {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match self {
            Output::Kept(capture) => capture.output(stream, bytes),
            // A closed stdout (`| head`) does not stop the program.
            Output::Through => {
                let _ = match stream {
                    Stream::Stderr => write_now(&mut std::io::stderr().lock(), bytes),
                    Stream::Stdout | Stream::Terminal => write_now(&mut std::io::stdout().lock(), bytes),
                };
            }
        }
    }
}

fn write_now(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

/// Compiles (or takes the compilation from the cache) and runs, as the
/// engine's `run_job` does for one case, but with the output streamed.
async fn execute(engine: &Engine, job: Job) -> Result<JobResult> {
    let (compile_limits, run_limits) = job.limits;
    let memory = Engine::reservation(&job.language, &compile_limits, &run_limits);
    let permit = engine.admit(memory).await.map_err(|r| anyhow!("{r}"))?;
    let compiled: Compiled =
        engine.compile(&permit, &job.language, &job.sources, compile_limits, &Place::Fresh).await?;
    if !compiled.ok() {
        return Ok(JobResult { language: job.language, compile: compiled, cases: Vec::new() });
    }
    // `keep` holds the channel open until the program ends (a closed
    // control channel kills the box).
    let (stdin, mut control, keep) = match job.stdin {
        Input::Bytes(bytes) => (bytes, None, None),
        Input::Stream => {
            let (tx, rx) = mpsc::channel(16);
            let reader = tx.clone();
            std::thread::spawn(move || pass_stdin(&reader));
            (Vec::new(), Some(rx), Some(tx))
        }
    };
    let launch = Launch {
        language: &job.language,
        sources: &job.sources,
        program: Program::Run { compiled: &compiled, args: &job.args },
        io: Io::Pipes,
        limits: run_limits,
        workspace: None,
    };
    let mut output = if job.json { Output::Kept(Capture::default()) } else { Output::Through };
    let mut outcome = match engine.start(&permit, launch).await {
        Ok(process) => process.drive(stdin, control.as_mut(), &mut output).await,
        Err(EngineError::Start(e)) => Outcome::internal(e),
        Err(e) => return Err(e.into()),
    };
    drop(keep);
    if let Output::Kept(capture) = output {
        outcome.stdout = capture.stdout;
        outcome.stderr = capture.stderr;
    }
    let verdict = Verdict::of(outcome.status);
    Ok(JobResult { language: job.language, compile: compiled, cases: vec![StageResult { verdict, outcome }] })
}

/// Passes this process's standard input on as it comes, then its end.
fn pass_stdin(tx: &mpsc::Sender<Control>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.blocking_send(Control::Stdin(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading standard input");
                break;
            }
        }
    }
    let _ = tx.blocking_send(Control::Eof);
}

/// evald's exit code for a result, and the reason line for any code that
/// is not the program's own (see [`EXIT_CODES`]).
fn exit_status(r: &JobResult, limits: &(Limits, Limits)) -> (u8, Option<String>) {
    let (stage, what, l) = match (&r.compile.stage, r.cases.first()) {
        (Some(s), _) if s.verdict != Verdict::Ok => (s, "the compiler", &limits.0),
        (_, Some(c)) => (c, "the program", &limits.1),
        (_, None) => return (EXIT_EVALD_FAILED, Some("internal_error: nothing ran".into())),
    };
    let o = &stage.outcome;
    let v = stage.verdict.as_str();
    match stage.verdict {
        Verdict::Ok | Verdict::RuntimeError => match (o.exit_code, o.signal) {
            (_, Some(signal)) => {
                (128u8.saturating_add(signal as u8), Some(format!("{v}: {what} was killed by {}", signal_name(signal))))
            }
            (Some(code), None) => ((code & 0xff) as u8, None),
            (None, None) => (EXIT_EVALD_FAILED, Some(format!("internal_error: {what} has no exit status"))),
        },
        Verdict::CompileError => (EXIT_COMPILE_ERROR, Some(format!("{v}: {} failed", what))),
        Verdict::OutputLimit => {
            (EXIT_OUTPUT_LIMIT, Some(format!("{v}: {what} wrote more than {} bytes", l.output_bytes)))
        }
        Verdict::MemoryLimit => {
            (EXIT_MEMORY_LIMIT, Some(format!("{v}: {what} needed more than {} bytes of memory", l.memory_bytes)))
        }
        Verdict::TimeLimitCpu => {
            (EXIT_TIME_LIMIT, Some(format!("{v}: {what} used more than {} ms of CPU time", l.cpu_time.as_millis())))
        }
        Verdict::TimeLimitWall => {
            (EXIT_TIME_LIMIT, Some(format!("{v}: {what} ran longer than {} ms", l.wall_time.as_millis())))
        }
        // No expected output is given, so no wrong answer.
        Verdict::WrongAnswer => (1, Some(v.to_owned())),
        Verdict::InternalError => {
            (EXIT_EVALD_FAILED, Some(format!("{v}: {}", o.error.as_deref().unwrap_or("the sandbox failed"))))
        }
    }
}
