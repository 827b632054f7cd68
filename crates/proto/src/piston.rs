//! Piston v2 (`/api/v2`), as Piston 3.1.1 speaks it.
//!
//! Request bodies are checked field by field from a [`serde_json::Value`] in
//! Piston's order and with Piston's messages (clients match on them), which
//! is why [`ExecuteRequest::parse`] does not use a derived `Deserialize`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every error body of the Piston surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

/// `GET /api/v2/runtimes` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub language: String,
    pub version: String,
    pub aliases: Vec<String>,
}

/// How a file's content is encoded. Like Piston, an unknown encoding is
/// taken as utf8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Base64,
    Hex,
}

/// A file as sent, before naming and decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: Option<String>,
    pub content: String,
    pub encoding: Encoding,
}

/// The fields of an execute request (or a WebSocket `init`) checked before
/// the runtime is looked up.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteRequest {
    pub language: String,
    pub version: String,
    pub files: Vec<File>,
    pub stdin: String,
    pub args: Vec<String>,
    /// The whole body, for [`ExecuteRequest::limit`] once the runtime is known.
    pub body: Value,
}

/// One limit field of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitField {
    /// e.g. `run_timeout`.
    pub name: &'static str,
    pub stage: StageName,
    pub kind: LimitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    Compile,
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Milliseconds of wall-clock time.
    Timeout,
    /// Milliseconds of CPU time.
    CpuTime,
    /// Bytes.
    MemoryLimit,
}

/// The limit fields in the order Piston checks them.
pub const LIMIT_FIELDS: [LimitField; 6] = [
    LimitField { name: "compile_memory_limit", stage: StageName::Compile, kind: LimitKind::MemoryLimit },
    LimitField { name: "run_memory_limit", stage: StageName::Run, kind: LimitKind::MemoryLimit },
    LimitField { name: "compile_timeout", stage: StageName::Compile, kind: LimitKind::Timeout },
    LimitField { name: "run_timeout", stage: StageName::Run, kind: LimitKind::Timeout },
    LimitField { name: "compile_cpu_time", stage: StageName::Compile, kind: LimitKind::CpuTime },
    LimitField { name: "run_cpu_time", stage: StageName::Run, kind: LimitKind::CpuTime },
];

fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

impl ExecuteRequest {
    /// Checks the runtime-independent fields in Piston's order.
    pub fn parse(body: Value) -> Result<ExecuteRequest, String> {
        let get = |k: &str| body.get(k).filter(|v| !v.is_null());
        let language = match get("language") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("language is required as a string".into()),
        };
        let version = match get("version") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("version is required as a string".into()),
        };
        let Some(Value::Array(raw_files)) = get("files") else {
            return Err("files is required as an array".into());
        };
        let mut files = Vec::with_capacity(raw_files.len());
        for (i, f) in raw_files.iter().enumerate() {
            let Some(Value::String(content)) = f.get("content") else {
                return Err(format!("files[{i}].content is required as a string"));
            };
            let name = match f.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(format!("files[{i}].name must be a string")),
            };
            let encoding = match f.get("encoding").and_then(Value::as_str) {
                Some("base64") => Encoding::Base64,
                Some("hex") => Encoding::Hex,
                _ => Encoding::Utf8,
            };
            files.push(File { name, content: content.clone(), encoding });
        }
        let stdin = match get("stdin") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("stdin must be a string".into()),
        };
        let args = match get("args") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "args must be an array of strings".to_string())?,
            Some(_) => return Err("args must be an array of strings".into()),
        };
        Ok(ExecuteRequest { language, version, files, stdin, args, body })
    }

    /// Piston's check of the utf8 main file, done after the runtime lookup.
    pub fn check_main_file(&self) -> Result<usize, String> {
        self.files
            .iter()
            .position(|f| f.encoding == Encoding::Utf8)
            .ok_or_else(|| "files must include at least one utf8 encoded file".to_string())
    }

    /// The requested value of a limit field: `None` for absent, 0, -1 (memory) or
    /// any other falsy value; an error for a non-number, a negative number or a
    /// value above `max`.
    pub fn limit(&self, field: &LimitField, max: u64) -> Result<Option<u64>, String> {
        let Some(v) = self.body.get(field.name) else { return Ok(None) };
        if !is_truthy(v) {
            return Ok(None);
        }
        let Some(n) = v.as_f64() else {
            return Err(format!("If specified, {} must be a number", field.name));
        };
        if field.kind == LimitKind::MemoryLimit && n == -1.0 {
            return Ok(None);
        }
        if n > max as f64 {
            return Err(format!("{} cannot exceed the configured limit of {max}", field.name));
        }
        if n < 0.0 {
            return Err(format!("{} must be non-negative", field.name));
        }
        let n = n.ceil() as u64;
        Ok((n > 0).then_some(n))
    }
}

/// One stage of an execute response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub stdout: String,
    pub stderr: String,
    /// evald captures the streams separately: `stdout` then `stderr`.
    pub output: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub message: Option<String>,
    /// null, `RE`, `SG`, `TO`, `OL`, `EL` or `XX`.
    pub status: Option<String>,
    pub cpu_time: u64,
    pub wall_time: u64,
    pub memory: u64,
}

/// `POST /api/v2/execute` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    pub language: String,
    pub version: String,
    pub run: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<Stage>,
}

/// Messages of the server on `/api/v2/connect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Runtime { language: String, version: String },
    Stage { stage: StageName },
    Data { stream: String, data: String },
    Exit { stage: StageName, code: Option<i32>, signal: Option<String> },
    Error { message: String },
}

/// Close codes of `/api/v2/connect`, with Piston's reasons.
pub mod close {
    pub const ALREADY_INITIALIZED: (u16, &str) = (4000, "Already Initialized");
    pub const INIT_TIMEOUT: (u16, &str) = (4001, "Initialization Timeout");
    pub const NOTIFIED_ERROR: (u16, &str) = (4002, "Notified Error");
    pub const NOT_INITIALIZED: (u16, &str) = (4003, "Not yet initialized");
    pub const STDIN_ONLY: (u16, &str) = (4004, "Can only write to stdin");
    pub const INVALID_SIGNAL: (u16, &str) = (4005, "Invalid signal");
    pub const JOB_COMPLETED: (u16, &str) = (4999, "Job Completed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ExecuteRequest, String> {
        ExecuteRequest::parse(v)
    }

    #[test]
    fn required_fields_in_pistons_order() {
        assert_eq!(parse(json!({})).expect_err("refused"), "language is required as a string");
        assert_eq!(parse(json!({"language": 1})).expect_err("refused"), "language is required as a string");
        assert_eq!(parse(json!({"language": "py"})).expect_err("refused"), "version is required as a string");
        assert_eq!(
            parse(json!({"language": "py", "version": "*"})).expect_err("refused"),
            "files is required as an array"
        );
        assert_eq!(
            parse(json!({"language": "py", "version": "*", "files": [{"content": "x"}, {}]})).expect_err("refused"),
            "files[1].content is required as a string"
        );
    }

    #[test]
    fn limits_follow_piston() {
        let r = parse(json!({"language": "py", "version": "*", "files": [],
            "run_timeout": "3", "compile_timeout": 0, "run_memory_limit": -1, "run_cpu_time": 99999, "compile_cpu_time": -5}))
        .expect("parses");
        let [cm, rm, ct, rt, cc, rc] = LIMIT_FIELDS;
        assert_eq!(r.limit(&rt, 3000).expect_err("refused"), "If specified, run_timeout must be a number");
        assert_eq!(r.limit(&ct, 3000), Ok(None));
        assert_eq!(r.limit(&rm, 3000), Ok(None));
        assert_eq!(r.limit(&cm, 3000), Ok(None));
        assert_eq!(r.limit(&rc, 3000).expect_err("refused"), "run_cpu_time cannot exceed the configured limit of 3000");
        assert_eq!(r.limit(&cc, 3000).expect_err("refused"), "compile_cpu_time must be non-negative");
    }
}
