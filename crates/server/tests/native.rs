//! The native API: languages, runs with cases, wait=false + poll, limits,
//! the OpenAPI document, health and unknown routes.

mod common;

use common::*;
use serde_json::{json, Value};

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_NATIVE;

fn app_and_state() -> (axum::Router, evald_server::AppState) {
    let state = state(UIDS, 4, |_| {});
    (evald_server::app(state.clone()), state)
}

/// A stage with its usage figures checked to be integers and zeroed.
fn normalized(stage: &Value) -> Value {
    let mut s = stage.clone();
    for k in ["cpu_ms", "wall_ms", "memory_bytes"] {
        assert!(s[k].is_u64(), "{k} must be an integer: {stage}");
        s[k] = json!(0);
    }
    s
}

fn ok_stage(stdout: &str, status: &str) -> Value {
    json!({"status": status, "exit_code": 0, "signal": null, "stdout": stdout, "stderr": "",
           "stdout_truncated": false, "stderr_truncated": false, "cpu_ms": 0, "wall_ms": 0, "memory_bytes": 0})
}

#[tokio::test]
async fn cases_give_ok_and_wrong_answer() {
    let (app, _) = app_and_state();
    let body = json!({"language": "python", "files": [{"path": "main.py", "content": "print(int(input()) * 2)"}],
        "cases": [{"stdin": "2\n", "expected_output": "4\n"}, {"stdin": "3\n", "expected_output": "7"}, {"stdin": "5\n"}]});
    let r = post_json(&app, "/api/v1/runs", &body).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["id"].as_str().is_some_and(|s| s.len() == 32), "{v}");
    assert_eq!(v["language"], "python");
    assert_eq!(v["status"], "wrong_answer");
    assert!(v.get("compile").is_none(), "interpreted: no compile stage");
    let cases: Vec<Value> = v["cases"].as_array().expect("cases").iter().map(normalized).collect();
    assert_eq!(cases, vec![ok_stage("4\n", "ok"), ok_stage("6\n", "wrong_answer"), ok_stage("10\n", "ok")]);
}

#[tokio::test]
async fn failures_have_their_status() {
    let (app, _) = app_and_state();
    let run = |src: &str, limits: Value| json!({"language": "py", "files": [{"path": "main.py", "content": src}], "limits": limits});
    let r = post_json(&app, "/api/v1/runs", &run("import sys\nsys.exit(4)", json!({}))).await;
    let case = normalized(&r.json()["cases"][0]);
    assert_eq!(
        case,
        json!({"status": "runtime_error", "exit_code": 4, "signal": null, "stdout": "", "stderr": "",
        "stdout_truncated": false, "stderr_truncated": false, "cpu_ms": 0, "wall_ms": 0, "memory_bytes": 0})
    );
    let r =
        post_json(&app, "/api/v1/runs", &run("import time\ntime.sleep(10)", json!({"run": {"wall_ms": 300}}))).await;
    let v = r.json();
    assert_eq!((&v["status"], &v["cases"][0]["signal"]), (&json!("time_limit_wall"), &json!("SIGKILL")));
    let r = post_json(&app, "/api/v1/runs", &run("while True: pass", json!({"run": {"cpu_ms": 200}}))).await;
    assert_eq!(r.json()["status"], "time_limit_cpu");
    let r = post_json(&app, "/api/v1/runs", &run("print('x' * 5000)", json!({"run": {"output_bytes": 1000}}))).await;
    let v = r.json();
    assert_eq!((&v["status"], &v["cases"][0]["stdout_truncated"]), (&json!("output_limit"), &json!(true)));
    assert_eq!(v["cases"][0]["stdout"].as_str().map(str::len), Some(1000));
}

#[tokio::test]
async fn compile_errors_stop_before_the_cases() {
    if !installed("c") {
        eprintln!("c is not installed");
        return;
    }
    let (app, _) = app_and_state();
    let body = json!({"language": "c", "files": [{"path": "main.c", "content": "int main(void) { return nope; }"}],
        "cases": [{"stdin": "1"}]});
    let v = post_json(&app, "/api/v1/runs", &body).await.json();
    assert_eq!(v["status"], "compile_error", "{v}");
    assert_eq!(v["compile"]["status"], "compile_error");
    assert_eq!(v["compile"]["cached"], false);
    assert!(v["compile"]["stderr"].as_str().is_some_and(|s| s.contains("nope")));
    assert_eq!(v["cases"], json!([]));
    let good = json!({"language": "c", "files": [{"path": "main.c", "content": "#include <stdio.h>\nint main(void){puts(\"c\");}"}]});
    let first = post_json(&app, "/api/v1/runs", &good).await.json();
    assert_eq!((&first["status"], &first["compile"]["cached"]), (&json!("ok"), &json!(false)), "{first}");
    let second = post_json(&app, "/api/v1/runs", &good).await.json();
    assert_eq!((&second["status"], &second["compile"]["cached"]), (&json!("ok"), &json!(true)), "{second}");
    assert_eq!(second["cases"][0]["stdout"], "c\n");
    // A cache hit shows the warnings the compile printed.
    let warned = json!({"language": "c", "files": [{"path": "main.c",
        "content": "#warning \"native careful\"\nint main(void){return 0;}"}]});
    let first = post_json(&app, "/api/v1/runs", &warned).await.json();
    let stderr = first["compile"]["stderr"].as_str().unwrap_or_default().to_owned();
    assert!(stderr.contains("native careful"), "{first}");
    let second = post_json(&app, "/api/v1/runs", &warned).await.json();
    assert_eq!((&second["compile"]["cached"], &second["compile"]["stderr"]), (&json!(true), &json!(stderr)));
}

#[tokio::test]
async fn wait_false_answers_202_then_polls() {
    let (app, state) = app_and_state();
    let body =
        json!({"language": "python", "files": [{"path": "main.py", "content": "print('later')"}], "wait": false});
    let r = post_json(&app, "/api/v1/runs", &body).await;
    assert_eq!(r.status, 202);
    let v = r.json();
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(v, json!({"id": id}));
    // await the store's notification instead of polling with sleeps
    let done = state.jobs().wait_done(&id).await.expect("known id");
    assert_eq!(done.state, evald_proto::v1::JobState::Done);
    let r = get(&app, &format!("/api/v1/runs/{id}")).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!((&v["id"], &v["state"], &v["result"]["status"]), (&json!(id), &json!("done"), &json!("ok")));
    assert_eq!(v["result"]["id"], json!(id));
    assert_eq!(v["result"]["cases"][0]["stdout"], "later\n");
    let r = get(&app, "/api/v1/runs/0123").await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (404, json!({"error": {"code": "not_found", "message": "no run with id \"0123\""}}))
    );
}

#[tokio::test]
async fn limits_are_checked() {
    let (app, _) = app_and_state();
    let with =
        |limits: Value| json!({"language": "python", "files": [{"path": "m.py", "content": ""}], "limits": limits});
    for (limits, code, message) in [
        (json!({"run": {"wall_ms": 30001}}), "invalid_job", "run wall_ms cannot exceed the configured limit of 30000"),
        (
            json!({"compile": {"memory_bytes": 5u64 << 30}}),
            "invalid_job",
            "compile memory_bytes cannot exceed the configured limit of 4294967296",
        ),
        (json!({"run": {"cpu_ms": 0}}), "invalid_job", "run cpu_ms must be greater than zero"),
    ] {
        let r = post_json(&app, "/api/v1/runs", &with(limits.clone())).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (400, json!({"error": {"code": code, "message": message}})),
            "{limits}"
        );
    }
    let r = post_json(&app, "/api/v1/runs", &with(json!({"run": {"wall_ms": -1}}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_body");
    // a memory limit above the node's whole budget can never be admitted
    let small = evald_server::app(state(UIDS, 1, |o| o.engine.capacity.memory_budget_bytes = 100 << 20));
    let r = post_json(&small, "/api/v1/runs", &with(json!({"run": {"memory_bytes": 200u64 << 20}}))).await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (
            400,
            json!({"error": {"code": "memory_budget", "message":
            "the job's memory limit of 209715200 bytes is more than this node's budget of 104857600 bytes"}})
        )
    );
}
