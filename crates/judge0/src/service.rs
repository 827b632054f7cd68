//! The service: submissions made, run and stored.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use evald_engine::{Engine, Permit};
use evald_state::{RecordStore, StateError};
use serde_json::{Map, Value};

use crate::callback::Callbacks;
use crate::exec::{self, Prepared};
use crate::languages::{self, J0Language};
use crate::request::{self, Errors};
use crate::wire::{Submission, DEFAULT_FIELDS};
use crate::Judge0Config;

/// Judge0's API on one node.
pub struct Judge0 {
    engine: Arc<Engine>,
    store: Arc<dyn RecordStore>,
    config: Judge0Config,
    languages: Vec<J0Language>,
    callbacks: Callbacks,
    /// The cluster's run queue (`None`: one node, its capacity queue).
    queue: Option<Arc<dyn SharedQueue>>,
    pub(crate) statistics: crate::info::StatisticsCache,
}

/// The cluster's run queue as Judge0 uses it: a `wait=false` submission is
/// stored, then queued there by its token; whichever node's worker takes it
/// runs it with [`Judge0::take_queued`] and [`Judge0::run_queued`].
pub trait SharedQueue: Send + Sync {
    /// Queues the stored submission `token`: `Ok(false)` when the queue is
    /// full.
    fn enqueue<'a>(&'a self, token: &'a str) -> Pin<Box<dyn Future<Output = Result<bool, StateError>> + Send + 'a>>;

    /// Whether every node that reads the queue reads Judge0's entries (a
    /// node of an older version would drop them): otherwise submissions
    /// run on the node that takes them, as before the shared queue.
    fn readable_by_all(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;

    /// Entries accepted and not taken by any node yet.
    fn waiting(&self) -> Pin<Box<dyn Future<Output = Result<u64, StateError>> + Send + '_>>;
}

/// A queued submission as a worker finds it.
pub enum Pending {
    /// Deleted or expired: nothing to run.
    Gone,
    /// Finished already (a second delivery after its node stored it).
    Finished,
    /// To run: admit `memory()`, then [`Judge0::run_queued`].
    Ready(Box<Queued>),
}

/// A queued submission ready to run.
pub struct Queued {
    submission: Submission,
    prepared: Result<Prepared, String>,
}

impl Queued {
    /// The memory to admit; `None` when it cannot run (it fails at once).
    pub fn memory(&self) -> Option<u64> {
        self.prepared.as_ref().ok().map(|p| p.memory)
    }
}

/// Why a submission was not taken.
pub enum Refused {
    /// 422 with these errors.
    Invalid(Errors),
    /// 503 `queue is full`.
    QueueFull,
    /// The store did not answer.
    Store(StateError),
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Judge0 {
    /// The API on `engine`, its submissions kept in `store`; `wait=false`
    /// submissions go to `queue` when the node is part of a cluster.
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn RecordStore>,
        config: Judge0Config,
        queue: Option<Arc<dyn SharedQueue>>,
    ) -> Arc<Judge0> {
        let languages = languages::table(&engine);
        let callbacks = Callbacks::new(config.callback_allow.clone(), 8, 1000);
        Arc::new(Judge0 { engine, store, config, languages, callbacks, queue, statistics: Default::default() })
    }

    pub fn config(&self) -> &Judge0Config {
        &self.config
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn languages(&self) -> &[J0Language] {
        &self.languages
    }

    pub fn store(&self) -> &dyn RecordStore {
        self.store.as_ref()
    }

    /// Submissions waiting for capacity on this node.
    pub fn queue_full(&self, more: usize) -> bool {
        self.engine.capacity().waiting() + more > self.config.max_queue_size
    }

    /// What waits to run: this node's admission queue, and in a cluster
    /// the run queue's entries no node has taken yet (0 when Redis does
    /// not answer).
    pub async fn waiting(&self) -> u64 {
        let local = self.engine.capacity().waiting() as u64;
        let shared = match &self.queue {
            Some(q) => q.waiting().await.unwrap_or(0),
            None => 0,
        };
        local + shared
    }

    /// Whether `wait=false` submissions go to the cluster's run queue.
    pub fn clustered(&self) -> bool {
        self.queue.is_some()
    }

    /// Checks, stores and queues one submission; returns it (status 1) and,
    /// unless it went to the cluster's run queue, the task that runs it on
    /// this node (awaited for `wait=true`, else spawned). `wait=true`
    /// submissions run on the node that took them, as native `wait: true`
    /// runs do; `wait=false` ones of a cluster run wherever the queue
    /// delivers them.
    pub async fn submit(
        self: &Arc<Self>,
        body: &Map<String, Value>,
        base64: bool,
        wait: bool,
    ) -> Result<(Submission, Option<impl Future<Output = Submission> + Send + 'static>), Refused> {
        let parsed = request::parse(body, base64, &self.languages, &self.config).map_err(Refused::Invalid)?;
        let mut s = parsed.submission;
        if let Some(url) = s.callback_url.clone() {
            let allow = self.config.callback_allow.clone();
            let checked = tokio::task::spawn_blocking(move || crate::callback::check_url(&url, &allow))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = checked {
                let mut errors = Errors::default();
                errors.0.push(("callback_url", vec![e]));
                return Err(Refused::Invalid(errors));
            }
        }
        let prepared = exec::prepare(&self.engine, &s, parsed.language.as_ref());
        if let Err(e) = &prepared {
            if s.additional_files.is_some() && e.0.starts_with("additional_files: ") {
                let mut errors = Errors::default();
                errors.0.push(("additional_files", vec![e.0["additional_files: ".len()..].to_owned()]));
                return Err(Refused::Invalid(errors));
            }
        }
        let shared = match &self.queue {
            Some(q) if !wait && q.readable_by_all().await => Some(q),
            _ => None,
        };
        let ticket = match (&prepared, shared) {
            (Ok(p), None) => Some(self.engine.capacity().enqueue(p.memory).map_err(|_| Refused::QueueFull)?),
            _ => None,
        };
        s.created_at_ms = now_ms();
        self.store
            .insert(&s.token, s.created_at_ms, serde_json::to_vec(&s).unwrap_or_default())
            .await
            .map_err(Refused::Store)?;
        if let Some(queue) = shared {
            // Stored first: the node that takes the entry reads the record.
            let queued = queue.enqueue(&s.token).await;
            if !matches!(queued, Ok(true)) {
                if let Err(e) = self.store.remove(&s.token).await {
                    tracing::warn!(token = %s.token, error = %e, "a submission the queue refused stays stored");
                }
            }
            return match queued {
                Ok(true) => Ok((s, None)),
                Ok(false) => Err(Refused::QueueFull),
                Err(e) => Err(Refused::Store(e)),
            };
        }
        let stored = s.clone();
        let this = self.clone();
        let task = async move {
            match (prepared, ticket) {
                (Ok(p), Some(t)) => match t.admit().await {
                    Ok(permit) => this.run(s, p, permit).await,
                    Err(r) => this.fail(s, r.to_string()).await,
                },
                (Err(e), _) => this.fail(s, e.0).await,
                (Ok(_), None) => this.fail(s, "Internal Error".into()).await,
            }
        };
        Ok((stored, Some(task)))
    }

    /// A queued submission, read back from the store by the node that took
    /// it from the cluster's run queue.
    pub async fn take_queued(&self, token: &str) -> Result<Pending, StateError> {
        let Some(s) = self.get(token).await? else { return Ok(Pending::Gone) };
        if s.status_id > 2 {
            return Ok(Pending::Finished);
        }
        let language = self.languages.iter().find(|l| l.id == s.language_id);
        let prepared = exec::prepare(&self.engine, &s, language).map_err(|e| e.0);
        Ok(Pending::Ready(Box::new(Queued { submission: s, prepared })))
    }

    /// Runs a queued submission under `permit` (`None`: it was refused with
    /// `refusal`, or cannot run), stores the result and calls back.
    pub async fn run_queued(&self, q: Box<Queued>, permit: Result<Permit, String>) -> Submission {
        match (q.prepared, permit) {
            (Ok(p), Ok(permit)) => self.run(q.submission, p, permit).await,
            (Err(e), _) | (Ok(_), Err(e)) => self.fail(q.submission, e).await,
        }
    }

    async fn save(&self, s: &Submission) {
        if let Err(e) = self.store.update(&s.token, serde_json::to_vec(s).unwrap_or_default()).await {
            tracing::warn!(token = %s.token, error = %e, "a submission's state was not stored");
        }
    }

    /// An Internal Error (13) with `message`.
    async fn fail(&self, mut s: Submission, message: String) -> Submission {
        s.status_id = 13;
        s.message = Some(message);
        s.finished_at_ms = Some(now_ms());
        self.save(&s).await;
        self.callback(&s);
        s
    }

    async fn run(&self, mut s: Submission, p: Prepared, permit: Permit) -> Submission {
        s.status_id = 2;
        self.save(&s).await;
        match exec::run(&self.engine, &permit, p.job).await {
            Ok(r) => exec::finish(&mut s, &r),
            Err(e) => {
                drop(permit);
                tracing::error!(token = %s.token, error = %e, "a submission could not run");
                return self.fail(s, "Internal Error".into()).await;
            }
        }
        drop(permit);
        s.finished_at_ms = Some(now_ms());
        self.save(&s).await;
        self.callback(&s);
        s
    }

    /// Judge0's callback: the default fields, base64.
    fn callback(&self, s: &Submission) {
        let Some(url) = s.callback_url.clone() else { return };
        let Ok(body) = s.render(&DEFAULT_FIELDS, true) else { return };
        self.callbacks.send(url, serde_json::to_vec(&body).unwrap_or_default());
    }

    pub async fn get(&self, token: &str) -> Result<Option<Submission>, StateError> {
        Ok(self.store.get(token).await?.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}
