//! `evald languages`: list the installed languages, install their packages.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use evald_engine::catalogue::{self, Catalogue, LanguageFile};
use evald_engine::SourceFile;

/// Prints the installed languages with the versions detected on this host.
pub fn list(dir: &Path, json: bool) -> Result<ExitCode> {
    let catalogue = Catalogue::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    let installed = catalogue::detect_installed(&catalogue);
    if json {
        let list: Vec<_> = installed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "id": l.spec.id,
                    "name": l.spec.name,
                    "version": l.version.to_string(),
                    "aliases": l.spec.aliases,
                    "compiled": l.compiled(),
                    "repl": l.spec.repl.is_some(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{:<14} {:<12} {:<9} aliases", "id", "version", "kind");
        for l in &installed {
            let kind = if l.compiled() { "compiled" } else { "script" };
            println!("{:<14} {:<12} {:<9} {}", l.spec.id, l.version, kind, l.spec.aliases.join(" "));
        }
        eprintln!("{} of {} catalogued languages installed", installed.len(), catalogue.files.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// How long apt waits for another apt or dpkg process to release its lock.
const APT_LOCK_TIMEOUT_S: u32 = 600;

/// Installs the Debian and npm packages of the given languages (or all),
/// then runs their `prepare` commands.
pub fn install(dir: &Path, ids: &[String], all: bool) -> Result<ExitCode> {
    let catalogue = Catalogue::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    if ids.is_empty() && !all {
        bail!("name the languages to install, or pass --all");
    }
    let mut chosen = Vec::new();
    for id in ids {
        let wanted = id.to_ascii_lowercase();
        let Some(f) = catalogue
            .files
            .iter()
            .find(|f| f.id == wanted || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(&wanted)))
        else {
            bail!("unknown language {id:?} (see `evald languages --help`)");
        };
        chosen.push(f);
    }
    if all {
        chosen = catalogue.files.iter().collect();
    }
    let mut debs: Vec<&str> = chosen.iter().flat_map(|f| f.packages.iter().map(String::as_str)).collect();
    let mut npm: Vec<&str> = chosen.iter().flat_map(|f| f.npm.iter().map(String::as_str)).collect();
    debs.sort_unstable();
    debs.dedup();
    npm.sort_unstable();
    npm.dedup();
    let started = Instant::now();
    if !debs.is_empty() {
        let lock = format!("DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}");
        step(&format!("apt-get update (waiting up to {APT_LOCK_TIMEOUT_S} s for another apt or dpkg to finish)"));
        apt_update(&lock)?;
        step(&format!("apt-get install: {} Debian packages for {} languages", debs.len(), chosen.len()));
        run(Command::new("apt-get")
            .args(["-o", &lock, "install", "-y", "--no-install-recommends"])
            .args(&debs)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !npm.is_empty() {
        step(&format!("npm install -g {}", npm.join(" ")));
        run(Command::new("npm").args(["install", "-g"]).args(&npm))?;
    }
    let mut failed = Vec::new();
    for f in chosen.iter().filter(|f| !f.prepare.is_empty()) {
        let t = Instant::now();
        match prepare(f) {
            Ok(()) => step(&format!("prepared {} in {:.1} s", f.id, t.elapsed().as_secs_f64())),
            Err(e) => {
                eprintln!("evald: preparing {} failed (it runs, only slower): {e:#}", f.id);
                failed.push(f.id.as_str());
            }
        }
    }
    step(&format!("installed {} languages in {:.0} s", chosen.len(), started.elapsed().as_secs_f64()));
    if !failed.is_empty() {
        eprintln!("evald: preparation failed for {}", failed.join(", "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `apt-get update`, waiting while another process holds the package lists'
/// lock: apt 2.6 applies `DPkg::Lock::Timeout` to the dpkg lock that
/// `install` takes, not to the lists lock of `update`, which fails at once.
fn apt_update(lock: &str) -> Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(APT_LOCK_TIMEOUT_S.into());
    loop {
        let out = Command::new("apt-get")
            .args(["-o", lock, "update"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::piped())
            .output()
            .context("starting apt-get update")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            eprint!("{stderr}");
            return Ok(());
        }
        if !stderr.contains("Could not get lock") || Instant::now() >= deadline {
            eprint!("{stderr}");
            bail!("apt-get update failed with {}", out.status);
        }
        step("another apt holds the package lists lock; waiting");
        // Polling: the lock is another program's, with no event to await.
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Runs a language's `prepare` commands in a scratch directory that holds
/// its hello test as the main file.
fn prepare(f: &LanguageFile) -> Result<()> {
    let hello = f.tests.hello.as_ref().context("no hello test")?;
    let scratch = Scratch::new(&f.id)?;
    let main = scratch.path().join(&f.main);
    if let Some(parent) = main.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&main, &hello.source).with_context(|| format!("writing {}", main.display()))?;
    let files = [SourceFile { path: f.main.clone(), content: hello.source.clone().into_bytes() }];
    for cmd in &f.prepare {
        let argv = evald_engine::expand(cmd, &files);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(scratch.path())
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("starting {}", argv[0]))?;
        if !out.status.success() {
            bail!("{} exited with {}: {}", argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

/// A scratch directory of this process under the system's temporary
/// directory, removed on drop.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch> {
        let path = std::env::temp_dir().join(format!("evald-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One progress line on stderr.
fn step(what: &str) {
    eprintln!("evald: {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
