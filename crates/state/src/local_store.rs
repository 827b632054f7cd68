//! The local store: each session's files under `<dir>/<session>/files/` on
//! the host's disk (the embedded default of a single node). No box ever sees
//! that directory; every path is checked with the API's path rule first.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use evald_proto::path::check_relative_path;

use crate::workspace::{Meta, StoredFile, WorkspaceStore};

/// The local-disk store.
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<LocalStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        // Users' files: only root may read the store.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(LocalStore { dir })
    }

    fn root(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad session id"));
        }
        Ok(self.dir.join(id))
    }

    fn file(&self, id: &str, path: &str) -> io::Result<PathBuf> {
        check_relative_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(self.root(id)?.join("files").join(path))
    }
}

/// Names of temporary files, unique within the process.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `path` through a temporary file in `tmp` (on the same
/// file system, outside the files, with a short name of its own), synced,
/// then renamed into place: a reader sees the old content or the new.
fn write_atomic(tmp: &Path, path: &Path, content: &[u8]) -> io::Result<()> {
    fs::create_dir_all(tmp)?;
    let staged = tmp.join(TEMPORARY.fetch_add(1, Ordering::Relaxed).to_string());
    let written = fs::write(&staged, content).and_then(|()| fs::File::open(&staged)?.sync_all());
    match written.and_then(|()| fs::rename(&staged, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&staged);
            Err(e)
        }
    }
}

impl WorkspaceStore for LocalStore {
    fn create(&self, id: &str, meta: &Meta) -> io::Result<()> {
        let root = self.root(id)?;
        fs::create_dir_all(root.join("files"))?;
        self.set_meta(id, meta)
    }

    fn meta(&self, id: &str) -> io::Result<Option<Meta>> {
        match fs::read(self.root(id)?.join("meta.json")) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_meta(&self, id: &str, meta: &Meta) -> io::Result<()> {
        let text = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let root = self.root(id)?;
        write_atomic(&root.join("tmp"), &root.join("meta.json"), &text)
    }

    fn put(&self, id: &str, file: &StoredFile) -> io::Result<()> {
        let path = self.file(id, &file.path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(&self.root(id)?.join("tmp"), &path, &file.content)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(if file.executable { 0o755 } else { 0o644 }))
    }

    fn delete(&self, id: &str, path: &str) -> io::Result<()> {
        let p = self.file(id, path)?;
        if p.is_dir() {
            fs::remove_dir(p)
        } else {
            fs::remove_file(p)
        }
    }

    fn rename(&self, id: &str, from: &str, to: &str) -> io::Result<()> {
        let (a, b) = (self.file(id, from)?, self.file(id, to)?);
        if let Some(parent) = b.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(a, b)
    }

    fn files(&self, id: &str) -> io::Result<Vec<StoredFile>> {
        let base = self.root(id)?.join("files");
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let t = e.file_type()?;
                let p = e.path();
                if t.is_dir() {
                    stack.push(p);
                } else if t.is_file() {
                    use std::os::unix::fs::PermissionsExt;
                    let rel = p.strip_prefix(&base).map_err(io::Error::other)?.to_string_lossy().into_owned();
                    let executable = e.metadata()?.permissions().mode() & 0o111 != 0;
                    out.push(StoredFile { path: rel, content: fs::read(&p)?, executable });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn replace_all(&self, id: &str, files: &[StoredFile]) -> io::Result<()> {
        let root = self.root(id)?;
        let staging = root.join("files.new");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        for f in files {
            check_relative_path(&f.path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let p = staging.join(&f.path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&p, &f.content)?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(if f.executable { 0o755 } else { 0o644 }))?;
        }
        let old = root.join("files.old");
        let _ = fs::remove_dir_all(&old);
        fs::rename(root.join("files"), &old)?;
        fs::rename(&staging, root.join("files"))?;
        fs::remove_dir_all(old)
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.root(id)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("meta.json").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files whose names are as long as a name may be, or that differ only
    /// in their extension, are written through temporary files of their
    /// own.
    #[test]
    fn long_names_and_shared_stems_are_stored() {
        let dir = std::env::temp_dir().join(format!("evald-store-names-{}", std::process::id()));
        let s = LocalStore::new(&dir).expect("store");
        s.create("n", &Meta { language: "c".into(), touched: 1 }).expect("create");
        let long = "a".repeat(255);
        let files: Vec<StoredFile> = [long.as_str(), "a.py", "a.c"]
            .iter()
            .map(|p| StoredFile { path: (*p).to_owned(), content: p.as_bytes().to_vec(), executable: false })
            .collect();
        for f in &files {
            s.put("n", f).expect("put");
        }
        let mut want = files.clone();
        want.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(s.files("n").expect("files"), want);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn local_store_round_trip() {
        let dir = std::env::temp_dir().join(format!("evald-store-test-{}", std::process::id()));
        let s = LocalStore::new(&dir).expect("store");
        let meta = Meta { language: "python".into(), touched: 1 };
        s.create("abc", &meta).expect("create");
        assert_eq!(s.meta("abc").expect("meta"), Some(meta));
        let f = StoredFile { path: "d/a.py".into(), content: b"print(1)".to_vec(), executable: false };
        s.put("abc", &f).expect("put");
        s.rename("abc", "d/a.py", "b.py").expect("rename");
        assert_eq!(s.files("abc").expect("files"), vec![StoredFile { path: "b.py".into(), ..f.clone() }]);
        assert!(s.put("abc", &StoredFile { path: "../x".into(), ..f.clone() }).is_err());
        assert!(s.meta("../etc").is_err());
        s.replace_all("abc", &[StoredFile { path: "c".into(), content: vec![1], executable: true }]).expect("replace");
        assert_eq!(s.files("abc").expect("files").len(), 1);
        assert_eq!(s.ids().expect("ids"), vec!["abc".to_string()]);
        s.remove("abc").expect("remove");
        assert_eq!(s.meta("abc").expect("meta"), None);
        let _ = fs::remove_dir_all(dir);
    }
}
