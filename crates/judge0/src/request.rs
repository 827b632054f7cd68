//! A submission request: Judge0's permitted fields, cast as Rails casts
//! them (strings for numbers, floats for integers, Rails' booleans), its
//! defaults, and its validations with their exact messages, in the order
//! the model declares them.

use serde_json::{Map, Value};

use crate::languages::{J0Language, MULTI_FILE};
use crate::wire::{decode64, Ordered, Submission};
use crate::Judge0Config;

/// Judge0 CE v1.13.1's defaults and maximums (`judge0.conf`).
pub mod defaults {
    pub const CPU_TIME_LIMIT: f64 = 5.0;
    pub const MAX_CPU_TIME_LIMIT: f64 = 15.0;
    pub const CPU_EXTRA_TIME: f64 = 1.0;
    pub const MAX_CPU_EXTRA_TIME: f64 = 5.0;
    pub const WALL_TIME_LIMIT: f64 = 10.0;
    pub const MAX_WALL_TIME_LIMIT: f64 = 20.0;
    pub const MEMORY_LIMIT: u64 = 128_000;
    pub const MAX_MEMORY_LIMIT: u64 = 512_000;
    pub const STACK_LIMIT: u64 = 64_000;
    pub const MAX_STACK_LIMIT: u64 = 128_000;
    pub const MAX_PROCESSES_AND_OR_THREADS: u64 = 60;
    pub const MAX_MAX_PROCESSES_AND_OR_THREADS: u64 = 120;
    pub const MAX_FILE_SIZE: u64 = 1024;
    pub const MAX_MAX_FILE_SIZE: u64 = 4096;
    pub const NUMBER_OF_RUNS: u64 = 1;
    pub const MAX_NUMBER_OF_RUNS: u64 = 20;
    pub const MAX_EXTRACT_SIZE: u64 = 10_240;
}

use defaults::*;

/// Validation errors: field → messages, in the order they were found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Errors(pub Vec<(&'static str, Vec<String>)>);

impl Errors {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        match self.0.iter_mut().find(|(f, _)| *f == field) {
            Some((_, m)) => m.push(message.into()),
            None => self.0.push((field, vec![message.into()])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> Ordered {
        Ordered(self.0.iter().map(|(f, m)| ((*f).to_owned(), Value::from(m.clone()))).collect())
    }
}

/// A scalar as Rails sees it: `None` when absent, null or not a scalar
/// (Rails' strong parameters drop arrays and objects).
fn scalar<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
}

fn text(body: &Map<String, Value>, key: &str) -> Option<String> {
    match scalar(body, key)? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A number field: `Ok(None)` when absent or blank, `Err` when not a number.
fn number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, ()> {
    match scalar(body, key) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Some).ok_or(()),
        Some(_) => Err(()),
    }
}

/// Rails' boolean cast: false for `false`, `0`, `"0"`, `"f"`, `"F"`,
/// `"false"`, `"FALSE"`, `"off"`, `"OFF"`; blank is absent; anything else
/// is true.
fn boolean(body: &Map<String, Value>, key: &str) -> Option<bool> {
    match scalar(body, key)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(!matches!(s.as_str(), "0" | "f" | "F" | "false" | "FALSE" | "off" | "OFF")),
        _ => None,
    }
}

/// Ruby's `Float#to_s` for a validation count: `15.0`, `2.5`.
fn float_count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

struct Range<'a> {
    errors: &'a mut Errors,
}

impl Range<'_> {
    /// A decimal field: default when absent, `is not a number`, bounds.
    fn decimal(&mut self, body: &Map<String, Value>, key: &'static str, default: f64, min: Min, max: f64) -> f64 {
        let v = match number(body, key) {
            Err(()) => {
                self.errors.add(key, "is not a number");
                return default;
            }
            Ok(v) => v.unwrap_or(default),
        };
        self.bounds(key, v, min, &float_count(max), max);
        v
    }

    /// An integer field: floats are truncated, as Rails casts them.
    fn integer(&mut self, body: &Map<String, Value>, key: &'static str, default: u64, min: Min, max: u64) -> u64 {
        let v = match number(body, key) {
            Err(()) => {
                self.errors.add(key, "is not a number");
                return default;
            }
            Ok(v) => v.map_or(default as f64, f64::trunc),
        };
        self.bounds(key, v, min, &max.to_string(), max as f64);
        v.max(0.0) as u64
    }

    fn bounds(&mut self, key: &'static str, v: f64, min: Min, max_text: &str, max: f64) {
        match min {
            Min::AtLeast(m) if v < m as f64 => self.errors.add(key, format!("must be greater than or equal to {m}")),
            Min::Above(m) if v <= m as f64 => self.errors.add(key, format!("must be greater than {m}")),
            _ => {}
        }
        if v > max {
            self.errors.add(key, format!("must be less than or equal to {max_text}"));
        }
    }
}

#[derive(Clone, Copy)]
enum Min {
    AtLeast(u64),
    Above(u64),
}

/// The parts of a request that are not stored fields.
pub struct Parsed {
    pub submission: Submission,
    /// The language the submission runs in (`None` for the multi-file one).
    pub language: Option<J0Language>,
}

/// Parses and validates one submission. `base64` decodes `source_code`,
/// `stdin` and `expected_output`; `additional_files` is always decoded.
pub fn parse(
    body: &Map<String, Value>,
    base64: bool,
    languages: &[J0Language],
    config: &Judge0Config,
) -> Result<Parsed, Errors> {
    let mut errors = Errors::default();
    let decoded = |key: &str| text(body, key).map(|t| if base64 { decode64(&t) } else { t.into_bytes() });
    let source_code = decoded("source_code");
    let stdin = decoded("stdin");
    let expected_output = decoded("expected_output");
    let language_id_raw = number(body, "language_id");
    let language_id = language_id_raw.ok().flatten().map(|v| v.trunc() as i64);
    let language = language_id.and_then(|id| languages.iter().find(|l| i64::from(l.id) == id)).cloned();
    let multi_file = language.as_ref().is_some_and(|l| l.id == MULTI_FILE);

    // source_code
    let blank = |v: &Option<Vec<u8>>| v.as_ref().is_none_or(|b| b.iter().all(u8::is_ascii_whitespace));
    if multi_file {
        if !blank(&source_code) {
            errors.add("source_code", "must be blank");
        }
    } else if blank(&source_code) {
        errors.add("source_code", "can't be blank");
    }
    // language_id
    if language_id_raw.is_err() {
        errors.add("language_id", "is not a number");
    } else if language_id.is_none() {
        errors.add("language_id", "can't be blank");
    }
    let shown_id = language_id.map(|i| i.to_string()).unwrap_or_default();
    match &language {
        None => errors.add("language_id", format!("language with id {shown_id} doesn't exist")),
        Some(l) if l.archived => {
            errors.add("language_id", format!("language with id {shown_id} is archived and cannot be used anymore"))
        }
        Some(_) => {}
    }
    // compiler_options, command_line_arguments
    let compiler_options = text(body, "compiler_options");
    if let Some(o) = &compiler_options {
        if o.chars().count() > 512 {
            errors.add("compiler_options", "is too long (maximum is 512 characters)");
        }
        if !o.is_empty() {
            if let Some(l) = &language {
                if !l.compiled() && l.id != MULTI_FILE {
                    errors.add("compiler_options", "setting compiler options is only allowed for compiled languages");
                }
            }
        }
    }
    let command_line_arguments = text(body, "command_line_arguments");
    if command_line_arguments.as_ref().is_some_and(|a| a.chars().count() > 512) {
        errors.add("command_line_arguments", "is too long (maximum is 512 characters)");
    }
    let mut r = Range { errors: &mut errors };
    let cpu_time_limit = r.decimal(body, "cpu_time_limit", CPU_TIME_LIMIT, Min::AtLeast(0), MAX_CPU_TIME_LIMIT);
    let cpu_extra_time = r.decimal(body, "cpu_extra_time", CPU_EXTRA_TIME, Min::AtLeast(0), MAX_CPU_EXTRA_TIME);
    let wall_time_limit = r.decimal(body, "wall_time_limit", WALL_TIME_LIMIT, Min::AtLeast(1), MAX_WALL_TIME_LIMIT);
    let memory_limit = r.integer(body, "memory_limit", MEMORY_LIMIT, Min::AtLeast(2048), MAX_MEMORY_LIMIT);
    let stack_limit = r.integer(body, "stack_limit", STACK_LIMIT, Min::AtLeast(0), MAX_STACK_LIMIT);
    let processes = r.integer(
        body,
        "max_processes_and_or_threads",
        MAX_PROCESSES_AND_OR_THREADS,
        Min::Above(0),
        MAX_MAX_PROCESSES_AND_OR_THREADS,
    );
    let per_process_time = boolean(body, "enable_per_process_and_thread_time_limit").unwrap_or(false);
    let per_process_memory = boolean(body, "enable_per_process_and_thread_memory_limit").unwrap_or(false);
    let max_file_size = r.integer(body, "max_file_size", MAX_FILE_SIZE, Min::AtLeast(0), MAX_MAX_FILE_SIZE);
    let number_of_runs = r.integer(body, "number_of_runs", NUMBER_OF_RUNS, Min::Above(0), MAX_NUMBER_OF_RUNS);
    let enable_network = boolean(body, "enable_network").unwrap_or(false);
    if enable_network && !config.allow_enable_network {
        errors.add("enable_network", "enabling network is not allowed");
    }
    let callback_url = text(body, "callback_url").filter(|u| !u.is_empty());
    if callback_url.is_some() && !config.enable_callbacks {
        errors.add("callback_url", "setting callback is not allowed");
    }
    let additional_files = text(body, "additional_files").filter(|t| !t.is_empty()).map(|t| decode64(&t));
    if multi_file && additional_files.is_none() {
        errors.add("additional_files", "can't be blank");
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let language = language.filter(|l| l.id != MULTI_FILE);
    let (id, name) = match (&language, multi_file) {
        (Some(l), _) => (l.id, l.name.clone()),
        (None, _) => (MULTI_FILE, "Multi-file program".to_owned()),
    };
    let submission = Submission {
        token: uuid::Uuid::new_v4().to_string(),
        source_code,
        language_id: id,
        language_name: name,
        stdin,
        expected_output,
        status_id: 1,
        number_of_runs: number_of_runs as u32,
        cpu_time_limit,
        cpu_extra_time,
        wall_time_limit,
        memory_limit,
        stack_limit,
        max_processes_and_or_threads: processes as u32,
        enable_per_process_and_thread_time_limit: per_process_time,
        enable_per_process_and_thread_memory_limit: per_process_memory,
        max_file_size,
        compiler_options,
        command_line_arguments,
        redirect_stderr_to_stdout: boolean(body, "redirect_stderr_to_stdout").unwrap_or(false),
        callback_url,
        additional_files,
        enable_network,
        ..Submission::default()
    };
    Ok(Parsed { submission, language })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn langs() -> Vec<J0Language> {
        vec![
            J0Language { id: 71, name: "Python (3.11.2)".into(), language: None, archived: false },
            J0Language { id: 89, name: "Multi-file program".into(), language: None, archived: false },
            J0Language { id: 3, name: "Basic (fbc 1.05.0)".into(), language: None, archived: true },
        ]
    }

    fn errors(body: Value) -> Value {
        let Value::Object(m) = body else { panic!("object") };
        match parse(&m, false, &langs(), &Judge0Config::default()) {
            Ok(_) => Value::Null,
            Err(e) => e.to_json().to_value(),
        }
    }

    #[test]
    fn messages_are_rails_messages() {
        assert_eq!(
            errors(json!({})),
            json!({"source_code": ["can't be blank"], "language_id": ["can't be blank", "language with id  doesn't exist"]})
        );
        assert_eq!(
            errors(json!({"source_code": "x", "language_id": 3})),
            json!({"language_id": ["language with id 3 is archived and cannot be used anymore"]})
        );
        assert_eq!(
            errors(json!({"source_code": "x", "language_id": "71", "cpu_time_limit": 16, "wall_time_limit": 0.5,
                "memory_limit": 1000, "max_processes_and_or_threads": 0, "number_of_runs": "abc"})),
            json!({"cpu_time_limit": ["must be less than or equal to 15.0"],
                "wall_time_limit": ["must be greater than or equal to 1"],
                "memory_limit": ["must be greater than or equal to 2048"],
                "max_processes_and_or_threads": ["must be greater than 0"],
                "number_of_runs": ["is not a number"]})
        );
        assert_eq!(
            errors(json!({"source_code": "x", "language_id": 71, "memory_limit": 600000, "compiler_options": "-O2"})),
            json!({"compiler_options": ["setting compiler options is only allowed for compiled languages"],
                "memory_limit": ["must be less than or equal to 512000"]})
        );
        assert_eq!(
            errors(json!({"source_code": "x", "language_id": 89})),
            json!({"source_code": ["must be blank"], "additional_files": ["can't be blank"]})
        );
    }

    #[test]
    fn casts_are_lenient() {
        let Value::Object(m) = json!({"source_code": "cHJpbnQoMSk=", "language_id": 71.0, "memory_limit": 128000.0,
            "redirect_stderr_to_stdout": "t", "enable_network": "off", "wall_time_limit": "2.5"})
        else {
            panic!("object")
        };
        let p = parse(&m, true, &langs(), &Judge0Config::default()).expect("valid");
        let s = p.submission;
        assert_eq!(s.source_code.as_deref(), Some(&b"print(1)"[..]));
        assert_eq!((s.language_id, s.memory_limit, s.wall_time_limit), (71, 128_000, 2.5));
        assert!(s.redirect_stderr_to_stdout && !s.enable_network);
        assert_eq!((s.cpu_time_limit, s.stack_limit, s.max_file_size, s.number_of_runs), (5.0, 64_000, 1024, 1));
    }
}
