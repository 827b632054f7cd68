//! The session WebSocket protocol (`GET /api/v1/sessions/{id}/ws`): every
//! message in both directions, typed, and the close codes.
//!
//! `docs/protocol.md` documents it and `docs/protocol.schema.json` is its
//! machine-readable schema; the tests of this module check these types
//! against that schema, and render the web client's close-code constants
//! (`web/src/close-codes.gen.js`) from [`close::ALL`].

use serde::{Deserialize, Serialize};

use crate::Verdict;

/// The sequence number of an event that changes what a terminal shows.
pub type Seq = u64;

/// What runs in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// Compile (if the language is compiled) and run the main file.
    Run,
    /// `bash` in the workspace.
    Shell,
    /// The language's REPL.
    Repl,
}

impl ProcessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::Run => "run",
            ProcessKind::Shell => "shell",
            ProcessKind::Repl => "repl",
        }
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Run {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cols: Option<u16>,
    },
    Shell {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cols: Option<u16>,
    },
    Repl {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cols: Option<u16>,
    },
    /// Bytes typed into the running process (UTF-8 of the string).
    Stdin {
        data: String,
    },
    /// End of input (Ctrl-D on the terminal).
    Eof,
    Resize {
        rows: u16,
        cols: u16,
    },
    /// `INT`, `TERM` or `KILL` (a `SIG` prefix is accepted).
    Signal {
        signal: String,
    },
    Ping,
}

/// A file or directory of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
}

/// How a process ended (the `exit` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub kind: ProcessKind,
    /// Never `wrong_answer` (sessions compare no output).
    pub status: Verdict,
    pub exit_code: Option<i32>,
    /// A signal name such as `SIGKILL`.
    pub signal: Option<String>,
    pub cpu_ms: u64,
    pub wall_ms: u64,
    pub memory_bytes: u64,
}

/// An event of a session: what every attached client sees, numbered, and
/// what a reconnecting client gets replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        kind: ProcessKind,
    },
    /// Base64 of the raw terminal bytes.
    Output {
        data: String,
    },
    Exit(Exit),
    Files {
        files: Vec<FileEntry>,
    },
}

impl Event {
    /// The message that carries this event as number `seq`.
    pub fn numbered(self, seq: Seq) -> ServerMessage {
        match self {
            Event::Started { kind } => ServerMessage::Started { seq, kind },
            Event::Output { data } => ServerMessage::Output { seq, data },
            Event::Exit(Exit { kind, status, exit_code, signal, cpu_ms, wall_ms, memory_bytes }) => {
                ServerMessage::Exit { seq, kind, status, exit_code, signal, cpu_ms, wall_ms, memory_bytes }
            }
            Event::Files { files } => ServerMessage::Files { seq, files },
        }
    }
}

/// Why a client request was not served (the `error` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A process already runs in this session.
    Busy,
    /// No process runs in this session.
    NotRunning,
    /// The language has no REPL.
    NoRepl,
    /// A field is out of range.
    BadRequest,
    /// The node is too busy to start a process now; retry.
    Overloaded,
    /// The node that ran the session's process is gone; the files are kept.
    ProcessLost,
    InternalError,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The first message after connecting; `seq` is the last so far (0: none).
    Hello {
        session: String,
        language: String,
        seq: Seq,
        running: Option<ProcessKind>,
    },
    Started {
        seq: Seq,
        kind: ProcessKind,
    },
    Output {
        seq: Seq,
        data: String,
    },
    Exit {
        seq: Seq,
        kind: ProcessKind,
        /// Never `wrong_answer` (sessions compare no output).
        status: Verdict,
        exit_code: Option<i32>,
        /// A signal name such as `SIGKILL`.
        signal: Option<String>,
        cpu_ms: u64,
        wall_ms: u64,
        memory_bytes: u64,
    },
    Files {
        seq: Seq,
        files: Vec<FileEntry>,
    },
    /// Events `from..=to` are gone from the replay buffer.
    Gap {
        from: Seq,
        to: Seq,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong,
    /// The node drains: reconnect (to any node) after this delay.
    Reconnect {
        delay_ms: u64,
    },
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error { code, message: message.into() }
    }

    /// The message as one JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `POST /api/v1/sessions` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// Language id or alias.
    pub language: String,
    #[serde(default)]
    pub files: Vec<NewFile>,
}

/// A file of a new session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFile {
    pub path: String,
    pub content: String,
    /// `None` (absent or null): utf8.
    #[serde(default)]
    pub encoding: Option<crate::v1::Encoding>,
}

/// `PATCH /api/v1/sessions/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    pub language: String,
}

/// `POST /api/v1/sessions/{id}/rename` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// A session as `GET /api/v1/sessions/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub language: String,
    pub running: Option<ProcessKind>,
    /// WebSocket clients attached now.
    pub clients: usize,
    /// Seconds until the session expires if nothing happens.
    pub expires_in_s: u64,
}

/// WebSocket close codes of the session protocol: the one list, from which
/// the web client's constants are generated.
pub mod close {
    /// A close code and what it means to a client.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CloseCode {
        pub code: u16,
        /// The constant's name in the web client.
        pub name: &'static str,
        pub meaning: &'static str,
    }

    pub const NORMAL: CloseCode = CloseCode { code: 1000, name: "NORMAL", meaning: "closed" };
    pub const BAD_MESSAGE: CloseCode = CloseCode { code: 4400, name: "BAD_MESSAGE", meaning: "malformed message" };
    pub const NOT_FOUND: CloseCode =
        CloseCode { code: 4404, name: "NOT_FOUND", meaning: "session not found (or expired)" };
    pub const IDLE: CloseCode = CloseCode { code: 4408, name: "IDLE", meaning: "idle timeout" };
    pub const LIFETIME: CloseCode =
        CloseCode { code: 4409, name: "LIFETIME", meaning: "the session reached its maximum lifetime" };
    pub const MOVED: CloseCode =
        CloseCode { code: 4410, name: "MOVED", meaning: "the session moved to another node; reconnect" };
    pub const TOO_MANY: CloseCode =
        CloseCode { code: 4429, name: "TOO_MANY", meaning: "too many sessions or clients on this node" };
    pub const SHUTDOWN: CloseCode =
        CloseCode { code: 4503, name: "SHUTDOWN", meaning: "the node is shutting down or draining" };

    /// Every close code a session WebSocket ends with.
    pub const ALL: [CloseCode; 8] = [NORMAL, BAD_MESSAGE, NOT_FOUND, IDLE, LIFETIME, MOVED, TOO_MANY, SHUTDOWN];

    /// `web/src/close-codes.gen.js`: the codes as the web client imports them.
    pub fn web_module() -> String {
        let mut out = String::from(
            "// @ts-check\n\
             // Generated from crates/proto/src/session.rs (close::ALL) by its tests;\n\
             // regenerate with `EVALD_UPDATE_GENERATED=1 cargo test -p evald-proto`. Do not edit.\n\n\
             /** The session WebSocket's close codes. */\nexport const CLOSE = Object.freeze({\n",
        );
        for c in ALL {
            out.push_str(&format!("  {}: {},\n", c.name, c.code));
        }
        out.push_str("});\n\n/** What each close code means, for messages to the user. */\nexport const CLOSE_MEANINGS = Object.freeze({\n");
        for c in ALL {
            out.push_str(&format!("  {}: {:?},\n", c.code, c.meaning));
        }
        out.push_str("});\n");
        out
    }
}

#[cfg(test)]
mod tests;
