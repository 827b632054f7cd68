//! Judge0's wire format: the stored submission, the 35 fields in column
//! order, decimals as strings, timestamps with milliseconds and `Z`, Ruby's
//! MIME base64, statuses.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Status ids and descriptions (1 to 14).
pub const STATUSES: [&str; 14] = [
    "In Queue",
    "Processing",
    "Accepted",
    "Wrong Answer",
    "Time Limit Exceeded",
    "Compilation Error",
    "Runtime Error (SIGSEGV)",
    "Runtime Error (SIGXFSZ)",
    "Runtime Error (SIGFPE)",
    "Runtime Error (SIGABRT)",
    "Runtime Error (NZEC)",
    "Runtime Error (Other)",
    "Internal Error",
    "Exec Format Error",
];

pub fn status_json(id: u8) -> Value {
    let description = STATUSES.get(usize::from(id).wrapping_sub(1)).copied().unwrap_or("Internal Error");
    json!({"id": id, "description": description})
}

/// Every field of a submission, in v1.13.1's column order.
pub const FIELDS: [&str; 35] = [
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
];

/// The fields returned when none are asked for.
pub const DEFAULT_FIELDS: [&str; 8] =
    ["token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status"];

/// Bytes stored as standard base64 in the record's JSON.
mod bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|t| base64::engine::general_purpose::STANDARD.decode(t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A stored submission: what was asked and, once run, what came of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Submission {
    pub token: String,
    #[serde(with = "bytes")]
    pub source_code: Option<Vec<u8>>,
    pub language_id: u32,
    pub language_name: String,
    #[serde(with = "bytes")]
    pub stdin: Option<Vec<u8>>,
    #[serde(with = "bytes")]
    pub expected_output: Option<Vec<u8>>,
    #[serde(with = "bytes")]
    pub stdout: Option<Vec<u8>>,
    #[serde(with = "bytes")]
    pub stderr: Option<Vec<u8>>,
    #[serde(with = "bytes")]
    pub compile_output: Option<Vec<u8>>,
    pub message: Option<String>,
    pub status_id: u8,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Seconds, as Judge0 prints them (already formatted).
    pub time: Option<String>,
    pub wall_time: Option<String>,
    pub memory: Option<u64>,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    pub number_of_runs: u32,
    pub cpu_time_limit: f64,
    pub cpu_extra_time: f64,
    pub wall_time_limit: f64,
    pub memory_limit: u64,
    pub stack_limit: u64,
    pub max_processes_and_or_threads: u32,
    pub enable_per_process_and_thread_time_limit: bool,
    pub enable_per_process_and_thread_memory_limit: bool,
    pub max_file_size: u64,
    pub compiler_options: Option<String>,
    pub command_line_arguments: Option<String>,
    pub redirect_stderr_to_stdout: bool,
    pub callback_url: Option<String>,
    #[serde(with = "bytes")]
    pub additional_files: Option<Vec<u8>>,
    pub enable_network: bool,
}

/// A decimal as Rails prints a BigDecimal: no trailing zeros, at least one
/// decimal (`0.002`, `5.0`).
pub fn decimal(v: f64) -> String {
    let mut s = format!("{v:.6}");
    while s.ends_with('0') && !s.ends_with(".0") {
        s.pop();
    }
    s
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the epoch (UTC).
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil(secs / 86_400);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", t / 3600, t / 60 % 60, t % 60, ms % 1000)
}

/// The date of a day number (days since 1970-01-01), proleptic Gregorian.
pub fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Ruby's `Base64.encode64`: a newline after every 60 characters and at
/// the end.
pub fn encode64(bytes: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Ruby's `Base64.decode64`: lenient, characters outside the alphabet are
/// skipped and padding is optional.
pub fn decode64(text: &str) -> Vec<u8> {
    let clean: String = text
        .chars()
        .take_while(|c| *c != '=')
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    // A lone trailing character carries no whole byte.
    let usable = clean.len() - usize::from(clean.len() % 4 == 1);
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(&clean[..usable]).unwrap_or_default()
}

/// The fields a request asked for: `None` is the default set; `Err` holds
/// the names that are not fields.
pub fn parse_fields(fields: Option<&str>) -> Result<Vec<&'static str>, String> {
    let Some(text) = fields.filter(|f| !f.is_empty()) else { return Ok(DEFAULT_FIELDS.to_vec()) };
    let asked: Vec<&str> = text.split(',').collect();
    if asked.contains(&"*") {
        return Ok(FIELDS.to_vec());
    }
    let invalid: Vec<&str> = asked.iter().copied().filter(|f| !FIELDS.contains(f)).collect();
    if !invalid.is_empty() {
        return Err(format!("invalid fields: [{}]", invalid.join(", ")));
    }
    Ok(FIELDS.iter().copied().filter(|f| asked.contains(f)).collect())
}

/// A JSON object whose keys keep their order (Judge0's column order and
/// validation order; `serde_json`'s map sorts them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ordered(pub Vec<(String, Value)>);

impl Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, &IdFirst(v))?;
        }
        m.end()
    }
}

/// Nested objects (`status`, `language`) with `id` first, as Judge0 writes
/// them (`{"id":3,"description":"Accepted"}`).
struct IdFirst<'a>(&'a Value);

impl Serialize for IdFirst<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            Value::Object(o) => {
                let mut m = s.serialize_map(Some(o.len()))?;
                let id = o.get_key_value("id");
                for (k, v) in id.into_iter().chain(o.iter().filter(|(k, _)| *k != "id")) {
                    m.serialize_entry(k, &IdFirst(v))?;
                }
                m.end()
            }
            Value::Array(a) => s.collect_seq(a.iter().map(IdFirst)),
            other => other.serialize(s),
        }
    }
}

impl Ordered {
    /// The same object as a `Value` (keys sorted: for comparisons).
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.iter().cloned().collect())
    }
}

/// Text that cannot go into JSON unencoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

impl Submission {
    /// The submission as Judge0 serialises it: `fields` in column order,
    /// text fields MIME-base64 when `base64` (else as UTF-8, or `NotUtf8`).
    pub fn render(&self, fields: &[&str], base64: bool) -> Result<Ordered, NotUtf8> {
        let text = |v: &Option<Vec<u8>>| -> Result<Value, NotUtf8> {
            match v {
                None => Ok(Value::Null),
                Some(b) if base64 => Ok(Value::String(encode64(b))),
                Some(b) => std::str::from_utf8(b).map(|s| Value::String(s.to_owned())).map_err(|_| NotUtf8),
            }
        };
        let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
        let mut out = Vec::new();
        for &f in FIELDS.iter().filter(|f| fields.contains(f)) {
            let v = match f {
                "source_code" => text(&self.source_code)?,
                "language_id" => json!(self.language_id),
                "stdin" => text(&self.stdin)?,
                "expected_output" => text(&self.expected_output)?,
                "stdout" => text(&self.stdout)?,
                "status_id" => json!(self.status_id),
                "created_at" => json!(timestamp(self.created_at_ms)),
                "finished_at" => opt(self.finished_at_ms.map(timestamp)),
                "time" => opt(self.time.clone()),
                "memory" => json!(self.memory),
                "stderr" => text(&self.stderr)?,
                "token" => json!(self.token),
                "number_of_runs" => json!(self.number_of_runs),
                "cpu_time_limit" => json!(decimal(self.cpu_time_limit)),
                "cpu_extra_time" => json!(decimal(self.cpu_extra_time)),
                "wall_time_limit" => json!(decimal(self.wall_time_limit)),
                "memory_limit" => json!(self.memory_limit),
                "stack_limit" => json!(self.stack_limit),
                "max_processes_and_or_threads" => json!(self.max_processes_and_or_threads),
                "enable_per_process_and_thread_time_limit" => json!(self.enable_per_process_and_thread_time_limit),
                "enable_per_process_and_thread_memory_limit" => {
                    json!(self.enable_per_process_and_thread_memory_limit)
                }
                "max_file_size" => json!(self.max_file_size),
                "compile_output" => text(&self.compile_output)?,
                "exit_code" => json!(self.exit_code),
                "exit_signal" => json!(self.exit_signal),
                "message" => match (&self.message, base64) {
                    (Some(m), true) => json!(encode64(m.as_bytes())),
                    (m, _) => json!(m),
                },
                "wall_time" => opt(self.wall_time.clone()),
                "compiler_options" => json!(self.compiler_options),
                "command_line_arguments" => json!(self.command_line_arguments),
                "redirect_stderr_to_stdout" => json!(self.redirect_stderr_to_stdout),
                "callback_url" => json!(self.callback_url),
                // Always base64, whatever `base64_encoded` says.
                "additional_files" => self.additional_files.as_deref().map_or(Value::Null, |b| json!(encode64(b))),
                "enable_network" => json!(self.enable_network),
                "status" => status_json(self.status_id),
                "language" => json!({"id": self.language_id, "name": self.language_name}),
                _ => continue,
            };
            out.push((f.to_owned(), v));
        }
        Ok(Ordered(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rails_and_ruby() {
        assert_eq!(
            [decimal(0.002), decimal(5.0), decimal(0.01), decimal(0.0), decimal(2.5)],
            ["0.002", "5.0", "0.01", "0.0", "2.5"]
        );
        assert_eq!(timestamp(1_712_122_851_306), "2024-04-03T05:40:51.306Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(encode64(b"hello, Judge0\n"), "aGVsbG8sIEp1ZGdlMAo=\n");
        let long = encode64(&[b'a'; 50]);
        assert_eq!(long.lines().map(str::len).collect::<Vec<_>>(), [60, 8]);
        assert!(long.ends_with('\n'));
        assert_eq!(decode64(&long), vec![b'a'; 50]);
        assert_eq!(decode64("aGVsbG8"), b"hello");
        assert_eq!(decode64("aGV\nsbG8=\n"), b"hello");
        assert_eq!(parse_fields(Some("stdout, stderr")), Err("invalid fields: [ stderr]".into()));
        assert_eq!(parse_fields(Some("stderr,stdout")), Ok(vec!["stdout", "stderr"]));
        assert_eq!(parse_fields(Some("x,*")).map(|f| f.len()), Ok(35));
        assert_eq!(parse_fields(None).map(|f| f.len()), Ok(8));
        let o = Ordered(vec![("status".into(), status_json(3))]);
        assert_eq!(serde_json::to_string(&o).ok().as_deref(), Some(r#"{"status":{"id":3,"description":"Accepted"}}"#));
    }
}
