//! Log set-up: `tracing` lines on stderr, filtered by `EVALD_LOG` (default
//! `default`: `info` for the server, `error` for commands whose stderr is
//! the program's), as text or as JSON lines.

/// Installs the global subscriber.
pub fn init(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
