//! The language catalogue: one TOML file per language under `languages/`.
//!
//! A file looks like this (every key is documented on [`LanguageFile`]):
//! ```toml
//! id = "python"
//! name = "Python"
//! aliases = ["py", "py3", "python3"]
//! main = "main.py"
//! run = ["/usr/bin/python3", "{main}"]
//! repl = ["/usr/bin/python3", "-q"]
//! version = ["/usr/bin/python3", "--version"]
//! packages = ["python3"]
//!
//! [tests.hello]
//! source = "print('hello, world')"
//! expected = "hello, world\n"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

/// One language file as written on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageFile {
    /// Canonical id (Piston's name where Piston has the language).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Other names, including the usual file extensions.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Main file name used when the client names none.
    pub main: String,
    /// Compile command (argv), run in the workspace with compile limits.
    /// Placeholders: `{main}` (main file path relative to the workspace),
    /// `{main_stem}` (the same without its extension), `{files}` (expands
    /// to every source file, one argument each).
    #[serde(default)]
    pub compile: Option<Vec<String>>,
    /// Run command (argv), with the same placeholders; the user's arguments
    /// are appended.
    pub run: Vec<String>,
    /// Interactive REPL command, if the language has one.
    #[serde(default)]
    pub repl: Option<Vec<String>>,
    /// Command run on the host whose output holds the version (the first
    /// `N.N[.N]` found in stdout then stderr).
    pub version: Vec<String>,
    /// Debian packages that provide the language.
    #[serde(default)]
    pub packages: Vec<String>,
    /// npm packages installed globally (`npm install -g`).
    #[serde(default)]
    pub npm: Vec<String>,
    /// Commands `evald languages install` runs on the host after installing
    /// the packages, in order, in a scratch directory holding the hello
    /// test as the main file (same placeholders): work done once per host
    /// that makes every run start faster, such as a JVM class-data-sharing
    /// archive. What they write must be optional to the runtime (missing or
    /// stale, the language still works) and is shared read-only by every box.
    #[serde(default)]
    pub prepare: Vec<Vec<String>>,
    /// Extra environment of compile and run steps.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Limit overrides for this language (both stages), on top of the
    /// service's defaults.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Test programs.
    #[serde(default)]
    pub tests: Tests,
}

/// Per-language limit floors: a request's limits are raised to at least
/// these (runtimes such as the JVM cannot start below them).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub processes: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub compile_memory_bytes: Option<u64>,
    pub compile_processes: Option<u32>,
    pub compile_wall_ms: Option<u64>,
    pub compile_cpu_ms: Option<u64>,
    pub open_files: Option<u32>,
}

/// The test programs of a language.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tests {
    /// Prints exactly `expected` (e.g. "hello, world\n").
    pub hello: Option<TestProgram>,
    /// Copies stdin to stdout.
    pub echo: Option<TestProgram>,
    /// Does not compile (compiled languages only).
    pub compile_error: Option<TestProgram>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestProgram {
    pub source: String,
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub expected: String,
}

/// A catalogued language with its detected version.
#[derive(Debug, Clone)]
pub struct Language {
    pub spec: LanguageFile,
    /// Version detected on this host, e.g. `3.11.2`.
    pub version: semver::Version,
}

impl Language {
    pub fn id(&self) -> &str {
        &self.spec.id
    }
    pub fn compiled(&self) -> bool {
        self.spec.compile.is_some()
    }
}

/// Why the catalogue could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("name {name:?} is used by both {first} and {second}")]
    DuplicateName { name: String, first: String, second: String },
}

/// All catalogued languages, whether installed or not.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub files: Vec<LanguageFile>,
}

impl Catalogue {
    /// Reads every `*.toml` of `dir`.
    pub fn load_dir(dir: &Path) -> Result<Catalogue, CatalogueError> {
        let read_err = |source| CatalogueError::Read { path: dir.display().to_string(), source };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut sources = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| CatalogueError::Read { path: path.display().to_string(), source })?;
            sources.push((path.display().to_string(), text));
        }
        Catalogue::parse(sources.iter().map(|(p, t)| (p.as_str(), t.as_str())))
    }

    /// Parses `(path, text)` pairs and checks them together.
    pub fn parse<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Catalogue, CatalogueError> {
        let mut files = Vec::new();
        let mut names: HashMap<String, String> = HashMap::new();
        for (path, text) in sources {
            let file: LanguageFile = toml::from_str(text)
                .map_err(|source| CatalogueError::Parse { path: path.to_owned(), source: Box::new(source) })?;
            validate(path, &file)?;
            for name in std::iter::once(&file.id).chain(&file.aliases) {
                let key = name.to_ascii_lowercase();
                if let Some(first) = names.insert(key.clone(), file.id.clone()) {
                    return Err(CatalogueError::DuplicateName { name: key, first, second: file.id.clone() });
                }
            }
            files.push(file);
        }
        Ok(Catalogue { files })
    }
}

fn validate(path: &str, f: &LanguageFile) -> Result<(), CatalogueError> {
    let bad = |reason: String| Err(CatalogueError::Invalid { path: path.to_owned(), reason });
    let name_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+#-_.".contains(&b));
    if !name_ok(&f.id) {
        return bad(format!("invalid id {:?}", f.id));
    }
    if let Some(a) = f.aliases.iter().find(|a| !name_ok(a)) {
        return bad(format!("invalid alias {a:?}"));
    }
    if evald_proto::path::check_relative_path(&f.main).is_err() {
        return bad(format!("invalid main file {:?}", f.main));
    }
    for (what, cmd) in [
        ("run", Some(&f.run)),
        ("compile", f.compile.as_ref()),
        ("repl", f.repl.as_ref()),
        ("version", Some(&f.version)),
    ] {
        if let Some(cmd) = cmd {
            if cmd.is_empty() || !cmd[0].starts_with('/') {
                return bad(format!("{what} must be a non-empty command starting with an absolute path"));
            }
        }
    }
    if f.prepare.iter().any(|cmd| cmd.is_empty() || !cmd[0].starts_with('/')) {
        return bad("prepare commands must be non-empty and start with an absolute path".into());
    }
    if f.tests.hello.is_none() {
        return bad("a hello test is required".into());
    }
    if f.compile.is_some() && f.tests.compile_error.is_none() {
        return bad("compiled languages need a compile_error test".into());
    }
    Ok(())
}

/// Finds the first `N.N[.N]` in `text` as a semantic version.
pub fn parse_version(text: &str) -> Option<semver::Version> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !(bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.')) {
            let mut parts = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                parts.push(text[start..j].parse::<u64>().ok()?);
                if parts.len() < 3 && j + 1 < bytes.len() && bytes[j] == b'.' && bytes[j + 1].is_ascii_digit() {
                    j += 1;
                } else {
                    break;
                }
            }
            if parts.len() >= 2 {
                return Some(semver::Version::new(parts[0], parts[1], parts.get(2).copied().unwrap_or(0)));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// Runs each language's version command on the host; the languages whose
/// command works are installed.
pub fn detect_installed(catalogue: &Catalogue) -> Vec<Arc<Language>> {
    catalogue
        .files
        .iter()
        .filter_map(|f| {
            let out = std::process::Command::new(&f.version[0])
                .args(&f.version[1..])
                .stdin(std::process::Stdio::null())
                .output()
                .ok()?;
            let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let Some(version) = parse_version(&text) else {
                tracing::debug!(language = %f.id, "no version found in {text:?}");
                return None;
            };
            Some(Arc::new(Language { spec: f.clone(), version }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: &str = r#"
id = "python"
name = "Python"
aliases = ["py"]
main = "main.py"
run = ["/usr/bin/python3", "{main}"]
version = ["/usr/bin/python3", "--version"]
[tests.hello]
source = "print('hello, world')"
expected = "hello, world\n"
"#;

    #[test]
    fn parses_a_language_file() {
        let c = Catalogue::parse([("python.toml", PY)]).expect("parses");
        assert_eq!(c.files[0].id, "python");
        assert_eq!(c.files[0].run, vec!["/usr/bin/python3", "{main}"]);
        assert_eq!(c.files[0].tests.hello.as_ref().map(|t| t.expected.as_str()), Some("hello, world\n"));
    }

    #[test]
    fn duplicate_aliases_are_refused() {
        let other = PY.replace("id = \"python\"", "id = \"python2\"");
        let err = Catalogue::parse([("a.toml", PY), ("b.toml", other.as_str())]).expect_err("duplicate");
        assert_eq!(err.to_string(), "name \"py\" is used by both python and python2");
    }

    #[test]
    fn unknown_keys_and_relative_commands_are_refused() {
        let typo = format!("{PY}\nrunn = []\n");
        assert!(matches!(Catalogue::parse([("a.toml", typo.as_str())]), Err(CatalogueError::Parse { .. })));
        let rel = PY.replace("run = [\"/usr/bin/python3\"", "run = [\"python3\"");
        let err = Catalogue::parse([("a.toml", rel.as_str())]).expect_err("relative");
        assert_eq!(err.to_string(), "a.toml: run must be a non-empty command starting with an absolute path");
    }

    #[test]
    fn prepare_commands_are_parsed_and_must_be_absolute() {
        let ok = PY.replace("[tests.hello]", "prepare = [[\"/usr/bin/true\", \"{main}\"]]\n[tests.hello]");
        let c = Catalogue::parse([("a.toml", ok.as_str())]).expect("parses");
        assert_eq!(c.files[0].prepare, vec![vec!["/usr/bin/true".to_owned(), "{main}".to_owned()]]);
        let rel = PY.replace("[tests.hello]", "prepare = [[\"true\"]]\n[tests.hello]");
        let err = Catalogue::parse([("a.toml", rel.as_str())]).expect_err("relative");
        assert_eq!(err.to_string(), "a.toml: prepare commands must be non-empty and start with an absolute path");
    }

    #[test]
    fn versions_are_found_in_tool_output() {
        assert_eq!(parse_version("Python 3.11.2"), Some(semver::Version::new(3, 11, 2)));
        assert_eq!(parse_version("go version go1.19.8 linux/amd64"), Some(semver::Version::new(1, 19, 8)));
        assert_eq!(parse_version("openjdk 17.0.15 2025-04-15"), Some(semver::Version::new(17, 0, 15)));
        assert_eq!(parse_version("v20.20.2"), Some(semver::Version::new(20, 20, 2)));
        assert_eq!(parse_version("Lua 5.4"), Some(semver::Version::new(5, 4, 0)));
        assert_eq!(parse_version("no digits"), None);
    }

    #[test]
    fn the_shipped_catalogue_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../languages");
        let c = Catalogue::load_dir(&dir).expect("languages/ loads");
        assert!(c.files.len() >= 85, "only {} languages catalogued", c.files.len());
    }
}
