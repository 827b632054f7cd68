//! Every catalogued and installed language passes its test programs through
//! `POST /api/v2/execute`: hello world and echo with exact output, and the
//! compile error reported as a failed compile stage with run == compile.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_LANGUAGES;

async fn check(app: &axum::Router, lang: &evald_engine::Language) -> Vec<String> {
    let id = lang.spec.id.clone();
    let version = lang.version.to_string();
    let mut failures = Vec::new();
    let tests = &lang.spec.tests;
    for (what, test) in [("hello", &tests.hello), ("echo", &tests.echo)] {
        let Some(t) = test else { continue };
        let body = json!({"language": id, "version": version, "files": [{"content": t.source}], "stdin": t.stdin});
        let r = post_json(app, "/api/v2/execute", &body).await;
        let v: Value = serde_json::from_slice(&r.bytes).unwrap_or_default();
        if r.status != 200 || v["run"]["stdout"] != json!(t.expected) || !v["run"]["status"].is_null() {
            failures.push(format!("{id} {what}: {} {}", r.status, String::from_utf8_lossy(&r.bytes)));
        } else if lang.compiled() && v["compile"]["code"] != json!(0) {
            failures.push(format!("{id} {what}: compile stage {}", v["compile"]));
        }
    }
    if let Some(t) = &tests.compile_error {
        let body = json!({"language": id, "version": version, "files": [{"content": t.source}]});
        let r = post_json(app, "/api/v2/execute", &body).await;
        let v: Value = serde_json::from_slice(&r.bytes).unwrap_or_default();
        let compile = &v["compile"];
        let failed = compile.is_object() && compile["code"] != json!(0) && compile["status"] != json!("XX");
        if r.status != 200 || !failed || v["run"] != *compile {
            failures.push(format!("{id} compile_error: {} {}", r.status, String::from_utf8_lossy(&r.bytes)));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_installed_language_passes_its_test_programs() {
    let installed = languages();
    eprintln!("{} installed: {:?}", installed.len(), installed.iter().map(|l| l.spec.id.as_str()).collect::<Vec<_>>());
    assert!(!installed.is_empty(), "no language is installed");
    let app = evald_server::app(state(UIDS, 2, |_| {}));
    let failures: Vec<String> = futures_util::stream::iter(installed.iter())
        .map(|l| check(&app, l))
        .buffer_unordered(2)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
