//! The runtime versions Piston has published packages for, by runtime
//! language: a Piston client pinned to one of them (its CI sends a
//! package's own version, and many clients copy the versions of Piston's
//! public instance) gets evald's installed version of that language instead
//! of "runtime is unknown", even when the installed one is older (most
//! programs run; one that needs the newer version fails as it would on an
//! old Piston). The answer's `version` says which ran. A version Piston
//! never published, a range, and a version Piston published for another
//! runtime (`py` 2.7.18 is its python2) still match only what is
//! installed.

/// (runtime language, its published versions), from Piston's package
/// metadata.
const PUBLISHED: &[(&str, &[&str])] = &[
    ("awk", &["5.1.0"]),
    ("bash", &["5.1.0", "5.2.0"]),
    ("basic", &["6.12.0"]),
    ("basic.net", &["5.0.201"]),
    ("befunge93", &["0.2.0"]),
    ("bqn", &["1.0.0"]),
    ("brachylog", &["1.0.0"]),
    ("brainfuck", &["2.7.3"]),
    ("c", &["10.2.0"]),
    ("c++", &["10.2.0"]),
    ("cjam", &["0.6.5"]),
    ("clojure", &["1.10.3"]),
    ("cobol", &["3.1.2"]),
    ("coffeescript", &["2.5.1"]),
    ("cow", &["1.0.0"]),
    ("crystal", &["1.9.2"]),
    ("csharp", &["6.12.0"]),
    ("csharp.net", &["5.0.201"]),
    ("d", &["10.2.0"]),
    ("dart", &["2.12.1", "2.19.6", "3.0.1"]),
    ("dash", &["0.5.11"]),
    ("dragon", &["1.9.8"]),
    ("elixir", &["1.11.3"]),
    ("emacs", &["27.1.0"]),
    ("emojicode", &["1.0.2"]),
    ("erlang", &["23.0.0"]),
    ("file", &["0.0.1"]),
    ("forte", &["1.0.0"]),
    ("forth", &["0.7.3"]),
    ("fortran", &["10.2.0"]),
    ("freebasic", &["1.8.0", "1.9.0"]),
    ("fsharp.net", &["5.0.201"]),
    ("fsi", &["5.0.201"]),
    ("go", &["1.16.2"]),
    ("golfscript", &["1.0.0"]),
    ("groovy", &["3.0.7"]),
    ("haskell", &["9.0.1"]),
    ("husk", &["1.0.0"]),
    ("iverilog", &["11.0.0"]),
    ("japt", &["2.0.0"]),
    ("java", &["15.0.2"]),
    ("javascript", &["1.7.5", "1.16.2", "1.32.3", "15.10.0", "16.3.0", "18.15.0", "20.11.1"]),
    ("jelly", &["0.1.31"]),
    ("julia", &["1.5.4", "1.6.1", "1.8.5"]),
    ("kotlin", &["1.4.31", "1.8.20"]),
    ("lisp", &["2.1.2"]),
    ("llvm_ir", &["12.0.1"]),
    ("lolcode", &["0.11.2"]),
    ("lua", &["5.4.2", "5.4.4"]),
    ("matl", &["22.5.0", "22.7.4"]),
    ("nasm", &["2.15.5"]),
    ("nasm64", &["2.15.5"]),
    ("nim", &["1.4.4", "1.6.2"]),
    ("ocaml", &["4.12.0"]),
    ("octave", &["6.2.0", "8.1.0"]),
    ("osabie", &["1.0.1"]),
    ("paradoc", &["0.6.0"]),
    ("pascal", &["3.2.0", "3.2.2"]),
    ("perl", &["5.26.1", "5.36.0"]),
    ("php", &["8.0.2", "8.2.3"]),
    ("ponylang", &["0.39.0"]),
    ("powershell", &["7.1.4"]),
    ("prolog", &["8.2.4"]),
    ("pure", &["0.68.0"]),
    ("pyth", &["1.0.0"]),
    ("python", &["3.5.10", "3.9.1", "3.9.4", "3.10.0", "3.10.0-alpha.7", "3.11.0", "3.12.0"]),
    ("python2", &["2.7.18"]),
    ("racket", &["8.3.0"]),
    ("raku", &["6.100.0"]),
    ("retina", &["1.2.0"]),
    ("rockstar", &["1.0.0"]),
    ("rscript", &["4.1.1"]),
    ("ruby", &["2.5.1", "3.0.1"]),
    ("rust", &["1.50.0", "1.56.1", "1.62.0", "1.63.0", "1.65.0", "1.68.2"]),
    ("samarium", &["0.3.1"]),
    ("scala", &["3.0.0", "3.2.2"]),
    ("smalltalk", &["3.2.3"]),
    ("sqlite3", &["3.36.0"]),
    ("swift", &["5.3.3"]),
    ("typescript", &["1.7.5", "1.16.2", "1.32.3", "4.2.3", "5.0.3"]),
    ("vlang", &["0.1.13", "0.3.3"]),
    ("vyxal", &["2.4.1"]),
    ("yeethon", &["3.10.0"]),
    ("zig", &["0.7.1", "0.8.0", "0.9.1", "0.10.1"]),
];

/// Whether `version` is exactly one Piston published for a runtime named
/// `names` (a language's id or one of its aliases).
pub fn published<'a>(mut names: impl Iterator<Item = &'a str>, version: &str) -> bool {
    let version = version.trim();
    names.any(|n| PUBLISHED.iter().any(|(language, versions)| *language == n && versions.contains(&version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_published_versions_of_any_name() {
        assert!(published(["python", "py"].into_iter(), "3.10.0"));
        assert!(published(["nasm"].into_iter(), " 2.15.5 "));
        assert!(published(["c++", "cpp"].into_iter(), "10.2.0"));
        assert!(!published(["python"].into_iter(), "3.10"), "a range is not a published version");
        assert!(!published(["python"].into_iter(), "9.9.9"));
        assert!(!published(["nosuch"].into_iter(), "1.0.0"));
    }

    #[test]
    fn the_table_is_sorted_and_has_no_duplicates() {
        assert!(PUBLISHED.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
