//! Session workspaces in Redis.
//!
//! Keys, per session `<id>`:
//! - `ws:<id>:meta`: a string, the JSON of [`Meta`]; its presence is the
//!   session's existence;
//! - `ws:<id>:files`: a hash, field = relative path, value = one flag byte
//!   (`x` executable, `-` not) followed by the content. One field per file
//!   keeps a file and its mode in one atomic write;
//! - `ws:ids`: a set of every stored session id.
//!
//! Every call returns once Redis has answered, so a write is acknowledged
//! only after Redis holds it (durability beyond that is Redis's persistence
//! setting: AOF `everysec` loses at most a second on a Redis crash). Writes
//! to a session that does not exist (removed by the reaper meanwhile) fail
//! with `NotFound` instead of leaving orphan keys. Paths follow the batch
//! rules ([`check_relative_path`]); directories exist only through the files
//! under them, as in the tmpfs copy a box sees.

use std::collections::HashMap;
use std::io;

use evald_proto::path::check_relative_path;
use redis::Script;

use crate::pool::{Pool, Replay};
use crate::workspace::{Meta, StoredFile, WorkspaceStore};
use crate::{Keys, StateError};

const EXECUTABLE: u8 = b'x';
const PLAIN: u8 = b'-';

/// Writes a file only while the session exists.
const PUT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";

/// 1: deleted; 0: no such path; -1: a directory with files under it.
const DELETE: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then return 1 end
local prefix = ARGV[1] .. '/'
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, #prefix) == prefix then return -1 end
end
return 0
";

/// Renames a file, or every file under a directory. Returns how many moved.
const RENAME: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[2], v)
  return 1
end
local from = ARGV[1] .. '/'
local to = ARGV[2] .. '/'
local moved = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local k = all[i]
  if string.sub(k, 1, #from) == from then
    redis.call('HDEL', KEYS[1], k)
    redis.call('HSET', KEYS[1], to .. string.sub(k, #from + 1), all[i + 1])
    moved = moved + 1
  end
end
return moved
";

/// Replaces the whole file set in one step: readers see the old set or the
/// new one, never a mix.
const REPLACE_ALL: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
";

/// The Redis workspace store. Synchronous, for blocking threads; see the
/// pool's documentation for the connection handling.
pub struct RedisWorkspaceStore {
    pool: Pool,
    keys: Keys,
    put: Script,
    delete: Script,
    rename: Script,
    replace_all: Script,
}

/// True when an error of [`RedisWorkspaceStore`] means Redis is away for now.
pub fn is_unavailable(e: &io::Error) -> bool {
    e.get_ref().and_then(|e| e.downcast_ref::<StateError>()).is_some_and(StateError::is_unavailable)
}

/// Unavailability maps to `NotConnected`, everything else to `Other`; the
/// [`StateError`] is kept inside (see [`is_unavailable`]).
fn io_error(e: StateError) -> io::Error {
    let kind = if e.is_unavailable() { io::ErrorKind::NotConnected } else { io::ErrorKind::Other };
    io::Error::new(kind, e)
}

fn bad_input(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason.into())
}

fn check_path(path: &str) -> io::Result<()> {
    check_relative_path(path).map_err(|e| bad_input(e.to_string()))
}

fn no_session(id: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no stored session {id}"))
}

fn encode(file: &StoredFile) -> Vec<u8> {
    let mut v = Vec::with_capacity(file.content.len() + 1);
    v.push(if file.executable { EXECUTABLE } else { PLAIN });
    v.extend_from_slice(&file.content);
    v
}

fn decode(path: String, value: Vec<u8>) -> io::Result<StoredFile> {
    match value.split_first() {
        Some((&flag, content)) if flag == EXECUTABLE || flag == PLAIN => {
            Ok(StoredFile { path, content: content.to_vec(), executable: flag == EXECUTABLE })
        }
        _ => {
            Err(io_error(StateError::Reply { op: "HGETALL", detail: format!("stored file {path:?} has no mode byte") }))
        }
    }
}

impl RedisWorkspaceStore {
    pub(crate) fn new(pool: Pool, keys: Keys) -> RedisWorkspaceStore {
        RedisWorkspaceStore {
            pool,
            keys,
            put: Script::new(PUT),
            delete: Script::new(DELETE),
            rename: Script::new(RENAME),
            replace_all: Script::new(REPLACE_ALL),
        }
    }

    /// The same rule as the local store: ASCII letters, digits and `-`.
    fn check_id(id: &str) -> io::Result<()> {
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad_input("bad session id"));
        }
        Ok(())
    }

    fn meta_key(&self, id: &str) -> String {
        self.keys.key(&format!("ws:{id}:meta"))
    }

    fn files_key(&self, id: &str) -> String {
        self.keys.key(&format!("ws:{id}:files"))
    }

    fn ids_key(&self) -> String {
        self.keys.key("ws:ids")
    }
}

impl WorkspaceStore for RedisWorkspaceStore {
    fn create(&self, id: &str, meta: &Meta) -> io::Result<()> {
        Self::check_id(id)?;
        let text = serde_json::to_string(meta).map_err(io::Error::other)?;
        let (meta_key, ids_key) = (self.meta_key(id), self.ids_key());
        self.pool
            .run("create", Replay::Safe, |c| {
                redis::pipe().atomic().set(&meta_key, &text).ignore().sadd(&ids_key, id).ignore().exec(c)
            })
            .map_err(io_error)
    }

    fn meta(&self, id: &str) -> io::Result<Option<Meta>> {
        Self::check_id(id)?;
        let key = self.meta_key(id);
        let text: Option<String> =
            self.pool.run("meta", Replay::Safe, |c| redis::cmd("GET").arg(&key).query(c)).map_err(io_error)?;
        text.map(|t| serde_json::from_str(&t).map_err(io::Error::other)).transpose()
    }

    fn set_meta(&self, id: &str, meta: &Meta) -> io::Result<()> {
        Self::check_id(id)?;
        let text = serde_json::to_string(meta).map_err(io::Error::other)?;
        let key = self.meta_key(id);
        let set: Option<String> = self
            .pool
            .run("set_meta", Replay::Safe, |c| redis::cmd("SET").arg(&key).arg(&text).arg("XX").query(c))
            .map_err(io_error)?;
        set.map(drop).ok_or_else(|| no_session(id))
    }

    fn put(&self, id: &str, file: &StoredFile) -> io::Result<()> {
        Self::check_id(id)?;
        check_path(&file.path)?;
        let (meta_key, files_key, value) = (self.meta_key(id), self.files_key(id), encode(file));
        let done: i64 = self
            .pool
            .run("put", Replay::Safe, |c| self.put.key(&meta_key).key(&files_key).arg(&file.path).arg(&value).invoke(c))
            .map_err(io_error)?;
        if done == 1 {
            Ok(())
        } else {
            Err(no_session(id))
        }
    }

    fn delete(&self, id: &str, path: &str) -> io::Result<()> {
        Self::check_id(id)?;
        check_path(path)?;
        let key = self.files_key(id);
        let done: i64 =
            self.pool.run("delete", Replay::Safe, |c| self.delete.key(&key).arg(path).invoke(c)).map_err(io_error)?;
        match done {
            1 => Ok(()),
            -1 => Err(io::Error::new(io::ErrorKind::DirectoryNotEmpty, format!("directory {path} is not empty"))),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {path}"))),
        }
    }

    fn rename(&self, id: &str, from: &str, to: &str) -> io::Result<()> {
        Self::check_id(id)?;
        check_path(from)?;
        check_path(to)?;
        if to.strip_prefix(from).is_some_and(|rest| rest.starts_with('/')) {
            return Err(bad_input(format!("cannot move {from} into itself")));
        }
        let key = self.files_key(id);
        // Not replayed: after a lost reply the source may be gone already.
        let moved: i64 = self
            .pool
            .run("rename", Replay::Unsafe, |c| self.rename.key(&key).arg(from).arg(to).invoke(c))
            .map_err(io_error)?;
        if moved > 0 {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")))
        }
    }

    fn files(&self, id: &str) -> io::Result<Vec<StoredFile>> {
        Self::check_id(id)?;
        let (meta_key, files_key) = (self.meta_key(id), self.files_key(id));
        let (exists, fields): (bool, HashMap<String, Vec<u8>>) = self
            .pool
            .run("files", Replay::Safe, |c| redis::pipe().atomic().exists(&meta_key).hgetall(&files_key).query(c))
            .map_err(io_error)?;
        if !exists {
            return Err(no_session(id));
        }
        let mut out = fields.into_iter().map(|(p, v)| decode(p, v)).collect::<io::Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn replace_all(&self, id: &str, files: &[StoredFile]) -> io::Result<()> {
        Self::check_id(id)?;
        for f in files {
            check_path(&f.path)?;
        }
        let (meta_key, files_key) = (self.meta_key(id), self.files_key(id));
        let done: i64 = self
            .pool
            .run("replace_all", Replay::Safe, |c| {
                let mut call = self.replace_all.key(&meta_key);
                call.key(&files_key);
                for f in files {
                    call.arg(&f.path).arg(encode(f));
                }
                call.invoke(c)
            })
            .map_err(io_error)?;
        if done == 1 {
            Ok(())
        } else {
            Err(no_session(id))
        }
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        Self::check_id(id)?;
        let (meta_key, files_key, ids_key) = (self.meta_key(id), self.files_key(id), self.ids_key());
        self.pool
            .run("remove", Replay::Safe, |c| {
                redis::pipe()
                    .atomic()
                    .del(&meta_key)
                    .ignore()
                    .del(&files_key)
                    .ignore()
                    .srem(&ids_key, id)
                    .ignore()
                    .exec(c)
            })
            .map_err(io_error)
    }

    fn ids(&self) -> io::Result<Vec<String>> {
        let key = self.ids_key();
        let mut ids: Vec<String> =
            self.pool.run("ids", Replay::Safe, |c| redis::cmd("SMEMBERS").arg(&key).query(c)).map_err(io_error)?;
        ids.sort();
        Ok(ids)
    }
}
