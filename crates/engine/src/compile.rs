//! The compile step: in a fresh workspace whose products become the file set
//! of every case (and are cached), or in place in a session's workspace.

use std::sync::Arc;

use evald_sandbox::{Capture, FileSpec, Limits, RunSpec, Stdin, Workspace};

use crate::{cache, expand, Engine, EngineError, Language, Permit, SourceFile, StageResult, Verdict};

/// Where a compile step runs.
#[derive(Clone)]
pub enum Place {
    /// A workspace of its own, removed afterwards; the products are read
    /// back (through the workspace's beneath-only file access) and cached.
    Fresh,
    /// This persistent workspace (a session's), which keeps the products.
    In(Arc<Workspace>),
}

/// The result of a compile step.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The compile stage; `None` for interpreted languages and cache hits.
    pub stage: Option<StageResult>,
    /// True when the file set came from the compile cache.
    pub cached: bool,
    /// On a cache hit, what the compilation that filled the cache printed
    /// (its warnings); `None` otherwise (the stage has the output).
    pub printed: Option<Arc<cache::Printed>>,
    /// The files every case starts with; empty when compilation failed or
    /// the step ran in place.
    pub files: Arc<Vec<FileSpec>>,
}

impl Compiled {
    /// Nothing compiled: for programs that need no compile step (a shell,
    /// a REPL).
    pub fn none() -> Compiled {
        Compiled { stage: None, cached: false, printed: None, files: Arc::new(Vec::new()) }
    }

    pub fn ok(&self) -> bool {
        self.stage.as_ref().is_none_or(|s| s.verdict == Verdict::Ok)
    }
}

impl Engine {
    /// Compiles the sources (or finds them in the cache) under a capacity
    /// permit. Interpreted languages just get their sources as the file set.
    pub async fn compile(
        &self,
        _permit: &Permit,
        language: &Language,
        files: &[SourceFile],
        limits: Limits,
        place: &Place,
    ) -> Result<Compiled, EngineError> {
        self.check_files(files)?;
        let Some(command) = &language.spec.compile else {
            let files = match place {
                Place::Fresh => files
                    .iter()
                    .map(|f| FileSpec { path: f.path.clone(), content: f.content.clone(), executable: false })
                    .collect(),
                Place::In(_) => Vec::new(),
            };
            return Ok(Compiled { stage: None, cached: false, printed: None, files: Arc::new(files) });
        };
        let argv = expand(command, files);
        let Some((program, args)) = argv.split_first() else {
            return Err(EngineError::Sandbox(format!("{} has an empty compile command", language.spec.id)));
        };
        let mut spec = RunSpec::new(program.clone(), args.to_vec());
        spec.env = language.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        spec.stdin = Stdin::Pipe;
        spec.limits = limits;
        spec.validate()?;
        match place {
            Place::In(workspace) => {
                let stage = self.compile_stage(spec, workspace.clone()).await?;
                Ok(Compiled { stage: Some(stage), cached: false, printed: None, files: Arc::new(Vec::new()) })
            }
            Place::Fresh => self.compile_fresh(language, files, &argv, spec).await,
        }
    }

    async fn compile_fresh(
        &self,
        language: &Language,
        files: &[SourceFile],
        argv: &[String],
        spec: RunSpec,
    ) -> Result<Compiled, EngineError> {
        let key = cache::key(language, argv, files);
        if let Some((files, printed)) = self.cache.get(&key) {
            return Ok(Compiled { stage: None, cached: true, printed: Some(printed), files });
        }
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("compile-{}-{n}", std::process::id());
        let sandbox = self.sandbox()?.clone();
        let sources = files.to_vec();
        let disk = spec.limits.disk_bytes;
        let workspace = crate::blocking(move || {
            let workspace = sandbox
                .create_workspace(&name, disk)
                .map_err(|e| EngineError::Sandbox(format!("creating a workspace: {e}")))?;
            for f in &sources {
                workspace
                    .write_file(&f.path, &f.content, false)
                    .map_err(|e| EngineError::Sandbox(format!("staging {}: {e}", f.path)))?;
            }
            Ok::<_, EngineError>(Arc::new(workspace))
        })
        .await??;
        let stage = self.compile_stage(spec, workspace.clone()).await?;
        let max_entries = self.config.max_files * 10;
        let collect = stage.verdict == Verdict::Ok;
        let artifacts = crate::blocking(move || {
            let mut artifacts = Vec::new();
            if collect {
                let entries = workspace
                    .list(max_entries)
                    .map_err(|e| EngineError::Sandbox(format!("listing the workspace: {e}")))?;
                let mut budget = disk;
                for entry in entries.into_iter().filter(|e| !e.is_dir) {
                    let content = workspace
                        .read_file(&entry.path, budget)
                        .map_err(|e| EngineError::Sandbox(format!("collecting {}: {e}", entry.path)))?;
                    budget -= content.len() as u64;
                    artifacts.push(FileSpec { path: entry.path, content, executable: entry.executable });
                }
            }
            if let Ok(w) = Arc::try_unwrap(workspace) {
                w.destroy();
            }
            Ok::<_, EngineError>(artifacts)
        })
        .await??;
        let artifacts = Arc::new(artifacts);
        if stage.verdict == Verdict::Ok {
            let printed = cache::Printed { stdout: stage.outcome.stdout.clone(), stderr: stage.outcome.stderr.clone() };
            self.cache.insert(key, artifacts.clone(), Arc::new(printed));
        }
        Ok(Compiled { stage: Some(stage), cached: false, printed: None, files: artifacts })
    }

    /// Runs a compile command in `workspace` and judges it.
    async fn compile_stage(&self, spec: RunSpec, workspace: Arc<Workspace>) -> Result<StageResult, EngineError> {
        let sandbox = self.sandbox()?.clone();
        let started = crate::blocking(move || sandbox.spawn_in(&spec, &workspace)).await?;
        let outcome = match started {
            Ok(running) => {
                let mut capture = Capture::default();
                let mut outcome = running.drive(Vec::new(), None, &mut capture).await;
                outcome.stdout = capture.stdout;
                outcome.stderr = capture.stderr;
                outcome
            }
            Err(e) => match EngineError::from(e) {
                EngineError::Start(e) => evald_sandbox::Outcome::internal(e),
                other => return Err(other),
            },
        };
        Ok(StageResult { verdict: Verdict::of_compile(outcome.status), outcome })
    }
}
