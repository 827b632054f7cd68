//! The queue of `wait=false` runs: a Redis Stream `runs` with one consumer
//! group `workers`; each node reads as its own consumer (its node name).
//!
//! Life of an entry: [`RunQueue::enqueue`] adds it (field `job`, the run as
//! JSON); [`RunQueue::next`] delivers it to one consumer, where it stays
//! pending until [`RunQueue::finish`] stores the result and acknowledges
//! (and deletes) the entry in one MULTI, so the stream holds exactly the
//! runs not finished yet. A node that dies leaves its entries pending;
//! another node's [`RunQueue::reclaim`] takes those idle longer than a bound
//! (XAUTOCLAIM; each delivery counts one more), so every accepted run is
//! finished at least once. A run may thus execute twice when its node died
//! after storing the result and before the acknowledgement, or when it ran
//! longer than the reclaim bound without [`RunQueue::touch`].
//!
//! Handing back (a draining node, [`RunQueue::hand_back`]): the entry is
//! re-added as a new entry and the old one acknowledged and deleted, in one
//! script. A blocked reader on another node gets it at once, instead of
//! after the next reclaim pass and its idle bound (the alternative, XCLAIM to
//! a well-known consumer with a large IDLE, waits for a reclaim pass).
//!
//! If Redis loses the stream (a restart without persistence), the group is
//! created again by the first call that finds it missing.
//!
//! Entry kinds added after the first version (Judge0's) must not reach a
//! node that cannot read them (it would drop them as unreadable). A node
//! announces the kinds it reads ([`RunQueue::announce`], a key with a time
//! to live that it renews); [`RunQueue::readable_by_all`] says whether
//! every consumer that read lately has announced a kind.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use redis::{ErrorKind, RedisError, Script};

use crate::{Keys, StateError};

const GROUP: &str = "workers";
/// Entries taken per reclaim pass.
const RECLAIM_BATCH: u32 = 32;

/// Adds a job unless the queue holds `max_depth` entries already.
const ENQUEUE: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
";

/// XAUTOCLAIM, then each claimed entry's delivery count. An entry without a
/// job field (never written by this crate) is dropped.
const RECLAIM: &str = r"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(r[2]) do
  local id, fields, job = e[1], e[2], false
  if fields then
    for i = 1, #fields, 2 do
      if fields[i] == 'job' then job = fields[i + 1] end
    end
  end
  if job then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local n = 0
    if p[1] then n = p[1][4] end
    table.insert(out, {id, job, n})
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  end
end
return out
";

/// Resets the idle time of an entry the consumer still holds (JUSTID: the
/// delivery count stays).
const TOUCH: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
";

/// Re-queues an entry the consumer holds; returns the new id.
const HAND_BACK: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then return false end
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if not e[1] then return false end
return redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
";

const DEPTH: &str = r"
local len = redis.call('XLEN', KEYS[1])
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if not ok then return {len, 0} end
return {len, p[1]}
";

/// A delivered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The stream entry id (for [`RunQueue::finish`], [`RunQueue::ack`]).
    pub id: String,
    /// The job as it was enqueued.
    pub job: String,
    /// How many times it has been delivered, this time included.
    pub deliveries: u64,
}

/// What the queue holds (the autoscaling and overload signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Accepted and not delivered yet.
    pub waiting: u64,
    /// Delivered to a consumer and not finished.
    pub in_flight: u64,
}

/// The run queue. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct RunQueue {
    conn: ConnectionManager,
    /// Only for blocking reads (see [`crate::Redis::run_queue`]).
    reader: ConnectionManager,
    keys: Keys,
    response_timeout: Duration,
    enqueue: Script,
    reclaim: Script,
    touch: Script,
    hand_back: Script,
    depth: Script,
}

fn is_nogroup(e: &StateError) -> bool {
    match e {
        StateError::Command { source, .. } => source.code() == Some("NOGROUP"),
        _ => false,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RunQueue {
    pub(crate) async fn new(
        conn: ConnectionManager,
        reader: ConnectionManager,
        keys: Keys,
        response_timeout: Duration,
    ) -> Result<RunQueue, StateError> {
        let q = RunQueue {
            conn,
            reader,
            keys,
            response_timeout,
            enqueue: Script::new(ENQUEUE),
            reclaim: Script::new(RECLAIM),
            touch: Script::new(TOUCH),
            hand_back: Script::new(HAND_BACK),
            depth: Script::new(DEPTH),
        };
        match q.ensure_group().await {
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "redis is unavailable; the run queue's group will be created later");
                Ok(q)
            }
            other => other.map(|()| q),
        }
    }

    fn stream(&self) -> String {
        self.keys.key("runs")
    }

    fn result_key(&self, run_id: &str) -> String {
        self.keys.key(&format!("result:{run_id}"))
    }

    /// Creates the consumer group (and the stream), from the stream's start
    /// so that entries added while the group was missing are delivered.
    pub async fn ensure_group(&self) -> Result<(), StateError> {
        let r: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .exec_async(&mut self.conn.clone())
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(|e| StateError::from_redis("create group", e)),
        }
    }

    /// Adds a job; `None` when the queue already holds `max_depth` runs
    /// (answer 429/503: the queue is bounded).
    pub async fn enqueue(&self, job_json: &str, max_depth: u64) -> Result<Option<String>, StateError> {
        self.enqueue
            .key(self.stream())
            .arg(job_json)
            .arg(max_depth)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("enqueue", e))
    }

    /// Waits up to `block` (at least 1 ms) for a new entry for `consumer`.
    /// Concurrent calls on one queue wait in turn on its reading connection:
    /// a node runs one reading loop and hands entries to its workers.
    pub async fn next(&self, consumer: &str, block: Duration) -> Result<Option<QueueEntry>, StateError> {
        let block = block.max(Duration::from_millis(1));
        match self.read(consumer, block).await {
            Err(e) if is_nogroup(&e) => {
                self.ensure_group().await?;
                self.read(consumer, block).await
            }
            other => other,
        }
    }

    async fn read(&self, consumer: &str, block: Duration) -> Result<Option<QueueEntry>, StateError> {
        let mut reader = self.reader.clone();
        let stream = self.stream();
        let cmd = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .clone();
        let reply: Option<StreamReadReply> =
            match tokio::time::timeout(block + self.response_timeout, cmd.query_async(&mut reader)).await {
                Ok(r) => r.map_err(|e| StateError::from_redis("next", e))?,
                Err(_) => {
                    return Err(StateError::Unavailable {
                        op: "next",
                        source: RedisError::from((ErrorKind::Io, "no reply to a blocking read in time")),
                    })
                }
            };
        let Some(entry) = reply.and_then(|r| r.keys.into_iter().next()).and_then(|k| k.ids.into_iter().next()) else {
            return Ok(None);
        };
        let job = match entry.map.get("job") {
            Some(v) => redis::from_redis_value_ref::<String>(v)
                .map_err(|e| StateError::Reply { op: "next", detail: e.to_string() })?,
            None => {
                // Never written by this crate: drop it rather than deliver it forever.
                self.ack(&entry.id).await?;
                return Err(StateError::Reply { op: "next", detail: format!("entry {} has no job", entry.id) });
            }
        };
        Ok(Some(QueueEntry { id: entry.id, job, deliveries: 1 }))
    }

    /// Stores the run's result (kept for `ttl`) and acknowledges its entry,
    /// in one MULTI: the result is never lost once the entry is gone.
    pub async fn finish(
        &self,
        entry_id: &str,
        run_id: &str,
        result_json: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let stream = self.stream();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.result_key(run_id))
            .arg(result_json)
            .arg("PX")
            .arg(millis(ttl).max(1))
            .ignore()
            .xack(&stream, GROUP, &[entry_id])
            .ignore()
            .xdel(&stream, &[entry_id])
            .ignore()
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("finish", e))
    }

    /// Acknowledges and deletes an entry (a run that needs no result).
    pub async fn ack(&self, entry_id: &str) -> Result<(), StateError> {
        let stream = self.stream();
        redis::pipe()
            .atomic()
            .xack(&stream, GROUP, &[entry_id])
            .ignore()
            .xdel(&stream, &[entry_id])
            .ignore()
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("ack", e))
    }

    /// Stores a run's status or result, kept for `ttl` (any node answers a
    /// poll from it).
    pub async fn put_result(&self, run_id: &str, result_json: &str, ttl: Duration) -> Result<(), StateError> {
        redis::cmd("SET")
            .arg(self.result_key(run_id))
            .arg(result_json)
            .arg("PX")
            .arg(millis(ttl).max(1))
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("put_result", e))
    }

    pub async fn get_result(&self, run_id: &str) -> Result<Option<String>, StateError> {
        redis::cmd("GET")
            .arg(self.result_key(run_id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("get_result", e))
    }

    /// Takes for `consumer` up to 32 entries that other consumers were
    /// delivered more than `min_idle` ago and did not finish (their node
    /// died, or hands them back). Call it periodically.
    pub async fn reclaim(&self, consumer: &str, min_idle: Duration) -> Result<Vec<QueueEntry>, StateError> {
        let run = || async {
            self.reclaim
                .key(self.stream())
                .arg(GROUP)
                .arg(consumer)
                .arg(millis(min_idle))
                .arg(RECLAIM_BATCH)
                .invoke_async::<Vec<(String, String, u64)>>(&mut self.conn.clone())
                .await
                .map_err(|e| StateError::from_redis("reclaim", e))
        };
        let claimed = match run().await {
            Err(e) if is_nogroup(&e) => {
                self.ensure_group().await?;
                run().await?
            }
            other => other?,
        };
        Ok(claimed.into_iter().map(|(id, job, deliveries)| QueueEntry { id, job, deliveries }).collect())
    }

    /// Tells the group that `consumer` still works on an entry (a long run
    /// must touch its entry more often than the reclaim bound). False when
    /// the consumer no longer holds it: another node reclaimed it.
    pub async fn touch(&self, consumer: &str, entry_id: &str) -> Result<bool, StateError> {
        let n: i64 = self
            .touch
            .key(self.stream())
            .arg(GROUP)
            .arg(consumer)
            .arg(entry_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("touch", e))?;
        Ok(n == 1)
    }

    /// Puts an entry `consumer` holds back in the queue for another node (a
    /// draining node's unfinished runs). Returns the new entry id; `None`
    /// when the consumer no longer held it.
    pub async fn hand_back(&self, consumer: &str, entry_id: &str) -> Result<Option<String>, StateError> {
        self.hand_back
            .key(self.stream())
            .arg(GROUP)
            .arg(consumer)
            .arg(entry_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("hand_back", e))
    }

    fn announce_key(&self, kind: &str, consumer: &str) -> String {
        self.keys.key(&format!("runs:reads:{kind}:{consumer}"))
    }

    /// Announces that `consumer` reads entries of `kind`, for `ttl` (renew
    /// it more often).
    pub async fn announce(&self, consumer: &str, kind: &str, ttl: Duration) -> Result<(), StateError> {
        redis::cmd("SET")
            .arg(self.announce_key(kind, consumer))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl).max(1))
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("announce", e))
    }

    /// Whether every consumer that read from the queue less than `recent`
    /// ago has announced `kind` (true when none has: the first node to read
    /// announces before it reads).
    pub async fn readable_by_all(&self, kind: &str, recent: Duration) -> Result<bool, StateError> {
        let reply: Result<redis::streams::StreamInfoConsumersReply, RedisError> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.stream())
            .arg(GROUP)
            .query_async(&mut self.conn.clone())
            .await;
        let consumers = match reply {
            Ok(r) => r.consumers,
            // No stream or group yet: no consumer either.
            Err(e) if e.code() == Some("NOGROUP") || e.code() == Some("ERR") => return Ok(true),
            Err(e) => return Err(StateError::from_redis("readable_by_all", e)),
        };
        let live: Vec<String> = consumers
            .into_iter()
            .filter(|c| (c.idle as u128) < recent.as_millis())
            .map(|c| self.announce_key(kind, &c.name))
            .collect();
        if live.is_empty() {
            return Ok(true);
        }
        let announced: u64 = redis::cmd("EXISTS")
            .arg(&live)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("readable_by_all", e))?;
        Ok(announced == live.len() as u64)
    }

    /// Runs waiting and in flight.
    pub async fn depth(&self) -> Result<QueueDepth, StateError> {
        let (len, pending): (u64, u64) = self
            .depth
            .key(self.stream())
            .arg(GROUP)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| StateError::from_redis("depth", e))?;
        Ok(QueueDepth { waiting: len.saturating_sub(pending), in_flight: pending })
    }
}
