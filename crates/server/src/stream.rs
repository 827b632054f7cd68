//! Drives a [`Running`] box from async code: stdin from a channel, stdout
//! and stderr to a channel as they arrive (capped), signals, limits.
//!
//! The box's descriptors are non-blocking already; they are registered with
//! the runtime's reactor through [`AsyncFd`], and so is a duplicate of the
//! box's pidfd (readable once the box's init exited). Each read or write
//! happens synchronously inside `try_io`, so cancelling a pending branch of
//! the `select!` never loses data. `Running::wait` is called only once the
//! pidfd is readable, when it no longer blocks (still on a blocking thread,
//! as it reads cgroup files).

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Duration;

use evald_sandbox::{Outcome, Running};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// What the client asks of the running program.
#[derive(Debug)]
pub enum Control {
    Stdin(Vec<u8>),
    /// Close stdin once the buffered bytes are written.
    Eof,
    Signal(i32),
}

/// Output of the program, in arrival order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// The outcome with the output truncation flags filled in.
pub struct Streamed {
    pub outcome: Outcome,
}

type Fd = Option<AsyncFd<File>>;

async fn read_some(fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
    let Some(fd) = fd else { return std::future::pending().await };
    loop {
        let mut guard = fd.readable().await?;
        if let Ok(r) = guard.try_io(|f| f.get_ref().read(buf)) {
            return r;
        }
    }
}

async fn write_some(fd: &Fd, data: &[u8]) -> io::Result<usize> {
    let Some(fd) = fd else { return std::future::pending().await };
    loop {
        let mut guard = fd.writable().await?;
        if let Ok(r) = guard.try_io(|f| f.get_ref().write(data)) {
            return r;
        }
    }
}

fn async_fd(fd: Option<std::os::fd::OwnedFd>) -> io::Result<Fd> {
    fd.map(evald_sandbox::asyncio::register).transpose()
}

/// Stops reading control messages after the box ends; a closed control
/// channel (the client left) kills the box.
pub async fn drive(
    mut running: Running,
    output_cap: u64,
    initial_stdin: Vec<u8>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    output: &mpsc::UnboundedSender<Output>,
) -> io::Result<Streamed> {
    let mut stdin = async_fd(running.take_stdin())?;
    let mut stdout = async_fd(running.take_stdout())?;
    let mut stderr = async_fd(running.take_stderr())?;
    let pidfd = evald_sandbox::asyncio::register(running.pidfd().try_clone_to_owned()?)?;
    let mut pending: Vec<u8> = initial_stdin;
    let mut eof = false;
    let mut control_open = true;
    let mut exited = false;
    let mut written = [0u64; 2];
    let mut truncated = [false; 2];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf_out = vec![0u8; 64 << 10];
    let mut buf_err = vec![0u8; 64 << 10];
    // After the box ended, the pipes must reach EOF at once (every writer
    // is gone); this bounds the wait should they not.
    let drain_deadline = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(drain_deadline);
    loop {
        if eof && pending.is_empty() {
            stdin = None;
        }
        if exited && stdout.is_none() && stderr.is_none() {
            break;
        }
        enum Ev {
            Read(usize, io::Result<usize>),
            Wrote(io::Result<usize>),
            Exited,
            Tick,
            Control(Option<Control>),
            DrainTimeout,
        }
        let ev = tokio::select! {
            r = read_some(&stdout, &mut buf_out) => Ev::Read(0, r),
            r = read_some(&stderr, &mut buf_err) => Ev::Read(1, r),
            r = write_some(&stdin, &pending), if !pending.is_empty() => Ev::Wrote(r),
            r = pidfd.readable(), if !exited => { drop(r); Ev::Exited }
            _ = tick.tick(), if !exited => Ev::Tick,
            c = control.recv(), if control_open && !exited => Ev::Control(c),
            () = &mut drain_deadline, if exited => Ev::DrainTimeout,
        };
        match ev {
            Ev::Read(i, r) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        if i == 0 {
                            stdout = None
                        } else {
                            stderr = None
                        }
                        continue;
                    }
                    Ok(n) => n,
                };
                let buf = if i == 0 { &buf_out[..n] } else { &buf_err[..n] };
                let room = output_cap.saturating_sub(written[i]);
                let keep = (n as u64).min(room) as usize;
                written[i] += keep as u64;
                if keep > 0 {
                    let chunk = buf[..keep].to_vec();
                    let _ = output.send(if i == 0 { Output::Stdout(chunk) } else { Output::Stderr(chunk) });
                }
                if keep < n {
                    truncated[i] = true;
                    running.output_limit_hit();
                    if i == 0 {
                        stdout = None
                    } else {
                        stderr = None
                    }
                }
            }
            Ev::Wrote(Ok(n)) => {
                pending.drain(..n);
            }
            Ev::Wrote(Err(_)) => {
                // The program closed its stdin (EPIPE): drop what is left.
                pending.clear();
                stdin = None;
            }
            Ev::Exited => {
                exited = true;
                stdin = None;
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            Ev::Tick => {
                running.check_limits();
            }
            Ev::Control(None) => {
                control_open = false;
                running.kill();
            }
            Ev::Control(Some(Control::Stdin(bytes))) => {
                if stdin.is_some() && !eof {
                    pending.extend_from_slice(&bytes);
                }
            }
            Ev::Control(Some(Control::Eof)) => eof = true,
            Ev::Control(Some(Control::Signal(s))) => {
                if let Err(e) = running.signal(s) {
                    tracing::debug!(error = %e, "signal not delivered");
                }
            }
            Ev::DrainTimeout => {
                tracing::warn!("output pipes still open after the box ended");
                break;
            }
        }
    }
    drop((stdin, stdout, stderr, pidfd));
    let mut outcome = tokio::task::spawn_blocking(move || running.wait()).await.map_err(io::Error::other)?;
    outcome.stdout_truncated = truncated[0];
    outcome.stderr_truncated = truncated[1];
    Ok(Streamed { outcome })
}

/// Turns byte chunks into text without splitting a UTF-8 sequence across
/// messages: an incomplete sequence at the end waits for the next chunk.
#[derive(Default)]
pub struct Utf8Chunker {
    carry: Vec<u8>,
}

impl Utf8Chunker {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.carry) {
                Ok(s) => {
                    out.push_str(s);
                    self.carry.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.carry[..valid]));
                    match e.error_len() {
                        None => {
                            self.carry.drain(..valid);
                            return out;
                        }
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.carry.drain(..valid + len);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left, lossily.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_sequences_are_not_split() {
        let mut c = Utf8Chunker::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), "a");
        assert_eq!(c.push(&[e[1], b'b']), "éb");
        assert_eq!(c.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(c.push(&[e[0]]), "");
        assert_eq!(c.finish(), "\u{fffd}");
    }
}
