//! The path rule of every API: which relative paths a workspace file may
//! have. One rule for batch files, session files and stored workspaces; the
//! sandbox enforces the same rule where the host writes into a box.

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest path component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting accepted (directories plus the file).
pub const MAX_DEPTH: usize = 32;

/// A path the rule refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file path {path:?}: {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: &'static str,
}

/// Accepts `a`, `dir/b.txt`; refuses empty, absolute, `..`, `.`-only, NUL,
/// empty components and over-long paths.
pub fn check_relative_path(path: &str) -> Result<(), PathError> {
    let bad = |reason: &'static str| PathError { path: path.to_owned(), reason };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute paths are not allowed"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("longer than 1024 bytes"));
    }
    let mut depth = 0;
    for component in path.split('/') {
        match component {
            "" if depth > 0 => {}
            "" | "." => return Err(bad("empty or `.` component")),
            ".." => return Err(bad("`..` is not allowed")),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(bad("a component is longer than 255 bytes")),
            _ => depth += 1,
        }
    }
    if path.ends_with('/') {
        return Err(bad("ends with `/`"));
    }
    if depth > MAX_DEPTH {
        return Err(bad("nested deeper than 32 directories"));
    }
    Ok(())
}

/// The path with repeated `/` collapsed: two paths name the same file when
/// their normal forms are equal (for paths [`check_relative_path`] accepts).
pub fn normalize(path: &str) -> String {
    path.split('/').filter(|c| !c.is_empty()).collect::<Vec<_>>().join("/")
}

/// Two paths of one file set that cannot both be files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The same file twice (after [`normalize`]).
    #[error("duplicate file {0:?}")]
    Duplicate(String),
    /// A file that another path needs as its directory.
    #[error("{0:?} is both a file and a directory")]
    FileAndDirectory(String),
}

/// The first conflict among `paths` (each one [`check_relative_path`]
/// accepts), if any: no file set with one can be written.
pub fn find_conflict<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<Conflict> {
    let mut files = std::collections::HashSet::new();
    for path in paths {
        if !files.insert(normalize(path)) {
            return Some(Conflict::Duplicate(path.to_owned()));
        }
    }
    files.iter().find_map(|file| {
        let mut parent = file.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            if files.contains(dir) {
                return Some(Conflict::FileAndDirectory(dir.to_owned()));
            }
            parent = dir;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_duplicates_or_a_file_used_as_a_directory() {
        assert_eq!(find_conflict(["a", "b/c", "b/d"]), None);
        assert_eq!(find_conflict(["dir/a", "dir//a"]), Some(Conflict::Duplicate("dir//a".into())));
        assert_eq!(find_conflict(["a", "a/b"]), Some(Conflict::FileAndDirectory("a".into())));
        assert_eq!(find_conflict(["x/y/z", "x/y"]), Some(Conflict::FileAndDirectory("x/y".into())));
        assert_eq!(Conflict::FileAndDirectory("a".into()).to_string(), "\"a\" is both a file and a directory");
    }

    #[test]
    fn good_paths_pass() {
        for p in ["a", "dir/b.txt", "a//b", "x/y/z.rs"] {
            assert_eq!(check_relative_path(p), Ok(()), "{p:?}");
        }
    }

    #[test]
    fn bad_paths_are_refused_with_their_reason() {
        for (path, reason) in [
            ("../x", "`..` is not allowed"),
            ("a/../../x", "`..` is not allowed"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("", "empty path"),
            ("a\0b", "contains a NUL byte"),
            ("./a", "empty or `.` component"),
            ("a/", "ends with `/`"),
        ] {
            assert_eq!(check_relative_path(path), Err(PathError { path: path.into(), reason }), "{path:?}");
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        assert_eq!(check_relative_path(&long).map_err(|e| e.reason), Err("longer than 1024 bytes"));
        let component = "a".repeat(MAX_COMPONENT_BYTES + 1);
        assert_eq!(check_relative_path(&component).map_err(|e| e.reason), Err("a component is longer than 255 bytes"));
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(check_relative_path(&deep).map_err(|e| e.reason), Err("nested deeper than 32 directories"));
    }

    #[test]
    fn normal_forms_collapse_slashes() {
        assert_eq!(normalize("dir//a"), "dir/a");
        assert_eq!(normalize("dir/a"), "dir/a");
    }
}
