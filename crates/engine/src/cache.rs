//! The compile cache: file sets produced by successful compilations, keyed
//! by a hash of everything that determines them, bounded in bytes and
//! evicted least-recently-used first. Entries are immutable copies held in
//! memory: no untrusted code ever runs in or writes to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use evald_sandbox::FileSpec;
use sha2::{Digest, Sha256};

use crate::catalogue::Language;
use crate::SourceFile;

/// A cache key: SHA-256 of language, version, compile command and sources.
pub type Key = [u8; 32];

/// Computes the key of a compilation.
pub fn key(language: &Language, argv: &[String], files: &[SourceFile]) -> Key {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(language.spec.id.as_bytes());
    field(language.version.to_string().as_bytes());
    for a in argv {
        field(a.as_bytes());
    }
    for f in files {
        field(f.path.as_bytes());
        field(&f.content);
    }
    h.finalize().into()
}

/// What a cached compilation printed (its warnings), shown again on a hit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Printed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

struct Entry {
    files: Arc<Vec<FileSpec>>,
    printed: Arc<Printed>,
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    bytes: u64,
    clock: u64,
}

/// A bounded, thread-safe compile cache. The mutex is held only for map
/// operations, never while compiling.
pub struct CompileCache {
    capacity: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    pub fn new(capacity_bytes: u64) -> CompileCache {
        CompileCache {
            capacity: capacity_bytes,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The file set of a compilation and what it printed.
    pub fn get(&self, key: &Key) -> Option<(Arc<Vec<FileSpec>>, Arc<Printed>)> {
        let mut st = self.state.lock().ok()?;
        st.clock += 1;
        let now = st.clock;
        match st.entries.get_mut(key) {
            Some(e) => {
                e.last_used = now;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some((e.files.clone(), e.printed.clone()))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores a file set and what its compilation printed; entries larger
    /// than the whole cache are skipped.
    pub fn insert(&self, key: Key, files: Arc<Vec<FileSpec>>, printed: Arc<Printed>) {
        let bytes: u64 = files.iter().map(|f| f.content.len() as u64 + f.path.len() as u64).sum::<u64>()
            + (printed.stdout.len() + printed.stderr.len()) as u64;
        if bytes > self.capacity {
            return;
        }
        let Ok(mut st) = self.state.lock() else { return };
        st.clock += 1;
        let now = st.clock;
        if let Some(old) = st.entries.insert(key, Entry { files, printed, bytes, last_used: now }) {
            st.bytes -= old.bytes;
        }
        st.bytes += bytes;
        while st.bytes > self.capacity {
            let Some(oldest) = st.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) else { break };
            if let Some(e) = st.entries.remove(&oldest) {
                st.bytes -= e.bytes;
            }
        }
    }

    /// (entries, bytes, hits, misses)
    pub fn stats(&self) -> (usize, u64, u64, u64) {
        let (n, b) = self.state.lock().map(|s| (s.entries.len(), s.bytes)).unwrap_or((0, 0));
        (n, b, self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Arc<Vec<FileSpec>> {
        Arc::new(vec![FileSpec { path: "a".into(), content: vec![0; n], executable: true }])
    }

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c = CompileCache::new(250);
        let none = Arc::new(Printed::default());
        c.insert([1; 32], set(99), none.clone());
        c.insert([2; 32], set(99), none.clone());
        assert!(c.get(&[1; 32]).is_some());
        c.insert([3; 32], set(99), none.clone());
        assert!(c.get(&[2; 32]).is_none(), "least recently used goes first");
        assert!(c.get(&[1; 32]).is_some());
        assert!(c.get(&[3; 32]).is_some());
        assert_eq!(c.stats().1, 200);
        c.insert([4; 32], set(1000), none);
        assert!(c.get(&[4; 32]).is_none(), "larger than the cache");
    }

    #[test]
    fn keeps_what_the_compiler_printed_and_counts_it() {
        let c = CompileCache::new(250);
        let printed = Arc::new(Printed { stdout: b"note\n".to_vec(), stderr: vec![b'w'; 95] });
        c.insert([1; 32], set(99), printed.clone());
        assert_eq!(c.get(&[1; 32]).map(|(_, p)| p), Some(printed));
        assert_eq!(c.stats().1, 200);
    }
}
