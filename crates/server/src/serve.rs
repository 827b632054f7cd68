//! Running a node: its engine over the sandbox made before the runtime,
//! its composed parts, its listeners, and the drain and shutdown that end
//! it.

use std::future::IntoFuture;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use axum::serve::Listener;
use evald_engine::{catalogue, Catalogue, Engine, Lifecycle, Sandbox};

use crate::compose::{compose, Node};
use crate::lifecycle::shutdown_signal;
use crate::{agent, app, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long connections still open after the drain (idle keep-alives,
/// Piston WebSockets) may take to close before they are dropped.
const CONNECTIONS_CLOSE: Duration = Duration::from_secs(2);
/// How long the background tasks, ended by the stop, may take to return.
const TASKS_END: Duration = Duration::from_secs(5);
/// How long the teardown of the last boxes may take.
const BOXES_END: Duration = Duration::from_secs(5);

/// The longest a stop can take after SIGTERM with this drain `grace`, with
/// room to spare: what the service manager is told to wait (sd_notify).
fn stop_bound(grace: Duration) -> Duration {
    grace + CONNECTIONS_CLOSE + Duration::from_secs(1) + TASKS_END + BOXES_END + Duration::from_secs(10)
}

/// Runs the node with `sandbox` (make it before the async runtime, so that
/// its zygote is forked from a process with few threads) until SIGTERM or
/// SIGINT; then drains (see [`crate::lifecycle`]), stops, awaits its
/// background tasks and lets the last boxes be torn down.
pub async fn serve(config: ServerConfig, sandbox: Sandbox) -> anyhow::Result<()> {
    let catalogue = Catalogue::load_dir(&config.languages_dir)
        .with_context(|| format!("loading the languages of {}", config.languages_dir.display()))?;
    let languages = tokio::task::spawn_blocking(move || catalogue::detect_installed(&catalogue))
        .await
        .context("detecting installed languages")?;
    tracing::info!(installed = languages.len(), "languages detected");
    let lifecycle = Lifecycle::new();
    let engine = Arc::new(Engine::new(sandbox, languages, config.engine.clone(), &lifecycle));
    let Node { state, mut background } = compose(&config, engine.clone(), lifecycle.clone()).await?;
    let listener = Lingering::new(
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?,
    );
    if let Some(addr) = config.agent_listen {
        let l = agent::bind(addr).await.with_context(|| format!("binding the agent listener {addr}"))?;
        tracing::info!(agent = %l.local_addr()?, "agent check listening");
        background.push(("agent", Box::pin(agent::serve(l, state.clone()))));
    }
    if let Some(addr) = config.judge0.listen {
        let l =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the Judge0 listener {addr}"))?;
        tracing::info!(judge0 = %l.local_addr()?, "Judge0 API listening");
        let router = evald_judge0::router(state.judge0().clone())
            .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes()));
        let stopped = lifecycle.clone();
        background.push((
            "judge0 listener",
            Box::pin(async move {
                let served = axum::serve(l, router).with_graceful_shutdown(async move { stopped.stopped().await });
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "the Judge0 listener failed");
                }
            }),
        ));
    }
    let tasks: Vec<_> = background.into_iter().map(|(name, task)| (name, tokio::spawn(task))).collect();
    tracing::info!(listen = %listener.local_addr()?, "serving");
    crate::notify::ready();

    // SIGTERM drains first (the same drain as POST /admin/drain), while the
    // listener stays open so balancers see readiness fail and the agent say
    // `drain`; then the node stops for good and the server stops accepting.
    let grace = config.shutdown_grace.max(config.sessions.drain_window);
    let on_signal = {
        let state = state.clone();
        async move {
            shutdown_signal().await;
            crate::notify::stopping(stop_bound(grace));
            tracing::info!("draining before exit");
            state.begin_final_drain();
            if !state.drained(grace).await {
                tracing::warn!("grace period over with work left");
            }
            tracing::info!("shutting down");
            state.begin_shutdown();
        }
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(on_signal);
    let mut server = std::pin::pin!(server.into_future());
    let connections_closed = async {
        lifecycle.stopped().await;
        tokio::time::sleep(CONNECTIONS_CLOSE).await;
    };
    tokio::select! {
        r = &mut server => r.context("serving")?,
        () = connections_closed => tracing::warn!("closing remaining connections"),
    }
    // Admitted work (background runs, WebSocket runs) holds permits.
    let mut active = engine.capacity().active();
    if tokio::time::timeout(Duration::from_secs(1), active.wait_for(|n| *n == 0)).await.is_err() {
        tracing::warn!(active = *active.borrow(), "runs still active at exit; their boxes are killed");
    }
    for (name, task) in tasks {
        match tokio::time::timeout(TASKS_END, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(task = name, error = %e, "a background task failed"),
            Err(_) => tracing::warn!(task = name, "a background task did not end in time"),
        }
    }
    // Finished boxes are torn down in the background; wait for that before
    // the process (and the thread doing it) ends.
    let shutdown = tokio::task::spawn_blocking(move || engine.shutdown());
    if tokio::time::timeout(BOXES_END, shutdown).await.is_err() {
        tracing::warn!("box teardown still going on at exit");
    }
    Ok(())
}

/// How long a closed connection's remaining input is read and discarded
/// ([`Lingering`]), at most.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// How many bytes of a closed connection's remaining input are read and
/// discarded, at most.
pub const LINGER_BYTES: u64 = 64 << 20;

/// The node's listener: TCP connections that close *lingering*. When the
/// server ends a connection while the client is still sending (a 413
/// answered before the rest of an oversized body was read), closing the
/// socket at once would make the kernel reset it: a client that writes
/// its whole body before reading (Python's `urllib`, many others) gets a
/// broken pipe or a reset and never sees the answer already sent. So a
/// connection's end shuts down the sending side only (the client reads the
/// answer, then end of stream) and reads and discards what still arrives,
/// up to [`LINGER_BYTES`] and [`LINGER_TIME`], before closing, as web
/// servers have long done.
pub struct Lingering {
    listener: TcpListener,
}

impl Lingering {
    pub fn new(listener: TcpListener) -> Lingering {
        Lingering { listener }
    }
}

impl Listener for Lingering {
    type Io = LingeringStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.listener).await;
        (LingeringStream { stream: Some(stream) }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection of [`Lingering`]: a TCP stream that, dropped, lingers.
pub struct LingeringStream {
    /// Always `Some` until dropped.
    stream: Option<TcpStream>,
}

impl LingeringStream {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.stream.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else { return };
        // Outside a runtime (the process is ending) the socket just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream));
        }
    }
}

/// Shuts down the sending side, then reads and discards what the client
/// still sends until it closes, up to the bounds; then the socket closes.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}
