//! The `evald` binary: thin command-line front of the evald crates.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
mod bare;
mod bench;
mod bench_languages;
mod compile_cache;
mod flags;
mod languages;
mod logging;
mod run;

use evald_sandbox::{Sandbox, SandboxConfig};
use flags::{SandboxFlags, ServeArgs};

#[derive(Parser)]
#[command(name = "evald", version, about = "Run untrusted code in a hardened Linux sandbox")]
struct Cli {
    /// The language catalogue directory (*.toml) [default: languages, or
    /// /usr/share/evald/languages for a binary installed in /usr/bin]
    #[arg(long, env = "EVALD_LANGUAGES", global = true)]
    languages_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API: native /api/v1, Piston v2 /api/v2, sessions, the web IDE (needs root)
    Serve(Box<ServeArgs>),
    /// Run a program of a language on this machine, as the API runs it,
    /// behaving like the program (needs root)
    Run(Box<run::RunArgs>),
    /// Run a file or command in a bare box, without a language (needs root)
    Box(bare::BoxArgs),
    /// List the installed languages, or install their packages
    Languages {
        #[command(subcommand)]
        action: Option<LanguagesCommand>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures (medians, p99, ratios to a baseline)
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Print the manual page (roff), generated from this command line
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand)]
enum LanguagesCommand {
    /// Install the Debian and npm packages of languages (needs root)
    Install {
        /// Language ids or aliases
        ids: Vec<String>,
        /// Every catalogued language
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Sandbox overhead over a bare process start: /bin/true and python3 -c pass
    Sandbox {
        /// Runs of each program, bare and boxed
        #[arg(long, default_value_t = 500)]
        iterations: usize,
        #[command(flatten)]
        sandbox: SandboxFlags,
    },
    /// Keystroke-to-echo round trip through a PTY session, and server memory
    /// per idle connected session with N sessions open, each with a shell
    Session {
        /// Keystrokes timed
        #[arg(long, default_value_t = 500)]
        keystrokes: usize,
        /// Sessions held open for the memory figure
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
    },
    /// Python hello world through POST /api/v2/execute at 1 and 8 clients
    /// beside bare python3, and the compile cache on C++ (starts its own
    /// `evald serve` on a loopback port unless --url is given)
    Http {
        /// Requests per row
        #[arg(long, default_value_t = 400)]
        iterations: usize,
        /// An already running server, e.g. http://127.0.0.1:8080
        #[arg(long)]
        url: Option<String>,
    },
    /// Hello world in every installed language through POST /api/v1/runs
    /// (first request and warm), then the slow starters (JVM, BEAM, Raku)
    /// with the catalogue of --before beside this one and the bare runtime
    /// (starts its own `evald serve` nodes on loopback ports)
    Languages {
        /// Warm requests per language
        #[arg(long, default_value_t = 5)]
        warm: usize,
        /// Alternating rounds of the before/after comparison
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// The catalogue before the change (e.g. `git archive REV languages
        /// | tar -x -C DIR`); without it the comparison is skipped
        #[arg(long)]
        before: Option<PathBuf>,
        /// Skip the every-language table
        #[arg(long)]
        slow_only: bool,
        /// Only these language ids (comma-separated)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Cluster throughput: Redis, HAProxy (the shipped configuration) and 1,
    /// 2, 3 `evald serve` nodes on 127.0.0.11/12/13; Python hello world at
    /// 8 clients through HAProxy per node count, and the HAProxy hop's
    /// added latency (needs root, redis-server and haproxy)
    Cluster {
        /// Requests per row
        #[arg(long, default_value_t = 400)]
        requests: usize,
        /// The shipped HAProxy configuration
        #[arg(long, default_value = "deploy/haproxy/haproxy.cfg")]
        haproxy_cfg: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(args) => logging::init(args.node.log_json, "info"),
        _ => logging::init(false, "error"),
    }
    let languages_dir = cli.languages_dir.unwrap_or_else(default_languages_dir);
    let result = match cli.command {
        Command::Serve(args) => serve(&args, &languages_dir),
        Command::Run(args) => run::run(*args, &languages_dir),
        Command::Box(args) => bare::run(args),
        Command::Man => man(),
        Command::Languages { action: None, json } => languages::list(&languages_dir, json),
        Command::Languages { action: Some(LanguagesCommand::Install { ids, all }), .. } => {
            languages::install(&languages_dir, &ids, all)
        }
        Command::Bench { what: BenchCommand::Sandbox { iterations, sandbox } } => bench_sandbox(iterations, &sandbox),
        Command::Bench { what: BenchCommand::Http { iterations, url } } => bench_http(iterations, url, &languages_dir),
        Command::Bench { what: BenchCommand::Session { keystrokes, sessions } } => {
            bench_session(keystrokes, sessions, &languages_dir)
        }
        Command::Bench { what: BenchCommand::Languages { warm, rounds, before, slow_only, only } } => {
            bench_languages(&languages_dir, before.as_deref(), warm, rounds, slow_only, &only)
        }
        Command::Bench { what: BenchCommand::Cluster { requests, haproxy_cfg } } => {
            bench::cluster(&languages_dir, &haproxy_cfg, requests).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("evald: {e:#}");
            match e.downcast_ref::<run::Refused>() {
                Some(_) => ExitCode::from(run::EXIT_REFUSED),
                None => ExitCode::from(run::EXIT_EVALD_FAILED),
            }
        }
    }
}

/// The catalogue of a packaged binary (in /usr/bin) is in /usr/share/evald;
/// anywhere else (a checkout's target directory) it is `languages` in the
/// working directory.
fn default_languages_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    match exe.as_deref().and_then(std::path::Path::parent) {
        Some(dir) if dir == std::path::Path::new("/usr/bin") => PathBuf::from(PACKAGED_LANGUAGES_DIR),
        _ => PathBuf::from("languages"),
    }
}

/// Where the Debian package puts the catalogue (`[package.metadata.deb]`).
const PACKAGED_LANGUAGES_DIR: &str = "/usr/share/evald/languages";

/// Writes the manual page of `evald` (its options and subcommands) to stdout.
fn man() -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out).context("writing the manual page")?;
    Ok(ExitCode::SUCCESS)
}

fn local_sandbox(args: &SandboxFlags, what: &str, slots: u32) -> Result<(Sandbox, PathBuf)> {
    let name = format!("{what}-{}", std::process::id());
    let state_dir = args.state_dir.join(&name);
    let sandbox = Sandbox::new(SandboxConfig {
        instance: name,
        state_dir: state_dir.clone(),
        uid_base: args.uid_base,
        slots,
        ..SandboxConfig::default()
    })
    .context("starting the sandbox")?;
    let swept = sandbox.sweep_dead_instances(&format!("{what}-"));
    if swept > 0 {
        tracing::info!(swept, "removed what crashed earlier runs left behind");
    }
    Ok((sandbox, state_dir))
}

fn bench_sandbox(iterations: usize, args: &SandboxFlags) -> Result<ExitCode> {
    anyhow::ensure!(iterations >= 10, "at least 10 iterations are needed");
    // Two slots, as any server has several: a box's teardown overlaps the
    // next start instead of holding its only slot.
    let (sandbox, state_dir) = local_sandbox(args, "bench", 2)?;
    let result = bench::sandbox(&sandbox, iterations);
    sandbox.settle();
    drop(sandbox);
    result?;
    let _ = std::fs::remove_dir_all(state_dir);
    Ok(ExitCode::SUCCESS)
}

fn bench_http(iterations: usize, url: Option<String>, languages: &std::path::Path) -> Result<ExitCode> {
    anyhow::ensure!(iterations >= 16, "at least 16 iterations are needed");
    if let Some(url) = url {
        bench::http(url.trim_end_matches('/'), iterations)?;
        return Ok(ExitCode::SUCCESS);
    }
    let server = BenchServer::start(languages, &[("EVALD_SLOTS", "16"), ("EVALD_ADMISSION_QUEUE", "256")])?;
    let result = bench::http(&server.base, iterations);
    drop(server);
    result?;
    Ok(ExitCode::SUCCESS)
}

fn bench_languages(
    languages: &std::path::Path,
    before: Option<&std::path::Path>,
    warm: usize,
    rounds: usize,
    slow_only: bool,
    only: &[String],
) -> Result<ExitCode> {
    let keep = |mut v: Vec<std::sync::Arc<evald_engine::Language>>| {
        v.retain(|l| only.is_empty() || only.contains(&l.spec.id));
        v
    };
    let after_langs = keep(bench_languages::installed(languages)?);
    let server = BenchServer::start(languages, &[("EVALD_SLOTS", "4")])?;
    if !slow_only {
        bench_languages::all(&server.base, &after_langs, warm)?;
    }
    if let Some(dir) = before {
        let before_langs = keep(bench_languages::installed(dir)?);
        let pid = std::process::id();
        let state = format!("/tmp/evald-bench-before-{pid}");
        let old = BenchServer::start(
            dir,
            &[
                ("EVALD_SLOTS", "4"),
                ("EVALD_INSTANCE", &format!("bench-before-{pid}")),
                ("EVALD_STATE_DIR", &state),
                ("EVALD_DATA_DIR", &format!("{state}/data")),
                ("EVALD_UID_BASE", "61500"),
            ],
        )?;
        let result = bench_languages::slow_starters((&server.base, &after_langs), (&old.base, &before_langs), rounds);
        let _ = std::fs::remove_dir_all(&state);
        result?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An `evald serve` child on a free loopback port, for benchmarks.
struct BenchServer {
    child: std::process::Child,
    base: String,
    dir: String,
}

impl BenchServer {
    fn start(languages: &std::path::Path, env: &[(&str, &str)]) -> Result<BenchServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pid = std::process::id();
        let dir = format!("/tmp/evald-bench-{pid}");
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("EVALD_INSTANCE", format!("bench-serve-{pid}"))
            .env("EVALD_STATE_DIR", &dir)
            .env("EVALD_DATA_DIR", format!("{dir}/data"))
            .env("EVALD_LANGUAGES", languages)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting evald serve")?;
        let server = BenchServer { child, base: format!("http://127.0.0.1:{port}"), dir };
        // Bounded wait for readiness (a benchmark, not a test: polling is fine).
        for _ in 0..1200 {
            if ureq::get(&format!("{}/healthz/ready", server.base)).call().is_ok() {
                return Ok(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!("the server did not become ready")
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bench_session(keystrokes: usize, sessions: usize, languages: &std::path::Path) -> Result<ExitCode> {
    evald_sandbox::raise_fd_limit()?;
    let slots = (sessions + 16).to_string();
    let server = BenchServer::start(
        languages,
        &[("EVALD_SLOTS", &slots), ("EVALD_MAX_SESSIONS", &slots), ("EVALD_SESSION_IDLE_S", "3600")],
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench::session(&server.base, server.child.id(), keystrokes, sessions))?;
    drop(server);
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs, languages_dir: &std::path::Path) -> Result<ExitCode> {
    if let Err(e) = evald_sandbox::raise_fd_limit() {
        tracing::warn!(error = %e, "could not raise the open files limit");
    }
    let config = args.server_config(languages_dir)?;
    // The sandbox is made before the async runtime: its zygote, forked then,
    // copies fewer threads' mappings, and every box init is a copy of it.
    let sandbox = Sandbox::new(args.sandbox_config()).context("starting the sandbox")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(evald_server::serve(config, sandbox))?;
    Ok(ExitCode::SUCCESS)
}
