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
        // The box's teardown goes on in the background after its outcome;
        // let it finish so that it does not slow the next bare run down.
        sandbox.settle();
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
    println!();
    println!("back to back, {BACK_TO_BACK_ROUNDS} rounds of {iterations}/{BACK_TO_BACK_ROUNDS} bare runs then as many boxed runs");
    println!("(each box's teardown overlaps the next run, as in a busy server; CPU is the whole machine's)");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "program", "bare p50", "box p50", "p50 diff", "bare CPU/run", "box CPU/run"
    );
    for (name, program, args) in
        [("/bin/true", "/bin/true", &[][..]), ("python3 -c pass", "/usr/bin/python3", &["-c", "pass"][..])]
    {
        let (bare, boxed) = back_to_back(sandbox, program, args, iterations)?;
        println!(
            "{:<22} {:>8.3}ms {:>8.3}ms {:>+8.3}ms {:>10.3}ms {:>10.3}ms",
            name,
            ms(bare.0.median),
            ms(boxed.0.median),
            ms(boxed.0.median) - ms(bare.0.median),
            ms(bare.1),
            ms(boxed.1),
        );
    }
    Ok(())
}

const BACK_TO_BACK_ROUNDS: usize = 5;

/// Busy time of all CPUs so far (user, nice, system, irq, softirq, steal
/// from the first line of /proc/stat), in clock ticks.
fn busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    ensure!(fields.len() >= 5, "unexpected /proc/stat");
    // Leave out idle (3) and iowait (4).
    Ok(fields.iter().sum::<u64>() - fields[3] - fields[4])
}

/// Runs of `program` back to back, bare then boxed, in rounds; per side the
/// latency stats and the machine's CPU time per run.
fn back_to_back(
    sandbox: &Sandbox,
    program: &str,
    args: &[&str],
    n: usize,
) -> Result<((Stats, Duration), (Stats, Duration))> {
    // /proc/stat counts in USER_HZ, 100 per second on Linux (a fixed ABI).
    let tick = Duration::from_millis(10);
    let spec = RunSpec::new(program, args.iter().map(|a| a.to_string()).collect());
    let per = n.div_ceil(BACK_TO_BACK_ROUNDS);
    let (mut bare, mut boxed) = (Vec::new(), Vec::new());
    let (mut bare_ticks, mut box_ticks) = (0, 0);
    for _ in 0..BACK_TO_BACK_ROUNDS {
        let before = busy_ticks()?;
        for _ in 0..per {
            let t = Instant::now();
            let status = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).status()?;
            bare.push(t.elapsed());
            ensure!(status.success(), "{program} failed bare");
        }
        let middle = busy_ticks()?;
        for _ in 0..per {
            let t = Instant::now();
            let outcome = sandbox.run(&spec)?;
            boxed.push(t.elapsed());
            ensure!(outcome.status == Status::Ok, "{program} failed in the box: {outcome:?}");
        }
        sandbox.settle();
        let after = busy_ticks()?;
        bare_ticks += middle - before;
        box_ticks += after - middle;
    }
    let runs = u32::try_from(per * BACK_TO_BACK_ROUNDS).unwrap_or(u32::MAX);
    let cpu = |ticks: u64| tick * u32::try_from(ticks).unwrap_or(u32::MAX) / runs;
    Ok(((stats(bare), cpu(bare_ticks)), (stats(boxed), cpu(box_ticks))))
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
    println!("{:<34} {:>9} {:>9} {:>10} {:>8} {:>9}", "path", "p50", "p99", "req/s", "ratio", "CPU/req");
    // The machine's speed drifts over seconds, so bare and API runs take
    // turns in rounds and each side sums its rounds.
    const ROUNDS: usize = 10;
    for clients in [1usize, 8] {
        let per = iterations.div_ceil(clients * ROUNDS);
        let round = |f: &(dyn Fn() -> Result<Duration> + Sync)| -> Result<(Vec<Duration>, Duration)> {
            let t = Instant::now();
            let samples = std::thread::scope(|s| {
                let handles: Vec<_> =
                    (0..clients).map(|_| s.spawn(|| (0..per).map(|_| f()).collect::<Result<Vec<_>>>())).collect();
                handles.into_iter().map(|h| h.join().expect("client thread")).collect::<Result<Vec<_>>>()
            })?;
            Ok((samples.into_iter().flatten().collect(), t.elapsed()))
        };
        let (mut bare_samples, mut bare_time, mut bare_ticks) = (Vec::new(), Duration::ZERO, 0);
        let (mut api_samples, mut api_time, mut api_ticks) = (Vec::new(), Duration::ZERO, 0);
        for _ in 0..ROUNDS {
            let before = busy_ticks()?;
            let (samples, time) = round(&bare_once)?;
            let middle = busy_ticks()?;
            bare_samples.extend(samples);
            bare_time += time;
            let (samples, time) = round(&|| post(&agent, &python))?;
            let after = busy_ticks()?;
            api_samples.extend(samples);
            api_time += time;
            bare_ticks += middle - before;
            api_ticks += after - middle;
        }
        // The whole machine's busy CPU per request (client included), in
        // milliseconds: /proc/stat counts 100 ticks a second.
        let cpu_ms = |ticks: u64, n: usize| ticks as f64 * 10.0 / n.max(1) as f64;
        let (bare_cpu, api_cpu) = (cpu_ms(bare_ticks, bare_samples.len()), cpu_ms(api_ticks, api_samples.len()));
        let bare_rate = bare_samples.len() as f64 / bare_time.as_secs_f64();
        let api_rate = api_samples.len() as f64 / api_time.as_secs_f64();
        let (bare, api) = (stats(bare_samples), stats(api_samples));
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>10.1} {:>8} {:>7.2}ms",
            format!("bare python3 -c, {clients} client(s)"),
            ms(bare.median),
            ms(bare.p99),
            bare_rate,
            "1.00x",
            bare_cpu
        );
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>10.1} {:>7.2}x {:>7.2}ms",
            format!("POST /api/v2/execute, {clients} client(s)"),
            ms(api.median),
            ms(api.p99),
            api_rate,
            if clients == 1 { ms(api.median) / ms(bare.median) } else { api_rate / bare_rate },
            api_cpu
        );
    }
    println!("(ratio: p50 over bare p50 at 1 client; throughput over bare throughput at 8 clients;");
    println!(" CPU/req: the whole machine's busy CPU time per request, the client's included)");

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

/// A child process of `evald bench cluster`, stopped on drop (SIGTERM,
/// bounded wait, then SIGKILL).
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port(ip: &str) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Polls `check` every 100 ms for at most a minute.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..600 {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("timed out waiting for {what}")
}

/// Status (`UP`, `DOWN`, ...) of server `name` of backend `evald`, from
/// HAProxy's `show stat` on its stats socket.
fn haproxy_status(socket: &std::path::Path, name: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut csv = String::new();
    s.read_to_string(&mut csv).ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = |c: &str| header.iter().position(|h| *h == c);
    let (px, sv, st) = (col("pxname")?, col("svname")?, col("status")?);
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(px) == Some(&"evald") && f.get(sv) == Some(&name))
        .and_then(|f| f.get(st).map(|s| (*s).to_owned()))
}

/// `clients` threads sending `per` Python hello-world runs each to `base`;
/// (latency stats, requests per second).
fn hello_load(base: &str, clients: usize, per: usize) -> Result<(Stats, f64)> {
    let body = serde_json::json!({
        "language": "python", "version": "*",
        "files": [{"name": "main.py", "content": "print('hello, world')"}],
    })
    .to_string();
    let url = format!("{base}/api/v2/execute");
    let t = Instant::now();
    let samples = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> Result<Vec<Duration>> {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                    (0..per)
                        .map(|_| {
                            let t = Instant::now();
                            let text = agent
                                .post(&url)
                                .set("Content-Type", "application/json")
                                .send_string(&body)?
                                .into_string()?;
                            let elapsed = t.elapsed();
                            let v: serde_json::Value = serde_json::from_str(&text)?;
                            ensure!(v["run"]["stdout"] == "hello, world\n", "unexpected response {text}");
                            Ok(elapsed)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect::<Result<Vec<_>>>()
    })?;
    let rate = (per * clients) as f64 / t.elapsed().as_secs_f64();
    Ok((stats(samples.into_iter().flatten().collect()), rate))
}

/// `evald bench cluster`: Redis, HAProxy (the shipped configuration) and 1,
/// 2, then 3 `evald serve` nodes on 127.0.0.11/12/13 (like scripts/cluster
/// and the rolling tests); Python hello-world throughput through HAProxy at
/// 8 clients for each node count, and the HAProxy hop's added latency (p50
/// through HAProxy minus p50 direct to the node, 1 client, one node up).
pub fn cluster(languages: &std::path::Path, haproxy_cfg: &std::path::Path, requests: usize) -> Result<()> {
    let exe = std::env::current_exe()?;
    let pid = std::process::id();
    let dir = std::path::PathBuf::from(format!("/tmp/evald-bench-cluster-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let result = cluster_in(&exe, &dir, languages, haproxy_cfg, requests);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn cluster_in(
    exe: &std::path::Path,
    dir: &std::path::Path,
    languages: &std::path::Path,
    haproxy_cfg: &std::path::Path,
    requests: usize,
) -> Result<()> {
    use anyhow::Context as _;
    let pid = std::process::id();
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log")));
    // Dropped in reverse order: nodes, HAProxy, Redis.
    let redis_port = free_port("127.0.0.1")?;
    std::fs::create_dir_all(dir.join("redis"))?;
    let _redis = Proc(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.join("redis"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?,
    );
    wait_until("redis", || std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok())?;

    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let mut addrs = Vec::new();
    for ip in ips {
        addrs.push((format!("{ip}:{}", free_port(ip)?), free_port(ip)?));
    }
    let front = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    std::fs::write(dir.join("server-state"), "1\n")?;
    let mut haproxy = Command::new("haproxy");
    haproxy
        .arg("-db")
        .arg("-f")
        .arg(haproxy_cfg)
        .env("EVALD_HAPROXY_BIND", &front)
        .env("EVALD_HAPROXY_RUN", dir)
        .stdout(Stdio::null())
        .stderr(log("haproxy")?);
    for (i, (addr, agent)) in addrs.iter().enumerate() {
        haproxy.env(format!("EVALD_N{}_ADDR", i + 1), addr).env(format!("EVALD_N{}_AGENT", i + 1), agent.to_string());
    }
    let _haproxy = Proc(haproxy.spawn().context("starting haproxy (apt-get install haproxy)")?);
    let socket = dir.join("admin.sock");
    wait_until("the HAProxy stats socket", || haproxy_status(&socket, "n1").is_some())?;

    let front_url = format!("http://{front}");
    let per = requests.div_ceil(8);
    println!("python hello world through HAProxy (leastconn), 8 clients, {} requests per row", per * 8);
    println!("nodes have --slots 2 each; all on this machine's {} cores", std::thread::available_parallelism()?);
    println!("{:<8} {:>10} {:>9} {:>9}", "nodes", "req/s", "p50", "p99");
    let mut nodes = Vec::new();
    let mut hop = None;
    for (i, (addr, agent)) in addrs.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let node_dir = dir.join(&name);
        nodes.push(Proc(
            Command::new(exe)
                .arg("serve")
                .args(["--listen", addr, "--agent-listen", &format!("{}:{agent}", ips[i])])
                .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}/")])
                .arg("--languages-dir")
                .arg(languages)
                .arg("--state-dir")
                .arg(node_dir.join("state"))
                .arg("--data-dir")
                .arg(node_dir.join("data"))
                .args(["--instance", &format!("bench-cl-{pid}-{name}")])
                .args(["--uid-base", &(70000 + 200 * i as u32).to_string(), "--slots", "2"])
                .args(["--drain-window-ms", "0", "--shutdown-grace-ms", "2000"])
                .env("EVALD_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log(&name)?)
                .spawn()
                .context("starting evald serve")?,
        ));
        let ready = format!("http://{addr}/healthz/ready");
        wait_until(&format!("{name} to be ready"), || ureq::get(&ready).call().is_ok())?;
        wait_until(&format!("HAProxy to report {name} UP"), || {
            haproxy_status(&socket, &name).as_deref() == Some("UP")
        })?;
        // Warm up every node that is up (caches, first interpreter starts).
        hello_load(&front_url, 4, 10)?;
        let (s, rate) = hello_load(&front_url, 8, per)?;
        println!("{:<8} {:>10.1} {:>7.2}ms {:>7.2}ms", i + 1, rate, ms(s.median), ms(s.p99));

        if i == 0 {
            // The HAProxy hop at 1 client, direct and through HAProxy in
            // alternating rounds so both see the same machine load.
            let direct_url = format!("http://{addr}");
            let (mut direct, mut via) = (Vec::new(), Vec::new());
            for _ in 0..10 {
                let (d, _) = hello_load(&direct_url, 1, per.max(10) / 5)?;
                let (v, _) = hello_load(&front_url, 1, per.max(10) / 5)?;
                direct.push(d.median);
                via.push(v.median);
            }
            let (d, v) = (stats(direct), stats(via));
            hop = Some((ms(d.median), ms(v.median)));
        }
    }
    if let Some((d, v)) = hop {
        println!("HAProxy hop, 1 client, 1 node: p50 direct {d:.2}ms, via HAProxy {v:.2}ms, added {:+.2}ms", v - d);
    }
    drop(nodes);
    Ok(())
}
