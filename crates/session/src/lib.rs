//! Interactive sessions: a persistent workspace, at most one process on a
//! PTY (a program run, a shell or a REPL), and any number of WebSocket
//! clients that all see its sequence-numbered output and can resume after a
//! disconnect. The protocol is documented in `docs/protocol.md`.

#![forbid(unsafe_code)]

mod http;
mod process;
pub mod store;
mod ws;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evald_engine::{Engine, Language};
use evald_sandbox::Workspace;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

pub use http::routes;
pub use store::{LocalStore, Meta, StoredFile, WorkspaceStore};

/// Settings of the session service.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session with no client and no process is removed after this.
    pub ttl: Duration,
    /// A client that sends nothing for this long is disconnected (4408).
    pub idle: Duration,
    /// A session is closed (4409) this long after its creation.
    pub lifetime: Duration,
    /// A process keeps running this long after its last client left.
    pub grace: Duration,
    /// Sessions open on this node at once.
    pub max_sessions: usize,
    /// Clients attached to one session at once.
    pub max_clients: usize,
    /// Bytes of events kept for replay per session.
    pub replay_bytes: usize,
    /// Wall-clock limit of a process started in a session.
    pub run_wall: Duration,
    /// Files and bytes a workspace may hold.
    pub max_files: usize,
    pub disk_bytes: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ttl: Duration::from_secs(24 * 3600),
            idle: Duration::from_secs(300),
            lifetime: Duration::from_secs(12 * 3600),
            grace: Duration::from_secs(60),
            max_sessions: 1000,
            max_clients: 16,
            replay_bytes: 256 << 10,
            run_wall: Duration::from_secs(15 * 60),
            max_files: 500,
            disk_bytes: 64 << 20,
        }
    }
}

/// What runs in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Run,
    Shell,
    Repl,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Shell => "shell",
            Kind::Repl => "repl",
        }
    }
}

/// A request to the process driver of a session.
#[derive(Debug)]
pub(crate) enum Control {
    Stdin(Vec<u8>),
    Eof,
    Resize(u16, u16),
    Signal(i32),
    Kill,
}

/// A sequence-numbered event, serialized once for every client.
pub(crate) type Event = (u64, Arc<str>);

pub(crate) struct Inner {
    pub language: Arc<Language>,
    pub seq: u64,
    pub buffer: VecDeque<Event>,
    pub buffer_bytes: usize,
    /// The highest sequence number dropped from the buffer.
    pub dropped: u64,
    pub running: Option<Kind>,
    pub control: Option<mpsc::Sender<Control>>,
    pub clients: usize,
    pub last_activity: Instant,
}

/// One session.
pub struct Session {
    pub id: String,
    pub created: Instant,
    pub(crate) workspace: Workspace,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) events: broadcast::Sender<Event>,
    /// Closed (set to a close code) when the session ends.
    pub(crate) closed: watch::Sender<Option<u16>>,
    /// Bytes of events kept for replay.
    pub(crate) replay_cap: usize,
}

/// Why a session request failed; maps to an HTTP status and error code.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session not found")]
    NotFound,
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown language {0:?}")]
    UnknownLanguage(String),
    #[error("{0}")]
    Quota(String),
    #[error("file not found")]
    FileNotFound,
    #[error("this node already has {0} sessions")]
    TooMany(usize),
    #[error("the shared state is unavailable; retry shortly")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
}

impl Session {
    /// Appends an event (adding its sequence number) and sends it to every
    /// client. The lock is held while sending so that replay and live
    /// events never overlap or miss one.
    pub(crate) fn emit(&self, mut event: Value) -> u64 {
        let Ok(mut inner) = self.inner.lock() else { return 0 };
        inner.seq += 1;
        let seq = inner.seq;
        event["seq"] = json!(seq);
        let text: Arc<str> = event.to_string().into();
        inner.buffer_bytes += text.len();
        inner.buffer.push_back((seq, text.clone()));
        inner.last_activity = Instant::now();
        let cap = self.replay_cap;
        while inner.buffer_bytes > cap {
            let Some((s, t)) = inner.buffer.pop_front() else { break };
            inner.buffer_bytes -= t.len();
            inner.dropped = s;
        }
        let _ = self.events.send((seq, text));
        seq
    }

    pub fn language(&self) -> Option<Arc<Language>> {
        self.inner.lock().ok().map(|i| i.language.clone())
    }

    pub(crate) fn info(&self, config: &SessionConfig) -> Value {
        let inner = self.inner.lock();
        let (language, running, clients, idle) = match inner {
            Ok(i) => (i.language.spec.id.clone(), i.running.map(Kind::as_str), i.clients, i.last_activity.elapsed()),
            Err(_) => (String::new(), None, 0, Duration::ZERO),
        };
        json!({
            "id": self.id,
            "language": language,
            "running": running,
            "clients": clients,
            "expires_in_s": config.ttl.saturating_sub(idle).as_secs(),
        })
    }
}

/// All sessions of this node.
pub struct Manager {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: SessionConfig,
    pub(crate) store: Arc<dyn WorkspaceStore>,
    pub(crate) sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Set when the node shuts down: every client is closed with 4503.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set to the drain window while the node drains: every client gets a
    /// `reconnect` hint with a random delay within the window, then 4503.
    pub(crate) draining: watch::Sender<Option<Duration>>,
    /// WebSocket clients attached to any session of this node.
    pub(crate) clients: watch::Sender<usize>,
    /// Which node serves which session, when nodes share a store.
    pub(crate) ownership: std::sync::OnceLock<Arc<dyn Ownership>>,
}

/// Ownership of sessions among nodes that share a store. The node that
/// opens a session takes it (the latest wins: the client is here now); a
/// node that finds it no longer owns a session drops its working copy
/// without writing it back, so a stale copy never overwrites the store.
pub trait Ownership: Send + Sync + 'static {
    /// Makes this node the owner.
    fn take<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Extends this node's ownership; `false` when another node owns it.
    fn renew<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, String>>;
    /// Gives it up (the session was deleted).
    fn release<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// A boxed future, for the object-safe [`Ownership`] trait.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Manager {
    pub fn new(engine: Arc<Engine>, store: Arc<dyn WorkspaceStore>, config: SessionConfig) -> Arc<Manager> {
        let (shutdown, _) = watch::channel(false);
        let (draining, _) = watch::channel(None);
        let (clients, _) = watch::channel(0);
        Arc::new(Manager {
            engine,
            config,
            store,
            sessions: Mutex::default(),
            shutdown,
            draining,
            clients,
            ownership: std::sync::OnceLock::new(),
        })
    }

    /// Enables ownership among nodes (see [`Ownership`]).
    pub fn set_ownership(&self, ownership: Arc<dyn Ownership>) {
        let _ = self.ownership.set(ownership);
    }

    /// Renews this node's ownership of every loaded session and drops the
    /// ones another node took.
    async fn renew_all(&self) {
        let Some(o) = self.ownership.get() else { return };
        let ids: Vec<String> = self.sessions.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for id in ids {
            match o.renew(&id).await {
                Ok(true) => {}
                Ok(false) => self.forget(&id).await,
                Err(e) => tracing::warn!(session = %id, error = %e, "renewing session ownership"),
            }
        }
    }

    /// Drops this node's working copy of a session another node now serves:
    /// its process is killed, its clients told to reconnect (4410), nothing
    /// is written back.
    async fn forget(&self, id: &str) {
        let session = self.sessions.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(s) = session {
            tracing::info!(session = %id, "session moved to another node");
            let control = s.inner.lock().ok().and_then(|i| i.control.clone());
            if let Some(c) = control {
                let _ = c.send(Control::Kill).await;
            }
            s.closed.send_if_modified(|code| code.is_none() && code.replace(ws::CLOSE_MOVED).is_none());
        }
    }

    /// Starts the background task that ends idle processes and expired
    /// sessions. Returns its handle.
    pub fn start_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut stop = me.shutdown.subscribe();
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        me.reap().await;
                        n += 1;
                        if n.is_multiple_of(5) {
                            me.renew_all().await;
                        }
                        if n.is_multiple_of(60) {
                            me.touch_and_expire_stored().await;
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    }

    async fn reap(&self) {
        let sessions: Vec<Arc<Session>> = match self.sessions.lock() {
            Ok(s) => s.values().cloned().collect(),
            Err(_) => return,
        };
        for s in sessions {
            let (clients, running, idle, control) = match s.inner.lock() {
                Ok(i) => (i.clients, i.running.is_some(), i.last_activity.elapsed(), i.control.clone()),
                Err(_) => continue,
            };
            if s.created.elapsed() >= self.config.lifetime {
                let _ = s.closed.send(Some(ws::CLOSE_LIFETIME));
                self.remove(&s.id).await;
            } else if clients == 0 && running && idle >= self.config.grace {
                if let Some(c) = control {
                    let _ = c.send(Control::Kill).await;
                }
            } else if clients == 0 && !running && idle >= self.config.ttl {
                let _ = s.closed.send(Some(ws::CLOSE_NOT_FOUND));
                self.remove(&s.id).await;
            }
        }
    }

    /// Once a minute: records activity of the sessions in use in the store,
    /// and deletes stored sessions unused for longer than the TTL.
    async fn touch_and_expire_stored(&self) {
        let active: Vec<(String, String)> = match self.sessions.lock() {
            Ok(map) => map
                .values()
                .filter_map(|s| {
                    let i = s.inner.lock().ok()?;
                    (i.clients > 0 || i.running.is_some() || i.last_activity.elapsed() < Duration::from_secs(60))
                        .then(|| (s.id.clone(), i.language.spec.id.clone()))
                })
                .collect(),
            Err(_) => return,
        };
        let loaded: std::collections::HashSet<String> =
            self.sessions.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let store = self.store.clone();
        let ttl = self.config.ttl.as_secs();
        let result = blocking(move || {
            let now = now_secs();
            for (id, language) in &active {
                store.set_meta(id, &Meta { language: language.clone(), touched: now })?;
            }
            for id in store.ids()? {
                if loaded.contains(&id) {
                    continue;
                }
                if store.meta(&id)?.is_some_and(|m| now.saturating_sub(m.touched) > ttl) {
                    store.remove(&id)?;
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "maintaining the session store");
        }
    }

    /// Closes every client with 4503 (node shutting down).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Starts a drain: each connected client (and each client that attaches
    /// from now on) gets `{"type":"reconnect","delay_ms":N}` with N drawn
    /// uniformly from `0..=window`, and is closed with 4503 N ms later, so
    /// that clients spread their reconnects over the window instead of
    /// arriving at the other nodes all at once. A second call keeps the
    /// first window.
    pub fn drain(&self, window: Duration) {
        self.draining.send_if_modified(|w| w.is_none() && w.replace(window).is_none());
    }

    /// Ends a drain; clients already told to reconnect still do.
    pub fn undrain(&self) {
        self.draining.send_if_modified(|w| w.take().is_some());
    }

    pub fn draining(&self) -> bool {
        self.draining.borrow().is_some()
    }

    /// The number of WebSocket clients attached to this node's sessions, as a
    /// watch (a drain awaits `wait_for(|n| *n == 0)`).
    pub fn clients(&self) -> watch::Receiver<usize> {
        self.clients.subscribe()
    }

    /// The configuration of this manager.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Number of sessions open in memory.
    pub fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a session with `files`.
    pub async fn create(&self, language: &str, files: Vec<StoredFile>) -> Result<Arc<Session>, SessionError> {
        let lang = self.engine.resolve(language, None).ok_or_else(|| SessionError::UnknownLanguage(language.into()))?;
        if self.len() >= self.config.max_sessions {
            return Err(SessionError::TooMany(self.config.max_sessions));
        }
        self.check_quota(&files)?;
        for f in &files {
            evald_proto::path::check_relative_path(&f.path).map_err(|e| SessionError::BadPath(e.to_string()))?;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let store = self.store.clone();
        let meta = Meta { language: lang.spec.id.clone(), touched: now_secs() };
        let (id2, files2) = (id.clone(), files.clone());
        blocking(move || {
            store.create(&id2, &meta)?;
            for f in &files2 {
                store.put(&id2, f)?;
            }
            Ok(())
        })
        .await?;
        self.open(&id, lang, &files).await
    }

    /// Mounts a working copy of a stored session and registers it.
    async fn open(&self, id: &str, lang: Arc<Language>, files: &[StoredFile]) -> Result<Arc<Session>, SessionError> {
        if let Some(o) = self.ownership.get() {
            // A draining node does not take sessions over: the balancer
            // retries the request on another node.
            if self.draining() {
                tracing::info!(session = %id, "not taking a session over while draining");
                return Err(SessionError::Unavailable);
            }
            o.take(id).await.map_err(|e| {
                tracing::warn!(session = %id, error = %e, "taking session ownership");
                SessionError::Unavailable
            })?;
        }
        let sandbox = self.engine.sandbox().clone();
        let name = format!("s-{id}");
        let disk = self.config.disk_bytes;
        let max_files = self.config.max_files;
        let files = files.to_vec();
        let workspace = blocking(move || {
            // A stale working copy of an earlier process is replaced.
            // The quota is counted in bytes of files; the tmpfs cap behind
            // it leaves room for page rounding and directories.
            let ws = sandbox
                .create_workspace(&name, disk + (max_files as u64 + 64) * 4096)
                .map_err(std::io::Error::other)?;
            for f in &files {
                ws.write_file(&f.path, &f.content, f.executable).map_err(std::io::Error::other)?;
            }
            Ok(ws)
        })
        .await?;
        let (events, _) = broadcast::channel(256);
        let (closed, _) = watch::channel(None);
        let session = Arc::new(Session {
            id: id.to_owned(),
            created: Instant::now(),
            workspace,
            inner: Mutex::new(Inner {
                language: lang,
                seq: 0,
                buffer: VecDeque::new(),
                buffer_bytes: 0,
                dropped: 0,
                running: None,
                control: None,
                clients: 0,
                last_activity: Instant::now(),
            }),
            events,
            closed,
            replay_cap: self.config.replay_bytes,
        });
        let mut map = self.sessions.lock().map_err(|_| SessionError::Internal("poisoned".into()))?;
        Ok(map.entry(id.to_owned()).or_insert(session).clone())
    }

    /// Finds a session in memory, or reopens it from the store.
    pub async fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        if let Some(s) = self.sessions.lock().ok().and_then(|m| m.get(id).cloned()) {
            // Among nodes, a copy is served only while this node still owns
            // the session; otherwise it is stale: drop it and reopen.
            match self.ownership.get() {
                None => return Ok(s),
                Some(o) => match o.renew(id).await {
                    Ok(true) => return Ok(s),
                    Ok(false) => self.forget(id).await,
                    Err(e) => {
                        tracing::warn!(session = %id, error = %e, "checking session ownership");
                        return Err(SessionError::Unavailable);
                    }
                },
            }
        }
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SessionError::NotFound);
        }
        let store = self.store.clone();
        let id2 = id.to_owned();
        let loaded = blocking(move || {
            Ok(match store.meta(&id2)? {
                Some(meta) => Some((meta, store.files(&id2)?)),
                None => None,
            })
        })
        .await?;
        let Some((meta, files)) = loaded else { return Err(SessionError::NotFound) };
        if now_secs().saturating_sub(meta.touched) > self.config.ttl.as_secs() {
            return Err(SessionError::NotFound);
        }
        let lang = self
            .engine
            .resolve(&meta.language, None)
            .ok_or_else(|| SessionError::UnknownLanguage(meta.language.clone()))?;
        self.open(id, lang, &files).await
    }

    /// Deletes a session: kills its process, unmounts its working copy and
    /// removes it from the store.
    pub async fn remove(&self, id: &str) {
        let session = self.sessions.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(s) = &session {
            let control = s.inner.lock().ok().and_then(|i| i.control.clone());
            if let Some(c) = control {
                let _ = c.send(Control::Kill).await;
            }
            // Keep a more specific reason (lifetime) set just before.
            s.closed.send_if_modified(|code| code.is_none() && code.replace(ws::CLOSE_NOT_FOUND).is_none());
        }
        if let Some(o) = self.ownership.get() {
            if let Err(e) = o.release(id).await {
                tracing::warn!(session = %id, error = %e, "releasing session ownership");
            }
        }
        let store = self.store.clone();
        let id = id.to_owned();
        let _ = blocking(move || store.remove(&id)).await;
    }

    pub(crate) fn check_quota(&self, files: &[StoredFile]) -> Result<(), SessionError> {
        if files.len() > self.config.max_files {
            return Err(SessionError::Quota(format!("a workspace holds at most {} files", self.config.max_files)));
        }
        let bytes: u64 = files.iter().map(|f| f.content.len() as u64).sum();
        if bytes > self.config.disk_bytes {
            return Err(SessionError::Quota(format!("a workspace holds at most {} bytes", self.config.disk_bytes)));
        }
        Ok(())
    }

    /// Copies the working copy back into the store and tells the clients.
    pub(crate) async fn sync_back(&self, session: &Arc<Session>) {
        if let Some(o) = self.ownership.get() {
            if let Ok(false) = o.renew(&session.id).await {
                // Another node serves it now: this copy is stale.
                self.forget(&session.id).await;
                return;
            }
        }
        let s = session.clone();
        let store = self.store.clone();
        let cfg = self.config.clone();
        let result = blocking(move || {
            let entries = s.workspace.list(cfg.max_files * 4).map_err(std::io::Error::other)?;
            let mut files = Vec::new();
            let mut budget = cfg.disk_bytes;
            for e in entries.iter().filter(|e| !e.is_dir) {
                if files.len() >= cfg.max_files {
                    break;
                }
                let content = s.workspace.read_file(&e.path, budget).map_err(std::io::Error::other)?;
                budget -= content.len() as u64;
                files.push(StoredFile { path: e.path.clone(), content, executable: e.executable });
            }
            store.replace_all(&s.id, &files)?;
            Ok(entries)
        })
        .await;
        match result {
            Ok(entries) => {
                let list: Vec<Value> =
                    entries.iter().map(|e| json!({"path": e.path, "size": e.size, "is_dir": e.is_dir})).collect();
                session.emit(json!({"type": "files", "files": list}));
            }
            Err(e) => tracing::warn!(session = %session.id, error = %e, "saving the workspace"),
        }
    }
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, SessionError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(SessionError::FileNotFound),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotConnected => {
            tracing::warn!(error = %e, "the workspace store is unavailable");
            Err(SessionError::Unavailable)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => Err(SessionError::BadPath(e.to_string())),
        Ok(Err(e)) if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull => {
            Err(SessionError::Quota("the workspace is full".into()))
        }
        Ok(Err(e)) => Err(SessionError::Internal(e.to_string())),
        Err(e) => Err(SessionError::Internal(e.to_string())),
    }
}
