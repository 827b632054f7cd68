//! `evald bench languages`: hello-world latency of every installed language
//! through `POST /api/v1/runs` (the first request, with a cold compile
//! cache, and warm ones), then the slow starters (JVM, BEAM, Raku) before and
//! after their start-up work, beside the same command run bare on the host,
//! in alternating rounds of one sitting.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use evald_engine::catalogue::{LanguageFile, TestProgram};
use evald_engine::{Language, SourceFile};

use crate::bench::{stats, Stats};
use crate::languages::Scratch;

/// The languages compared before and after.
pub const SLOW_STARTERS: &[&str] = &["clojure", "groovy", "scala", "kotlin", "java", "erlang", "elixir", "raku"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn hello(f: &LanguageFile) -> Result<&TestProgram> {
    f.tests.hello.as_ref().context("no hello test")
}

/// One hello-world request; checks the output.
fn post(agent: &ureq::Agent, base: &str, f: &LanguageFile) -> Result<Duration> {
    let t = hello(f)?;
    let body = serde_json::json!({
        "language": f.id, "files": [{"path": f.main, "content": t.source}], "stdin": t.stdin,
        // Generous wall limits: a loaded machine must slow the figures, not fail them.
        "limits": {"compile": {"wall_ms": 60000}, "run": {"wall_ms": 20000}},
    });
    let start = Instant::now();
    let text = agent
        .post(&format!("{base}/api/v1/runs"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())?
        .into_string()?;
    let elapsed = start.elapsed();
    let v: serde_json::Value = serde_json::from_str(&text)?;
    ensure!(v["cases"][0]["stdout"] == t.expected.as_str(), "{}: unexpected response {text}", f.id);
    Ok(elapsed)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build()
}

/// Every language: the first request (cold compile cache) and the median of
/// `warm` more.
pub fn all(base: &str, installed: &[std::sync::Arc<Language>], warm: usize) -> Result<()> {
    let agent = agent();
    println!("hello world through POST /api/v1/runs: first request (cold compile cache), then {warm} warm");
    println!("{:<16} {:<14} {:>10} {:>10} {:>10}", "language", "version", "first ms", "warm p50", "warm max");
    for l in installed {
        let first = match post(&agent, base, &l.spec) {
            Ok(d) => d,
            Err(e) => {
                println!("{:<16} {:<14} failed: {e:#}", l.spec.id, l.version.to_string());
                continue;
            }
        };
        let samples = (0..warm).map(|_| post(&agent, base, &l.spec)).collect::<Result<Vec<_>>>()?;
        let max = samples.iter().max().copied().unwrap_or_default();
        let s = stats(samples);
        println!(
            "{:<16} {:<14} {:>10.1} {:>10.1} {:>10.1}",
            l.spec.id,
            l.version.to_string(),
            ms(first),
            ms(s.median),
            ms(max)
        );
    }
    Ok(())
}

/// A language's hello world set up to run bare on the host: the run command
/// with /box replaced by a scratch directory, after the compile command (if
/// any) ran there the same way.
struct Bare {
    dir: Scratch,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    stdin: String,
    expected: String,
}

impl Bare {
    fn new(f: &LanguageFile) -> Result<Bare> {
        let t = hello(f)?;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Scratch::new(&format!("bench-{}-{n}", f.id))?;
        let root = dir.path().to_str().context("scratch path")?.to_owned();
        std::fs::write(dir.path().join(&f.main), &t.source)?;
        let files = [SourceFile { path: f.main.clone(), content: t.source.clone().into_bytes() }];
        let rebase = |cmd: &[String]| -> Vec<String> {
            evald_engine::expand(cmd, &files).iter().map(|a| a.replace("/box", &root)).collect()
        };
        let env: Vec<(String, String)> = f.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(compile) = &f.compile {
            let argv = rebase(compile);
            let out = Command::new(&argv[0]).args(&argv[1..]).envs(env.clone()).current_dir(dir.path()).output()?;
            ensure!(out.status.success(), "{}: bare compile failed: {}", f.id, String::from_utf8_lossy(&out.stderr));
        }
        Ok(Bare { argv: rebase(&f.run), dir, env, stdin: t.stdin.clone(), expected: t.expected.clone() })
    }

    fn run(&self) -> Result<Duration> {
        use std::io::Write as _;
        let start = Instant::now();
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .envs(self.env.clone())
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(self.stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        let elapsed = start.elapsed();
        ensure!(out.stdout == self.expected.as_bytes(), "bare {:?} printed {:?}", self.argv, out.stdout);
        Ok(elapsed)
    }
}

fn find<'a>(installed: &'a [std::sync::Arc<Language>], id: &str) -> Option<&'a LanguageFile> {
    installed.iter().find(|l| l.spec.id == id).map(|l| &l.spec)
}

/// The slow starters through two servers, one with the catalogue before
/// (`before`) and one after (`after`), and bare, in alternating rounds.
pub fn slow_starters(
    after: (&str, &[std::sync::Arc<Language>]),
    before: (&str, &[std::sync::Arc<Language>]),
    rounds: usize,
) -> Result<()> {
    let agent = agent();
    println!();
    println!(
        "slow starters: hello world, {rounds} alternating rounds (API before, API after, bare before, bare after)"
    );
    println!(
        "{:<9} {:>17} {:>17} {:>17} {:>17} {:>8} {:>9}",
        "language", "API before p50/99", "API after p50/99", "bare before", "bare after", "after/", "API/bare"
    );
    for id in SLOW_STARTERS {
        let (Some(new), Some(old)) = (find(after.1, id), find(before.1, id)) else { continue };
        let (bare_new, bare_old) = (Bare::new(new)?, Bare::new(old)?);
        // Warm both servers' compile caches and the page cache.
        post(&agent, after.0, new)?;
        post(&agent, before.0, old)?;
        bare_new.run()?;
        bare_old.run()?;
        let mut samples: [Vec<Duration>; 4] = Default::default();
        for _ in 0..rounds {
            samples[0].push(post(&agent, before.0, old)?);
            samples[1].push(post(&agent, after.0, new)?);
            samples[2].push(bare_old.run()?);
            samples[3].push(bare_new.run()?);
        }
        let [api_old, api_new, b_old, b_new] = samples.map(stats);
        let pair = |s: &Stats| format!("{:.0}/{:.0}", ms(s.median), ms(s.p99));
        println!(
            "{:<9} {:>17} {:>17} {:>17} {:>17} {:>7.2}x {:>8.2}x",
            id,
            pair(&api_old),
            pair(&api_new),
            pair(&b_old),
            pair(&b_new),
            ms(api_new.median) / ms(api_old.median),
            ms(api_new.median) / ms(b_new.median),
        );
    }
    Ok(())
}

/// The installed languages of a catalogue directory.
pub fn installed(dir: &Path) -> Result<Vec<std::sync::Arc<Language>>> {
    let catalogue = evald_engine::Catalogue::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    Ok(evald_engine::catalogue::detect_installed(&catalogue))
}
