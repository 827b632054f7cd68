//! Running a submission: Judge0's request turned into one engine job
//! (`Engine::run_job`: the compile step once, then `number_of_runs` runs),
//! and the job's result turned into Judge0's status and fields.

use std::sync::Arc;

use evald_engine::{
    Case, Engine, Job, JobResult, Language, LimitRequest, Outcome, Permit, SourceFile, Status, Verdict,
    MIN_MEMORY_BYTES, MIN_STACK_BYTES,
};

use crate::files;
use crate::languages::{pseudo, J0Language};
use crate::wire::{decimal, Submission};

/// What Judge0 removes from compiler options and arguments before they go
/// into its bash scripts.
const UNSAFE: &[char] = &['$', '&', ';', '<', '>', '|', '`'];

/// Judge0's sanitising: stripped, with `$&;<>|`` removed.
pub fn sanitise(text: &str) -> String {
    text.trim().chars().filter(|c| !UNSAFE.contains(c)).collect()
}

/// A job ready to run, and the memory it reserves.
pub struct Prepared {
    pub job: Job,
    pub memory: u64,
}

/// Why a submission could not become a job (an Internal Error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrepareError(pub String);

/// The language a submission runs: its catalogue language with Judge0's
/// compiler options, arguments and stderr redirection applied through
/// bash, as Judge0's `compile` and `run` scripts apply them.
fn derive(base: &Language, s: &Submission, extra_files: bool) -> Language {
    let mut language = base.clone();
    if let Some(compile) = &mut language.spec.compile {
        if extra_files {
            // Judge0 compiles its source file only; the zip's files are beside it.
            for arg in compile.iter_mut() {
                if arg == "{files}" {
                    *arg = "{main}".into();
                }
            }
        }
        let options = s.compiler_options.as_deref().map(sanitise).unwrap_or_default();
        if !options.is_empty() {
            let at =
                compile.iter().position(|a| a.contains("{main}") || a.contains("{files}")).unwrap_or(compile.len());
            let script = format!("exec \"${{@:1:{at}}}\" {options} \"${{@:{}}}\"", at + 1);
            let mut argv = vec!["/bin/bash".to_owned(), "-c".to_owned(), script, "compile".to_owned()];
            argv.append(compile);
            *compile = argv;
        }
    }
    let args = s.command_line_arguments.as_deref().map(sanitise).unwrap_or_default();
    if !args.is_empty() || s.redirect_stderr_to_stdout {
        let redirect = if s.redirect_stderr_to_stdout { " 2>&1" } else { "" };
        let script = format!("exec \"$@\" {args}{redirect}");
        let mut argv = vec!["/bin/bash".to_owned(), "-c".to_owned(), script, "run".to_owned()];
        argv.append(&mut language.spec.run);
        language.spec.run = argv;
    }
    language
}

/// Turns a validated submission into an engine job.
pub fn prepare(engine: &Engine, s: &Submission, language: Option<&J0Language>) -> Result<Prepared, PrepareError> {
    let extra = match &s.additional_files {
        Some(zip) => files::extract(zip, engine.config().max_files.saturating_sub(1))
            .map_err(|e| PrepareError(format!("additional_files: {e}")))?,
        None => Vec::new(),
    };
    let (base, mut sources) = match language.and_then(|l| l.language.clone()) {
        Some(base) => {
            let main = base.spec.main.clone();
            let mut sources =
                vec![SourceFile { path: main.clone(), content: s.source_code.clone().unwrap_or_default() }];
            // Like `unzip -n`: the zip does not overwrite the source.
            sources.extend(extra.iter().filter(|f| f.path != main).cloned());
            (base, sources)
        }
        None => {
            // The multi-file program: `bash compile` (if given), `bash run`.
            let has_compile = extra.iter().any(|f| f.path == "compile");
            let compile = has_compile.then(|| vec!["/bin/bash".to_owned(), "compile".to_owned()]);
            let base = pseudo("judge0-multi-file", "run", compile, vec!["/bin/bash".into(), "run".into()]);
            (base, extra.clone())
        }
    };
    if sources.is_empty() {
        sources.push(SourceFile { path: "run".into(), content: Vec::new() });
    }
    let language = Arc::new(derive(&base, s, !extra.is_empty()));
    let floors = &language.spec.limits;
    let memory_bytes = (s.memory_limit * 1024).max(floors.memory_bytes.unwrap_or(0));
    let run_limits = LimitRequest {
        wall_ms: Some(((s.wall_time_limit * 1000.0) as u64).max(1)),
        // Killed after the extra time; judged against the limit (`judge`).
        cpu_ms: Some((((s.cpu_time_limit + s.cpu_extra_time) * 1000.0) as u64).max(1)),
        memory_bytes: Some(memory_bytes),
        processes: Some(s.max_processes_and_or_threads.max(floors.processes.unwrap_or(0))),
        output_bytes: Some((s.max_file_size * 1024).max(1)),
        // 0: none of Judge0's own (isolate sets none), the box's default.
        stack_bytes: (s.stack_limit > 0).then(|| (s.stack_limit * 1024).max(MIN_STACK_BYTES)),
        // isolate's `-m`: each process's address space, instead of (here:
        // besides) the box's total.
        process_memory_bytes: s
            .enable_per_process_and_thread_memory_limit
            .then(|| (s.memory_limit * 1024).clamp(MIN_MEMORY_BYTES, memory_bytes)),
        ..LimitRequest::default()
    };
    let compile_limits = LimitRequest::default();
    let (cl, rl) = engine.limits(&language, &compile_limits, &run_limits).map_err(|e| PrepareError(e.to_string()))?;
    let memory = Engine::reservation(&language, &cl, &rl);
    let case = Case { stdin: s.stdin.clone().unwrap_or_default(), args: Vec::new(), expected_output: None };
    let cases = vec![case; s.number_of_runs.max(1) as usize];
    Ok(Prepared { job: Job { language, files: sources, cases, compile_limits, run_limits }, memory })
}

/// Runs a prepared job under an admitted permit.
pub async fn run(engine: &Engine, permit: &Permit, job: Job) -> Result<JobResult, String> {
    engine.run_job(permit, job).await.map_err(|e| e.to_string())
}

/// Judge0's `strip`: each line right-stripped (Ruby's `rstrip`, which also
/// removes NUL), then the whole right-stripped.
fn rstrip(mut l: &[u8]) -> &[u8] {
    while let [rest @ .., last] = l {
        if matches!(last, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | 0) {
            l = rest;
        } else {
            break;
        }
    }
    l
}

fn strip(text: &[u8]) -> Vec<u8> {
    let trim = rstrip;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').map(trim).collect();
    trim(&lines.join(&b'\n')).to_vec()
}

/// Judge0's comparison: no expected output accepts; empty output (null)
/// never equals an expected output, even an empty one.
pub fn accepted(expected: Option<&[u8]>, stdout: Option<&[u8]>) -> bool {
    match (expected, stdout) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(o)) => strip(e) == strip(o),
    }
}

fn non_empty(b: &[u8]) -> Option<Vec<u8>> {
    (!b.is_empty()).then(|| b.to_vec())
}

/// The status, message, exit code and signal of one run. A run that ended
/// by itself within its `cpu_extra_time` but over `cpu_limit` seconds is a
/// time limit, as in isolate.
fn judge(o: &Outcome, expected: Option<&[u8]>, cpu_limit: f64) -> (u8, Option<String>, i64, Option<i64>) {
    let signal = o.signal.map(i64::from);
    let over = o.cpu_time.as_secs_f64() > cpu_limit;
    match o.status {
        Status::TimeLimitWall | Status::InternalError | Status::OutputLimit | Status::MemoryLimit => {}
        _ if over => return (5, Some("Time limit exceeded".into()), 0, signal),
        _ => {}
    }
    match o.status {
        Status::TimeLimitCpu => (5, Some("Time limit exceeded".into()), 0, signal),
        Status::TimeLimitWall => (5, Some("Time limit exceeded (wall clock)".into()), 0, signal),
        Status::Signaled => {
            let sig = signal.unwrap_or(0);
            let id = match sig {
                11 => 7,
                25 => 8,
                8 => 9,
                6 => 10,
                _ => 12,
            };
            (id, Some(format!("Caught fatal signal {sig}")), 0, Some(sig))
        }
        Status::MemoryLimit => (12, Some("Memory limit exceeded".into()), 0, Some(signal.unwrap_or(9))),
        Status::OutputLimit => (8, Some("Output limit exceeded".into()), 0, Some(25)),
        Status::RuntimeError => {
            let code = i64::from(o.exit_code.unwrap_or(1));
            (11, Some(format!("Exited with error status {code}")), code, None)
        }
        Status::InternalError => (13, Some("Internal Error".into()), 0, None),
        Status::Ok => {
            let stdout = non_empty(&o.stdout);
            let id = if accepted(expected, stdout.as_deref()) { 3 } else { 4 };
            (id, None, 0, None)
        }
    }
}

/// Writes a job's result into the submission: Judge0's fields and status.
pub fn finish(s: &mut Submission, r: &JobResult) {
    let compile = r.compile.stage.as_ref();
    // A compile from evald's cache shows what the compile that filled it printed.
    let compile_output = match (compile, &r.compile.printed) {
        (Some(c), _) => Some([c.outcome.stdout.as_slice(), c.outcome.stderr.as_slice()].concat()),
        (None, Some(p)) => Some([p.stdout.as_slice(), p.stderr.as_slice()].concat()),
        (None, None) => None,
    };
    s.compile_output = compile_output.as_deref().and_then(non_empty);
    if let Some(c) = compile.filter(|c| c.verdict != Verdict::Ok) {
        let (status, output) = match c.verdict {
            Verdict::InternalError => (13, s.compile_output.clone()),
            Verdict::TimeLimitCpu | Verdict::TimeLimitWall => (6, Some(b"Compilation time limit exceeded.".to_vec())),
            _ => (6, s.compile_output.clone()),
        };
        s.status_id = status;
        s.compile_output = output;
        (s.stdout, s.stderr, s.time, s.wall_time, s.memory, s.exit_code, s.exit_signal, s.message) =
            (None, None, None, None, None, None, None, None);
        return;
    }
    // Runs stop counting at the first one that is not accepted; time and
    // memory are averaged over the runs counted.
    let (mut cpu, mut wall, mut memory, mut counted) = (0.0, 0.0, 0u64, 0u32);
    for case in &r.cases {
        let o = &case.outcome;
        let (status, message, exit_code, exit_signal) = judge(o, s.expected_output.as_deref(), s.cpu_time_limit);
        cpu += o.cpu_time.as_secs_f64();
        wall += o.wall_time.as_secs_f64();
        memory += o.memory_bytes / 1024;
        counted += 1;
        s.stdout = non_empty(&o.stdout);
        s.stderr = non_empty(&o.stderr);
        (s.status_id, s.message, s.exit_code, s.exit_signal) = (status, message, Some(exit_code), exit_signal);
        if status != 3 {
            break;
        }
    }
    if counted > 0 {
        let n = f64::from(counted);
        s.time = Some(decimal((cpu / n * 1000.0).round() / 1000.0));
        s.wall_time = Some(decimal((wall / n * 1000.0).round() / 1000.0));
        s.memory = Some(memory / u64::from(counted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_as_judge0() {
        assert!(accepted(None, None));
        assert!(accepted(Some(b"a \nb\r\n\n"), Some(b"a\nb")));
        assert!(!accepted(Some(b" a"), Some(b"a")));
        assert!(!accepted(Some(b"a\n\nb"), Some(b"a\nb")));
        assert!(!accepted(Some(b""), None), "empty output is null: wrong answer");
        assert!(accepted(Some(b""), Some(b"\n")));
        assert!(accepted(Some(b"x\0"), Some(b"x")));
    }

    #[test]
    fn sanitises_as_judge0() {
        assert_eq!(sanitise("  -O2 ; rm -rf / | $(x) `y` && z > f < g "), "-O2  rm -rf /  (x) y  z  f  g");
    }
}
