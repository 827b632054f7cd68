//! The service: submissions made, run and stored.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use evald_engine::{Engine, Ticket};
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
    pub(crate) statistics: crate::info::StatisticsCache,
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
    pub fn new(engine: Arc<Engine>, store: Arc<dyn RecordStore>, config: Judge0Config) -> Arc<Judge0> {
        let languages = languages::table(&engine);
        let callbacks = Callbacks::new(config.callback_allow.clone(), 8, 1000);
        Arc::new(Judge0 { engine, store, config, languages, callbacks, statistics: Default::default() })
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

    /// Checks, stores and queues one submission; returns it (status 1) and
    /// the task that runs it (awaited for `wait=true`, else spawned).
    pub async fn submit(
        self: &Arc<Self>,
        body: &Map<String, Value>,
        base64: bool,
    ) -> Result<(Submission, impl std::future::Future<Output = Submission> + Send + 'static), Refused> {
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
        let ticket = match &prepared {
            Ok(p) => Some(self.engine.capacity().enqueue(p.memory).map_err(|_| Refused::QueueFull)?),
            Err(_) => None,
        };
        s.created_at_ms = now_ms();
        self.store
            .insert(&s.token, s.created_at_ms, serde_json::to_vec(&s).unwrap_or_default())
            .await
            .map_err(Refused::Store)?;
        let stored = s.clone();
        let this = self.clone();
        let task = async move {
            match (prepared, ticket) {
                (Ok(p), Some(t)) => this.run(s, p, t).await,
                (Err(e), _) => this.fail(s, e.0).await,
                (Ok(_), None) => this.fail(s, "Internal Error".into()).await,
            }
        };
        Ok((stored, task))
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

    async fn run(&self, mut s: Submission, p: Prepared, ticket: Ticket) -> Submission {
        let permit = match ticket.admit().await {
            Ok(p) => p,
            Err(r) => return self.fail(s, r.to_string()).await,
        };
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
