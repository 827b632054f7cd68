//! An oversized body gets its 413 on every client: over a real socket, a
//! client that writes its whole body before reading anything (as Python's
//! `urllib` does) reads the 413 and its JSON error body, because the node's
//! listener ([`evald_server::Lingering`]) reads and discards what the client
//! still sends before closing. No sandbox: the body is refused before any
//! code would run.

mod common;

use std::future::IntoFuture;
use std::io::{Read, Write};
use std::net::TcpStream;

use common::api_state;
use evald_server::{app, HttpConfig, Lingering};

/// Sends `POST path` with a JSON body of `body_bytes` bytes, writing all of
/// it before reading, and returns the whole answer (read until the server
/// closes).
fn post_whole_body_then_read(addr: std::net::SocketAddr, path: &str, body_bytes: usize) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {body_bytes}\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let chunk = vec![b' '; 1 << 20];
    let mut left = body_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_its_whole_oversized_body_first_reads_the_413() {
    let state = api_state(|_| {});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(axum::serve(Lingering::new(listener), app(state)).into_future());
    // Twice the limit and four times it: far more than the socket buffers
    // hold, so the server closes while the client is still writing.
    let max = HttpConfig::DEFAULT.max_body_bytes;
    for (path, size) in [("/api/v1/runs", 2 * max), ("/api/v2/execute", 4 * max)] {
        let answer = tokio::task::spawn_blocking(move || post_whole_body_then_read(addr, path, size))
            .await
            .expect("the client thread")
            .unwrap_or_else(|e| panic!("{path} with {size} bytes: the client failed: {e}"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
        assert!(head.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{path}: {head}");
        let expected = if path.starts_with("/api/v1") {
            r#"{"error":{"code":"payload_too_large","message":"the request body is larger than the configured maximum"}}"#
        } else {
            r#"{"message":"the request body is larger than the configured maximum"}"#
        };
        assert_eq!(body, expected, "{path}");
    }
}
