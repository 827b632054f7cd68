//! Repository rules, checked as a test (after rust-analyzer's `tidy.rs`).
//!
//! Each rule names the files that break it, with line numbers, so a failure
//! says what to fix. The rules:
//! - `unsafe` code exists only in `crates/sandbox`; every other crate's
//!   `lib.rs` / `main.rs` says `#![forbid(unsafe_code)]`;
//! - every `unsafe` block or impl in `crates/sandbox/src` (tests included)
//!   has a `// SAFETY:` comment right above it, and no `unsafe` block there
//!   spans more than 25 lines;
//! - no debugging leftovers (`dbg!`), and library crates print nothing
//!   (they log through `tracing`);
//! - no file names a package registry's host (the lock file aside);
//! - `.ci/run` runs `scripts/setup` (the one package list), then `scripts/test`;
//! - no source file under `crates/*/src` is longer than 800 lines;
//! - the crate graph is the one ARCHITECTURE.md draws: each crate depends
//!   only on the evald crates it is allowed to (the HTTP crates reach the
//!   sandbox through the engine; the state crate knows neither sessions
//!   nor the sandbox; the wire types depend on no other evald crate).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Every `.rs` file beneath `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The crates of the workspace: (name of the directory, its path).
fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

/// The code of one line: without its `//` comment and with the contents of
/// string and character literals blanked, so that text in comments and
/// strings never counts. Line-based, so good enough for these rules (a
/// string continued over several lines is not tracked).
fn code_part(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            match c {
                '\\' => i += 1,
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            '/' if chars.get(i + 1) == Some(&'/') => break,
            '"' => {
                in_string = true;
                out.push('"');
            }
            // A character literal such as '\'' or '"' (not a lifetime).
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                let end = (i + 3..chars.len()).find(|&j| chars[j] == '\'').unwrap_or(chars.len());
                out.push_str("' '");
                i = end;
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => {
                out.push_str("' '");
                i += 2;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whether `word` occurs in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_none(rule: &str, violations: Vec<String>) {
    assert!(violations.is_empty(), "{rule}:\n  {}", violations.join("\n  "));
}

#[test]
fn unsafe_code_only_in_the_sandbox_crate() {
    let mut violations = Vec::new();
    for (name, dir) in crates() {
        if name == "sandbox" {
            continue;
        }
        for file in rust_files(&dir) {
            for (i, line) in read(&file).lines().enumerate() {
                if has_word(&code_part(line), "unsafe") {
                    violations.push(format!("{}:{}: {}", relative(&file), i + 1, line.trim()));
                }
            }
        }
    }
    assert_none("`unsafe` outside crates/sandbox", violations);
}

#[test]
fn crates_other_than_the_sandbox_forbid_unsafe_code() {
    let attribute = "#![forbid(unsafe_code)]";
    let mut violations = Vec::new();
    for (name, dir) in crates() {
        if name == "sandbox" {
            continue;
        }
        let mut roots: Vec<PathBuf> =
            ["src/lib.rs", "src/main.rs"].iter().map(|f| dir.join(f)).filter(|p| p.is_file()).collect();
        roots.extend(rust_files(&dir.join("src/bin")));
        if roots.is_empty() {
            violations.push(format!("crates/{name}: no src/lib.rs or src/main.rs"));
        }
        for file in roots {
            if !read(&file).lines().any(|l| l.trim() == attribute) {
                violations.push(format!("{}: missing {attribute}", relative(&file)));
            }
        }
    }
    assert_none("crate roots without #![forbid(unsafe_code)]", violations);
}

/// The comment block (and attributes) right above line `i`, plus the three
/// lines above it, must contain `// SAFETY:`; so may the line itself.
fn has_safety_comment(lines: &[&str], i: usize) -> bool {
    let is_safety = |l: &str| l.trim_start().starts_with("// SAFETY:") || l.contains("// SAFETY:");
    if is_safety(lines[i]) || lines[i.saturating_sub(3)..i].iter().any(|l| is_safety(l)) {
        return true;
    }
    let mut j = i;
    while j > 0 {
        j -= 1;
        let l = lines[j].trim_start();
        if is_safety(l) {
            return true;
        }
        if !(l.starts_with("//") || l.starts_with("#[")) {
            return false;
        }
    }
    false
}

#[test]
fn every_unsafe_block_in_the_sandbox_has_a_safety_comment() {
    let mut violations = Vec::new();
    for file in rust_files(&root().join("crates/sandbox/src")) {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = code_part(line);
            let block = code.contains("unsafe {") || code.trim_end().ends_with("unsafe");
            let unsafe_impl = code.contains("unsafe impl");
            if (block || unsafe_impl) && !has_safety_comment(&lines, i) {
                violations.push(format!("{}:{}: {}", relative(&file), i + 1, line.trim()));
            }
        }
    }
    assert_none("`unsafe` without a `// SAFETY:` comment right above", violations);
}

/// Longest `unsafe` block allowed in the sandbox, in lines.
const MAX_UNSAFE_LINES: usize = 25;

/// Lines from the `unsafe {` that starts at byte `at` of line `start` to
/// its matching `}` (braces counted on the code part of each line), or to
/// the end of the file when it never closes.
fn unsafe_block_lines(lines: &[&str], start: usize, at: usize) -> usize {
    let mut depth = 0usize;
    for (j, line) in lines.iter().enumerate().skip(start) {
        let code = code_part(line);
        let part = if j == start { &code[at..] } else { &code[..] };
        for c in part.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return j - start + 1;
                    }
                }
                _ => {}
            }
        }
    }
    lines.len() - start
}

#[test]
fn unsafe_blocks_in_the_sandbox_are_short() {
    let mut violations = Vec::new();
    for file in rust_files(&root().join("crates/sandbox/src")) {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = code_part(line);
            for (at, _) in code.match_indices("unsafe {") {
                let span = unsafe_block_lines(&lines, i, at);
                if span > MAX_UNSAFE_LINES {
                    violations.push(format!("{}:{}: {span} lines", relative(&file), i + 1));
                }
            }
        }
    }
    assert_none(&format!("`unsafe` blocks longer than {MAX_UNSAFE_LINES} lines"), violations);
}

#[test]
fn no_debugging_leftovers() {
    let dbg = ["dbg", "!("].concat();
    let mut violations = Vec::new();
    for file in rust_files(&root().join("crates")) {
        for (i, line) in read(&file).lines().enumerate() {
            if code_part(line).contains(&dbg) {
                violations.push(format!("{}:{}: {}", relative(&file), i + 1, line.trim()));
            }
        }
    }
    assert_none("dbg! left in the code", violations);
}

#[test]
fn library_crates_print_nothing() {
    let macros = ["println!(", "eprintln!(", "print!(", "eprint!("];
    let mut violations = Vec::new();
    for (_, dir) in crates() {
        if !dir.join("src/lib.rs").is_file() {
            continue;
        }
        for file in rust_files(&dir.join("src")) {
            for (i, line) in read(&file).lines().enumerate() {
                let code = code_part(line);
                if macros.iter().any(|m| has_macro(&code, m)) {
                    violations.push(format!("{}:{}: {}", relative(&file), i + 1, line.trim()));
                }
            }
        }
    }
    assert_none("library code printing instead of logging through tracing", violations);
}

/// `print!(` must not match inside `eprint!(` or `sprint!(`.
fn has_macro(code: &str, mac: &str) -> bool {
    code.match_indices(mac)
        .any(|(i, _)| !code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

/// Files under version control (or, outside a git checkout, every file but
/// `target/` and `.git/`).
fn repository_files() -> Vec<PathBuf> {
    let root = root();
    let listed = Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output();
    if let Ok(out) = listed {
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(|p| root.join(p))
                .filter(|p| p.is_file())
                .collect();
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("directory") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && name != ".git" && name != "node_modules" {
                    stack.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn no_file_names_a_package_registry_host() {
    // Built by concatenation so that this file does not name them itself.
    let hosts = [
        ["crates", ".io"].concat(),
        ["pypi", ".org"].concat(),
        ["npm", "js"].concat(),
        ["deb", ".debian", ".org"].concat(),
    ];
    let mut violations = Vec::new();
    for file in repository_files() {
        if file.file_name().is_some_and(|n| n == "Cargo.lock") {
            continue;
        }
        // Binary files are skipped.
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            for host in &hosts {
                if line.to_lowercase().contains(host.as_str()) {
                    violations.push(format!("{}:{}: names {host}", relative(&file), i + 1));
                }
            }
        }
    }
    assert_none("package registry host names in the repository", violations);
}

#[test]
fn ci_runs_the_readmes_setup_then_its_test_command_and_keeps_no_package_list() {
    let text = read(&root().join(".ci/run"));
    let commands: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(commands.contains(&"scripts/setup"), ".ci/run must run scripts/setup: {commands:?}");
    assert_eq!(commands.last(), Some(&"exec scripts/test"), ".ci/run must end with the README's test command");
    let own = commands.iter().filter(|l| l.contains("apt-get") || l.starts_with("PACKAGES=")).count();
    assert_eq!(own, 0, ".ci/run installs packages only through scripts/setup (one list)");
}

/// The longest a source file under `crates/*/src` may be.
const MAX_SOURCE_LINES: usize = 800;

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let mut violations = Vec::new();
    for (_, dir) in crates() {
        for file in rust_files(&dir.join("src")) {
            let lines = read(&file).lines().count();
            if lines > MAX_SOURCE_LINES {
                violations.push(format!("{}: {lines} lines", relative(&file)));
            }
        }
    }
    assert_none("source files longer than 800 lines (split them by role)", violations);
}

/// The evald crates each crate may depend on (normal dependencies; tests
/// may use more), by directory name. A crate missing here may depend on
/// none.
const ALLOWED_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("testkit", &[]),
    ("sandbox", &["evald-proto"]),
    ("state", &["evald-proto"]),
    ("engine", &["evald-proto", "evald-sandbox"]),
    ("session", &["evald-engine", "evald-proto", "evald-state"]),
    ("judge0", &["evald-engine", "evald-proto", "evald-state"]),
    ("server", &["evald-engine", "evald-judge0", "evald-proto", "evald-session", "evald-state"]),
    ("cli", &["evald-engine", "evald-judge0", "evald-sandbox", "evald-server", "evald-session"]),
];

/// The `evald-*` names in the `[dependencies]` table of a manifest.
fn evald_dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies {
            if let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| n.starts_with("evald-")) {
                out.push(name.to_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_crate_graph_is_the_drawn_one() {
    let mut violations = Vec::new();
    for (name, dir) in crates() {
        let allowed = ALLOWED_DEPENDENCIES.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, a)| *a);
        for dep in evald_dependencies(&read(&dir.join("Cargo.toml"))) {
            if !allowed.contains(&dep.as_str()) {
                violations.push(format!("crates/{name} depends on {dep}"));
            }
        }
    }
    assert_none("dependencies ARCHITECTURE.md does not draw", violations);
}

#[test]
fn dependency_tables_are_read() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nevald-proto.workspace = true\nserde = \"1\"\nevald-engine = { path = \"../engine\" }\n[dev-dependencies]\nevald-testkit.workspace = true\n";
    assert_eq!(evald_dependencies(manifest), ["evald-engine", "evald-proto"]);
}

#[test]
fn code_part_drops_comments_and_literals() {
    assert_eq!(code_part(r#"let a = "x // un safe"; // z"#), r#"let a = ""; "#);
    assert_eq!(code_part(r#"f('"', b'\'', "\"q\"") // c"#), r#"f(' ', b' ', "") "#);
    assert_eq!(code_part("fn f<'a>(x: &'a str) {}"), "fn f<'a>(x: &'a str) {}");
    assert!(has_word("x = unsafe { y }", "unsafe"));
    assert!(!has_word("#![forbid(unsafe_code)]", "unsafe"));
    assert!(has_macro("eprintln!(\"x\")", "eprintln!("));
    let block = ["let x = unsafe {", "    f('}', \"}\");", "    { g() }", "};", "h();"];
    assert_eq!(unsafe_block_lines(&block, 0, 8), 4);
    assert_eq!(unsafe_block_lines(&["unsafe { a() }; unsafe {", "}"], 0, 0), 1);
    assert!(!has_macro("eprintln!(\"x\")", "println!("));
}
