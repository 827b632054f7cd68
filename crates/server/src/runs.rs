//! Batch runs of the native API: checking a request into an engine job and
//! running it under a permit, with its metrics. Shared by the handlers and
//! the cluster queue's worker (which holds this, not the whole state).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use evald_engine::{
    signal_name, Case, Engine, Job, JobResult, LimitRequest, Outcome, Permit, SourceFile, StageResult, Verdict,
};
use evald_proto::v1;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Runs batch jobs and records them.
pub struct Runner {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
}

fn limit_request(l: &v1::StageLimits) -> LimitRequest {
    LimitRequest {
        wall_ms: l.wall_ms,
        cpu_ms: l.cpu_ms,
        memory_bytes: l.memory_bytes,
        processes: l.processes,
        output_bytes: l.output_bytes,
        ..LimitRequest::default()
    }
}

fn stage(outcome: &Outcome, verdict: Verdict) -> v1::Stage {
    v1::Stage {
        status: verdict.into(),
        exit_code: outcome.exit_code,
        signal: outcome.signal.map(signal_name),
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        stdout_truncated: outcome.stdout_truncated,
        stderr_truncated: outcome.stderr_truncated,
        cpu_ms: outcome.cpu_time.as_millis() as u64,
        wall_ms: outcome.wall_time.as_millis() as u64,
        memory_bytes: outcome.memory_bytes,
        cached: None,
    }
}

/// The native API's result of a finished job (also `evald run --json`'s).
pub fn result(id: String, r: &JobResult) -> v1::RunResult {
    let compile = match &r.compile.stage {
        Some(StageResult { verdict, outcome }) => {
            if *verdict == Verdict::InternalError {
                tracing::error!(error = outcome.error.as_deref().unwrap_or(""), "compile stage internal error");
            }
            Some(v1::Stage { cached: Some(false), ..stage(outcome, *verdict) })
        }
        // From the cache: what the compile that filled it printed.
        None if r.language.compiled() => Some(v1::Stage {
            status: evald_proto::Verdict::Ok,
            exit_code: Some(0),
            signal: None,
            stdout: r
                .compile
                .printed
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.stdout).into_owned())
                .unwrap_or_default(),
            stderr: r
                .compile
                .printed
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.stderr).into_owned())
                .unwrap_or_default(),
            stdout_truncated: false,
            stderr_truncated: false,
            cpu_ms: 0,
            wall_ms: 0,
            memory_bytes: 0,
            cached: Some(r.compile.cached),
        }),
        None => None,
    };
    let cases = r
        .cases
        .iter()
        .map(|c| {
            if c.verdict == Verdict::InternalError {
                tracing::error!(error = c.outcome.error.as_deref().unwrap_or(""), "run stage internal error");
            }
            stage(&c.outcome, c.verdict)
        })
        .collect();
    v1::RunResult {
        id,
        language: r.language.spec.id.clone(),
        version: r.language.version.to_string(),
        compile,
        cases,
        status: r.verdict().into(),
    }
}

impl Runner {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Runner {
        Runner { engine, metrics }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Checks a run request and turns it into a job and the memory it
    /// reserves.
    pub fn prepare(&self, req: v1::RunRequest) -> Result<(Job, u64), ApiError> {
        let engine = &self.engine;
        let Some(language) = engine.resolve(&req.language, req.version.as_deref()) else {
            let message = match &req.version {
                Some(v) => format!("no installed language {:?} matches version {v:?}", req.language),
                None => format!("no installed language {:?}", req.language),
            };
            return Err(ApiError::bad_request("unknown_language", message));
        };
        let mut files = Vec::with_capacity(req.files.len());
        for (i, f) in req.files.into_iter().enumerate() {
            let content = match f.encoding {
                v1::Encoding::Utf8 => f.content.into_bytes(),
                v1::Encoding::Base64 => {
                    base64::engine::general_purpose::STANDARD.decode(f.content.trim()).map_err(|_| {
                        ApiError::bad_request("invalid_file", format!("files[{i}].content is not valid base64"))
                    })?
                }
            };
            files.push(SourceFile { path: f.path, content });
        }
        engine.check_files(&files)?;
        let cases = match req.cases {
            Some(_) if req.stdin.is_some() || req.args.is_some() => {
                return Err(ApiError::bad_request("invalid_body", "give either cases or stdin and args, not both"))
            }
            Some(cases) if cases.is_empty() => {
                return Err(ApiError::bad_request("invalid_body", "cases must not be empty when given"))
            }
            Some(cases) => cases
                .into_iter()
                .map(|c| Case {
                    stdin: c.stdin.unwrap_or_default().into_bytes(),
                    args: c.args.unwrap_or_default(),
                    expected_output: c.expected_output.map(String::into_bytes),
                })
                .collect(),
            None => vec![Case {
                stdin: req.stdin.unwrap_or_default().into_bytes(),
                args: req.args.unwrap_or_default(),
                expected_output: None,
            }],
        };
        let max_cases = engine.config().max_cases;
        if cases.len() > max_cases {
            return Err(ApiError::bad_request(
                "invalid_job",
                format!("{} test cases, more than the maximum of {max_cases}", cases.len()),
            ));
        }
        if cases.iter().flat_map(|c| &c.args).any(|a| a.contains('\0')) {
            return Err(ApiError::bad_request("invalid_job", "an argument contains a NUL byte"));
        }
        let compile = limit_request(&req.limits.compile);
        let run = limit_request(&req.limits.run);
        let (cl, rl) = engine.limits(&language, &compile, &run)?;
        let memory = Engine::reservation(&language, &cl, &rl);
        Ok((Job { language, files, cases, compile_limits: compile, run_limits: run }, memory))
    }

    /// Runs an admitted job; the permit is released when it is done.
    pub async fn execute(&self, id: String, job: Job, permit: Permit) -> Result<v1::RunResult, ApiError> {
        let language = job.language.spec.id.clone();
        let started = Instant::now();
        let r = self.engine.run_job(&permit, job).await;
        drop(permit);
        let took = started.elapsed();
        match r {
            Ok(r) => {
                let result = result(id, &r);
                self.metrics.record_run(&language, result.status.as_str(), took);
                Ok(result)
            }
            Err(e) => {
                self.metrics.record_run(&language, "internal_error", took);
                Err(e.into())
            }
        }
    }
}
