//! All sessions of this node: create, reopen from the store, expire, remove,
//! and ownership among nodes that share a store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evald_engine::{Engine, Language, Lifecycle};
use evald_proto::session::close;
use evald_state::{Meta, Ownership, StoredFile, WorkspaceStore};
use tokio::sync::watch;

use crate::session::Session;
use crate::{blocking, now_secs, SessionConfig, SessionError};

/// All sessions of this node.
/// Working copies opened by this process (each gets its own directory).
static WORKING_COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Manager {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: SessionConfig,
    pub(crate) store: Arc<dyn WorkspaceStore>,
    pub(crate) sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The node's drain and shutdown signal: draining, clients are told to
    /// reconnect; stopping, they are closed with 4503.
    pub(crate) lifecycle: Lifecycle,
    /// Clients attached to any session of this node.
    pub(crate) clients: watch::Sender<usize>,
    /// Which node serves which session, when nodes share a store; `None`
    /// on a single node, which owns every session it opens.
    ownership: Option<Arc<dyn Ownership>>,
}

impl Manager {
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn WorkspaceStore>,
        ownership: Option<Arc<dyn Ownership>>,
        config: SessionConfig,
        lifecycle: Lifecycle,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            engine,
            config,
            store,
            sessions: Mutex::default(),
            lifecycle,
            clients: watch::channel(0).0,
            ownership,
        })
    }

    /// The background work of the sessions until the node stops: ends idle
    /// processes and expired sessions every second, renews ownership every
    /// 5 s, maintains the store every minute. Await it (it ends at
    /// [`Phase::Stopping`]).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let lifecycle = self.lifecycle.clone();
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.reap().await;
                    n += 1;
                    if n.is_multiple_of(5) {
                        self.renew_all().await;
                    }
                    if n.is_multiple_of(60) {
                        self.touch_and_expire_stored().await;
                    }
                }
                () = lifecycle.stopped() => return,
            }
        }
    }

    /// Renews this node's ownership of every loaded session and drops the
    /// ones another node took.
    async fn renew_all(&self) {
        let Some(o) = &self.ownership else { return };
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
            s.kill_process().await;
            s.close(close::MOVED.code);
        }
    }

    async fn reap(&self) {
        let sessions: Vec<Arc<Session>> = match self.sessions.lock() {
            Ok(s) => s.values().cloned().collect(),
            Err(_) => return,
        };
        for s in sessions {
            let (clients, running, idle) = match s.inner.lock() {
                Ok(i) => (i.clients, i.running.is_some(), i.last_activity.elapsed()),
                Err(_) => continue,
            };
            if s.created.elapsed() >= self.config.lifetime {
                let _ = s.closed.send(Some(close::LIFETIME.code));
                self.remove(&s.id).await;
            } else if clients == 0 && running && idle >= self.config.grace {
                s.kill_process().await;
            } else if clients == 0 && !running && idle >= self.config.ttl {
                let _ = s.closed.send(Some(close::NOT_FOUND.code));
                self.remove(&s.id).await;
            }
        }
    }

    /// Once a minute: records activity of the sessions in use in the store,
    /// and deletes stored sessions unused for longer than the TTL.
    async fn touch_and_expire_stored(&self) {
        let (active, loaded): (Vec<(String, String)>, HashSet<String>) = match self.sessions.lock() {
            Ok(map) => (
                map.values()
                    .filter_map(|s| {
                        let i = s.inner.lock().ok()?;
                        (i.clients > 0 || i.running.is_some() || i.last_activity.elapsed() < Duration::from_secs(60))
                            .then(|| (s.id.clone(), i.language.spec.id.clone()))
                    })
                    .collect(),
                map.keys().cloned().collect(),
            ),
            Err(_) => return,
        };
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

    /// Ends every session's process (their working copies are saved as
    /// after any process): for a node about to stop, once no client is
    /// attached to be served by them.
    pub async fn end_processes(&self) {
        let sessions: Vec<Arc<Session>> = match self.sessions.lock() {
            Ok(s) => s.values().cloned().collect(),
            Err(_) => return,
        };
        for s in sessions {
            s.kill_process().await;
        }
    }

    /// The number of clients attached to this node's sessions, as a watch
    /// (a drain awaits `wait_for(|n| *n == 0)`).
    pub fn clients(&self) -> watch::Receiver<usize> {
        self.clients.subscribe()
    }

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

    fn resolve(&self, language: &str) -> Result<Arc<Language>, SessionError> {
        self.engine.resolve(language, None).ok_or_else(|| SessionError::UnknownLanguage(language.into()))
    }

    /// Creates a session with `files`.
    pub async fn create(&self, language: &str, files: Vec<StoredFile>) -> Result<Arc<Session>, SessionError> {
        for f in &files {
            evald_proto::path::check_relative_path(&f.path).map_err(|e| SessionError::BadPath(e.to_string()))?;
        }
        if let Some(conflict) = evald_proto::path::find_conflict(files.iter().map(|f| f.path.as_str())) {
            return Err(SessionError::Conflict(conflict.to_string()));
        }
        let lang = self.resolve(language)?;
        if self.len() >= self.config.max_sessions {
            return Err(SessionError::TooMany(self.config.max_sessions));
        }
        self.check_quota(&files)?;
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
        if let Some(o) = &self.ownership {
            // A draining node does not take sessions over: the balancer
            // retries the request on another node.
            if self.lifecycle.draining() {
                tracing::info!(session = %id, "not taking a session over while draining");
                return Err(SessionError::Unavailable);
            }
            o.take(id).await.map_err(|e| {
                tracing::warn!(session = %id, error = %e, "taking session ownership");
                SessionError::Unavailable
            })?;
        }
        let engine = self.engine.clone();
        // A name of its own per working copy: a copy this node dropped
        // (another node took the session, then this one took it back) may
        // still be alive, and its end unmounts and removes its directory.
        let copy = WORKING_COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("s-{id}-{copy}");
        // The quota is counted in bytes of files; the tmpfs cap behind it
        // leaves room for page rounding and directories.
        let size = self.config.disk_bytes + (self.config.max_files as u64 + 64) * 4096;
        let files = files.to_vec();
        let workspace = blocking(move || {
            // A stale working copy of an earlier process is replaced.
            let ws = engine.create_workspace(&name, size).map_err(std::io::Error::other)?;
            for f in &files {
                ws.write_file(&f.path, &f.content, f.executable).map_err(std::io::Error::other)?;
            }
            Ok(ws)
        })
        .await?;
        let session = Arc::new(Session::new(id, lang, workspace, self.config.replay_bytes));
        let mut map = self.sessions.lock().map_err(|_| SessionError::Internal("poisoned".into()))?;
        Ok(map.entry(id.to_owned()).or_insert(session).clone())
    }

    /// Finds a session in memory, or reopens it from the store.
    pub async fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        if let Some(s) = self.sessions.lock().ok().and_then(|m| m.get(id).cloned()) {
            // Among nodes, a copy is served only while this node still owns
            // the session; otherwise it is stale: drop it and reopen.
            match &self.ownership {
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
        let lang = self.resolve(&meta.language)?;
        self.open(id, lang, &files).await
    }

    /// Sets the language of a session (what its next run runs).
    pub async fn set_language(&self, id: &str, language: &str) -> Result<Arc<Session>, SessionError> {
        let s = self.get(id).await?;
        let lang = self.resolve(language)?;
        let meta = Meta { language: lang.spec.id.clone(), touched: now_secs() };
        s.set_language(lang);
        let store = self.store.clone();
        let sid = s.id.clone();
        blocking(move || store.set_meta(&sid, &meta)).await?;
        Ok(s)
    }

    /// Deletes a session: kills its process, unmounts its working copy and
    /// removes it from the store.
    pub async fn remove(&self, id: &str) {
        let session = self.sessions.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(s) = &session {
            s.kill_process().await;
            // Keep a more specific reason (lifetime) set just before.
            s.close(close::NOT_FOUND.code);
        }
        if let Some(o) = &self.ownership {
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
        if let Some(o) = &self.ownership {
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
                session.emit(Session::files_event(&entries));
            }
            Err(e) => tracing::warn!(session = %session.id, error = %e, "saving the workspace"),
        }
    }
}
