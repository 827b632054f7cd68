//! `evald bench sandbox`: the sandbox's overhead over a bare process start,
//! measured side by side in one run (absolute times are not comparable
//! across runs on a noisy machine; ratios and differences are).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use evald_sandbox::{RunSpec, Sandbox, Status};

/// Median and 99th percentile of a sample.
pub struct Stats {
    pub median: Duration,
    pub p99: Duration,
}

pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats { median: at(0.5), p99: at(0.99) }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `n` runs of `program args` started bare and in the box, alternating
/// so that both see the same machine load.
fn compare(sandbox: &Sandbox, program: &str, args: &[&str], n: usize) -> Result<(Stats, Stats)> {
    let spec = RunSpec::new(program, args.iter().map(|a| a.to_string()).collect());
    let (mut bare, mut boxed) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let bare_time = t.elapsed();
        ensure!(status.success(), "{program} failed bare");
        let t = Instant::now();
        let outcome = sandbox.run(&spec)?;
        let box_time = t.elapsed();
        ensure!(outcome.status == Status::Ok, "{program} failed in the box: {outcome:?}");
        // The first tenth warms caches and is not counted.
        if i >= n / 10 {
            bare.push(bare_time);
            boxed.push(box_time);
        }
    }
    Ok((stats(bare), stats(boxed)))
}

pub fn sandbox(sandbox: &Sandbox, iterations: usize) -> Result<()> {
    println!("sandbox overhead, {iterations} runs each, bare and boxed alternating");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "program", "bare p50", "bare p99", "box p50", "box p99", "p50 diff", "ratio"
    );
    for (name, program, args) in
        [("/bin/true", "/bin/true", &[][..]), ("python3 -c pass", "/usr/bin/python3", &["-c", "pass"][..])]
    {
        let (bare, boxed) = compare(sandbox, program, args, iterations)?;
        println!(
            "{:<22} {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>+8.3}ms {:>7.2}x",
            name,
            ms(bare.median),
            ms(bare.p99),
            ms(boxed.median),
            ms(boxed.p99),
            ms(boxed.median) - ms(bare.median),
            ms(boxed.median) / ms(bare.median),
        );
    }
    Ok(())
}
