//! `wait: false` runs of a cluster: queued in Redis ([`evald_state::RunQueue`])
//! so that any node runs them and any node answers their status.
//!
//! Submitting ([`ClusterQueue::submit`]) stores the run's status `queued`,
//! then adds the job (the request and the run id) to the stream, bounded in
//! depth. Each node runs a worker ([`ClusterQueue::start`]):
//!
//! - a reader takes one entry at a time while the node has a free queue token
//!   (one per slot, so a node never holds more queue runs than it can run),
//!   and runs it: admission as for any run, the engine in `spawn_blocking`,
//!   then `finish` stores the result (kept `result_ttl`) and acknowledges the
//!   entry in one step;
//! - a reclaimer takes, every few seconds, the entries other consumers were
//!   delivered more than `reclaim_idle` ago and did not finish (their node
//!   died) and runs them the same way;
//! - a toucher resets the idle time of every entry the node holds, more often
//!   than `reclaim_idle`, so that a live node's long runs are not reclaimed.
//!
//! Judge0's `wait=false` submissions of a cluster go through the same
//! queue ([`evald_judge0::SharedQueue`]): their entry carries only the
//! submission's token, the record (in Redis) holds the rest, and the worker
//! runs it with the Judge0 service, which stores the result in the record;
//! the entry is then acknowledged (a second delivery finds the record
//! finished and only acknowledges).
//!
//! The worker follows the node's lifecycle: while the node drains the
//! reader stops taking entries and every entry not started yet (waiting for
//! a token or for admission) is handed back to the queue for another node;
//! started runs finish (within the drain bound). When the node stops, the
//! loops end and [`ClusterQueue::run`] returns once the runs it started are
//! done. A run is finished at least once: a node that dies after storing a
//! result and before acknowledging it leaves the entry to be reclaimed, and
//! the new holder then finds the stored result and only acknowledges the
//! entry.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::http::StatusCode;
use evald_engine::{Phase, Refusal};
use evald_proto::v1;
use evald_state::{QueueEntry, RunQueue, StateError};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::runs::Runner;

/// How long a `queued` or `running` status is kept (it is replaced by the
/// result when the run is done): far longer than any run waits.
const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);
/// The entry kind a node announces it reads, besides native runs.
const JUDGE0_KIND: &str = "judge0";
/// How long an announcement lasts; renewed every third of it.
const ANNOUNCE_TTL: Duration = Duration::from_secs(9);
/// A consumer that read less than this ago is a live node.
const LIVE_READER: Duration = Duration::from_secs(10);

/// How long a Redis operation of the worker is retried while Redis is away.
const RETRY_BOUND: Duration = Duration::from_secs(30);

/// Settings of the queue worker.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// This node's consumer name (its `--instance`, unique per node).
    pub node: String,
    /// Most runs the queue holds (waiting and running); more get 429.
    pub max_depth: u64,
    /// An entry delivered this long ago and neither finished nor touched is
    /// taken over by another node.
    pub reclaim_idle: Duration,
    /// How long a result is kept.
    pub result_ttl: Duration,
    /// Queue runs this node takes at once (its slots).
    pub concurrency: usize,
}

/// One entry of the stream: a native run, or a Judge0 submission's token.
/// Untagged, so that a native run reads as it did before Judge0's entries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum QueuedJob {
    Run { id: String, request: Box<v1::RunRequest> },
    Judge0 { judge0: String },
}

/// The queue as the handlers and the worker use it. Shared behind an `Arc`.
pub struct ClusterQueue {
    queue: RunQueue,
    settings: QueueSettings,
    /// Runs the entries.
    runner: Arc<Runner>,
    /// Runs Judge0's entries (set once the service exists; weak, as the
    /// service holds this queue).
    judge0: OnceLock<Weak<evald_judge0::Judge0>>,
    /// Entries this node holds (delivered, not finished): id -> started.
    held: Mutex<HashMap<String, bool>>,
    /// How many, so that the worker can await none when the node stops.
    held_count: watch::Sender<usize>,
    tokens: Arc<Semaphore>,
    /// The node's lifecycle.
    phase: watch::Receiver<Phase>,
}

fn status(id: &str, state: v1::JobState) -> v1::RunStatus {
    v1::RunStatus { id: id.to_owned(), state, result: None, error: None }
}

fn failed(id: &str, e: ApiError) -> v1::RunStatus {
    v1::RunStatus {
        id: id.to_owned(),
        state: v1::JobState::Done,
        result: None,
        error: Some(v1::ErrorDetail { code: e.code.to_owned(), message: e.message }),
    }
}

/// What became of a delivered entry.
enum Outcome {
    /// Done: store this and acknowledge.
    Finish(Box<v1::RunStatus>),
    /// Not started: back to the queue for another node.
    HandBack,
    /// Nothing to do (a duplicate delivery, an unreadable entry).
    Ack,
}

impl ClusterQueue {
    /// A queue whose worker runs entries with `runner` and follows `phase`
    /// (a `Lifecycle` subscription).
    pub fn new(queue: RunQueue, settings: QueueSettings, runner: Arc<Runner>, phase: watch::Receiver<Phase>) -> Self {
        let tokens = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        ClusterQueue {
            queue,
            settings,
            runner,
            judge0: OnceLock::new(),
            held: Mutex::default(),
            held_count: watch::channel(0).0,
            tokens,
            phase,
        }
    }

    /// The Judge0 service that runs Judge0's entries.
    pub fn set_judge0(&self, judge0: &Arc<evald_judge0::Judge0>) {
        let _ = self.judge0.set(Arc::downgrade(judge0));
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Queues a checked request under `id`.
    pub async fn submit(&self, id: &str, request: &v1::RunRequest) -> Result<(), ApiError> {
        let job = serde_json::to_string(&QueuedJob::Run { id: id.to_owned(), request: Box::new(request.clone()) })
            .map_err(ApiError::internal)?;
        let queued = serde_json::to_string(&status(id, v1::JobState::Queued)).map_err(ApiError::internal)?;
        // The status first: a worker that takes the entry at once overwrites it.
        self.queue.put_result(id, &queued, PENDING_TTL).await?;
        match self.queue.enqueue(&job, self.settings.max_depth).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!("the run queue holds {} runs already; retry later", self.settings.max_depth),
            )
            .retry_after(5)),
        }
    }

    /// The status of a run, `None` when unknown (or expired).
    pub async fn get(&self, id: &str) -> Result<Option<v1::RunStatus>, ApiError> {
        match self.queue.get_result(id).await? {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(ApiError::internal),
            None => Ok(None),
        }
    }

    /// Whether the node is out of service (from the start of a drain's
    /// window): the worker takes no entry then, the other nodes do.
    fn is_draining(&self) -> bool {
        *self.phase.borrow() != Phase::Serving
    }

    fn is_stopping(&self) -> bool {
        *self.phase.borrow() == Phase::Stopping
    }

    async fn until_drain(&self) {
        let mut rx = self.phase.clone();
        let _ = rx.wait_for(|p| *p != Phase::Serving).await;
    }

    /// Waits until the node serves; false when it stops instead.
    async fn until_serving(&self) -> bool {
        let mut rx = self.phase.clone();
        matches!(rx.wait_for(|p| matches!(p, Phase::Serving | Phase::Stopping)).await.map(|p| *p), Ok(Phase::Serving))
    }

    /// The worker: the reader, the reclaimer and the toucher. It returns
    /// once the node stops and every run it started has ended (the toucher
    /// keeps touching those until then).
    pub async fn run(self: Arc<Self>) {
        // Announced before the first read, so that no other node sees this
        // one read without it.
        self.announce().await;
        tokio::join!(
            self.clone().read_loop(),
            self.clone().reclaim_loop(),
            self.clone().touch_loop(),
            self.clone().announce_loop()
        );
    }

    async fn announce(&self) {
        if let Err(e) = self.queue.announce(&self.settings.node, JUDGE0_KIND, ANNOUNCE_TTL).await {
            tracing::debug!(error = %e, "announcing the queue entries this node reads failed");
        }
    }

    /// Renews the announcement that this node reads Judge0's entries.
    async fn announce_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ANNOUNCE_TTL / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut phase = self.phase.clone();
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = phase.wait_for(|p| *p == Phase::Stopping) => true,
            };
            if stopping {
                return;
            }
            self.announce().await;
        }
    }

    /// Marks an entry held; false when it is held already.
    fn hold(&self, entry_id: &str) -> bool {
        let Ok(mut held) = self.held.lock() else { return false };
        if held.contains_key(entry_id) {
            return false;
        }
        held.insert(entry_id.to_owned(), false);
        self.held_count.send_replace(held.len());
        true
    }

    fn set_started(&self, entry_id: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(entry_id.to_owned(), true);
        }
    }

    fn release(&self, entry_id: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(entry_id);
            self.held_count.send_replace(held.len());
        }
    }

    async fn read_loop(self: Arc<Self>) {
        let node = self.settings.node.clone();
        let mut failing = false;
        loop {
            if !self.until_serving().await {
                return;
            }
            let token = tokio::select! {
                t = self.tokens.clone().acquire_owned() => match t {
                    Ok(t) => t,
                    Err(_) => return,
                },
                () = self.until_drain() => continue,
            };
            match self.queue.next(&node, Duration::from_secs(1)).await {
                Ok(entry) => {
                    failing = false;
                    if let Some(entry) = entry {
                        if self.hold(&entry.id) {
                            tokio::spawn(self.clone().run_entry(entry, Some(token)));
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "reading the run queue failed; retrying");
                    }
                    failing = true;
                    drop(token);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn reclaim_interval(&self) -> Duration {
        (self.settings.reclaim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    async fn reclaim_loop(self: Arc<Self>) {
        let node = self.settings.node.clone();
        let mut tick = tokio::time::interval(self.reclaim_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut phase = self.phase.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = phase.wait_for(|p| *p == Phase::Stopping) => return,
            }
            if self.is_draining() {
                continue;
            }
            match self.queue.reclaim(&node, self.settings.reclaim_idle).await {
                Ok(entries) => {
                    for entry in entries {
                        if self.hold(&entry.id) {
                            tracing::info!(entry = %entry.id, deliveries = entry.deliveries, "reclaimed a queued run");
                            tokio::spawn(self.clone().run_entry(entry, None));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reclaiming queued runs failed"),
            }
        }
    }

    async fn touch_loop(self: Arc<Self>) {
        let node = self.settings.node.clone();
        let every = (self.settings.reclaim_idle / 3).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held = self.held_count.subscribe();
        let mut phase = self.phase.clone();
        loop {
            let stopping = self.is_stopping();
            tokio::select! {
                _ = tick.tick() => {}
                // Once the node stops and nothing is held, nothing will be.
                _ = held.wait_for(|n| *n == 0), if stopping => return,
                // Woken when the node stops, to await the end of its runs.
                _ = phase.wait_for(|p| *p == Phase::Stopping), if !stopping => continue,
            }
            let ids: Vec<String> = match self.held.lock() {
                Ok(h) => h.keys().cloned().collect(),
                Err(_) => return,
            };
            for id in ids {
                match self.queue.touch(&node, &id).await {
                    Ok(true) => {}
                    Ok(false) => tracing::info!(entry = %id, "a queued run this node holds was taken by another"),
                    Err(e) => tracing::debug!(error = %e, "touching a queued run failed"),
                }
            }
        }
    }

    /// Runs one delivered entry to its end.
    async fn run_entry(self: Arc<Self>, entry: QueueEntry, token: Option<OwnedSemaphorePermit>) {
        let outcome = self.outcome(&entry, token).await;
        let node = self.settings.node.clone();
        let q = &self.queue;
        let (what, r) = match outcome {
            Outcome::Finish(status) => match serde_json::to_string(&status) {
                Ok(text) => {
                    ("finish", retry(|| q.finish(&entry.id, &status.id, &text, self.settings.result_ttl)).await)
                }
                Err(e) => ("finish", Err(e.to_string())),
            },
            Outcome::HandBack => ("hand back", retry(|| q.hand_back(&node, &entry.id)).await.map(|_| ())),
            Outcome::Ack => ("acknowledge", retry(|| q.ack(&entry.id)).await),
        };
        if let Err(e) = r {
            // The entry stays pending: once untouched it is reclaimed.
            tracing::warn!(entry = %entry.id, error = %e, "could not {what} a queued run");
        }
        self.release(&entry.id);
    }

    async fn outcome(&self, entry: &QueueEntry, token: Option<OwnedSemaphorePermit>) -> Outcome {
        let (id, request) = match serde_json::from_str(&entry.job) {
            Ok(QueuedJob::Run { id, request }) => (id, request),
            Ok(QueuedJob::Judge0 { judge0 }) => return self.judge0_outcome(entry, &judge0, token).await,
            Err(e) => {
                tracing::error!(entry = %entry.id, error = %e, "dropping an unreadable queued run");
                return Outcome::Ack;
            }
        };
        // A reclaimed entry takes a token like any other, unless a drain comes first.
        let Some(_token) = self.token(token).await else { return Outcome::HandBack };
        if entry.deliveries > 1 {
            // Delivered before: its first holder may have stored the result.
            if let Ok(Some(text)) = self.queue.get_result(&id).await {
                if serde_json::from_str::<v1::RunStatus>(&text).is_ok_and(|s| s.state == v1::JobState::Done) {
                    return Outcome::Ack;
                }
            }
        }
        let (prepared, memory) = match self.runner.prepare(*request) {
            Ok(p) => p,
            Err(e) => return Outcome::Finish(Box::new(failed(&id, e))),
        };
        let permit = match self.admit(memory).await {
            Admitted::Yes(p) => p,
            Admitted::Never(r) => return Outcome::Finish(Box::new(failed(&id, r.into()))),
            Admitted::Later => return Outcome::HandBack,
        };
        self.set_started(&entry.id);
        if let Ok(text) = serde_json::to_string(&status(&id, v1::JobState::Running)) {
            if let Err(e) = self.queue.put_result(&id, &text, PENDING_TTL).await {
                tracing::debug!(error = %e, "storing a running status failed");
            }
        }
        match self.runner.execute(id.clone(), prepared, permit).await {
            Ok(result) => Outcome::Finish(Box::new(v1::RunStatus {
                id,
                state: v1::JobState::Done,
                result: Some(result),
                error: None,
            })),
            Err(e) => Outcome::Finish(Box::new(failed(&id, e))),
        }
    }

    /// The entry's queue token: the one it was read with, or (reclaimed) a
    /// new one; `None` when the node drains first.
    async fn token(&self, token: Option<OwnedSemaphorePermit>) -> Option<OwnedSemaphorePermit> {
        let token = match token {
            Some(t) => t,
            None => tokio::select! {
                t = self.tokens.clone().acquire_owned() => t.ok()?,
                () = self.until_drain() => return None,
            },
        };
        (!self.is_draining()).then_some(token)
    }

    /// Admission as for any run of this node.
    async fn admit(&self, memory: u64) -> Admitted {
        match self.runner.engine().admit(memory).await {
            Ok(p) => Admitted::Yes(p),
            Err(r @ Refusal::TooLarge { .. }) => Admitted::Never(r),
            Err(Refusal::Draining | Refusal::ShuttingDown) => Admitted::Later,
            Err(Refusal::QueueFull | Refusal::Timeout) => {
                // Busy with other work: let another node (or a later pass) take it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Admitted::Later
            }
        }
    }

    /// A Judge0 submission's entry: the record says what to run and takes
    /// the result; the entry is acknowledged once the record is finished.
    async fn judge0_outcome(
        &self,
        entry: &QueueEntry,
        token: &str,
        queue_token: Option<OwnedSemaphorePermit>,
    ) -> Outcome {
        let Some(judge0) = self.judge0.get().and_then(Weak::upgrade) else {
            // A node without the service (it stops): another node runs it.
            return Outcome::HandBack;
        };
        let Some(_queue_token) = self.token(queue_token).await else { return Outcome::HandBack };
        let queued = match judge0.take_queued(token).await {
            Ok(evald_judge0::Pending::Ready(q)) => q,
            Ok(evald_judge0::Pending::Gone | evald_judge0::Pending::Finished) => return Outcome::Ack,
            Err(e) => {
                // The record is out of reach (Redis away): run it later.
                tracing::warn!(token, error = %e, "reading a queued Judge0 submission failed");
                return Outcome::HandBack;
            }
        };
        let permit = match queued.memory() {
            None => Err(String::new()),
            Some(memory) => match self.admit(memory).await {
                Admitted::Yes(p) => Ok(p),
                Admitted::Never(r) => Err(r.to_string()),
                Admitted::Later => return Outcome::HandBack,
            },
        };
        self.set_started(&entry.id);
        judge0.run_queued(queued, permit).await;
        Outcome::Ack
    }
}

/// What admission said to a queued entry.
enum Admitted {
    Yes(evald_engine::Permit),
    /// It can never run on this node (larger than its budget).
    Never(Refusal),
    /// Not now: back to the queue.
    Later,
}

impl evald_judge0::SharedQueue for ClusterQueue {
    fn enqueue<'a>(&'a self, token: &'a str) -> Pin<Box<dyn Future<Output = Result<bool, StateError>> + Send + 'a>> {
        Box::pin(async move {
            let job = serde_json::json!({ "judge0": token }).to_string();
            Ok(self.queue.enqueue(&job, self.settings.max_depth).await?.is_some())
        })
    }

    /// Asked on every submission (two Redis round trips), so that the
    /// first node of an older version to read is seen at once.
    fn readable_by_all(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            match self.queue.readable_by_all(JUDGE0_KIND, LIVE_READER).await {
                Ok(true) => true,
                Ok(false) => {
                    tracing::info!(
                        "a node that does not read Judge0's entries reads the run queue: a submission runs here"
                    );
                    false
                }
                Err(e) => {
                    tracing::debug!(error = %e, "checking the run queue's readers failed");
                    false
                }
            }
        })
    }

    fn waiting(&self) -> Pin<Box<dyn Future<Output = Result<u64, StateError>> + Send + '_>> {
        Box::pin(async move { Ok(self.queue.depth().await?.waiting) })
    }
}

/// Retries an operation while Redis is away, at most [`RETRY_BOUND`].
async fn retry<T, F, Fut>(mut op: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_BOUND;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
