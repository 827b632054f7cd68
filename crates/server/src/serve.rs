//! Running a node: its engine over the sandbox made before the runtime,
//! its composed parts, its listeners, and the drain and shutdown that end
//! it.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use evald_engine::{catalogue, Catalogue, Engine, Lifecycle, Sandbox};

use crate::compose::{compose, Node};
use crate::lifecycle::shutdown_signal;
use crate::{agent, app, ServerConfig};

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
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    if let Some(addr) = config.agent_listen {
        let l = agent::bind(addr).await.with_context(|| format!("binding the agent listener {addr}"))?;
        tracing::info!(agent = %l.local_addr()?, "agent check listening");
        background.push(("agent", Box::pin(agent::serve(l, state.clone()))));
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
            state.begin_drain();
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
