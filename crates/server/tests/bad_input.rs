//! Bad input never yields a 5xx: every malformed, mistyped, oversized or
//! dangerous request gets a 4xx with a JSON error body of its API's shape.

mod common;

use common::*;
use serde_json::{json, Value};

fn native(files: Value) -> Vec<u8> {
    json!({"language": "python", "files": files}).to_string().into_bytes()
}

fn piston(files: Value) -> Vec<u8> {
    json!({"language": "python", "version": "*", "files": files}).to_string().into_bytes()
}

fn file(path: &str) -> Value {
    json!({"path": path, "content": "print(1)"})
}

fn named(name: &str) -> Value {
    json!({"name": name, "content": "print(1)"})
}

#[tokio::test]
async fn bad_requests_get_4xx_json_errors() {
    let app = evald_server::app(api_state(|_| {}));
    let many: Vec<Value> = (0..101).map(|i| file(&format!("f{i}.py"))).collect();
    let many_named: Vec<Value> = (0..101).map(|i| named(&format!("f{i}.py"))).collect();
    let big = "x".repeat(5 << 20);
    let huge = vec![b' '; 9 << 20];
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        // (name, path, body, status)
        ("malformed json", "/api/v1/runs", b"{\"language\":".to_vec(), 400),
        ("not an object", "/api/v1/runs", b"[1,2]".to_vec(), 400),
        ("null body", "/api/v1/runs", b"null".to_vec(), 400),
        ("empty body", "/api/v1/runs", Vec::new(), 400),
        ("missing files", "/api/v1/runs", br#"{"language":"python"}"#.to_vec(), 400),
        ("missing language", "/api/v1/runs", br#"{"files":[]}"#.to_vec(), 400),
        ("language not a string", "/api/v1/runs", br#"{"language":5,"files":[]}"#.to_vec(), 400),
        ("files not an array", "/api/v1/runs", br#"{"language":"python","files":"x"}"#.to_vec(), 400),
        ("stdin not a string", "/api/v1/runs", br#"{"language":"python","files":[],"stdin":3}"#.to_vec(), 400),
        ("unknown field", "/api/v1/runs", br#"{"language":"python","files":[],"stdn":""}"#.to_vec(), 400),
        ("invalid utf-8", "/api/v1/runs", b"{\"language\":\"py\xff\",\"files\":[]}".to_vec(), 400),
        ("unknown language", "/api/v1/runs", br#"{"language":"cobolt","files":[]}"#.to_vec(), 400),
        ("no files", "/api/v1/runs", native(json!([])), 400),
        ("parent traversal", "/api/v1/runs", native(json!([file("../x")])), 400),
        ("inner traversal", "/api/v1/runs", native(json!([file("a/../../x")])), 400),
        ("absolute path", "/api/v1/runs", native(json!([file("/etc/passwd")])), 400),
        ("nul in path", "/api/v1/runs", native(json!([file("a\u{0}b")])), 400),
        ("empty path", "/api/v1/runs", native(json!([file("")])), 400),
        ("duplicate names", "/api/v1/runs", native(json!([file("a.py"), file("a.py")])), 409),
        ("a file and a directory", "/api/v1/runs", native(json!([file("a"), file("a/b.py")])), 409),
        ("too many files", "/api/v1/runs", native(json!(many)), 400),
        ("file too large", "/api/v1/runs", native(json!([{"path": "a.py", "content": big}])), 400),
        ("bad base64", "/api/v1/runs", native(json!([{"path": "a.py", "content": "!!", "encoding": "base64"}])), 400),
        ("bad encoding", "/api/v1/runs", native(json!([{"path": "a.py", "content": "", "encoding": "rot13"}])), 400),
        (
            "negative limit",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"limits":{"run":{"wall_ms":-5}}}"#.to_vec(),
            400,
        ),
        (
            "fractional limit",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"limits":{"run":{"wall_ms":1.5}}}"#
                .to_vec(),
            400,
        ),
        (
            "huge limit",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"limits":{"run":{"memory_bytes":1e30}}}"#
                .to_vec(),
            400,
        ),
        (
            "nul in args",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"args":["a\u0000"]}"#.to_vec(),
            400,
        ),
        (
            "too many cases",
            "/api/v1/runs",
            json!({"language": "python", "files": [file("a.py")], "cases": vec![json!({}); 65]})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "cases and stdin",
            "/api/v1/runs",
            json!({"language": "python", "files": [file("a.py")], "cases": [{}], "stdin": ""}).to_string().into_bytes(),
            400,
        ),
        ("body too large", "/api/v1/runs", huge.clone(), 413),
        ("a file as an array", "/api/v1/runs", br#"{"language":"python","files":[["a.py","print(1)"]]}"#.to_vec(), 400),
        (
            "a case as an array",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"cases":[[null,null]]}"#.to_vec(),
            400,
        ),
        (
            "a limit no box starts under, at a stage that may not run",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"limits":{"compile":{"memory_bytes":1}}}"#
                .to_vec(),
            400,
        ),
        (
            "a single process",
            "/api/v1/runs",
            br#"{"language":"python","files":[{"path":"a.py","content":""}],"limits":{"run":{"processes":1}}}"#
                .to_vec(),
            400,
        ),
        ("the body as an array", "/api/v1/runs", br#"["python",null,[{"path":"a.py","content":""}]]"#.to_vec(), 400),
        // Sessions
        ("session conflicting files", "/api/v1/sessions", native(json!([file("a"), file("a/b.py")])), 409),
        ("session duplicate files", "/api/v1/sessions", native(json!([file("a.py"), file("a.py")])), 409),
        (
            "session file as an array",
            "/api/v1/sessions",
            br#"{"language":"python","files":[["a.py","x"]]}"#.to_vec(),
            400,
        ),
        ("session unknown language", "/api/v1/sessions", br#"{"language":"cobolt"}"#.to_vec(), 400),
        // Piston
        ("piston malformed json", "/api/v2/execute", b"{".to_vec(), 400),
        ("piston not an object", "/api/v2/execute", b"\"x\"".to_vec(), 400),
        ("piston invalid utf-8", "/api/v2/execute", b"{\"language\":\"\xff\"}".to_vec(), 400),
        (
            "piston stdin type",
            "/api/v2/execute",
            br#"{"language":"python","version":"*","files":[{"content":""}],"stdin":1}"#.to_vec(),
            400,
        ),
        (
            "piston args type",
            "/api/v2/execute",
            br#"{"language":"python","version":"*","files":[{"content":""}],"args":[1]}"#.to_vec(),
            400,
        ),
        (
            "piston negative timeout",
            "/api/v2/execute",
            br#"{"language":"python","version":"*","files":[{"content":""}],"run_timeout":-5}"#.to_vec(),
            400,
        ),
        ("piston no files", "/api/v2/execute", piston(json!([])), 400),
        ("piston traversal", "/api/v2/execute", piston(json!([named("../x.py")])), 400),
        ("piston absolute", "/api/v2/execute", piston(json!([named("/etc/passwd")])), 400),
        ("piston nul name", "/api/v2/execute", piston(json!([named("a\u{0}")])), 400),
        ("piston duplicates", "/api/v2/execute", piston(json!([named("a.py"), named("a.py")])), 409),
        ("piston too many files", "/api/v2/execute", piston(json!(many_named)), 400),
        (
            "piston bad base64",
            "/api/v2/execute",
            piston(json!([{"content": "print(1)"}, {"content": "@@", "encoding": "base64"}])),
            400,
        ),
        (
            "piston nul in args",
            "/api/v2/execute",
            br#"{"language":"python","version":"*","files":[{"content":""}],"args":["a\u0000"]}"#.to_vec(),
            400,
        ),
        (
            "piston signed hex",
            "/api/v2/execute",
            piston(json!([{"content": "print(1)"}, {"content": "+a+b", "encoding": "hex"}])),
            400,
        ),
        ("piston body too large", "/api/v2/execute", huge, 413),
    ];
    let mut failures = Vec::new();
    for (name, path, body, status) in cases {
        let r = post_raw(&app, path, "application/json", body).await;
        let json: Option<Value> = serde_json::from_slice(&r.bytes).ok();
        let shaped = match (&json, path.starts_with("/api/v2")) {
            (Some(v), true) => v["message"].is_string() && v.as_object().map(|o| o.len()) == Some(1),
            (Some(v), false) => v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            (None, _) => false,
        };
        if r.status.as_u16() != status || !shaped {
            failures.push(format!("{name}: {} {}", r.status, String::from_utf8_lossy(&r.bytes)));
        } else {
            eprintln!("{name}: {} {}", r.status, String::from_utf8_lossy(&r.bytes));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn wrong_content_types_are_415() {
    let app = evald_server::app(api_state(|_| {}));
    for (path, expected) in [
        (
            "/api/v1/runs",
            json!({"error": {"code": "unsupported_media_type", "message": "requests must be of type application/json"}}),
        ),
        ("/api/v2/execute", json!({"message": "requests must be of type application/json"})),
        (
            "/api/v1/sessions",
            json!({"error": {"code": "unsupported_media_type", "message": "requests must be of type application/json"}}),
        ),
    ] {
        for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
            let r = post_raw(&app, path, ct, b"{}".to_vec()).await;
            assert_eq!((r.status.as_u16(), r.json()), (415, expected.clone()), "{path} {ct:?}");
        }
    }
}

/// A WebSocket route asked without a WebSocket handshake says so in its
/// API's error shape: 426 with `Upgrade: websocket`; another method than
/// GET is 405; a `last_seq` that is no number is 400.
#[tokio::test]
async fn websocket_routes_answer_plain_requests_with_json() {
    let app = evald_server::app(api_state(|_| {}));
    let r = get(&app, "/api/v2/connect").await;
    assert_eq!(
        (r.status.as_u16(), r.header("upgrade"), r.json()),
        (426, Some("websocket"), json!({"message": "a WebSocket upgrade is required"}))
    );
    let r = get(&app, "/api/v1/sessions/0123456789abcdef/ws").await;
    assert_eq!(
        (r.status.as_u16(), r.header("upgrade"), r.json()),
        (
            426,
            Some("websocket"),
            json!({"error": {"code": "upgrade_required", "message": "a WebSocket upgrade is required"}})
        )
    );
    let head = axum::http::Request::head("/api/v2/connect").body(axum::body::Body::empty()).expect("request");
    let r = send(&app, head).await;
    assert_eq!((r.status.as_u16(), r.header("allow")), (405, Some("GET")));
    let r = get(&app, "/api/v1/sessions/0123456789abcdef/ws?last_seq=abc").await;
    assert_eq!((r.status.as_u16(), r.json()["error"]["code"].as_str()), (400, Some("bad_request")));
}
