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

/// `evald bench http`: Python hello world through `POST /api/v2/execute`
/// at 1 and 8 concurrent clients beside the bare `python3` start rate on
/// the same cores, and the compile cache's effect on a C++ hello world.
pub fn http(base: &str, iterations: usize) -> Result<()> {
    let python = serde_json::json!({
        "language": "python", "version": "*",
        "files": [{"name": "main.py", "content": "print('hello, world')"}],
    });
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let post = |agent: &ureq::Agent, body: &serde_json::Value| -> Result<Duration> {
        let t = Instant::now();
        let resp = agent
            .post(&format!("{base}/api/v2/execute"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())?;
        let text = resp.into_string()?;
        let elapsed = t.elapsed();
        let v: serde_json::Value = serde_json::from_str(&text)?;
        ensure!(v["run"]["stdout"] == "hello, world\n", "unexpected response {text}");
        Ok(elapsed)
    };
    let bare_once = || -> Result<Duration> {
        let t = Instant::now();
        let out = Command::new("/usr/bin/python3").args(["-c", "print('hello, world')"]).output()?;
        ensure!(out.stdout == b"hello, world\n", "bare python failed");
        Ok(t.elapsed())
    };
    // Warm up both paths.
    for _ in 0..10 {
        post(&agent, &python)?;
        bare_once()?;
    }
    println!("python hello world, {iterations} requests per row");
    println!("{:<34} {:>9} {:>9} {:>10} {:>8}", "path", "p50", "p99", "req/s", "ratio");
    for clients in [1usize, 8] {
        let per = iterations.div_ceil(clients);
        let run = |f: &(dyn Fn() -> Result<Duration> + Sync)| -> Result<(Stats, f64)> {
            let t = Instant::now();
            let samples = std::thread::scope(|s| {
                let handles: Vec<_> =
                    (0..clients).map(|_| s.spawn(|| (0..per).map(|_| f()).collect::<Result<Vec<_>>>())).collect();
                handles.into_iter().map(|h| h.join().expect("client thread")).collect::<Result<Vec<_>>>()
            })?;
            let rate = (per * clients) as f64 / t.elapsed().as_secs_f64();
            Ok((stats(samples.into_iter().flatten().collect()), rate))
        };
        let (bare, bare_rate) = run(&bare_once)?;
        let (api, api_rate) = run(&|| post(&agent, &python))?;
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>10.1} {:>8}",
            format!("bare python3 -c, {clients} client(s)"),
            ms(bare.median),
            ms(bare.p99),
            bare_rate,
            "1.00x"
        );
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>10.1} {:>7.2}x",
            format!("POST /api/v2/execute, {clients} client(s)"),
            ms(api.median),
            ms(api.p99),
            api_rate,
            if clients == 1 { ms(api.median) / ms(bare.median) } else { api_rate / bare_rate },
        );
    }
    println!("(ratio: p50 over bare p50 at 1 client; throughput over bare throughput at 8 clients)");

    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let body = serde_json::json!({
            "language": "c++", "version": "*",
            "files": [{"name": "main.cpp", "content": format!(
                "#include <iostream>\n// run {i} {:?}\nint main() {{ std::cout << \"hello, world\" << std::endl; }}\n",
                Instant::now()
            )}],
        });
        first.push(post(&agent, &body)?);
        second.push(post(&agent, &body)?);
    }
    let (f, s) = (stats(first), stats(second));
    println!("c++ hello world, 10 distinct sources, each sent twice");
    println!(
        "  first (compiles) p50 {:.1}ms, second (compile cache) p50 {:.1}ms, {:.1}x faster",
        ms(f.median),
        ms(s.median),
        ms(f.median) / ms(s.median)
    );
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a bash session with a shell on a PTY and waits for its prompt.
async fn open_shell(base: &str) -> Result<Ws> {
    use futures_util::SinkExt;
    let url = format!("{base}/api/v1/sessions");
    let body = serde_json::json!({"language": "bash", "files": [{"path": "main.sh", "content": "echo hi\n"}]});
    let created = tokio::task::spawn_blocking(move || -> Result<String> {
        let text =
            ureq::post(&url).set("Content-Type", "application/json").send_string(&body.to_string())?.into_string()?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        Ok(v["id"].as_str().unwrap_or_default().to_owned())
    })
    .await??;
    let ws_url = format!("{}/api/v1/sessions/{created}/ws", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"shell"}"#.into())).await?;
    // The prompt ends with "$ ".
    let mut seen = Vec::new();
    while !seen.ends_with(b"$ ") {
        seen.extend(next_output(&mut ws).await?);
    }
    Ok(ws)
}

/// The bytes of the next `output` event.
async fn next_output(ws: &mut Ws) -> Result<Vec<u8>> {
    use base64::Engine as _;
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no event within 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("connection closed"))??;
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "output" {
                return Ok(base64::engine::general_purpose::STANDARD.decode(v["data"].as_str().unwrap_or_default())?);
            }
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))
}

/// `evald bench session`: keystroke echo through a PTY session, then the
/// server's memory per idle connected session with `sessions` shells open.
pub async fn session(base: &str, server_pid: u32, keystrokes: usize, sessions: usize) -> Result<()> {
    use futures_util::SinkExt;
    let mut ws = open_shell(base).await?;
    let key = tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"stdin","data":"a"}"#.into());
    let clear = tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"stdin","data":"\u0015"}"#.into());
    let mut samples = Vec::with_capacity(keystrokes);
    for i in 0..keystrokes + 20 {
        if i % 50 == 49 {
            // Ctrl-U clears the line; its echo is consumed untimed.
            ws.send(clear.clone()).await?;
            next_output(&mut ws).await?;
        }
        let t = Instant::now();
        ws.send(key.clone()).await?;
        let echoed = next_output(&mut ws).await?;
        let elapsed = t.elapsed();
        ensure!(echoed.contains(&b'a'), "unexpected echo {echoed:?}");
        if i >= 20 {
            samples.push(elapsed);
        }
    }
    let s = stats(samples);
    println!("keystroke to echo through a PTY session (WebSocket on loopback), {keystrokes} keystrokes");
    println!("  p50 {:.3} ms, p99 {:.3} ms", ms(s.median), ms(s.p99));
    drop(ws);

    let before = rss_kib(server_pid)?;
    let mut open = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        open.push(open_shell(base).await?);
    }
    let after = rss_kib(server_pid)?;
    println!("{sessions} idle sessions, each with a connected client and a shell on a PTY");
    println!(
        "  server RSS {:.1} MiB before, {:.1} MiB after: {:.1} KiB per session (sandboxed processes excluded: they are not the server's)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / sessions as f64
    );
    drop(open);
    Ok(())
}
