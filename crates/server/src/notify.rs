//! The systemd notification protocol (`sd_notify`), for `Type=notify`
//! units: one datagram of `KEY=value` lines to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`).
//! Without that variable (not started by systemd) nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` to the service manager; `Ok(false)` when not run under one.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    let addr = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if socket.starts_with('/') => SocketAddr::from_pathname(&socket)?,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not a socket address")),
    };
    let datagram = UnixDatagram::unbound()?;
    datagram.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// The node serves: the sandbox, its zygote and the listeners are up.
pub(crate) fn ready() {
    log(notify(&format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id())));
}

/// The node drains and stops; the stop may take `bound` from now (the
/// service manager extends its stop timeout to that, whatever
/// `TimeoutStopSec=` says).
pub(crate) fn stopping(bound: Duration) {
    let usec = bound.as_micros();
    log(notify(&format!("STOPPING=1\nEXTEND_TIMEOUT_USEC={usec}\nSTATUS=draining")));
}

fn log(result: io::Result<bool>) {
    match result {
        Ok(true) => tracing::debug!("service manager notified"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify the service manager"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("test step");
        // The variable is process-wide; this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1").expect("test step"));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("test step");
        assert_eq!(&buf[..n], b"READY=1");
        std::env::set_var("NOTIFY_SOCKET", "relative");
        assert_eq!(notify("READY=1").expect_err("refused").kind(), io::ErrorKind::InvalidInput);
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").expect("test step"));
    }
}
