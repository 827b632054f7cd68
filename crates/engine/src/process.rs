//! The engine's one streaming run API: a program of a language (a run of
//! its compiled files, a shell or its REPL) started in a box on pipes or a
//! terminal ([`Engine::start`]), then driven to its end by the sandbox's one
//! driver ([`Process::drive`]): batch cases, Piston WebSocket runs and
//! session processes all go this way.
//!
//! The engine owns everything about how a program starts: argv expansion,
//! the environment, the limits it is given and where its files come from.

use std::marker::PhantomData;
use std::sync::Arc;

use evald_sandbox::{Control, Limits, Outcome, RunSpec, Running, Sink, Stdin, Workspace};
use tokio::sync::mpsc;

use crate::{expand, Compiled, Engine, EngineError, Language, Permit, SourceFile};

/// What runs.
#[derive(Debug, Clone, Copy)]
pub enum Program<'a> {
    /// The language's run command over `compiled`'s files, with `args`
    /// appended.
    Run { compiled: &'a Compiled, args: &'a [String] },
    /// `bash -i` in the workspace.
    Shell,
    /// The language's REPL ([`EngineError::NoRepl`] when it has none).
    Repl,
}

/// How the program talks to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Pipes: stdin, stdout and stderr apart.
    Pipes,
    /// A terminal of this size (each at least 1): one stream both ways.
    Terminal { rows: u16, cols: u16 },
}

/// Everything about starting one program.
pub struct Launch<'a> {
    pub language: &'a Language,
    /// The sources, main file first: `{main}`, `{main_stem}` and `{files}`
    /// expand to their paths.
    pub sources: &'a [SourceFile],
    pub program: Program<'a>,
    pub io: Io,
    pub limits: Limits,
    /// A persistent workspace mounted as `/box` (sessions); `None`: a fresh
    /// one holding the compiled files.
    pub workspace: Option<&'a Arc<Workspace>>,
}

/// Where the shell keeps its history: outside the user's files.
const HISTFILE: &str = "/tmp/.bash_history";

/// A started program; it borrows the permit it was started under, so the
/// permit outlives it. Dropping it without driving it kills its box.
pub struct Process<'p> {
    running: Running,
    _permit: PhantomData<&'p Permit>,
}

impl Process<'_> {
    /// Drives the program to its end (see the sandbox's `Running::drive`):
    /// `stdin` first, then what `control` sends (a closed channel kills the
    /// box; `None`: no control, stdin closes after `stdin`), output to
    /// `sink`, capped at the output limit. The outcome's stdout and stderr
    /// are empty: they went to `sink`.
    pub async fn drive(
        self,
        stdin: Vec<u8>,
        control: Option<&mut mpsc::Receiver<Control>>,
        sink: &mut impl Sink,
    ) -> Outcome {
        self.running.drive(stdin, control, sink).await
    }
}

impl Engine {
    /// The box specification of a launch.
    pub(crate) fn spec(&self, launch: &Launch<'_>) -> Result<RunSpec, EngineError> {
        let spec = &launch.language.spec;
        let argv = match launch.program {
            Program::Run { args, .. } => {
                let mut argv = expand(&spec.run, launch.sources);
                argv.extend(args.iter().cloned());
                argv
            }
            Program::Shell => vec!["/bin/bash".to_owned(), "-i".to_owned()],
            Program::Repl => spec.repl.clone().ok_or(EngineError::NoRepl)?,
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(EngineError::Sandbox(format!("{} has an empty command", spec.id)));
        };
        let mut run = RunSpec::new(program.clone(), args.to_vec());
        run.env = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        run.stdin = match launch.io {
            Io::Pipes => Stdin::Pipe,
            Io::Terminal { rows, cols } => {
                run.env.push(("HISTFILE".into(), HISTFILE.into()));
                Stdin::Pty { rows: rows.max(1), cols: cols.max(1) }
            }
        };
        run.limits = launch.limits;
        if let (None, Program::Run { compiled, .. }) = (launch.workspace, launch.program) {
            run.files = compiled.files.as_ref().clone();
        }
        Ok(run)
    }

    /// Starts a program in a box. Taking a [`Permit`] is what makes every
    /// box count against the node's capacity.
    pub async fn start<'p>(&self, _permit: &'p Permit, launch: Launch<'_>) -> Result<Process<'p>, EngineError> {
        let spec = self.spec(&launch)?;
        // A bad specification is the client's fault, whether or not a box
        // could start.
        spec.validate()?;
        let sandbox = self.sandbox()?.clone();
        let workspace = launch.workspace.cloned();
        let running = crate::blocking(move || match &workspace {
            Some(w) => sandbox.spawn_in(&spec, w),
            None => sandbox.spawn(&spec),
        })
        .await??;
        Ok(Process { running, _permit: PhantomData })
    }
}
