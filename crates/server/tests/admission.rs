//! Admission control (slots, queue, timeout) and API keys with rate limits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_ADMISSION;

fn sleeper(seconds: f64) -> serde_json::Value {
    execute("python", "*", &format!("import time\ntime.sleep({seconds})"))
}

#[tokio::test]
async fn beyond_slots_and_queue_requests_get_429() {
    let state = state(UIDS, 1, |o| o.engine.capacity.queue = 0);
    let app = evald_server::app(state.clone());
    let mut active = state.engine().capacity().active();
    let holder = {
        let app = app.clone();
        tokio::spawn(async move { post_json(&app, "/api/v2/execute", &sleeper(1.5)).await })
    };
    active.wait_for(|n| *n == 1).await.expect("the holder is admitted");
    let r = post_json(&app, "/api/v2/execute", &execute("python", "*", "print(1)")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json(), json!({"message": "too many requests are waiting; retry later"}));
    let native = json!({"language": "python", "files": [{"path": "a.py", "content": ""}]});
    let r = post_json(&app, "/api/v1/runs", &native).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (429, Some("1")));
    assert_eq!(
        r.json(),
        json!({"error": {"code": "overloaded", "message": "too many requests are waiting; retry later"}})
    );
    let held = holder.await.expect("holder");
    assert_eq!(held.status, 200);
    active.wait_for(|n| *n == 0).await.expect("released");
    let r = post_json(&app, "/api/v2/execute", &execute("python", "*", "print(1)")).await;
    assert_eq!((r.status.as_u16(), &r.json()["run"]["stdout"]), (200, &json!("1\n")));
}

#[tokio::test]
async fn waiting_past_the_queue_timeout_is_503() {
    let state = state(UIDS, 1, |o| {
        o.engine.capacity.queue = 1;
        o.engine.capacity.queue_timeout = Duration::from_millis(200);
    });
    let app = evald_server::app(state.clone());
    let mut active = state.engine().capacity().active();
    let holder = {
        let app = app.clone();
        tokio::spawn(async move { post_json(&app, "/api/v2/execute", &sleeper(2.0)).await })
    };
    active.wait_for(|n| *n == 1).await.expect("the holder is admitted");
    let r = post_json(&app, "/api/v2/execute", &execute("python", "*", "print(1)")).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (503, Some("5")));
    assert_eq!(r.json(), json!({"message": "no capacity became free in time; retry later"}));
    assert_eq!(state.engine().capacity().waiting(), 0);
    assert_eq!(holder.await.expect("holder").status, 200);
}

#[tokio::test]
async fn api_keys_and_rate_limits() {
    let state = state(UIDS, 1, |o| {
        o.http.keys.insert("limited", 2);
        o.http.keys.insert("free", 0);
    });
    let app = evald_server::app(state);
    let r = get(&app, "/api/v2/runtimes").await;
    assert_eq!((r.status.as_u16(), r.json()), (401, json!({"message": "a valid API key is required"})));
    let r = get(&app, "/api/v1/languages").await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (401, json!({"error": {"code": "unauthorized", "message": "a valid API key is required"}}))
    );
    let with = |key: &str, header: &str| {
        let value = if header == "authorization" { format!("Bearer {key}") } else { key.to_owned() };
        axum::http::Request::get("/api/v1/languages")
            .header(header, value)
            .body(axum::body::Body::empty())
            .expect("req")
    };
    assert_eq!(send(&app, with("wrong", "authorization")).await.status, 401);
    assert_eq!(send(&app, with("free", "x-api-key")).await.status, 200);
    let r = get(&app, "/healthz/live").await;
    assert_eq!(r.status, 200, "health needs no key");
    let r = send(&app, with("limited", "authorization")).await;
    assert_eq!(
        (r.status.as_u16(), r.header("ratelimit-limit"), r.header("ratelimit-remaining")),
        (200, Some("2"), Some("1"))
    );
    let r = send(&app, with("limited", "x-api-key")).await;
    assert_eq!((r.status.as_u16(), r.header("ratelimit-remaining")), (200, Some("0")));
    let r = send(&app, with("limited", "authorization")).await;
    assert_eq!(r.status, 429);
    assert_eq!((r.header("ratelimit-limit"), r.header("ratelimit-remaining")), (Some("2"), Some("0")));
    let reset: u64 = r.header("ratelimit-reset").and_then(|v| v.parse().ok()).expect("reset");
    assert!((1..=60).contains(&reset), "reset {reset}");
    assert_eq!(r.header("retry-after"), Some(reset.to_string().as_str()));
    assert_eq!(
        r.json(),
        json!({"error": {"code": "rate_limited", "message": "the rate limit of this API key is exceeded"}})
    );
}

/// Batch runs and session processes draw on the same capacity: a node whose
/// only slot holds a session's shell queues a batch run and refuses it the
/// documented way (429 with the queue full, 503 with Retry-After once the
/// wait is over), never with an internal error; once the shell ends, the
/// same run goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_busy_with_sessions_queues_and_refuses_batch_runs_the_documented_way() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let state = state(UIDS, 1, |o| {
        o.engine.capacity.queue = 1;
        o.engine.capacity.queue_timeout = Duration::from_millis(300);
    });
    let app = evald_server::app(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn({
        let app = app.clone();
        async move { axum::serve(listener, app).await }
    });
    let session = json!({"language": "python", "files": [{"path": "main.py", "content": "print(1)\n"}]});
    let r = post_json(&app, "/api/v1/sessions", &session).await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let url = format!("ws://{addr}/api/v1/sessions/{id}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    ws.send(Message::Text(json!({"type": "shell"}).to_string().into())).await.expect("send");
    let mut active = state.engine().capacity().active();
    active.wait_for(|n| *n == 1).await.expect("the shell holds the slot");

    let native = json!({"language": "python", "files": [{"path": "a.py", "content": "print(2)"}]});
    // One may wait: it waits out the timeout, then 503 with Retry-After.
    let waiting = {
        let (app, native) = (app.clone(), native.clone());
        tokio::spawn(async move { post_json(&app, "/api/v1/runs", &native).await })
    };
    while state.engine().capacity().waiting() == 0 {
        tokio::task::yield_now().await;
    }
    // A second finds the queue full: 429 at once.
    let r = post_json(&app, "/api/v1/runs", &native).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (429, Some("1")));
    assert_eq!(r.json()["error"]["code"], "overloaded");
    let r = waiting.await.expect("waiting request");
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (503, Some("5")));
    assert_eq!(
        r.json(),
        json!({"error": {"code": "overloaded", "message": "no capacity became free in time; retry later"}})
    );

    // The shell ends: the slot is free again and the run goes through.
    ws.send(Message::Text(json!({"type": "signal", "signal": "KILL"}).to_string().into())).await.expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("an event in time");
        let Some(Ok(Message::Text(t))) = msg else { panic!("the socket ended early: {msg:?}") };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
        if v["type"] == "exit" {
            assert_eq!(v["kind"], "shell");
            break;
        }
    }
    active.wait_for(|n| *n == 0).await.expect("the shell released the slot");
    let r = post_json(&app, "/api/v1/runs", &native).await;
    assert_eq!((r.status.as_u16(), r.json()["cases"][0]["stdout"].as_str()), (200, Some("2\n")));
}
