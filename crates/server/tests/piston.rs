//! Piston v2 compatibility: exact response shapes, status codes and
//! messages of `/api/v2/runtimes`, `/api/v2/execute` and `/api/v2/connect`.

mod common;

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_PISTON;

fn app() -> axum::Router {
    evald_server::app(state(UIDS, 4, |_| {}))
}

fn python_version() -> String {
    languages().iter().find(|l| l.spec.id == "python").expect("python is installed").version.to_string()
}

/// The stage with its usage figures checked to be integers and zeroed.
fn normalized(stage: &Value) -> Value {
    let mut s = stage.clone();
    for k in ["cpu_time", "wall_time", "memory"] {
        assert!(s[k].is_u64(), "{k} must be an integer: {stage}");
        s[k] = json!(0);
    }
    s
}

fn stage(stdout: &str, stderr: &str, code: Value, signal: Value, message: Value, status: Value) -> Value {
    json!({"stdout": stdout, "stderr": stderr, "output": format!("{stdout}{stderr}"), "code": code,
           "signal": signal, "message": message, "status": status, "cpu_time": 0, "wall_time": 0, "memory": 0})
}

#[tokio::test]
async fn python_hello_has_the_exact_shape() {
    let app = app();
    let r = post_json(&app, "/api/v2/execute", &execute("python", "*", "print('hello')")).await;
    assert_eq!(r.status, 200);
    let mut body = r.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "language, version, run only: {body}");
    body["run"] = normalized(&body["run"]);
    assert_eq!(
        body,
        json!({"language": "python", "version": python_version(),
               "run": stage("hello\n", "", json!(0), Value::Null, Value::Null, Value::Null)})
    );
}

#[tokio::test]
async fn c_compile_failure_answers_run_equal_to_compile() {
    if !installed("c") {
        eprintln!("c is not installed");
        return;
    }
    let app = app();
    let r = post_json(&app, "/api/v2/execute", &execute("c", "*", "int main(void) { return undefined; }")).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["run"], body["compile"], "run == compile");
    let compile = &body["compile"];
    assert_eq!(compile["code"], 1, "{compile}");
    assert_eq!(compile["status"], "RE");
    assert_eq!(compile["message"], "Exited with error status 1");
    assert_eq!(compile["signal"], Value::Null);
    assert!(compile["stderr"].as_str().is_some_and(|s| s.contains("undefined")), "{compile}");
    // and a good program has both stages
    let ok =
        post_json(&app, "/api/v2/execute", &execute("c", "*", "#include <stdio.h>\nint main(void){puts(\"hi\");}"))
            .await;
    let body = ok.json();
    assert_eq!(normalized(&body["compile"]), stage("", "", json!(0), Value::Null, Value::Null, Value::Null));
    assert_eq!(normalized(&body["run"]), stage("hi\n", "", json!(0), Value::Null, Value::Null, Value::Null));
}

/// A compile's warnings are in the compile stage, also when the second run
/// of the same source is served from the compile cache.
#[tokio::test]
async fn compile_warnings_survive_the_compile_cache() {
    let app = app();
    let source = format!("#warning \"careful {}\"\nint main(void) {{ return 0; }}\n", std::process::id());
    let mut stages = Vec::new();
    for _ in 0..2 {
        let r = post_json(&app, "/api/v2/execute", &execute("c", "*", &source)).await;
        assert_eq!(r.status, 200);
        stages.push(r.json()["compile"].clone());
    }
    let stderr = stages[0]["stderr"].as_str().unwrap_or_default().to_owned();
    assert!(stderr.contains("warning: #warning \"careful"), "{}", stages[0]);
    assert_eq!(stages[1]["stderr"], json!(stderr), "from the cache: {}", stages[1]);
    assert_eq!(stages[1]["output"], json!(stderr));
    assert_eq!(stages[1]["code"], 0);
}

#[tokio::test]
async fn timeouts_are_to_with_sigkill() {
    let app = app();
    let mut wall = execute("python", "3.x", "import time\nprint('a', flush=True)\ntime.sleep(20)");
    wall["run_timeout"] = json!(500);
    let r = post_json(&app, "/api/v2/execute", &wall).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        normalized(&r.json()["run"]),
        stage("a\n", "", Value::Null, json!("SIGKILL"), json!("Time limit exceeded (wall clock)"), json!("TO"))
    );
    let mut cpu = execute("python", "*", "while True: pass");
    cpu["run_cpu_time"] = json!(300);
    let r = post_json(&app, "/api/v2/execute", &cpu).await;
    assert_eq!(
        normalized(&r.json()["run"]),
        stage("", "", Value::Null, json!("SIGKILL"), json!("Time limit exceeded"), json!("TO"))
    );
}

#[tokio::test]
async fn output_limits_are_ol_and_el() {
    let app = app();
    let r =
        post_json(&app, "/api/v2/execute", &execute("python", "*", "import sys\nsys.stdout.write('x' * (3 << 20))"))
            .await;
    let run = &r.json()["run"];
    assert_eq!(run["status"], "OL", "{run:.300}");
    assert_eq!(run["message"], "stdout length exceeded");
    assert_eq!(run["signal"], "SIGKILL");
    assert_eq!(run["code"], Value::Null);
    let r =
        post_json(&app, "/api/v2/execute", &execute("python", "*", "import sys\nsys.stderr.write('x' * (3 << 20))"))
            .await;
    let run = &r.json()["run"];
    assert_eq!(run["status"], "EL", "{run:.300}");
    assert_eq!(run["message"], "stderr length exceeded");
    assert_eq!(run["signal"], "SIGKILL");
}

#[tokio::test]
async fn runtime_errors_are_re() {
    let app = app();
    let r = post_json(&app, "/api/v2/execute", &execute("python", "*", "import sys\nsys.exit(3)")).await;
    assert_eq!(
        normalized(&r.json()["run"]),
        stage("", "", json!(3), Value::Null, json!("Exited with error status 3"), json!("RE"))
    );
}

#[tokio::test]
async fn zero_and_minus_one_limits_mean_default() {
    let app = app();
    let mut body = execute("python", "*", "print(1)");
    body["run_timeout"] = json!(0);
    body["run_memory_limit"] = json!(-1);
    body["compile_timeout"] = Value::Null;
    let r = post_json(&app, "/api/v2/execute", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["run"]["stdout"], "1\n");
}

#[tokio::test]
async fn versions_aliases_and_base64_files() {
    let app = app();
    let version = python_version();
    let major = version.split('.').next().unwrap_or_default().to_owned();
    // Piston's own published versions (its public instance's) run on the
    // installed one, whatever name the client uses.
    for (language, range) in [
        ("python", "*"),
        ("python", &format!("{major}.x") as &str),
        ("python", &version),
        ("py", "*"),
        ("python", "3.10.0"),
        ("py", "3.12.0"),
    ] {
        let r = post_json(&app, "/api/v2/execute", &execute(language, range, "print('v')")).await;
        assert_eq!(r.status, 200, "{language} {range}");
        let body = r.json();
        assert_eq!((&body["language"], &body["version"]), (&json!("python"), &json!(version)), "{language} {range}");
        assert_eq!(body["run"]["stdout"], "v\n");
    }
    // A version Piston never published, or a range nothing installed
    // matches, is unknown, as in Piston.
    // Nor does a version Piston published for another runtime (`py` 2.7.18
    // is Piston's python2).
    let refused = [("python", "9.9.9"), ("python", "3.10"), ("python", "<3"), ("nosuch", "3.10.0"), ("py", "2.7.18")];
    for (language, range) in refused {
        let r = post_json(&app, "/api/v2/execute", &execute(language, range, "print('v')")).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (400, json!({"message": format!("{language}-{range} runtime is unknown")})),
            "{language} {range}"
        );
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode("print('from base64')");
    let body = json!({"language": "python", "version": "*", "files": [
        {"name": "main.py", "content": "import helper\nhelper.hi()"},
        {"name": "helper.py", "content": b64, "encoding": "base64"},
    ]});
    let b64_helper = base64::engine::general_purpose::STANDARD.encode("def hi():\n    print('helped')\n");
    let mut body = body;
    body["files"][1]["content"] = json!(b64_helper);
    let r = post_json(&app, "/api/v2/execute", &body).await;
    assert_eq!(r.json()["run"]["stdout"], "helped\n");
    let r = post_json(
        &app,
        "/api/v2/execute",
        &json!({"language": "python", "version": "*",
        "files": [{"content": b64, "encoding": "base64", "name": "main.py"}, {"content": "", "name": "x.txt"}]}),
    )
    .await;
    // the first utf8 file (x.txt) is the main file: it prints nothing
    assert_eq!(r.json()["run"]["stdout"], "");
}

// ---- WebSocket over a real socket ----

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect() -> Ws {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = app();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v2/connect")).await.expect("connects");
    ws
}

#[derive(Debug, PartialEq)]
enum Frame {
    Json(Value),
    Close(u16, String),
}

async fn next(ws: &mut Ws) -> Frame {
    loop {
        match ws.next().await.expect("a frame").expect("a valid frame") {
            Message::Text(t) => return Frame::Json(serde_json::from_str(&t).expect("JSON message")),
            Message::Close(Some(c)) => return Frame::Close(c.code.into(), c.reason.to_string()),
            Message::Close(None) => return Frame::Close(1005, String::new()),
            _ => continue,
        }
    }
}

/// Every frame to the close, with consecutive data messages of a stream merged.
async fn rest(ws: &mut Ws) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        let f = next(ws).await;
        let done = matches!(f, Frame::Close(..));
        if let (Some(Frame::Json(last)), Frame::Json(new)) = (frames.last_mut(), &f) {
            if last["type"] == "data" && new["type"] == "data" && last["stream"] == new["stream"] {
                let joined = format!("{}{}", last["data"].as_str().unwrap_or(""), new["data"].as_str().unwrap_or(""));
                last["data"] = json!(joined);
                continue;
            }
        }
        frames.push(f);
        if done {
            return frames;
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("sends");
}

fn init(source: &str) -> Value {
    json!({"type": "init", "language": "python", "version": "*", "files": [{"content": source}]})
}

fn runtime() -> Frame {
    Frame::Json(json!({"type": "runtime", "language": "python", "version": python_version()}))
}

fn j(v: Value) -> Frame {
    Frame::Json(v)
}

#[tokio::test]
async fn ws_runs_a_program_through_its_stages() {
    let mut ws = connect().await;
    send(&mut ws, init("print('hi')")).await;
    assert_eq!(
        rest(&mut ws).await,
        vec![
            runtime(),
            j(json!({"type": "stage", "stage": "run"})),
            j(json!({"type": "data", "stream": "stdout", "data": "hi\n"})),
            j(json!({"type": "exit", "stage": "run", "code": 0, "signal": null})),
            Frame::Close(4999, "Job Completed".into()),
        ]
    );
}

#[tokio::test]
async fn ws_signal_reaches_the_program() {
    let mut ws = connect().await;
    let src =
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_DFL)\nprint('ready', flush=True)\ntime.sleep(30)";
    send(&mut ws, init(src)).await;
    assert_eq!(next(&mut ws).await, runtime());
    assert_eq!(next(&mut ws).await, j(json!({"type": "stage", "stage": "run"})));
    assert_eq!(next(&mut ws).await, j(json!({"type": "data", "stream": "stdout", "data": "ready\n"})));
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    assert_eq!(
        rest(&mut ws).await,
        vec![
            j(json!({"type": "exit", "stage": "run", "code": null, "signal": "SIGINT"})),
            Frame::Close(4999, "Job Completed".into()),
        ]
    );
}

#[tokio::test]
async fn ws_early_stdin_is_kept_and_eof_closes_stdin() {
    let mut ws = connect().await;
    send(&mut ws, init("import sys\nsys.stdout.write(sys.stdin.read().upper())")).await;
    // Sent before the run stage starts: Piston would drop these.
    send(&mut ws, json!({"type": "data", "stream": "stdin", "data": "early "})).await;
    send(&mut ws, json!({"type": "data", "stream": "stdin", "data": "bird"})).await;
    send(&mut ws, json!({"type": "data", "stream": "stdin", "data": ""})).await;
    assert_eq!(
        rest(&mut ws).await,
        vec![
            runtime(),
            j(json!({"type": "stage", "stage": "run"})),
            j(json!({"type": "data", "stream": "stdout", "data": "EARLY BIRD"})),
            j(json!({"type": "exit", "stage": "run", "code": 0, "signal": null})),
            Frame::Close(4999, "Job Completed".into()),
        ]
    );
    // the documented eof message works too, after the run started
    let mut ws = connect().await;
    send(&mut ws, init("import sys\nprint('go', flush=True)\nsys.stdout.write(sys.stdin.read())")).await;
    assert_eq!(next(&mut ws).await, runtime());
    assert_eq!(next(&mut ws).await, j(json!({"type": "stage", "stage": "run"})));
    assert_eq!(next(&mut ws).await, j(json!({"type": "data", "stream": "stdout", "data": "go\n"})));
    send(&mut ws, json!({"type": "data", "stream": "stdin", "data": "late\n"})).await;
    send(&mut ws, json!({"type": "eof"})).await;
    assert_eq!(
        rest(&mut ws).await,
        vec![
            j(json!({"type": "data", "stream": "stdout", "data": "late\n"})),
            j(json!({"type": "exit", "stage": "run", "code": 0, "signal": null})),
            Frame::Close(4999, "Job Completed".into()),
        ]
    );
}

#[tokio::test]
async fn ws_output_is_capped() {
    let mut ws = connect().await;
    send(&mut ws, init("import sys\nwhile True: sys.stdout.write('x' * 65536)")).await;
    let frames = rest(&mut ws).await;
    let data: usize = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Json(v) if v["type"] == "data" => v["data"].as_str().map(str::len),
            _ => None,
        })
        .sum();
    assert_eq!(data, 1 << 20, "exactly the run output limit");
    assert_eq!(frames[frames.len() - 2], j(json!({"type": "exit", "stage": "run", "code": null, "signal": "SIGKILL"})));
    assert_eq!(frames[frames.len() - 1], Frame::Close(4999, "Job Completed".into()));
}

#[tokio::test]
async fn ws_close_codes() {
    // 4003: data before init
    let mut ws = connect().await;
    send(&mut ws, json!({"type": "data", "stream": "stdin", "data": "x"})).await;
    assert_eq!(next(&mut ws).await, Frame::Close(4003, "Not yet initialized".into()));
    // 4003: signal before init
    let mut ws = connect().await;
    send(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    assert_eq!(next(&mut ws).await, Frame::Close(4003, "Not yet initialized".into()));
    // 4002: an error message, then the close
    let mut ws = connect().await;
    send(&mut ws, json!({"type": "init", "language": "nope", "version": "1", "files": [{"content": ""}]})).await;
    assert_eq!(next(&mut ws).await, j(json!({"type": "error", "message": "nope-1 runtime is unknown"})));
    assert_eq!(next(&mut ws).await, Frame::Close(4002, "Notified Error".into()));
    // 4002: not JSON
    let mut ws = connect().await;
    ws.send(Message::Text("{".into())).await.expect("sends");
    assert!(matches!(next(&mut ws).await, Frame::Json(v) if v["type"] == "error"));
    assert_eq!(next(&mut ws).await, Frame::Close(4002, "Notified Error".into()));
    let sleeper = "import time\nprint('up', flush=True)\ntime.sleep(30)";
    for (msg, close) in [
        (init(sleeper), Frame::Close(4000, "Already Initialized".into())),
        (
            json!({"type": "data", "stream": "stdout", "data": "x"}),
            Frame::Close(4004, "Can only write to stdin".into()),
        ),
        (json!({"type": "signal", "signal": "SIGFOO"}), Frame::Close(4005, "Invalid signal".into())),
    ] {
        let mut ws = connect().await;
        send(&mut ws, init(sleeper)).await;
        assert_eq!(next(&mut ws).await, runtime());
        assert_eq!(next(&mut ws).await, j(json!({"type": "stage", "stage": "run"})));
        assert_eq!(next(&mut ws).await, j(json!({"type": "data", "stream": "stdout", "data": "up\n"})));
        send(&mut ws, msg).await;
        assert_eq!(next(&mut ws).await, close);
    }
    // 4001: no init within 1 s (real time: the server's timer runs on its own socket task)
    let mut ws = connect().await;
    assert_eq!(next(&mut ws).await, Frame::Close(4001, "Initialization Timeout".into()));
}
