//! Batch jobs: compile once, run every test case in a fresh box of its own.

use std::sync::Arc;

use evald_sandbox::{Capture, Outcome};

use crate::process::{Io, Launch, Program};
use crate::{same_output, Compiled, Engine, EngineError, Language, LimitRequest, Permit, Place, SourceFile, Verdict};

/// One test case: input, arguments and optionally the expected output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Case {
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    pub expected_output: Option<Vec<u8>>,
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

/// The result of one sandboxed stage.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub verdict: Verdict,
    pub outcome: Outcome,
}

/// The result of a batch job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub language: Arc<Language>,
    pub compile: Compiled,
    /// One per case, in order; empty when compilation failed.
    pub cases: Vec<StageResult>,
}

impl JobResult {
    /// The verdict of the whole job: the compile stage's when it failed,
    /// else the first case's that is not `ok`, else `ok`.
    pub fn verdict(&self) -> Verdict {
        match &self.compile.stage {
            Some(s) if s.verdict != Verdict::Ok => s.verdict,
            _ => self.cases.iter().map(|c| c.verdict).find(|v| *v != Verdict::Ok).unwrap_or(Verdict::Ok),
        }
    }
}

impl Engine {
    /// Compiles once and runs every case (at least one: an empty case list
    /// runs one case with no input), one after the other, under `permit`.
    pub async fn run_job(&self, permit: &Permit, job: Job) -> Result<JobResult, EngineError> {
        if job.cases.len() > self.config.max_cases {
            return Err(EngineError::TooManyCases { count: job.cases.len(), max: self.config.max_cases });
        }
        let (compile_limits, run_limits) = self.limits(&job.language, &job.compile_limits, &job.run_limits)?;
        let compiled = self.compile(permit, &job.language, &job.files, compile_limits, &Place::Fresh).await?;
        let mut results = Vec::new();
        if compiled.ok() {
            let cases = if job.cases.is_empty() { vec![Case::default()] } else { job.cases };
            for case in cases {
                let launch = Launch {
                    language: &job.language,
                    sources: &job.files,
                    program: Program::Run { compiled: &compiled, args: &case.args },
                    io: Io::Pipes,
                    limits: run_limits,
                    workspace: None,
                };
                let outcome = match self.start(permit, launch).await {
                    Ok(process) => {
                        let mut capture = Capture::default();
                        let mut outcome = process.drive(case.stdin, None, &mut capture).await;
                        outcome.stdout = capture.stdout;
                        outcome.stderr = capture.stderr;
                        outcome
                    }
                    Err(EngineError::Start(e)) => Outcome::internal(e),
                    Err(e) => return Err(e),
                };
                let mut verdict = Verdict::of(outcome.status);
                if let (Verdict::Ok, Some(expected)) = (verdict, &case.expected_output) {
                    if !same_output(&outcome.stdout, expected) {
                        verdict = Verdict::WrongAnswer;
                    }
                }
                results.push(crate::StageResult { verdict, outcome });
            }
        }
        Ok(JobResult { language: job.language, compile: compiled, cases: results })
    }
}
