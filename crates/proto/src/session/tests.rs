//! The session protocol's types against `docs/protocol.schema.json` and
//! `docs/protocol.md`, and the generated web constants against
//! [`close::ALL`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("docs/protocol.schema.json")).expect("docs/protocol.schema.json");
    serde_json::from_str(&text).expect("the schema is JSON")
}

/// A validator of one of the schema's definitions (`ClientMessage`,
/// `ServerMessage`).
fn validator(definition: &str) -> jsonschema::Validator {
    let mut schema = schema();
    let top = schema.as_object_mut().expect("the schema is an object");
    top.remove("oneOf");
    top.insert("$ref".into(), json!(format!("#/$defs/{definition}")));
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

/// The message types the schema lists under a definition.
fn schema_types(definition: &str) -> BTreeSet<String> {
    let schema = schema();
    schema["$defs"][definition]["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|r| r["$ref"].as_str().expect("$ref").rsplit('/').next().expect("name").to_owned())
        .collect()
}

fn type_of(v: &Value) -> String {
    v["type"].as_str().expect("a type tag").to_owned()
}

/// One message of every server variant. The match makes a new variant fail
/// to compile here until it has a sample.
fn server_samples() -> Vec<ServerMessage> {
    let exit = Exit {
        kind: ProcessKind::Run,
        status: Verdict::TimeLimitWall,
        exit_code: None,
        signal: Some("SIGKILL".into()),
        cpu_ms: 12,
        wall_ms: 15_000,
        memory_bytes: 9 << 20,
    };
    let samples = vec![
        ServerMessage::Hello { session: "k3v9x2".into(), language: "python".into(), seq: 0, running: None },
        ServerMessage::Hello {
            session: "k3v9x2".into(),
            language: "python".into(),
            seq: 7,
            running: Some(ProcessKind::Shell),
        },
        Event::Started { kind: ProcessKind::Repl }.numbered(1),
        Event::Output { data: "YWRhDQo=".into() }.numbered(2),
        Event::Exit(exit).numbered(3),
        Event::Files { files: vec![FileEntry { path: "main.py".into(), size: 35, is_dir: false }] }.numbered(4),
        ServerMessage::Gap { from: 1, to: 9 },
        ServerMessage::error(ErrorCode::NotRunning, "no process is running in this session"),
        ServerMessage::Pong,
        ServerMessage::Reconnect { delay_ms: 1200 },
    ];
    for s in &samples {
        match s {
            ServerMessage::Hello { .. }
            | ServerMessage::Started { .. }
            | ServerMessage::Output { .. }
            | ServerMessage::Exit { .. }
            | ServerMessage::Files { .. }
            | ServerMessage::Gap { .. }
            | ServerMessage::Error { .. }
            | ServerMessage::Pong
            | ServerMessage::Reconnect { .. } => {}
        }
    }
    samples
}

fn client_samples() -> Vec<ClientMessage> {
    let samples = vec![
        ClientMessage::Run { rows: None, cols: None },
        ClientMessage::Run { rows: Some(24), cols: Some(80) },
        ClientMessage::Shell { rows: Some(1), cols: Some(1000) },
        ClientMessage::Repl { rows: None, cols: None },
        ClientMessage::Stdin { data: "ada\r".into() },
        ClientMessage::Eof,
        ClientMessage::Resize { rows: 50, cols: 132 },
        ClientMessage::Signal { signal: "INT".into() },
        ClientMessage::Ping,
    ];
    for s in &samples {
        match s {
            ClientMessage::Run { .. }
            | ClientMessage::Shell { .. }
            | ClientMessage::Repl { .. }
            | ClientMessage::Stdin { .. }
            | ClientMessage::Eof
            | ClientMessage::Resize { .. }
            | ClientMessage::Signal { .. }
            | ClientMessage::Ping => {}
        }
    }
    samples
}

#[test]
fn every_server_message_matches_the_schema() {
    let valid = validator("ServerMessage");
    for message in server_samples() {
        let v = serde_json::to_value(&message).expect("serializes");
        let errors: Vec<String> = valid.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v} does not match the schema: {errors:?}");
        let back: ServerMessage = serde_json::from_value(v).expect("parses back");
        assert_eq!(back, message);
    }
}

#[test]
fn every_client_message_matches_the_schema_and_parses_back() {
    let valid = validator("ClientMessage");
    for message in client_samples() {
        let v = serde_json::to_value(&message).expect("serializes");
        let errors: Vec<String> = valid.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v} does not match the schema: {errors:?}");
        let back: ClientMessage = serde_json::from_value(v).expect("parses back");
        assert_eq!(back, message);
    }
}

#[test]
fn the_schema_lists_exactly_these_message_types() {
    let server: BTreeSet<String> =
        server_samples().iter().map(|m| type_of(&serde_json::to_value(m).expect("serializes"))).collect();
    let client: BTreeSet<String> =
        client_samples().iter().map(|m| type_of(&serde_json::to_value(m).expect("serializes"))).collect();
    assert_eq!(server, schema_types("ServerMessage"));
    assert_eq!(client, schema_types("ClientMessage"));
}

#[test]
fn malformed_client_messages_are_refused() {
    for text in [
        r#"{}"#,
        r#"{"type":"nope"}"#,
        r#"{"type":"run","extra":1}"#,
        r#"{"type":"stdin"}"#,
        r#"{"type":"stdin","data":5}"#,
        r#"{"type":"resize","rows":10}"#,
        r#"{"type":"run","rows":-1}"#,
        r#"not json"#,
    ] {
        assert!(serde_json::from_str::<ClientMessage>(text).is_err(), "accepted {text}");
    }
}

#[test]
fn the_documented_close_codes_are_these() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).expect("docs/protocol.md");
    let section = doc.split("### Close codes").nth(1).expect("a close codes section");
    let section = section.split("\n### ").next().unwrap_or(section);
    let documented: Vec<u16> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next())
        .filter_map(|code| code.parse().ok())
        .collect();
    let ours: Vec<u16> = close::ALL.iter().map(|c| c.code).collect();
    assert_eq!(documented, ours, "docs/protocol.md's close code table against close::ALL");
}

#[test]
fn the_web_close_codes_are_generated_from_this_list() {
    let path = root().join("web/src/close-codes.gen.js");
    let want = close::web_module();
    if std::env::var_os("EVALD_UPDATE_GENERATED").is_some() {
        std::fs::write(&path, &want).expect("writing web/src/close-codes.gen.js");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "web/src/close-codes.gen.js is out of date: run `EVALD_UPDATE_GENERATED=1 cargo test -p evald-proto`"
    );
}
