//! The Judge0 CE v1.13.1 API under `/judge0`: raw HTTP for every endpoint,
//! field, error body and encoding rule, with real boxes, and a callback
//! received by a test server on loopback.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_JUDGE0;

fn app() -> axum::Router {
    evald_server::app(state(UIDS, 4, |c| c.judge0.callback_allow = vec!["127.0.0.0/8".parse().expect("cidr")]))
}

fn api() -> axum::Router {
    evald_server::app(api_state(|_| {}))
}

fn b64(s: &str) -> String {
    evald_judge0::wire::encode64(s.as_bytes())
}

fn version_of(id: &str) -> String {
    languages().iter().find(|l| l.spec.id == id).map(|l| l.version.to_string()).unwrap_or_default()
}

async fn run(app: &axum::Router, query: &str, body: Value) -> Value {
    let r = post_json(app, &format!("/judge0/submissions?wait=true{query}"), &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    r.json()
}

async fn send_with(app: &axum::Router, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(app, req.body(Body::empty()).expect("request")).await
}

// ---- the first tier: no code runs ----

#[tokio::test]
async fn about_version_and_text_endpoints() {
    let app = api();
    let r = get(&app, "/judge0/about").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&r.bytes),
        r#"{"version":"1.13.1","homepage":"https://judge0.com","source_code":"https://github.com/judge0/judge0","maintainer":"Herman Zvonimir Došilović <hermanz.dosilovic@gmail.com>"}"#
    );
    let r = get(&app, "/judge0/version").await;
    assert_eq!((r.status.as_u16(), r.bytes.as_slice()), (200, &b"1.13.1"[..]));
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    for path in ["/judge0/isolate", "/judge0/license"] {
        let r = get(&app, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{path}");
        assert!(!r.bytes.is_empty());
    }
    for home in ["/judge0", "/judge0/"] {
        let r = get(&app, home).await;
        assert_eq!((r.status.as_u16(), r.bytes.len()), (200, 0), "{home}");
    }
}

#[tokio::test]
async fn config_info_has_judge0s_39_keys_in_order() {
    let r = get(&api(), "/judge0/config_info").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.bytes).into_owned();
    assert_eq!(
        text,
        r#"{"maintenance_mode":false,"enable_wait_result":true,"enable_compiler_options":true,"allowed_languages_for_compile_options":[],"enable_command_line_arguments":true,"enable_submission_delete":false,"enable_callbacks":true,"callbacks_max_tries":3,"callbacks_timeout":5.0,"enable_additional_files":true,"max_queue_size":100,"cpu_time_limit":5.0,"max_cpu_time_limit":15.0,"cpu_extra_time":1.0,"max_cpu_extra_time":5.0,"wall_time_limit":10.0,"max_wall_time_limit":20.0,"memory_limit":128000,"max_memory_limit":512000,"stack_limit":64000,"max_stack_limit":128000,"max_processes_and_or_threads":60,"max_max_processes_and_or_threads":120,"enable_per_process_and_thread_time_limit":false,"allow_enable_per_process_and_thread_time_limit":true,"enable_per_process_and_thread_memory_limit":false,"allow_enable_per_process_and_thread_memory_limit":true,"max_file_size":1024,"max_max_file_size":4096,"number_of_runs":1,"max_number_of_runs":20,"redirect_stderr_to_stdout":false,"max_extract_size":10240,"enable_batched_submissions":true,"max_submission_batch_size":20,"submission_cache_duration":1.0,"use_docs_as_homepage":false,"allow_enable_network":false,"enable_network":false}"#
    );
    assert_eq!(r.json().as_object().map(|o| o.len()), Some(39));
}

#[tokio::test]
async fn statuses_are_1_to_14() {
    let r = get(&api(), "/judge0/statuses").await;
    let body = r.json();
    let list = body.as_array().expect("array");
    assert_eq!(list.len(), 14);
    assert_eq!(list[0], json!({"id": 1, "description": "In Queue"}));
    assert_eq!(list[6], json!({"id": 7, "description": "Runtime Error (SIGSEGV)"}));
    assert_eq!(list[13], json!({"id": 14, "description": "Exec Format Error"}));
}

#[tokio::test]
async fn languages_carry_ce_ids_and_installed_versions() {
    let app = api();
    let body = get(&app, "/judge0/languages").await.json();
    let list = body.as_array().expect("array");
    let name_of = |id: u64| list.iter().find(|l| l["id"] == id).map(|l| l["name"].as_str().unwrap_or("").to_owned());
    assert_eq!(name_of(71), Some(format!("Python ({})", version_of("python"))));
    assert_eq!(name_of(50), Some(format!("C (GCC {})", version_of("c"))));
    assert_eq!(name_of(52), name_of(54), "every CE id of C++ runs evald's C++");
    assert_eq!(name_of(62), Some(format!("Java (OpenJDK {})", version_of("java"))));
    assert_eq!(name_of(63), Some(format!("JavaScript (Node.js {})", version_of("javascript"))));
    assert_eq!(name_of(89).as_deref(), Some("Multi-file program"));
    assert!(name_of(1).is_none(), "archived ids are not active");
    assert!(list.iter().all(|l| l.as_object().is_some_and(|o| o.len() == 2)));
    let names: Vec<&str> = list.iter().filter_map(|l| l["name"].as_str()).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted by name");

    let all = get(&app, "/judge0/languages/all").await.json();
    let archived = all.as_array().expect("array").iter().find(|l| l["id"] == 1).cloned();
    assert_eq!(archived, Some(json!({"id": 1, "name": "Bash (4.4)", "is_archived": true})));
    let one = get(&app, "/judge0/languages/1").await.json();
    assert_eq!(one["is_archived"], true);
    let python = get(&app, "/judge0/languages/71").await;
    assert_eq!(
        String::from_utf8_lossy(&python.bytes),
        format!(
            r#"{{"id":71,"name":"Python ({})","is_archived":false,"source_file":"main.py","compile_cmd":null,"run_cmd":"/usr/bin/python3 {{main}}"}}"#,
            version_of("python")
        )
    );
    let multi = get(&app, "/judge0/languages/89").await.json();
    assert_eq!(
        (&multi["source_file"], &multi["compile_cmd"], &multi["run_cmd"]),
        (&json!(null), &json!(null), &json!(null))
    );
    let missing = get(&app, "/judge0/languages/999").await;
    assert_eq!((missing.status.as_u16(), missing.bytes.len()), (404, 0));
    let json404 = send_with(&app, "GET", "/judge0/languages/999", &[("accept", "application/json")]).await;
    assert_eq!((json404.status.as_u16(), json404.json()), (404, json!({"status": 404, "error": "Not Found"})));
}

#[tokio::test]
async fn validation_answers_422_with_rails_messages() {
    let app = api();
    let r = post_json(&app, "/judge0/submissions", &json!({})).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        String::from_utf8_lossy(&r.bytes),
        r#"{"source_code":["can't be blank"],"language_id":["can't be blank","language with id  doesn't exist"]}"#
    );
    let r = post_json(
        &app,
        "/judge0/submissions",
        &json!({"source_code": "x", "language_id": 71, "cpu_time_limit": "16", "cpu_extra_time": 6,
            "wall_time_limit": 21, "memory_limit": 512001, "stack_limit": -1, "max_processes_and_or_threads": 121,
            "max_file_size": 4097, "number_of_runs": 0, "enable_network": true, "compiler_options": "-O2"}),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.bytes),
        r#"{"compiler_options":["setting compiler options is only allowed for compiled languages"],"cpu_time_limit":["must be less than or equal to 15.0"],"cpu_extra_time":["must be less than or equal to 5.0"],"wall_time_limit":["must be less than or equal to 20.0"],"memory_limit":["must be less than or equal to 512000"],"stack_limit":["must be greater than or equal to 0"],"max_processes_and_or_threads":["must be less than or equal to 120"],"max_file_size":["must be less than or equal to 4096"],"number_of_runs":["must be greater than 0"],"enable_network":["enabling network is not allowed"]}"#
    );
    let r = post_json(&app, "/judge0/submissions", &json!({"source_code": "x", "language_id": 3})).await;
    assert_eq!(r.json(), json!({"language_id": ["language with id 3 is archived and cannot be used anymore"]}));
    let r = post_json(
        &app,
        "/judge0/submissions",
        &json!({"source_code": "x", "language_id": 71,
        "callback_url": "http://127.0.0.1:9/cb"}),
    )
    .await;
    assert_eq!(r.status, 422, "loopback callbacks are refused unless allowed");
    assert!(r.json()["callback_url"][0].as_str().is_some_and(|m| m.contains("127.0.0.1")));
    let r = post_raw(&app, "/judge0/submissions", "application/json", b"{not json".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.bytes.len()), (400, 0));
    let r = post_json(&app, "/judge0/submissions?fields=stdout,%20stderr", &json!({})).await;
    assert_eq!(r.json(), json!({"error": "invalid fields: [ stderr]"}));
}

#[tokio::test]
async fn batches_count_and_report_per_item() {
    let app = api();
    let r = post_json(&app, "/judge0/submissions/batch", &json!({"submissions": []})).await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (400, json!({"error": "there should be at least one submission in a batch"}))
    );
    let many: Vec<Value> = (0..21).map(|_| json!({"source_code": "x", "language_id": 71})).collect();
    let r = post_json(&app, "/judge0/submissions/batch", &json!({"submissions": many})).await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (400, json!({"error": "number of submissions in a batch should be less than or equal to 20"}))
    );
    let r = post_json(&app, "/judge0/submissions/batch", &json!({"submissions": [{"language_id": 71}]})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json(), json!([{"source_code": ["can't be blank"]}]));
    let r = post_json(
        &app,
        "/judge0/submissions/batch",
        &json!({"submissions": [{"source_code": "print(1)", "language_id": 71}, {"language_id": 71}]}),
    )
    .await;
    assert_eq!(r.status, 201);
    let body = r.json();
    let token = body[0]["token"].as_str().expect("a token").to_owned();
    assert_eq!(body[1], json!({"source_code": ["can't be blank"]}));
    let r = get(&app, &format!("/judge0/submissions/batch?tokens={token},nope&fields=token")).await;
    assert_eq!(r.json(), json!({"submissions": [{"token": token}, null]}));
    let r = get(&app, "/judge0/submissions/batch").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn auth_tokens_and_authorization() {
    let app = evald_server::app(api_state(|c| {
        c.http.keys.insert("key-1", 0);
        c.http.admin_key = Some("admin".into());
        c.judge0.enable_delete = true;
    }));
    let r = get(&app, "/judge0/languages").await;
    assert_eq!((r.status.as_u16(), r.bytes.len()), (401, 0));
    assert_eq!(send_with(&app, "GET", "/judge0/languages", &[("X-Auth-Token", "key-1")]).await.status, 200);
    assert_eq!(get(&app, "/judge0/languages?X-Auth-Token=key-1").await.status, 200);
    assert_eq!(get(&app, "/judge0/").await.status, 200, "the home page needs no token");
    let r = send_with(&app, "GET", "/judge0/submissions", &[("X-Auth-Token", "key-1")]).await;
    assert_eq!((r.status.as_u16(), r.bytes.len()), (403, 0));
    let both = [("X-Auth-Token", "key-1"), ("X-Auth-User", "admin")];
    assert_eq!(send_with(&app, "POST", "/judge0/authorize", &both).await.status, 200);
    assert_eq!(send_with(&app, "POST", "/judge0/authenticate", &both[..1]).await.status, 200);
    let r = send_with(&app, "GET", "/judge0/submissions?page=0", &both).await;
    assert_eq!(r.json(), json!({"error": "invalid page: 0"}));
    let r = send_with(&app, "GET", "/judge0/submissions?per_page=-1", &both).await;
    assert_eq!(r.json(), json!({"error": "invalid per_page: -1"}));
    let r = send_with(&app, "DELETE", "/judge0/submissions/nope", &both).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn list_pages_newest_first_and_delete() {
    let app = evald_server::app(api_state(|c| {
        c.http.admin_key = Some("admin".into());
        c.judge0.enable_delete = true;
    }));
    let mut tokens = Vec::new();
    for i in 0..3 {
        // No sandbox here: each ends as an Internal Error.
        let body =
            run(&app, "&fields=token,status", json!({"source_code": format!("print({i})"), "language_id": 71})).await;
        assert_eq!(body["status"], json!({"id": 13, "description": "Internal Error"}));
        tokens.push(body["token"].as_str().expect("token").to_owned());
    }
    let admin = [("X-Auth-User", "admin")];
    let r = send_with(&app, "GET", "/judge0/submissions?page=1&per_page=2&fields=token", &admin).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    let listed: Vec<&str> =
        body["submissions"].as_array().expect("list").iter().filter_map(|s| s["token"].as_str()).collect();
    assert_eq!(listed, [tokens[2].as_str(), tokens[1].as_str()]);
    assert_eq!(
        body["meta"],
        json!({"current_page": 1, "next_page": 2, "prev_page": null, "total_pages": 2, "total_count": 3})
    );
    let r = send_with(&app, "DELETE", &format!("/judge0/submissions/{}?fields=token,message", tokens[0]), &admin).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"token": tokens[0], "message": evald_judge0::wire::encode64(b"Internal Error")}));
    assert_eq!(get(&app, &format!("/judge0/submissions/{}", tokens[0])).await.status, 404);
    let off = evald_server::app(api_state(|c| c.http.admin_key = Some("admin".into())));
    let r = send_with(&off, "DELETE", "/judge0/submissions/x", &admin).await;
    assert_eq!(r.json(), json!({"error": "delete not allowed"}));
}

#[tokio::test]
async fn cors_as_rack_cors() {
    let app = api();
    let r = send_with(
        &app,
        "OPTIONS",
        "/judge0/submissions",
        &[
            ("origin", "https://ide.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-auth-token"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type,x-auth-token"));
    assert!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    let r = send_with(&app, "GET", "/judge0/statuses", &[("origin", "https://ide.example")]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(send_with(&app, "OPTIONS", "/judge0/statuses", &[]).await.status, 405, "not a preflight");
    // Preflights carry no token.
    let keyed = evald_server::app(api_state(|c| c.http.keys.insert("k", 0)));
    let r = send_with(
        &keyed,
        "OPTIONS",
        "/judge0/submissions",
        &[("origin", "https://ide.example"), ("access-control-request-method", "POST")],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn workers_system_info_and_statistics() {
    let app = api();
    let w = get(&app, "/judge0/workers").await.json();
    assert_eq!(
        w,
        json!([{"queue": "1.13.1", "size": 0, "available": 2, "idle": 2, "working": 0, "paused": 0, "failed": 0}])
    );
    let s = get(&app, "/judge0/system_info").await.json();
    assert!(s["Mem"].as_str().is_some_and(|m| m.ends_with("Gi")), "{s}");
    assert!(s.as_object().is_some_and(|o| o.values().all(Value::is_string)));
    run(&app, "", json!({"source_code": "print(1)", "language_id": 71})).await;
    let r = get(&app, "/judge0/statistics?invalidate_cache=true").await;
    let text = String::from_utf8_lossy(&r.bytes).into_owned();
    let st = r.json();
    assert_eq!(st["submissions"]["total"], 1);
    assert_eq!(st["submissions"]["today"], 1);
    assert_eq!(st["statuses"], json!([{"status": {"id": 13, "name": "Internal Error"}, "count": 1}]));
    assert_eq!(st["languages"][0]["language"]["id"], 71);
    // Rails' DateTime: milliseconds and +00:00.
    assert!(st["created_at"].as_str().is_some_and(|t| t.ends_with("+00:00") && t.len() == 29), "{st}");
    // Judge0's key order, and the 30 days before today, newest first, zeros too.
    let order = [
        "\"created_at\"",
        "\"cached_until\"",
        "\"submissions\"",
        "\"total\"",
        "\"today\"",
        "\"last_30_days\"",
        "\"languages\"",
        "\"statuses\"",
        "\"database\"",
        "\"size_pretty\"",
        "\"size_in_bytes\"",
    ];
    let at: Vec<usize> = order.iter().map(|k| text.find(k).unwrap_or(usize::MAX)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    let days = st["submissions"]["last_30_days"].as_object().expect("days").clone();
    assert_eq!(days.len(), 30);
    assert!(days.values().all(|n| n == 0), "today is not among them: {st}");
    let listed: Vec<&str> = text
        .split("\"last_30_days\":{")
        .nth(1)
        .unwrap_or("")
        .split('}')
        .next()
        .unwrap_or("")
        .split(',')
        .map(|kv| kv.split(':').next().unwrap_or(""))
        .collect();
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first: {listed:?}");
}

// ---- the root tier: real boxes ----

#[tokio::test]
async fn python_run_has_judge0s_exact_shapes() {
    let app = app();
    let body =
        run(&app, "", json!({"source_code": "print(f'hello, {input()}')", "language_id": 71, "stdin": "Alice"})).await;
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 8, "the default fields: {body}");
    assert_eq!(body["stdout"], "hello, Alice\n");
    assert_eq!(
        (&body["stderr"], &body["compile_output"], &body["message"]),
        (&json!(null), &json!(null), &json!(null))
    );
    assert_eq!(body["status"], json!({"id": 3, "description": "Accepted"}));
    assert!(body["time"].as_str().is_some_and(|t| t.contains('.') && t.parse::<f64>().is_ok()), "{body}");
    assert!(body["memory"].is_u64());
    let token = body["token"].as_str().expect("token");
    // fields=*: the 35 keys in column order, base64 MIME-wrapped.
    let all = get(&app, &format!("/judge0/submissions/{token}?base64_encoded=true&fields=*")).await;
    let text = String::from_utf8_lossy(&all.bytes).into_owned();
    let v = all.json();
    let obj = v.as_object().expect("object");
    assert_eq!(obj.len(), 35);
    let order: Vec<usize> =
        evald_judge0::wire::FIELDS.iter().map(|f| text.find(&format!("\"{f}\":")).expect(f)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "column order: {text}");
    assert!(text.contains(r#""status":{"id":3,"description":"Accepted"},"language":{"id":71,"name":"#), "{text}");
    assert_eq!(v["stdout"], b64("hello, Alice\n"));
    assert_eq!(v["source_code"], b64("print(f'hello, {input()}')"));
    assert_eq!(
        (&v["cpu_time_limit"], &v["wall_time_limit"], &v["cpu_extra_time"]),
        (&json!("5.0"), &json!("10.0"), &json!("1.0"))
    );
    assert_eq!((&v["memory_limit"], &v["exit_code"], &v["exit_signal"]), (&json!(128000), &json!(0), &json!(null)));
    assert_eq!(v["language"], json!({"id": 71, "name": format!("Python ({})", version_of("python"))}));
    for k in ["created_at", "finished_at"] {
        let t = v[k].as_str().expect(k);
        assert!(t.len() == 24 && t.ends_with('Z') && &t[19..20] == ".", "{k}: {t}");
    }
}

#[tokio::test]
async fn long_output_is_wrapped_as_ruby_encode64() {
    let app = app();
    let body =
        run(&app, "&base64_encoded=true", json!({"source_code": b64("print('x' * 100)"), "language_id": 71})).await;
    let out = body["stdout"].as_str().expect("stdout");
    assert_eq!(out, evald_judge0::wire::encode64(format!("{}\n", "x".repeat(100)).as_bytes()));
    assert_eq!(out.lines().map(str::len).collect::<Vec<_>>(), [60, 60, 16]);
}

/// Polls a submission until its status id is `want`.
async fn until_status(app: &axum::Router, token: &str, want: u64) {
    for _ in 0..1500 {
        let s = get(app, &format!("/judge0/submissions/{token}?fields=status_id")).await.json();
        if s["status_id"] == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("submission {token} never reached status {want}");
}

/// One slot and `max_queue_size` 1: a running submission, one waiting,
/// then 503 `queue is full` for every way of submitting, nothing stored;
/// neither the running nor the waiting one can be deleted.
#[tokio::test]
async fn a_full_queue_answers_503_and_pending_submissions_stay() {
    let app = evald_server::app(state(UIDS, 1, |c| {
        c.judge0.max_queue_size = 1;
        c.judge0.enable_delete = true;
        c.http.admin_key = Some("admin".into());
    }));
    // Sleeps far longer than the test takes; its wall limit ends it.
    let long = json!({"source_code": "import time\ntime.sleep(20)", "language_id": 71, "wall_time_limit": 20});
    let submit = |body: Value| {
        let app = app.clone();
        async move {
            let r = post_json(&app, "/judge0/submissions", &body).await;
            (r.status.as_u16(), r.json())
        }
    };
    let (status, running) = submit(long.clone()).await;
    assert_eq!(status, 201, "{running}");
    let running = running["token"].as_str().expect("token").to_owned();
    until_status(&app, &running, 2).await;
    let (status, waiting) = submit(long.clone()).await;
    assert_eq!(status, 201, "{waiting}");
    let waiting = waiting["token"].as_str().expect("token").to_owned();
    let got = get(&app, &format!("/judge0/submissions/{waiting}?fields=status")).await.json();
    assert_eq!(got, json!({"status": {"id": 1, "description": "In Queue"}}));

    let full = json!({"error": "queue is full"});
    assert_eq!(submit(long.clone()).await, (503, full.clone()));
    let r = post_json(&app, "/judge0/submissions?wait=true", &long).await;
    assert_eq!((r.status.as_u16(), r.json()), (503, full.clone()));
    let r = post_json(&app, "/judge0/submissions/batch", &json!({"submissions": [long]})).await;
    assert_eq!((r.status.as_u16(), r.json()), (503, full));

    let admin = [("X-Auth-User", "admin")];
    let listed = send_with(&app, "GET", "/judge0/submissions?fields=token", &admin).await.json();
    assert_eq!(listed["meta"]["total_count"], 2, "{listed}");
    for (token, why) in [(&running, "2 (Processing)"), (&waiting, "1 (In Queue)")] {
        let r = send_with(&app, "DELETE", &format!("/judge0/submissions/{token}"), &admin).await;
        assert_eq!(r.status, 400);
        let message = format!("submission cannot be deleted because its status is {why}");
        assert_eq!(r.json(), json!({ "error": message }));
        assert_eq!(get(&app, &format!("/judge0/submissions/{token}")).await.status, 200, "still there");
    }
}

#[tokio::test]
async fn statuses_of_real_runs() {
    let app = app();
    let fields = "&fields=status,exit_code,exit_signal,message,stdout,stderr,compile_output,time";
    let r = run(&app, fields, json!({"source_code": "import sys; sys.exit(3)", "language_id": 71})).await;
    assert_eq!((r["status"]["id"].as_u64(), r["exit_code"].as_i64()), (Some(11), Some(3)));
    assert_eq!(r["message"], "Exited with error status 3");
    let r =
        run(&app, fields, json!({"source_code": "while True: pass", "language_id": 71, "cpu_time_limit": 0.5})).await;
    assert_eq!(
        (r["status"]["id"].as_u64(), &r["message"], r["exit_code"].as_i64()),
        (Some(5), &json!("Time limit exceeded"), Some(0))
    );
    let r = run(&app, fields, json!({"source_code": "print('a')", "language_id": 71, "expected_output": "b"})).await;
    assert_eq!(r["status"], json!({"id": 4, "description": "Wrong Answer"}));
    let r = run(
        &app,
        fields,
        json!({"source_code": "print('a  ')\nprint()", "language_id": 71, "expected_output": "a\r\n"}),
    )
    .await;
    assert_eq!(r["status"]["id"], 3, "trailing whitespace and blank lines are ignored");
    let r = run(&app, fields, json!({"source_code": "pass", "language_id": 71, "expected_output": ""})).await;
    assert_eq!((r["status"]["id"].as_u64(), &r["stdout"]), (Some(4), &json!(null)), "no output is null: wrong answer");
    let r = run(&app, fields, json!({"source_code": "import os; os.kill(os.getpid(), 11)", "language_id": 71})).await;
    assert_eq!((r["status"]["id"].as_u64(), r["exit_signal"].as_i64()), (Some(7), Some(11)));
    assert_eq!(r["message"], "Caught fatal signal 11");
    let r = run(&app, fields, json!({"source_code": "int main(void) { return x; }", "language_id": 50})).await;
    assert_eq!(r["status"], json!({"id": 6, "description": "Compilation Error"}));
    assert!(r["compile_output"].as_str().is_some_and(|o| o.contains("error")));
    assert_eq!((&r["time"], &r["stdout"], &r["exit_code"]), (&json!(null), &json!(null), &json!(null)));
}

#[tokio::test]
async fn request_options_take_effect() {
    let app = app();
    let f = "&fields=stdout,stderr,status";
    let r = run(
        &app,
        f,
        json!({"source_code": "import sys; print(sys.argv[1:])", "language_id": 71,
        "command_line_arguments": "a 'b c' ; rm -rf /"}),
    )
    .await;
    assert_eq!(r["stdout"], "['a', 'b c', 'rm', '-rf', '/']\n", "sanitised, then split as bash splits");
    let r = run(
        &app,
        f,
        json!({"source_code": "import sys; print('e', file=sys.stderr)", "language_id": 71,
        "redirect_stderr_to_stdout": "true"}),
    )
    .await;
    assert_eq!((&r["stdout"], &r["stderr"]), (&json!("e\n"), &json!(null)));
    let c = "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", X); return 0; }";
    let r = run(&app, f, json!({"source_code": c, "language_id": 54.0, "compiler_options": "-DX=42"})).await;
    assert_eq!(r["stdout"], "42\n");
    let r = run(
        &app,
        "&fields=status,number_of_runs,time",
        json!({"source_code": "print(1)", "language_id": 71,
        "number_of_runs": 3, "expected_output": "1"}),
    )
    .await;
    assert_eq!((r["status"]["id"].as_u64(), r["number_of_runs"].as_u64()), (Some(3), Some(3)));
}

fn zip(entries: &[(&str, &str)]) -> String {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default()).expect("start");
        w.write_all(content.as_bytes()).expect("write");
    }
    evald_judge0::wire::encode64(&w.finish().expect("finish").into_inner())
}

#[tokio::test]
async fn additional_files_and_the_multi_file_program() {
    let app = app();
    let files = zip(&[("helper.py", "GREETING = 'hi from a module'\n")]);
    let r = run(
        &app,
        "&fields=stdout,status",
        json!({"source_code": "import helper; print(helper.GREETING)",
        "language_id": 71, "additional_files": files}),
    )
    .await;
    assert_eq!(r["stdout"], "hi from a module\n");
    let project = zip(&[
        ("compile", "gcc -o prog main.c util.c"),
        ("run", "./prog \"$@\""),
        ("main.c", "#include <stdio.h>\nint twice(int);\nint main(void) { printf(\"%d\\n\", twice(21)); }"),
        ("util.c", "int twice(int x) { return 2 * x; }"),
    ]);
    let r = run(
        &app,
        "&fields=stdout,status,language",
        json!({"source_code": "", "language_id": 89, "additional_files": project}),
    )
    .await;
    assert_eq!(r["stdout"], "42\n", "{r}");
    assert_eq!(r["language"], json!({"id": 89, "name": "Multi-file program"}));
    let r = post_json(
        &app,
        "/judge0/submissions",
        &json!({"source_code": "", "language_id": 89, "additional_files": b64("not a zip")}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["additional_files"][0].as_str().is_some_and(|m| m.starts_with("not a zip archive")));
}

/// Accepts one HTTP request on loopback, answers 200, hands back its
/// method, path and body.
async fn receive_one(listener: tokio::net::TcpListener) -> (String, String, Value) {
    let (mut sock, _) = listener.accept().await.expect("accept");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let line = text.lines().next().unwrap_or("").to_owned();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
                let body = serde_json::from_slice(&buf[end + 4..end + 4 + length]).expect("a JSON body");
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await
                    .expect("answer");
                return (method, path, body);
            }
        }
    }
}

#[tokio::test]
async fn callbacks_put_the_default_fields_in_base64() {
    let app = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/done", listener.local_addr().expect("addr"));
    let received = tokio::spawn(receive_one(listener));
    let r = post_json(
        &app,
        "/judge0/submissions",
        &json!({"source_code": "print('cb')", "language_id": 71, "callback_url": url}),
    )
    .await;
    assert_eq!(r.status, 201);
    let token = r.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(r.json(), json!({"token": token}), "wait=false answers the token only");
    let (method, path, body) = received.await.expect("the callback arrives");
    assert_eq!((method.as_str(), path.as_str()), ("PUT", "/done"));
    let keys: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 8);
    assert_eq!(
        (&body["token"], &body["stdout"], &body["status"]["id"]),
        (&json!(token), &json!(b64("cb\n")), &json!(3))
    );
    // The stored submission answers the same.
    let stored = get(&app, &format!("/judge0/submissions/{token}?fields=stdout,status")).await.json();
    assert_eq!(stored, json!({"stdout": "cb\n", "status": {"id": 3, "description": "Accepted"}}));
}

#[tokio::test]
async fn non_utf8_output_needs_base64() {
    let app = app();
    let r = post_json(
        &app,
        "/judge0/submissions?wait=true",
        &json!({"source_code": "import sys; sys.stdout.buffer.write(b'\\xff')", "language_id": 71}),
    )
    .await;
    assert_eq!(r.status, 201);
    let body = r.json();
    let token = body["token"].as_str().expect("token");
    assert_eq!(body["error"], evald_judge0_error_one());
    let r = get(&app, &format!("/judge0/submissions/{token}")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].clone()), (400, json!(evald_judge0_error_one())));
    let r = get(&app, &format!("/judge0/submissions/{token}?base64_encoded=true&fields=stdout")).await;
    assert_eq!(r.json(), json!({"stdout": "/w==\n"}));
}

fn evald_judge0_error_one() -> &'static str {
    "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter"
}

#[tokio::test]
async fn limits_map_to_judge0_statuses() {
    let app = app();
    let f = "&fields=status,message,exit_signal,exit_code";
    let r = run(&app, f, json!({"source_code": "import time; time.sleep(3)", "language_id": 71, "wall_time_limit": 1}))
        .await;
    assert_eq!((r["status"]["id"].as_u64(), &r["message"]), (Some(5), &json!("Time limit exceeded (wall clock)")));
    let r = run(&app, f, json!({"source_code": "print('x' * 100000)", "language_id": 71, "max_file_size": 1})).await;
    assert_eq!((r["status"]["id"].as_u64(), r["exit_signal"].as_i64()), (Some(8), Some(25)), "{r}");
    let r = run(&app, f, json!({"source_code": "b = bytearray(400 << 20)", "language_id": 71, "memory_limit": 65536}))
        .await;
    assert_eq!((r["status"]["id"].as_u64(), &r["message"]), (Some(12), &json!("Memory limit exceeded")), "{r}");
    let c = "#include <signal.h>\nint main(void) { raise(SIGFPE); return 0; }";
    let r = run(&app, f, json!({"source_code": c, "language_id": 50})).await;
    assert_eq!(
        (r["status"]["id"].as_u64(), r["exit_signal"].as_i64(), r["exit_code"].as_i64()),
        (Some(9), Some(8), Some(0))
    );
}

/// `stack_limit`, the per-process memory flag and `cpu_extra_time` take
/// effect: the rlimits a program sees, a deep recursion, a mapping larger
/// than the address space, a program finishing in its extra time.
#[tokio::test]
async fn stack_extra_time_and_per_process_memory_apply() {
    let app = app();
    let f = "&fields=stdout,status_id,message";
    let rlimits = "import resource as r\nprint(r.getrlimit(r.RLIMIT_STACK)[0], r.getrlimit(r.RLIMIT_AS)[0])";
    let r = run(&app, f, json!({"source_code": rlimits, "language_id": 71})).await;
    assert_eq!(r["stdout"], format!("{} -1\n", 64000 * 1024), "Judge0's default stack, no address-space bound: {r}");
    let asked = json!({"source_code": rlimits, "language_id": 71, "stack_limit": 16000, "memory_limit": 200000,
        "enable_per_process_and_thread_memory_limit": true});
    let r = run(&app, f, asked).await;
    assert_eq!(r["stdout"], format!("{} {}\n", 16000 * 1024, 200000 * 1024), "{r}");

    // About 32 MB of stack: fits Judge0's 64000 KB, not 8000 KB.
    // Each level reads its own frame after the call, so every frame stays.
    let deep =
        "#include <stdio.h>\nint down(int n) { volatile char pad[1024]; pad[0] = (char)n; if (n == 0) return 0; \
        int r = down(n - 1); return r + (pad[0] == (char)n); }\nint main(void) { printf(\"%d\\n\", down(32000)); }";
    let r = run(&app, f, json!({"source_code": deep, "language_id": 50})).await;
    assert_eq!((r["status_id"].as_u64(), &r["stdout"]), (Some(3), &json!("32000\n")), "{r}");
    let r = run(&app, f, json!({"source_code": deep, "language_id": 50, "stack_limit": 8000})).await;
    assert_eq!(r["status_id"], 7, "a stack overflow is SIGSEGV: {r}");

    // 300 MiB mapped and never touched: the box's memory allows it, an
    // address space of 128000 KB does not.
    let map = "import mmap\nm = mmap.mmap(-1, 300 << 20)\nprint('mapped')";
    let r = run(&app, f, json!({"source_code": map, "language_id": 71})).await;
    assert_eq!((r["status_id"].as_u64(), &r["stdout"]), (Some(3), &json!("mapped\n")), "{r}");
    let per_process =
        json!({"source_code": map, "language_id": 71, "enable_per_process_and_thread_memory_limit": true});
    let r = run(&app, f, per_process).await;
    assert_eq!((r["status_id"].as_u64(), &r["stdout"]), (Some(11), &Value::Null), "{r}");

    // 1.3 s of CPU against a 1 s limit: with a second of extra time the
    // program finishes (and is still judged over its limit); without, it
    // is stopped before it prints.
    let burn = "import time\nwhile time.process_time() < 1.3: pass\nprint('finished')";
    let extra = |e: f64| json!({"source_code": burn, "language_id": 71, "cpu_time_limit": 1, "cpu_extra_time": e});
    let r = run(&app, f, extra(1.0)).await;
    assert_eq!(r, json!({"stdout": "finished\n", "status_id": 5, "message": "Time limit exceeded"}));
    let r = run(&app, f, extra(0.0)).await;
    assert_eq!(r, json!({"stdout": null, "status_id": 5, "message": "Time limit exceeded"}));
}

/// `compile_output` holds the compiler's warnings, also when the second
/// submission of the same source is compiled from the cache.
#[tokio::test]
async fn compile_output_survives_the_compile_cache() {
    let app = app();
    let source = format!("#warning \"careful {}\"\nint main(void) {{ return 0; }}\n", std::process::id());
    let first = run(&app, "&fields=compile_output,status_id", json!({"source_code": source, "language_id": 50})).await;
    let output = first["compile_output"].as_str().unwrap_or_default().to_owned();
    assert!(output.contains("warning: #warning \"careful"), "{first}");
    let second = run(&app, "&fields=compile_output,status_id", json!({"source_code": source, "language_id": 50})).await;
    assert_eq!(second, json!({"compile_output": output, "status_id": 3}));
}

#[tokio::test]
async fn plain_text_executable_forms_and_token_headers() {
    let app = app();
    let r = run(&app, "&fields=stdout,status", json!({"source_code": "just text\n", "language_id": 43})).await;
    assert_eq!(r["stdout"], "just text\n");
    let exe = evald_judge0::wire::encode64(b"#!/bin/sh\necho \"exe $1\"\n");
    let r = run(
        &app,
        "&fields=stdout,status&base64_encoded=true",
        json!({"source_code": exe, "language_id": 44,
        "command_line_arguments": "one"}),
    )
    .await;
    assert_eq!(r["stdout"], b64("exe one\n"), "{r}");
    // A form body, with fields from the query string too.
    let r = post_raw(
        &app,
        "/judge0/submissions?wait=true&fields=stdout&stdin=Q",
        "application/x-www-form-urlencoded",
        b"source_code=print(input())&language_id=71".to_vec(),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.json()), (201, json!({"stdout": "Q\n"})));
    let token = run(&app, "&fields=token", json!({"source_code": "print(1)", "language_id": 71})).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = send_with(&app, "GET", "/judge0/submissions/batch?fields=stdout", &[("tokens", token.as_str())]).await;
    assert_eq!(r.json(), json!({"submissions": [{"stdout": "1\n"}]}), "tokens in a header");
}

/// With Redis, submissions are records there: a token made on one node is
/// answered by another, and listed by both.
#[tokio::test]
async fn with_redis_any_node_answers_any_token() {
    let redis = common::RedisServer::start();
    let node = |n: u32| {
        let url = format!("redis://127.0.0.1:{}/", redis.port);
        async move {
            let mut config =
                evald_server::ServerConfig { node: format!("j0-redis-{}-{n}", std::process::id()), ..common_config() };
            config.redis = Some(evald_server::RedisSettings {
                url,
                namespace: "j0test:".into(),
                run_queue_depth: 10,
                run_queue_reclaim: None,
            });
            config.http.admin_key = Some("admin".into());
            let lifecycle = evald_engine::Lifecycle::new();
            let engine = std::sync::Arc::new(evald_engine::Engine::without_sandbox(
                2,
                languages(),
                config.engine.clone(),
                &lifecycle,
            ));
            let node = evald_server::compose::compose(&config, engine, lifecycle).await.expect("composes with Redis");
            evald_server::app(node.state)
        }
    };
    let (a, b) = (node(1).await, node(2).await);
    let made = run(&a, "&fields=token,status", json!({"source_code": "print(1)", "language_id": 71})).await;
    let token = made["token"].as_str().expect("token");
    let r = get(&b, &format!("/judge0/submissions/{token}?fields=token,status,language_id")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"token": token, "language_id": 71, "status": {"id": 13, "description": "Internal Error"}})
    );
    let listed = send_with(&b, "GET", "/judge0/submissions?fields=token", &[("X-Auth-User", "admin")]).await.json();
    assert_eq!(listed["submissions"], json!([{"token": token}]));
    assert_eq!(listed["meta"]["total_count"], 1);

    // `wait=false` goes into the cluster's run queue (no node's worker runs
    // here, so it stays there): In Queue on every node, counted by every
    // node's /workers.
    let r = post_json(&a, "/judge0/submissions", &json!({"source_code": "print(2)", "language_id": 71})).await;
    assert_eq!(r.status, 201);
    let queued = r.json()["token"].as_str().expect("token").to_owned();
    let r = get(&b, &format!("/judge0/submissions/{queued}?fields=status")).await;
    assert_eq!(r.json(), json!({"status": {"id": 1, "description": "In Queue"}}));
    for node in [&a, &b] {
        assert_eq!(get(node, "/judge0/workers").await.json()[0]["size"], 1);
    }
    // The run queue's depth (10 here) bounds them: then 503, nothing stored.
    for _ in 1..10 {
        let r = post_json(&b, "/judge0/submissions", &json!({"source_code": "print(3)", "language_id": 71})).await;
        assert_eq!(r.status, 201);
    }
    let r = post_json(&a, "/judge0/submissions", &json!({"source_code": "print(4)", "language_id": 71})).await;
    assert_eq!((r.status.as_u16(), r.json()), (503, json!({"error": "queue is full"})));
    let listed = send_with(&a, "GET", "/judge0/submissions?fields=token", &[("X-Auth-User", "admin")]).await.json();
    assert_eq!(listed["meta"]["total_count"], 11, "the refused one is not kept");

    // A node of an older version reads the queue (it would drop Judge0's
    // entries): submissions run on the node that takes them instead (here
    // without a sandbox: an Internal Error at once), the full queue aside.
    let cli = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "XGROUP", "CREATECONSUMER", "j0test:runs", "workers", "old-node"])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "1", "{cli:?}");
    let r = post_json(&a, "/judge0/submissions", &json!({"source_code": "print(5)", "language_id": 71})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    let local = r.json()["token"].as_str().expect("token").to_owned();
    until_status(&b, &local, 13).await;
}

fn common_config() -> evald_server::ServerConfig {
    evald_server::ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        agent_listen: None,
        node: String::new(),
        languages_dir: LANGUAGES_DIR.into(),
        data_dir: std::env::temp_dir().join(format!("evald-j0-redis-{}", std::process::id())),
        engine: evald_engine::EngineConfig::new(64 << 30),
        sessions: evald_session::SessionConfig::DEFAULT,
        http: evald_server::HttpConfig::DEFAULT,
        redis: None,
        shutdown_grace: evald_server::ServerConfig::DEFAULT_SHUTDOWN_GRACE,
        judge0: Default::default(),
    }
}
