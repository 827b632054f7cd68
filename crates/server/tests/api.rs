//! The API without running code: routing, the documents, health, the
//! language lists and Piston's validation messages. The node has no sandbox
//! (its engine refuses to start a box), so these tests need no root and
//! fail if a request that should be refused reached a box.

mod common;

use common::*;
use serde_json::{json, Value};

fn app_and_state() -> (axum::Router, evald_server::AppState) {
    let state = api_state(|_| {});
    (evald_server::app(state.clone()), state)
}

fn app() -> axum::Router {
    evald_server::app(api_state(|_| {}))
}

fn python_version() -> String {
    languages().into_iter().find(|l| l.spec.id == "python").expect("python installed").version.to_string()
}

#[tokio::test]
async fn languages_lists_installed_languages() {
    let (app, _) = app_and_state();
    let r = get(&app, "/api/v1/languages").await;
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(languages().len()));
    let py = languages().into_iter().find(|l| l.spec.id == "python").expect("python installed");
    let entry = list.as_array().and_then(|l| l.iter().find(|e| e["id"] == "python")).expect("python listed");
    assert_eq!(
        entry,
        &json!({"id": "python", "name": py.spec.name, "version": py.version.to_string(),
                "aliases": py.spec.aliases, "compiled": false, "repl": py.spec.repl.is_some()})
    );
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let (app, _) = app_and_state();
    let r = get(&app, "/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| ops.as_object().into_iter().flatten().map(move |(m, _)| (m.clone(), p.clone())))
        .collect();
    let mut routes: Vec<(String, String)> =
        evald_server::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
    // every listed route is really served (not the fallback)
    for (method, path) in evald_server::ROUTES {
        let path = path.replace("{id}", "x").replace("{path}", "a.txt").replace("{token}", "x");
        let req = axum::http::Request::builder().method(method.to_uppercase().as_str()).uri(&path);
        let r = send(&app, req.body(axum::body::Body::empty()).expect("request")).await;
        let fallback = r.status == 404 && String::from_utf8_lossy(&r.bytes).contains("no route");
        assert!(!fallback, "{method} {path} is not routed");
    }
    // every $ref resolves
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap_or_default();
        assert!(doc["components"]["schemas"].get(name).is_some(), "missing schema {name}");
    }
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let (app, state) = app_and_state();
    let r = get(&app, "/healthz/live").await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"status": "ok"})));
    let r = get(&app, "/healthz/ready").await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"status": "ok"})));
    assert!(r.header("x-request-id").is_some());
    let r = get(&app, "/nope").await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (404, json!({"error": {"code": "not_found", "message": "no route for GET /nope"}}))
    );
    let r = post_json(&app, "/api/v1/languages", &json!({})).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    state.begin_shutdown();
    let r = get(&app, "/healthz/ready").await;
    assert_eq!((r.status.as_u16(), r.json()), (503, json!({"status": "shutting_down"})));
    let body = json!({"language": "python", "files": [{"path": "main.py", "content": ""}]});
    let r = post_json(&app, "/api/v1/runs", &body).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.json()["error"]["code"], "shutting_down");
}

#[tokio::test]
async fn validation_messages_are_pistons() {
    let app = app();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"language": "nope", "version": "1", "files": [{"content": ""}]}), 400, "nope-1 runtime is unknown"),
        (
            json!({"language": "python", "version": "2.x", "files": [{"content": ""}]}),
            400,
            "python-2.x runtime is unknown",
        ),
        (json!({"version": "*", "files": []}), 400, "language is required as a string"),
        (json!({"language": "python", "files": []}), 400, "version is required as a string"),
        (json!({"language": "python", "version": "*", "files": "x"}), 400, "files is required as an array"),
        (
            json!({"language": "python", "version": "*", "files": [{"name": "a.py"}]}),
            400,
            "files[0].content is required as a string",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": "", "encoding": "base64"}]}),
            400,
            "files must include at least one utf8 encoded file",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": ""}], "run_timeout": 30001}),
            400,
            "run_timeout cannot exceed the configured limit of 30000",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": ""}], "compile_memory_limit": 1u64 << 40}),
            400,
            "compile_memory_limit cannot exceed the configured limit of 4294967296",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": ""}], "run_timeout": "abc"}),
            400,
            "If specified, run_timeout must be a number",
        ),
        (
            json!({"language": "python", "version": "*", "files": [{"content": ""}], "run_cpu_time": [1]}),
            400,
            "If specified, run_cpu_time must be a number",
        ),
    ];
    for (body, status, message) in cases {
        let r = post_json(&app, "/api/v2/execute", &body).await;
        assert_eq!((r.status.as_u16(), r.json()), (status, json!({"message": message})), "{body}");
    }
    let r = post_raw(&app, "/api/v2/execute", "text/plain", b"{}".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.json()), (415, json!({"message": "requests must be of type application/json"})));
}

#[tokio::test]
async fn runtimes_list_installed_languages() {
    let app = app();
    let r = get(&app, "/api/v2/runtimes").await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let python = list.as_array().and_then(|l| l.iter().find(|r| r["language"] == "python")).expect("python").clone();
    let spec = languages().into_iter().find(|l| l.spec.id == "python").expect("python");
    assert_eq!(python, json!({"language": "python", "version": python_version(), "aliases": spec.spec.aliases}));
    assert_eq!(list.as_array().map(Vec::len), Some(languages().len()));
}
