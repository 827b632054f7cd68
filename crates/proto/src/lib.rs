//! Wire types of evald's HTTP APIs, with no behaviour beyond (de)serialising
//! and the field checks that are part of a protocol's contract.
//!
//! - [`v1`]: the native API under `/api/v1` (documented by the OpenAPI
//!   document the server serves at `/api/v1/openapi.json`).
//! - [`piston`]: Piston v2 under `/api/v2`, byte-for-byte compatible with
//!   Piston 3.1.1 for its existing clients, including its error messages.
//! - [`session`]: the session WebSocket protocol and its close codes.
//! - [`json`]: request bodies read strictly (structs from objects only,
//!   integers as JSON Schema has them).
//! - [`path`]: the path rule of workspace files, shared by every API and
//!   enforced again by the sandbox.
//!
//! Architecture invariant: this crate knows neither HTTP nor the engine; the
//! server maps these types to engine calls.

#![forbid(unsafe_code)]

pub mod json;
pub mod path;
pub mod piston;
pub mod session;
pub mod v1;

use serde::{Deserialize, Serialize};

/// The verdict of a compile stage, a test case or a session's process: a
/// closed set, the same in every native protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    CompileError,
    RuntimeError,
    TimeLimitCpu,
    TimeLimitWall,
    MemoryLimit,
    OutputLimit,
    /// The run succeeded but printed something other than expected.
    WrongAnswer,
    InternalError,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::CompileError => "compile_error",
            Verdict::RuntimeError => "runtime_error",
            Verdict::TimeLimitCpu => "time_limit_cpu",
            Verdict::TimeLimitWall => "time_limit_wall",
            Verdict::MemoryLimit => "memory_limit",
            Verdict::OutputLimit => "output_limit",
            Verdict::WrongAnswer => "wrong_answer",
            Verdict::InternalError => "internal_error",
        }
    }
}
