//! One session: its workspace, its numbered events (buffered for replay and
//! broadcast to every client) and the state of its process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evald_engine::{Control, Language, Workspace};
use evald_proto::session::{Event, FileEntry, ProcessKind, Seq, ServerMessage, SessionInfo};
use tokio::sync::{broadcast, mpsc, watch};

use crate::SessionConfig;

/// What is known of a session under its lock.
pub(crate) struct Inner {
    pub language: Arc<Language>,
    pub seq: Seq,
    /// Events kept for replay, as sent.
    pub buffer: VecDeque<(Seq, Arc<str>)>,
    pub buffer_bytes: usize,
    /// The highest sequence number dropped from the buffer.
    pub dropped: Seq,
    pub running: Option<ProcessKind>,
    /// Requests to the running process.
    pub control: Option<mpsc::Sender<Control>>,
    pub clients: usize,
    pub last_activity: Instant,
}

/// One session.
pub struct Session {
    pub id: String,
    pub created: Instant,
    pub(crate) workspace: Arc<Workspace>,
    pub(crate) inner: Mutex<Inner>,
    /// Every message for the attached clients, as JSON text.
    pub(crate) events: broadcast::Sender<Arc<str>>,
    /// Set to a close code when the session ends.
    pub(crate) closed: watch::Sender<Option<u16>>,
    /// Bytes of events kept for replay.
    replay_cap: usize,
}

/// What a client gets when it attaches: everything it missed, then live
/// messages. Dropping it detaches the client.
pub struct Attachment {
    pub session: Arc<Session>,
    /// The first message.
    pub hello: ServerMessage,
    /// The client saw more events than this copy has: it was attached to
    /// another node, which is gone or gave the session up.
    pub lost: bool,
    /// Events `from..=to` are gone from the buffer.
    pub gap: Option<(Seq, Seq)>,
    /// The buffered events after the client's last one, as sent.
    pub replay: Vec<Arc<str>>,
    /// Live messages from here on.
    pub live: broadcast::Receiver<Arc<str>>,
    on_detach: Box<dyn FnOnce() + Send + Sync>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.session.inner.lock() {
            inner.clients = inner.clients.saturating_sub(1);
            inner.last_activity = Instant::now();
        }
        let detach = std::mem::replace(&mut self.on_detach, Box::new(|| {}));
        detach();
    }
}

impl Session {
    pub(crate) fn new(id: &str, language: Arc<Language>, workspace: Workspace, replay_cap: usize) -> Session {
        Session {
            id: id.to_owned(),
            created: Instant::now(),
            workspace: Arc::new(workspace),
            inner: Mutex::new(Inner {
                language,
                seq: 0,
                buffer: VecDeque::new(),
                buffer_bytes: 0,
                dropped: 0,
                running: None,
                control: None,
                clients: 0,
                last_activity: Instant::now(),
            }),
            events: broadcast::channel(256).0,
            closed: watch::channel(None).0,
            replay_cap,
        }
    }

    /// Numbers an event, keeps it for replay and sends it to every client.
    /// The lock is held while sending, so that replay and live events never
    /// overlap or miss one (see [`Session::attach`]).
    pub(crate) fn emit(&self, event: Event) -> Seq {
        let Ok(mut inner) = self.inner.lock() else { return 0 };
        inner.seq += 1;
        let seq = inner.seq;
        let text: Arc<str> = event.numbered(seq).to_json().into();
        inner.buffer_bytes += text.len();
        inner.buffer.push_back((seq, text.clone()));
        inner.last_activity = Instant::now();
        while inner.buffer_bytes > self.replay_cap {
            let Some((s, t)) = inner.buffer.pop_front() else { break };
            inner.buffer_bytes -= t.len();
            inner.dropped = s;
        }
        let _ = self.events.send(text);
        seq
    }

    /// Sends a message to the clients attached now, without a number and
    /// without keeping it for replay.
    pub(crate) fn notify(&self, message: &ServerMessage) {
        let _ = self.events.send(message.to_json().into());
    }

    /// The workspace's entries as a `files` event.
    pub(crate) fn files_event(entries: &[evald_engine::Entry]) -> Event {
        Event::Files {
            files: entries.iter().map(|e| FileEntry { path: e.path.clone(), size: e.size, is_dir: e.is_dir }).collect(),
        }
    }

    pub fn language(&self) -> Option<Arc<Language>> {
        self.inner.lock().ok().map(|i| i.language.clone())
    }

    pub(crate) fn set_language(&self, language: Arc<Language>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.language = language;
        }
    }

    /// Marks activity (a client message).
    pub(crate) fn touch(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_activity = Instant::now();
        }
    }

    /// The session as `GET /api/v1/sessions/{id}` shows it.
    pub fn info(&self, config: &SessionConfig) -> SessionInfo {
        let (language, running, clients, idle) = match self.inner.lock() {
            Ok(i) => (i.language.spec.id.clone(), i.running, i.clients, i.last_activity.elapsed()),
            Err(_) => (String::new(), None, 0, Duration::ZERO),
        };
        SessionInfo {
            id: self.id.clone(),
            language,
            running,
            clients,
            expires_in_s: config.ttl.saturating_sub(idle).as_secs(),
        }
    }

    /// Attaches a client that saw events up to `last_seq`; `None` when the
    /// session has `max_clients` already. Replay and subscription are taken
    /// under the session lock, so no event is missed or sent twice.
    pub(crate) fn attach(
        self: &Arc<Self>,
        last_seq: Seq,
        max_clients: usize,
        on_detach: Box<dyn FnOnce() + Send + Sync>,
    ) -> Option<Attachment> {
        let mut inner = self.inner.lock().ok()?;
        if inner.clients >= max_clients {
            return None;
        }
        inner.clients += 1;
        inner.last_activity = Instant::now();
        let live = self.events.subscribe();
        let gap = (last_seq < inner.dropped).then(|| (last_seq + 1, inner.dropped));
        let replay = inner.buffer.iter().filter(|(s, _)| *s > last_seq).map(|(_, t)| t.clone()).collect();
        let hello = ServerMessage::Hello {
            session: self.id.clone(),
            language: inner.language.spec.id.clone(),
            seq: inner.seq,
            running: inner.running,
        };
        let lost = last_seq > inner.seq;
        drop(inner);
        Some(Attachment { session: self.clone(), hello, lost, gap, replay, live, on_detach })
    }

    /// Ends the session for its clients with `code`, unless a more specific
    /// reason was set just before.
    pub(crate) fn close(&self, code: u16) {
        self.closed.send_if_modified(|c| c.is_none() && c.replace(code).is_none());
    }

    /// Asks the running process, if any, to end.
    pub(crate) async fn kill_process(&self) {
        let control = self.inner.lock().ok().and_then(|i| i.control.clone());
        if let Some(c) = control {
            let _ = c.send(Control::Kill).await;
        }
    }
}
