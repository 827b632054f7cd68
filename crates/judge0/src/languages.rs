//! Judge0 language ids: one explicit table from evald's catalogue ids to
//! Judge0 CE ids (every CE id of a language runs evald's version of it),
//! evald's other languages in a range of their own, Judge0's own pseudo
//! languages (Plain Text, Executable, Multi-file program) and the archived
//! ids 1 to 42, which answer as Judge0 answers them.

use std::sync::Arc;

use evald_engine::catalogue::{LanguageFile, LimitOverrides, Tests};
use evald_engine::{Engine, Language};

/// The ids of evald's languages that Judge0 CE does not have. CE uses 1 to
/// 89, the hosted 1.14.0 90 to 113; the official SDK's tables (CE and Extra
/// CE, both versions) stop at 113: 4000 to 4999 collides with none.
pub const EVALD_RANGE: std::ops::Range<u32> = 4000..5000;

/// evald catalogue id → Judge0 ids; the first is the one evald reports.
/// CE 1.13.1 ids where CE has the language (older compiler versions of it
/// included: they all run evald's version), else an id in [`EVALD_RANGE`].
/// A new catalogue language needs one line here (the test
/// `every_catalogue_language_has_one_id` says which are missing).
pub const IDS: &[(&str, &[u32])] = &[
    ("nasm64", &[45]),
    ("bash", &[46]),
    ("c", &[50, 48, 49]),
    ("csharp", &[51]),
    ("c++", &[54, 52, 53]),
    ("lisp", &[55]),
    ("d", &[56]),
    ("elixir", &[57]),
    ("erlang", &[58]),
    ("fortran", &[59]),
    ("go", &[60]),
    ("haskell", &[61]),
    ("java", &[62]),
    ("javascript", &[63]),
    ("lua", &[64]),
    ("ocaml", &[65]),
    ("octave", &[66]),
    ("pascal", &[67]),
    ("php", &[68]),
    ("prolog", &[4020]),
    ("python", &[71]),
    ("ruby", &[72]),
    ("rust", &[73]),
    ("typescript", &[74]),
    ("cobol", &[77]),
    ("kotlin", &[78]),
    ("rscript", &[80]),
    ("scala", &[81]),
    ("sqlite3", &[82]),
    ("perl", &[85]),
    ("clojure", &[86]),
    ("groovy", &[88]),
    ("ada", &[4001]),
    ("awk", &[4002]),
    ("brainfuck", &[4003]),
    ("coffeescript", &[4004]),
    ("crystal", &[4005]),
    ("dash", &[4006]),
    ("emacs", &[4007]),
    ("fish", &[4008]),
    ("forth", &[4009]),
    ("luajit", &[4010]),
    ("nim", &[4011]),
    ("pypy", &[4012]),
    ("racket", &[4013]),
    ("raku", &[4014]),
    ("scheme", &[4015]),
    ("tcl", &[4016]),
    ("vala", &[4017]),
    ("yabasic", &[4018]),
    ("zsh", &[4019]),
    ("c-clang", &[75]),
    ("cpp-clang", &[76]),
    ("objective-c", &[79]),
    ("gprolog", &[69]),
    ("algol68", &[4021]),
    ("bc", &[4022]),
    ("chez", &[4023]),
    ("chicken", &[4024]),
    ("clisp", &[4025]),
    ("d-ldc", &[4026]),
    ("dc", &[4027]),
    ("ecl", &[4028]),
    ("expect", &[4029]),
    ("gambit", &[4030]),
    ("haxe", &[4031]),
    ("hugs", &[4032]),
    ("icon", &[4033]),
    ("iverilog", &[4034]),
    ("jim", &[4035]),
    ("jq", &[4036]),
    ("ksh", &[4037]),
    ("m4", &[4038]),
    ("mawk", &[4039]),
    ("mksh", &[4040]),
    ("mruby", &[4041]),
    ("newlisp", &[4042]),
    ("nickle", &[4043]),
    ("picolisp", &[4044]),
    ("pike", &[4045]),
    ("posh", &[4046]),
    ("rc", &[4047]),
    ("rexx", &[4048]),
    ("sed", &[4049]),
    ("sml", &[4050]),
    ("tcc", &[4051]),
    ("tcsh", &[4052]),
    ("tinyscheme", &[4053]),
    ("vhdl", &[4054]),
    ("yash", &[4055]),
    ("original-awk", &[4056]),
];

pub const PLAIN_TEXT: u32 = 43;
pub const EXECUTABLE: u32 = 44;
pub const MULTI_FILE: u32 = 89;

/// Judge0 CE's archived languages (ids 1 to 42, in order).
pub const ARCHIVED: [&str; 42] = [
    "Bash (4.4)",
    "Bash (4.0)",
    "Basic (fbc 1.05.0)",
    "C (gcc 7.2.0)",
    "C (gcc 6.4.0)",
    "C (gcc 6.3.0)",
    "C (gcc 5.4.0)",
    "C (gcc 4.9.4)",
    "C (gcc 4.8.5)",
    "C++ (g++ 7.2.0)",
    "C++ (g++ 6.4.0)",
    "C++ (g++ 6.3.0)",
    "C++ (g++ 5.4.0)",
    "C++ (g++ 4.9.4)",
    "C++ (g++ 4.8.5)",
    "C# (mono 5.4.0.167)",
    "C# (mono 5.2.0.224)",
    "Clojure (1.8.0)",
    "Crystal (0.23.1)",
    "Elixir (1.5.1)",
    "Erlang (OTP 20.0)",
    "Go (1.9)",
    "Haskell (ghc 8.2.1)",
    "Haskell (ghc 8.0.2)",
    "Insect (5.0.0)",
    "Java (OpenJDK 9 with Eclipse OpenJ9)",
    "Java (OpenJDK 8)",
    "Java (OpenJDK 7)",
    "JavaScript (nodejs 8.5.0)",
    "JavaScript (nodejs 7.10.1)",
    "OCaml (4.05.0)",
    "Octave (4.2.0)",
    "Pascal (fpc 3.0.0)",
    "Python (3.6.0)",
    "Python (3.5.3)",
    "Python (2.7.9)",
    "Python (2.6.9)",
    "Ruby (2.4.0)",
    "Ruby (2.3.3)",
    "Ruby (2.2.6)",
    "Ruby (2.1.9)",
    "Rust (1.20.0)",
];

/// One Judge0 language as this node serves it.
#[derive(Debug, Clone)]
pub struct J0Language {
    pub id: u32,
    pub name: String,
    /// What runs it; `None` for archived ids and the multi-file language
    /// (whose commands come with each submission).
    pub language: Option<Arc<Language>>,
    pub archived: bool,
}

impl J0Language {
    pub fn compiled(&self) -> bool {
        self.language.as_ref().is_some_and(|l| l.compiled())
    }
}

/// `Name (Impl)` becomes `Name (Impl version)`, `Name` becomes
/// `Name (version)`: Judge0's format with the installed version.
pub fn judge0_name(name: &str, version: &semver::Version) -> String {
    match name.strip_suffix(')').and_then(|n| n.rsplit_once(" (")) {
        Some((base, implementation)) => format!("{base} ({implementation} {version})"),
        None => format!("{name} ({version})"),
    }
}

/// A language of Judge0's own, run with evald's tools.
pub(crate) fn pseudo(id: &str, main: &str, compile: Option<Vec<String>>, run: Vec<String>) -> Arc<Language> {
    Arc::new(Language {
        spec: LanguageFile {
            id: id.into(),
            name: id.into(),
            aliases: Vec::new(),
            main: main.into(),
            compile,
            run,
            repl: None,
            version: Vec::new(),
            packages: Vec::new(),
            npm: Vec::new(),
            prepare: Vec::new(),
            env: Default::default(),
            limits: LimitOverrides::default(),
            tests: Tests::default(),
        },
        version: semver::Version::new(0, 0, 0),
    })
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Every Judge0 language of this node: the installed catalogue languages
/// under each of their ids, the pseudo languages and the archived ids.
pub fn table(engine: &Engine) -> Vec<J0Language> {
    let mut out = Vec::new();
    for l in engine.languages() {
        let Some((_, ids)) = IDS.iter().find(|(id, _)| *id == l.spec.id) else {
            tracing::warn!(language = %l.spec.id, "no Judge0 id for this language: not served on the Judge0 API");
            continue;
        };
        let name = judge0_name(&l.spec.name, &l.version);
        for &id in ids.iter() {
            out.push(J0Language { id, name: name.clone(), language: Some(l.clone()), archived: false });
        }
    }
    out.push(J0Language {
        id: PLAIN_TEXT,
        name: "Plain Text".into(),
        language: Some(pseudo("judge0-plain-text", "text.txt", None, strings(&["/bin/cat", "text.txt"]))),
        archived: false,
    });
    out.push(J0Language {
        id: EXECUTABLE,
        name: "Executable".into(),
        language: Some(pseudo(
            "judge0-executable",
            "a.out",
            None,
            strings(&["/bin/bash", "-c", "/bin/chmod +x a.out && exec ./a.out \"$@\"", "run"]),
        )),
        archived: false,
    });
    out.push(J0Language { id: MULTI_FILE, name: "Multi-file program".into(), language: None, archived: false });
    for (i, name) in ARCHIVED.iter().enumerate() {
        out.push(J0Language { id: i as u32 + 1, name: (*name).into(), language: None, archived: true });
    }
    out.sort_by_key(|l| l.id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_take_judge0s_format() {
        let v = semver::Version::new(12, 2, 0);
        assert_eq!(judge0_name("C (GCC)", &v), "C (GCC 12.2.0)");
        assert_eq!(judge0_name("Python", &v), "Python (12.2.0)");
        assert_eq!(judge0_name("Assembly (NASM, x86-64)", &v), "Assembly (NASM, x86-64 12.2.0)");
    }

    #[test]
    fn every_catalogue_language_has_one_id() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../languages");
        let catalogue = evald_engine::Catalogue::load_dir(std::path::Path::new(dir)).expect("the catalogue loads");
        let catalogued: HashSet<&str> = catalogue.files.iter().map(|f| f.id.as_str()).collect();
        let missing: Vec<&str> = catalogued.iter().copied().filter(|id| !IDS.iter().any(|(l, _)| l == id)).collect();
        assert!(missing.is_empty(), "languages without a Judge0 id (add a line to IDS): {missing:?}");
        let stale: Vec<&str> = IDS.iter().map(|(l, _)| *l).filter(|l| !catalogued.contains(l)).collect();
        assert!(stale.is_empty(), "ids of languages not in the catalogue: {stale:?}");
        let mut seen = HashSet::new();
        for (lang, ids) in IDS {
            assert!(!ids.is_empty(), "{lang} has no id");
            for id in ids.iter() {
                assert!(seen.insert(*id), "id {id} is used twice");
                assert!(
                    (45..=88).contains(id) || EVALD_RANGE.contains(id),
                    "{lang}: id {id} is neither a CE language id nor in evald's range"
                );
                assert!(![PLAIN_TEXT, EXECUTABLE, MULTI_FILE].contains(id));
            }
        }
    }
}
