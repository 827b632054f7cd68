//! Log set-up: `tracing` lines on stderr, filtered by `EVALD_LOG` (default
//! `default`: `info` for the server, `error` for commands whose stderr is
//! the program's), as text or as JSON lines.
//!
//! Text lines are coloured only when stderr is a terminal and `NO_COLOR` is
//! unset or empty (<https://no-color.org>): a file, a pipe or the journal
//! gets plain text. JSON lines are never coloured.

use std::io::IsTerminal;

/// Installs the global subscriber.
pub fn init(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Whether text log lines are coloured.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
