//! `evald box`: a file or command in a bare box, without a language (the
//! old `evald run`): for sandbox work, benchmarks and checking a language's
//! commands by hand (languages/README.md).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use evald_sandbox::{FileSpec, Limits, RunSpec, Status, Stdin};

use crate::flags::SandboxFlags;

/// The exit codes of `evald box`.
const BOX_EXIT_CODES: &str = "\
Exit codes:
  N      the program's exit code (127 or 126 when it could not be executed, as in a shell)
  128+N  it was killed by signal N or a limit (limits kill with SIGKILL: 137); stderr
         then ends with `evald: <status>`, e.g. `evald: time_limit_wall`
  125    evald's own error (a missing file, a bad limit, a sandbox failure)";

#[derive(clap::Args)]
#[command(after_help = BOX_EXIT_CODES)]
pub struct BoxArgs {
    /// Source files; the first is the main file
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Interpreter to run the main file with, as a path inside the box
    /// (e.g. /usr/bin/python3); without it the main file is executed itself
    /// (it needs a `#!` line)
    #[arg(long, short = 'i', alias = "language", short_alias = 'l')]
    interpreter: Option<String>,
    /// Standard input: a file, or - for this process's stdin
    #[arg(long)]
    stdin: Option<PathBuf>,
    /// Print the full outcome as JSON instead of the program's output
    #[arg(long)]
    json: bool,
    /// Wall-clock limit in milliseconds
    #[arg(long, default_value_t = 10_000)]
    wall_ms: u64,
    /// CPU time limit in milliseconds
    #[arg(long, default_value_t = 5_000)]
    cpu_ms: u64,
    /// Memory limit in bytes
    #[arg(long, default_value_t = 256 << 20)]
    memory: u64,
    /// Process and thread limit
    #[arg(long, default_value_t = 64)]
    processes: u32,
    #[command(flatten)]
    sandbox: SandboxFlags,
    /// Arguments passed to the program
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: BoxArgs) -> Result<ExitCode> {
    let mut files = Vec::new();
    for path in &args.files {
        let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", path.display()))?
            .to_owned();
        files.push(FileSpec { path: name, content, executable: args.interpreter.is_none() });
    }
    let main = format!("{}/{}", evald_sandbox::WORKSPACE_DIR, files[0].path);
    let (program, mut argv) = match &args.interpreter {
        Some(interpreter) => (interpreter.clone(), vec![main]),
        None => (main, vec![]),
    };
    argv.extend(args.args.iter().cloned());
    let stdin = match &args.stdin {
        None => Stdin::Null,
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
            Stdin::Bytes(buf)
        }
        Some(p) => Stdin::Bytes(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
    };
    let mut spec = RunSpec::new(program, argv);
    spec.files = files;
    spec.stdin = stdin;
    spec.limits = Limits {
        wall_time: Duration::from_millis(args.wall_ms),
        cpu_time: Duration::from_millis(args.cpu_ms),
        memory_bytes: args.memory,
        processes: args.processes,
        ..Limits::default()
    };
    spec.validate()?;
    let (sandbox, state_dir) = crate::local_sandbox(&args.sandbox, "run", 1)?;
    let outcome = sandbox.run(&spec);
    sandbox.shutdown();
    drop(sandbox);
    let outcome = outcome?;
    let _ = std::fs::remove_dir_all(state_dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        std::io::stdout().write_all(&outcome.stdout)?;
        std::io::stderr().write_all(&outcome.stderr)?;
    }
    let code = match (outcome.status, outcome.exit_code, outcome.signal) {
        (Status::InternalError, _, _) => {
            bail!("internal error: {}", outcome.error.unwrap_or_default())
        }
        (Status::Ok | Status::RuntimeError, Some(code), _) => code,
        (status, _, signal) => {
            if !args.json {
                eprintln!("evald: {}", status.as_str());
            }
            128 + signal.unwrap_or(libc_sigkill())
        }
    };
    Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)))
}

fn libc_sigkill() -> i32 {
    9
}
