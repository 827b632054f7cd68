//! Stored records by token (the Judge0 API's submissions): opaque bodies
//! with a creation time, readable later by any node, listed newest first,
//! bounded by age and count.
//!
//! - [`LocalRecords`]: one file per record under a directory of the node's
//!   durable data (`<token>` holds `<created_ms>\n<body>`), an index in
//!   memory rebuilt at start-up.
//! - [`RedisRecords`]: `rec:<token>` strings with a time to live (the age
//!   bound) and the sorted set `rec:index` (score: creation time) for
//!   listing and the count bound, changed together in Lua scripts.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::Script;

use crate::{BoxFuture, Keys, StateError};

/// How long and how many records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this are gone.
    pub max_age: Duration,
    /// The oldest records beyond this many are gone.
    pub max_count: u64,
}

/// One page of records, newest first, and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordPage {
    pub bodies: Vec<Vec<u8>>,
    pub total: u64,
}

/// The port.
pub trait RecordStore: Send + Sync + 'static {
    /// Stores a new record (its creation time: milliseconds since the
    /// epoch); the oldest records beyond the bounds go.
    fn insert<'a>(&'a self, token: &'a str, created_ms: u64, body: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>>;
    /// Replaces the body of a record that is still stored (false when it
    /// is gone: nothing is written).
    fn update<'a>(&'a self, token: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<bool, StateError>>;
    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>>;
    /// Records `offset..offset + limit`, newest first.
    fn list(&self, offset: u64, limit: u64) -> BoxFuture<'_, Result<RecordPage, StateError>>;
    /// Removes a record; false when there was none.
    fn remove<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StateError>>;
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Tokens name files and keys: letters, digits and `-` only, 1 to 64.
fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn io_error(op: &'static str, e: std::io::Error) -> StateError {
    StateError::Reply { op, detail: e.to_string() }
}

#[derive(Default)]
struct Index {
    /// (created, token), oldest first.
    order: BTreeSet<(u64, String)>,
    created: HashMap<String, u64>,
}

impl Index {
    fn remove(&mut self, token: &str) -> bool {
        match self.created.remove(token) {
            Some(t) => self.order.remove(&(t, token.to_owned())),
            None => false,
        }
    }

    /// Tokens past the bounds, removed from the index.
    fn expire(&mut self, retention: Retention, now: u64) -> Vec<String> {
        let oldest_kept = now.saturating_sub(retention.max_age.as_millis() as u64);
        let mut gone = Vec::new();
        while let Some((t, tok)) = self.order.first().cloned() {
            if t >= oldest_kept && (self.order.len() as u64) <= retention.max_count {
                break;
            }
            self.order.pop_first();
            self.created.remove(&tok);
            gone.push(tok);
        }
        gone
    }
}

/// Records of one node on its disk. The std mutex guards the index only and
/// is never held across an await; file work runs on the blocking pool.
pub struct LocalRecords {
    dir: PathBuf,
    retention: Retention,
    index: Mutex<Index>,
}

impl LocalRecords {
    /// Opens (creating) the directory and indexes the records in it; those
    /// past the bounds are removed.
    pub fn open(dir: impl Into<PathBuf>, retention: Retention) -> std::io::Result<LocalRecords> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let mut index = Index::default();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_token(&name) {
                // A temporary file left by a crash.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let text = std::fs::read(entry.path())?;
            let created = text
                .split(|b| *b == b'\n')
                .next()
                .and_then(|l| std::str::from_utf8(l).ok())
                .and_then(|l| l.parse::<u64>().ok());
            match created {
                Some(t) => {
                    index.order.insert((t, name.clone()));
                    index.created.insert(name, t);
                }
                None => std::fs::remove_file(entry.path())?,
            }
        }
        let gone = index.expire(retention, now_ms());
        for tok in gone {
            let _ = std::fs::remove_file(dir.join(tok));
        }
        Ok(LocalRecords { dir, retention, index: Mutex::new(index) })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Index>, StateError> {
        self.index.lock().map_err(|_| StateError::Reply { op: "records", detail: "index lock poisoned".into() })
    }

    async fn write(&self, token: &str, created: u64, body: Vec<u8>) -> Result<(), StateError> {
        let dir = self.dir.clone();
        let token = token.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut content = format!("{created}\n").into_bytes();
            content.extend_from_slice(&body);
            let staged = dir.join(format!(".{token}.tmp"));
            std::fs::write(&staged, &content)?;
            std::fs::File::open(&staged)?.sync_all()?;
            std::fs::rename(&staged, dir.join(&token))
        })
        .await
        .map_err(|e| StateError::Reply { op: "records write", detail: e.to_string() })?
        .map_err(|e| io_error("records write", e))
    }

    async fn read(&self, token: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.dir.join(token);
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| StateError::Reply { op: "records read", detail: e.to_string() })?;
        match read {
            Ok(content) => {
                let start = content.iter().position(|b| *b == b'\n').map_or(content.len(), |i| i + 1);
                Ok(Some(content[start..].to_vec()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("records read", e)),
        }
    }

    fn delete_files(&self, tokens: Vec<String>) {
        for tok in tokens {
            let _ = std::fs::remove_file(self.dir.join(tok));
        }
    }
}

impl RecordStore for LocalRecords {
    fn insert<'a>(&'a self, token: &'a str, created_ms: u64, body: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if !valid_token(token) {
                return Err(StateError::Reply { op: "records insert", detail: "invalid token".into() });
            }
            self.write(token, created_ms, body).await?;
            let gone = {
                let mut index = self.lock()?;
                index.remove(token);
                index.order.insert((created_ms, token.to_owned()));
                index.created.insert(token.to_owned(), created_ms);
                index.expire(self.retention, now_ms())
            };
            self.delete_files(gone);
            Ok(())
        })
    }

    fn update<'a>(&'a self, token: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let Some(created) = self.lock()?.created.get(token).copied() else { return Ok(false) };
            self.write(token, created, body).await?;
            // Removed meanwhile: the write must not bring it back.
            if !self.lock()?.created.contains_key(token) {
                self.delete_files(vec![token.to_owned()]);
                return Ok(false);
            }
            Ok(true)
        })
    }

    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>> {
        Box::pin(async move {
            let gone = self.lock()?.expire(self.retention, now_ms());
            self.delete_files(gone);
            if !valid_token(token) || !self.lock()?.created.contains_key(token) {
                return Ok(None);
            }
            self.read(token).await
        })
    }

    fn list(&self, offset: u64, limit: u64) -> BoxFuture<'_, Result<RecordPage, StateError>> {
        Box::pin(async move {
            let (tokens, total) = {
                let mut index = self.lock()?;
                let gone = index.expire(self.retention, now_ms());
                self.delete_files(gone);
                let tokens: Vec<String> = index
                    .order
                    .iter()
                    .rev()
                    .skip(offset.min(usize::MAX as u64) as usize)
                    .take(limit.min(usize::MAX as u64) as usize)
                    .map(|(_, t)| t.clone())
                    .collect();
                (tokens, index.order.len() as u64)
            };
            let mut bodies = Vec::with_capacity(tokens.len());
            for t in tokens {
                if let Some(b) = self.read(&t).await? {
                    bodies.push(b);
                }
            }
            Ok(RecordPage { bodies, total })
        })
    }

    fn remove<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let removed = self.lock()?.remove(token);
            if removed {
                self.delete_files(vec![token.to_owned()]);
            }
            Ok(removed)
        })
    }
}

/// Stores a record, indexes it and drops the oldest beyond the bounds.
/// KEYS: record, index. ARGV: token, created, body, ttl ms, oldest kept,
/// max count, record key prefix.
const INSERT: &str = r"
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, t in ipairs(old) do redis.call('DEL', ARGV[7] .. t) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return 1
";

/// Replaces a stored record's body, keeping its time to live.
const UPDATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
";

/// Records in Redis, shared by every node of a cluster.
pub struct RedisRecords {
    conn: ConnectionManager,
    keys: Keys,
    retention: Retention,
    insert: Script,
    update: Script,
}

impl RedisRecords {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys, retention: Retention) -> RedisRecords {
        RedisRecords { conn, keys, retention, insert: Script::new(INSERT), update: Script::new(UPDATE) }
    }

    fn record_key(&self, token: &str) -> String {
        self.keys.key(&format!("rec:{token}"))
    }

    fn index_key(&self) -> String {
        self.keys.key("rec:index")
    }

    fn oldest_kept(&self) -> u64 {
        now_ms().saturating_sub(self.retention.max_age.as_millis() as u64)
    }
}

impl RecordStore for RedisRecords {
    fn insert<'a>(&'a self, token: &'a str, created_ms: u64, body: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if !valid_token(token) {
                return Err(StateError::Reply { op: "records insert", detail: "invalid token".into() });
            }
            let mut conn = self.conn.clone();
            let ttl = self.retention.max_age.as_millis().max(1) as u64;
            let _: i64 = self
                .insert
                .key(self.record_key(token))
                .key(self.index_key())
                .arg(token)
                .arg(created_ms)
                .arg(body)
                .arg(ttl)
                .arg(self.oldest_kept())
                .arg(self.retention.max_count)
                .arg(self.keys.key("rec:"))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| StateError::from_redis("records insert", e))?;
            Ok(())
        })
    }

    fn update<'a>(&'a self, token: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            if !valid_token(token) {
                return Ok(false);
            }
            let mut conn = self.conn.clone();
            let n: i64 = self
                .update
                .key(self.record_key(token))
                .arg(body)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| StateError::from_redis("records update", e))?;
            Ok(n == 1)
        })
    }

    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>> {
        Box::pin(async move {
            if !valid_token(token) {
                return Ok(None);
            }
            let mut conn = self.conn.clone();
            redis::cmd("GET")
                .arg(self.record_key(token))
                .query_async(&mut conn)
                .await
                .map_err(|e| StateError::from_redis("records get", e))
        })
    }

    fn list(&self, offset: u64, limit: u64) -> BoxFuture<'_, Result<RecordPage, StateError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let index = self.index_key();
            let (total, tokens): (u64, Vec<String>) = redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(format!("({}", self.oldest_kept()))
                .ignore()
                .cmd("ZCARD")
                .arg(&index)
                .cmd("ZREVRANGE")
                .arg(&index)
                .arg(offset)
                .arg(offset.saturating_add(limit).saturating_sub(1) as i64)
                .query_async(&mut conn)
                .await
                .map_err(|e| StateError::from_redis("records list", e))?;
            if limit == 0 || tokens.is_empty() {
                return Ok(RecordPage { bodies: Vec::new(), total });
            }
            let keys: Vec<String> = tokens.iter().map(|t| self.record_key(t)).collect();
            let bodies: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| StateError::from_redis("records list", e))?;
            Ok(RecordPage { bodies: bodies.into_iter().flatten().collect(), total })
        })
    }

    fn remove<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            if !valid_token(token) {
                return Ok(false);
            }
            let mut conn = self.conn.clone();
            let (deleted, _): (u64, u64) = redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(self.record_key(token))
                .cmd("ZREM")
                .arg(self.index_key())
                .arg(token)
                .query_async(&mut conn)
                .await
                .map_err(|e| StateError::from_redis("records remove", e))?;
            Ok(deleted == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_records_bounded_listed_and_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let retention = Retention { max_age: Duration::from_secs(3600), max_count: 3 };
        let s = LocalRecords::open(dir.path(), retention).expect("open");
        let now = now_ms() - 10_000;
        for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
            s.insert(t, now + i as u64, t.as_bytes().to_vec()).await.expect("insert");
        }
        assert_eq!(s.get("a").await.expect("get"), None, "the oldest beyond the count went");
        let page = s.list(0, 2).await.expect("list");
        assert_eq!(page, RecordPage { bodies: vec![b"d".to_vec(), b"c".to_vec()], total: 3 });
        assert!(s.update("b", b"B".to_vec()).await.expect("update"));
        assert!(!s.update("a", b"A".to_vec()).await.expect("update gone"));
        assert!(s.remove("c").await.expect("remove"));
        assert!(!s.remove("c").await.expect("remove again"));
        drop(s);
        let s = LocalRecords::open(dir.path(), retention).expect("reopen");
        assert_eq!(s.get("b").await.expect("get"), Some(b"B".to_vec()));
        assert_eq!(s.list(0, 10).await.expect("list").total, 2);
        // An age bound drops what is older.
        let old = LocalRecords::open(dir.path(), Retention { max_age: Duration::ZERO, max_count: 10 }).expect("aged");
        assert_eq!(old.list(0, 10).await.expect("list").total, 0);
        assert_eq!(s.get("../x").await.expect("bad token"), None);
    }
}
