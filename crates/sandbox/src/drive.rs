//! The one loop that runs a box to its end: [`Running::drive`].
//!
//! It feeds standard input (given bytes, then what a client sends),
//! passes output to a [`Sink`] as it arrives (capped at the output limit),
//! applies a client's [`Control`]s, enforces the wall and CPU limits when
//! a check is due (and sleeps otherwise), and returns the outcome as soon
//! as the box's init reports the program's end. Batch runs
//! ([`crate::Sandbox::run`]) use it on a per-thread runtime, the server and
//! sessions on their own.
//!
//! Every descriptor is non-blocking and registered with the runtime's
//! reactor; each read or write happens synchronously within one poll of
//! the loop, so nothing is lost when the loop's future is dropped (which
//! kills the box: see `Drop for Running`). The box's init holds its own
//! copies of stdout and stderr until it has reported, so a box's end is
//! one wake-up: the report, after which the output is read without
//! waiting.

use std::cell::{Cell, OnceCell};
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::asyncio::watch;
use crate::launch::{InitReport, SmallFrame};
use crate::outcome::Outcome;
use crate::running::{Finished, Running};

/// What a client asks of a running box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Bytes for the program's standard input, written after everything
    /// sent before.
    Stdin(Vec<u8>),
    /// End of input once everything before it is written: the stdin pipe
    /// is closed; on a terminal `^D` (0x04) is written.
    Eof,
    /// A signal for the program's process group.
    Signal(i32),
    /// A new terminal size; ignored without a terminal.
    Resize { rows: u16, cols: u16 },
    /// Kill the box.
    Kill,
}

/// Where output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A terminal: stdout and stderr together.
    Terminal,
}

/// Receives a box's output as it arrives, already capped at the output
/// limit. `Send`, since a driven box may move between a runtime's workers.
pub trait Sink: Send {
    fn output(&mut self, stream: Stream, bytes: &[u8]);
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        (**self).output(stream, bytes);
    }
}

/// A [`Sink`] that keeps everything (runs to completion); a terminal's
/// output goes to `stdout`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Capture {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Sink for Capture {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout | Stream::Terminal => self.stdout.extend_from_slice(bytes),
            Stream::Stderr => self.stderr.extend_from_slice(bytes),
        }
    }
}

/// How long the output may stay open once the init ended without a report
/// (every writer should be gone by then).
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Largest read from a box's output at once.
const READ_CHUNK: usize = 64 << 10;

/// Largest write to a box's input at once.
const WRITE_CHUNK: usize = 64 << 10;

/// Reads of one stream, or control messages, in one turn of the loop
/// before the other sources get theirs.
const PER_TURN: usize = 16;

/// Reads of one stream once the program ended: what is there already.
const READS_AFTER_END: usize = 64;

impl Running {
    /// Drives the box to its end and returns the outcome.
    ///
    /// `stdin` is written first, then the bytes of each [`Control::Stdin`]
    /// in order; writes never block the loop, and what is left when the
    /// program closes its input is dropped. With `control: None` (a batch
    /// run) the stdin pipe is closed once `stdin` is written; with a
    /// channel, a [`Control::Eof`] closes it, and the box is killed when
    /// every sender is gone (the client left).
    ///
    /// Output goes to `sink`, at most `limits.output_bytes` per stream (a
    /// terminal's one stream counts once); more kills the box with the
    /// `output_limit` verdict and sets the stream's `*_truncated` flag. The
    /// outcome is returned once the init reports the program's end, with
    /// what was already written read without waiting. `Outcome::stdout`
    /// and `stderr` are left empty (a [`Capture`] caller moves them in);
    /// evald's own message when the program cannot be executed goes to
    /// `sink` on [`Stream::Stderr`] ([`Stream::Terminal`] with a terminal).
    ///
    /// Reading the box's accounting and killing it are short, blocking
    /// file-system calls made in place.
    pub async fn drive(
        mut self,
        stdin: Vec<u8>,
        mut control: Option<&mut mpsc::Receiver<Control>>,
        sink: &mut impl Sink,
    ) -> Outcome {
        let mut driver = match Driver::new(&mut self, stdin, control.is_none()) {
            Ok(driver) => driver,
            Err(e) => {
                self.kill();
                self.finish();
                return Outcome::internal(format!("watching the box: {e}"));
            }
        };
        let mut sleep = pin!(tokio::time::sleep(self.next_check()));
        let end = poll_fn(|cx| driver.poll_live(cx, &mut self, &mut control, &mut *sink, sleep.as_mut())).await;
        match end {
            End::Reported(report) => {
                self.report = Some(report);
                driver.read_left(&mut self, &mut *sink);
            }
            End::InitGone => driver.drain(&mut self, &mut *sink, sleep.as_mut()).await,
        }
        let Finished { mut outcome, notice } = self.finish();
        if let Some(text) = notice {
            sink.output(if driver.pty { Stream::Terminal } else { Stream::Stderr }, &text);
        }
        outcome.stdout_truncated = driver.truncated[0];
        outcome.stderr_truncated = driver.truncated[1];
        outcome
    }
}

/// How the live phase of a box ended.
enum End {
    /// The init reported the program's end (or a failure to start it).
    Reported(InitReport),
    /// The init's socket closed without a report: it was killed.
    InitGone,
}

/// One output stream being read.
struct Output {
    fd: AsyncFd<OwnedFd>,
    stream: Stream,
    /// Bytes passed to the sink.
    kept: u64,
}

/// The state of one [`Running::drive`].
struct Driver {
    /// Stdout and stderr, or the terminal alone (first).
    outputs: [Option<Output>; 2],
    /// The stdin pipe; with a terminal, input goes to `outputs[0]`.
    stdin: Option<AsyncFd<OwnedFd>>,
    pty: bool,
    /// Input not written yet: `pending[written..]`.
    pending: Vec<u8>,
    written: usize,
    /// Close the stdin pipe once `pending` is written.
    eof: bool,
    control_open: bool,
    /// The wall and CPU limits are still watched (no limit was hit yet).
    limits_on: bool,
    truncated: [bool; 2],
    cap: u64,
    /// Read buffer (its spare capacity), from [`BUFFER`] and back there.
    buf: Vec<u8>,
    /// The init's socket and the report read so far.
    status: AsyncFd<OwnedFd>,
    report: SmallFrame,
}

impl Driver {
    fn new(running: &mut Running, stdin: Vec<u8>, batch: bool) -> io::Result<Driver> {
        let status = running.status_read.take().ok_or_else(|| io::Error::other("the box was already driven"))?;
        let status = watch(status, Interest::READABLE)?;
        let mut outputs = [None, None];
        let mut input = None;
        let pty = match running.pty.take() {
            Some(master) => {
                let fd = watch(master, Interest::READABLE | Interest::WRITABLE)?;
                outputs[0] = Some(Output { fd, stream: Stream::Terminal, kept: 0 });
                true
            }
            None => {
                for (i, (fd, stream)) in
                    [(running.stdout.take(), Stream::Stdout), (running.stderr.take(), Stream::Stderr)]
                        .into_iter()
                        .enumerate()
                {
                    if let Some(fd) = fd {
                        outputs[i] = Some(Output { fd: watch(fd, Interest::READABLE)?, stream, kept: 0 });
                    }
                }
                if let Some(fd) = running.stdin.take() {
                    // A batch run with nothing to write closes stdin now.
                    if !(batch && stdin.is_empty()) {
                        input = Some(watch(fd, Interest::WRITABLE)?);
                    }
                }
                false
            }
        };
        Ok(Driver {
            outputs,
            stdin: input,
            pty,
            pending: stdin,
            written: 0,
            eof: batch,
            control_open: !batch,
            limits_on: true,
            truncated: [false; 2],
            cap: running.limits.output_bytes,
            buf: take_buffer(),
            status,
            report: SmallFrame::default(),
        })
    }

    /// One turn of the live phase: controls, input, output, the init's
    /// report, the limits.
    fn poll_live(
        &mut self,
        cx: &mut Context<'_>,
        running: &mut Running,
        control: &mut Option<&mut mpsc::Receiver<Control>>,
        sink: &mut dyn Sink,
        mut sleep: Pin<&mut Sleep>,
    ) -> Poll<End> {
        let mut busy = false;
        if let (Some(rx), true) = (control.as_mut(), self.control_open) {
            busy |= self.poll_control(cx, rx, running);
        }
        self.poll_write(cx);
        for i in 0..self.outputs.len() {
            busy |= self.poll_read(i, cx, running, sink);
        }
        if let Some(end) = self.poll_report(cx) {
            return Poll::Ready(end);
        }
        while self.limits_on && sleep.as_mut().poll(cx).is_ready() {
            if running.check_limits().is_some() {
                self.limits_on = false;
            } else {
                sleep.as_mut().reset((Instant::now() + running.next_check()).into());
            }
        }
        if busy {
            // More is waiting; let the other sources have their turn first.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Applies the client's messages; true when more may be waiting.
    fn poll_control(&mut self, cx: &mut Context<'_>, rx: &mut mpsc::Receiver<Control>, running: &mut Running) -> bool {
        for _ in 0..PER_TURN {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(control)) => self.apply(control, running),
                Poll::Ready(None) => {
                    // The client left.
                    self.control_open = false;
                    running.kill();
                    return false;
                }
                Poll::Pending => return false,
            }
        }
        true
    }

    fn apply(&mut self, control: Control, running: &mut Running) {
        match control {
            Control::Stdin(bytes) => {
                if self.accepts_input() {
                    self.pending.extend_from_slice(&bytes);
                }
            }
            Control::Eof if self.pty => {
                if self.accepts_input() {
                    self.pending.push(0x04);
                }
            }
            Control::Eof => self.eof = true,
            Control::Signal(signal) => {
                if let Err(e) = running.signal(signal) {
                    tracing::debug!(signal, error = %e, "signal not delivered");
                }
            }
            Control::Resize { rows, cols } => {
                if let (true, Some(out)) = (self.pty, &self.outputs[0]) {
                    if let Err(e) = Running::resize(out.fd.get_ref().as_fd(), rows, cols) {
                        tracing::debug!(error = %e, "terminal not resized");
                    }
                }
            }
            Control::Kill => running.kill(),
        }
    }

    fn accepts_input(&self) -> bool {
        if self.pty {
            self.outputs[0].is_some()
        } else {
            self.stdin.is_some() && !self.eof
        }
    }

    /// Writes pending input while the program takes it.
    fn poll_write(&mut self, cx: &mut Context<'_>) {
        loop {
            if self.written == self.pending.len() {
                self.pending.clear();
                self.written = 0;
                if self.eof {
                    self.stdin = None;
                }
                return;
            }
            let target = if self.pty { self.outputs[0].as_ref().map(|out| &out.fd) } else { self.stdin.as_ref() };
            let Some(fd) = target else {
                // Nothing takes input any more.
                self.drop_input();
                return;
            };
            let mut guard = match fd.poll_write_ready(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(_)) => {
                    self.drop_input();
                    return;
                }
            };
            let end = self.pending.len().min(self.written + WRITE_CHUNK);
            let chunk = &self.pending[self.written..end];
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), chunk).map_err(io::Error::from)) {
                Ok(Ok(n)) => self.written += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => {
                    // EPIPE: the program closed its input (EIO: the
                    // terminal's other side is gone). Drop what is left.
                    self.drop_input();
                    return;
                }
                // Would block: readiness was cleared; polling again waits.
                Err(_) => {}
            }
        }
    }

    fn drop_input(&mut self) {
        self.pending.clear();
        self.written = 0;
        self.stdin = None;
    }

    /// Reads output `i` while it has some; true when more may be waiting.
    fn poll_read(&mut self, i: usize, cx: &mut Context<'_>, running: &mut Running, sink: &mut dyn Sink) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let busy = self.poll_read_with(i, cx, running, sink, &mut buf);
        self.buf = buf;
        busy
    }

    fn poll_read_with(
        &mut self,
        i: usize,
        cx: &mut Context<'_>,
        running: &mut Running,
        sink: &mut dyn Sink,
        buf: &mut Vec<u8>,
    ) -> bool {
        let mut reads = 0;
        loop {
            let Some(out) = &self.outputs[i] else { return false };
            if reads == PER_TURN {
                return true;
            }
            let mut guard = match out.fd.poll_read_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(_)) => {
                    self.outputs[i] = None;
                    return false;
                }
            };
            let room = self.cap.saturating_sub(out.kept);
            let into = &mut *buf;
            let result = guard.try_io(move |fd| read_chunk(fd.get_ref(), into, room));
            drop(guard);
            match result {
                Ok(Ok(data)) => {
                    reads += 1;
                    if !self.take(i, data, room, running, sink) {
                        return false;
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO on a terminal whose other side is closed: its end.
                Ok(Err(_)) => self.outputs[i] = None,
                // Would block: readiness was cleared; polling again waits.
                Err(_) => {}
            }
        }
    }

    /// Passes `data`, just read from output `i`, to the sink within the
    /// cap; false when the stream is done (end of file, or over the cap:
    /// the box is then killed).
    fn take(&mut self, i: usize, data: &[u8], room: u64, running: &mut Running, sink: &mut dyn Sink) -> bool {
        let Some(out) = &mut self.outputs[i] else { return false };
        if data.is_empty() {
            self.outputs[i] = None;
            return false;
        }
        let keep = (data.len() as u64).min(room) as usize;
        if keep > 0 {
            sink.output(out.stream, &data[..keep]);
            out.kept += keep as u64;
        }
        if keep < data.len() {
            // Killed before its output closes: a program must not see the
            // closed pipe (EPIPE) and write more elsewhere first.
            self.truncated[i] = true;
            running.output_limit_hit();
            self.outputs[i] = None;
            return false;
        }
        true
    }

    /// Reads the init's report; `Some` once the live phase is over.
    fn poll_report(&mut self, cx: &mut Context<'_>) -> Option<End> {
        loop {
            let mut guard = match self.status.poll_read_ready(cx) {
                Poll::Pending => return None,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(_)) => return Some(End::InitGone),
            };
            let report = &mut self.report;
            match guard.try_io(|fd| recv_report(fd.get_ref(), report)) {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(end))) => return Some(end),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Some(End::InitGone),
                // Would block: readiness was cleared; polling again waits.
                Err(_) => {}
            }
        }
    }

    /// Reads what the outputs hold now, without waiting (after the report,
    /// everything the program wrote is there).
    fn read_left(&mut self, running: &mut Running, sink: &mut dyn Sink) {
        let mut buf = std::mem::take(&mut self.buf);
        for i in 0..self.outputs.len() {
            for _ in 0..READS_AFTER_END {
                let Some(out) = &self.outputs[i] else { break };
                let room = self.cap.saturating_sub(out.kept);
                match read_chunk(out.fd.get_ref(), &mut buf, room) {
                    Ok(data) => {
                        if !self.take(i, data, room, running, sink) {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Nothing more now (or the terminal's end).
                    Err(_) => break,
                }
            }
        }
        self.buf = buf;
    }

    /// After the init ended without a report: every writer is gone (the
    /// box's processes died with it), so the output reaches its end; read
    /// it, for at most [`DRAIN_WAIT`], then wait for the init's end.
    async fn drain(&mut self, running: &mut Running, sink: &mut dyn Sink, mut sleep: Pin<&mut Sleep>) {
        self.drop_input();
        sleep.as_mut().reset((Instant::now() + DRAIN_WAIT).into());
        poll_fn(|cx| {
            let mut busy = false;
            for i in 0..self.outputs.len() {
                busy |= self.poll_read(i, cx, running, sink);
            }
            if self.outputs.iter().all(Option::is_none) {
                return Poll::Ready(());
            }
            if sleep.as_mut().poll(cx).is_ready() {
                tracing::warn!("output still open after the box ended");
                return Poll::Ready(());
            }
            if busy {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await;
        match running.pidfd.try_clone().and_then(|fd| watch(fd, Interest::READABLE)) {
            Ok(pidfd) => drop(pidfd.readable().await),
            // `finish` waits for the init's end itself.
            Err(e) => tracing::debug!(error = %e, "watching the init's pidfd"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // Not while the thread's locals are being destroyed.
        let _ = BUFFER.try_with(|cached| cached.set(buf));
    }
}

thread_local! {
    /// The read buffer of the last driver that ended on this thread: a
    /// 64 KiB allocation (and its release, which consolidates glibc's heap)
    /// per box is worth saving.
    static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    let buf = BUFFER.take();
    if buf.capacity() >= READ_CHUNK {
        buf
    } else {
        Vec::with_capacity(READ_CHUNK)
    }
}

/// One `recv` of the init's report into `frame`: `Some` once the report
/// is complete or the socket's stream ended (the init died without one).
fn recv_report(fd: &OwnedFd, frame: &mut SmallFrame) -> io::Result<Option<End>> {
    let Ok(spare) = frame.spare() else { return Ok(Some(End::InitGone)) };
    let (n, _) = rustix::net::recv(fd, spare, rustix::net::RecvFlags::DONTWAIT)?;
    if n == 0 {
        return Ok(Some(End::InitGone));
    }
    frame.filled(n);
    Ok(match frame.message::<InitReport>() {
        Ok(None) => None,
        Ok(Some(report @ (InitReport::Exited { .. } | InitReport::SetupFailed { .. }))) => Some(End::Reported(report)),
        Ok(Some(other)) => {
            tracing::warn!(report = other.name(), "unexpected report of a box init");
            Some(End::InitGone)
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading a box init's report");
            Some(End::InitGone)
        }
    })
}

/// Reads at most `room + 1` bytes (one more than fits tells that the output
/// is over the cap) into the spare capacity of `buf` (whose length stays 0).
fn read_chunk<'b>(fd: &OwnedFd, buf: &'b mut Vec<u8>, room: u64) -> io::Result<&'b [u8]> {
    let want = usize::try_from(room.saturating_add(1)).unwrap_or(usize::MAX).min(READ_CHUNK);
    let spare = &mut buf.spare_capacity_mut()[..want];
    let (read, _) = rustix::io::read(fd, spare)?;
    Ok(read)
}

thread_local! {
    /// The runtime [`block_on`] drives boxes on, made at a thread's first
    /// batch run and kept for the thread's life (two descriptors: an epoll
    /// instance and an eventfd).
    static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
}

/// Runs `future` to its end on the calling thread's driver runtime.
///
/// Blocks the thread: never call it from async code (inside a runtime it
/// panics); there, await [`Running::drive`] instead.
pub(crate) fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    RUNTIME.with(|cell| {
        if cell.get().is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
            let _ = cell.set(runtime);
        }
        match cell.get() {
            Some(runtime) => Ok(runtime.block_on(future)),
            None => Err(io::Error::other("no driver runtime")),
        }
    })
}

#[cfg(test)]
mod tests;
