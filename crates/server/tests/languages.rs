//! Every catalogued and installed language passes its test programs through
//! `POST /api/v2/execute`: hello world and echo with exact output, and the
//! compile error reported as a failed compile stage with run == compile.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const UIDS: evald_testkit::uids::Range = evald_testkit::uids::SERVER_LANGUAGES;

async fn check(app: &axum::Router, lang: &evald_engine::Language) -> Vec<String> {
    let id = lang.spec.id.clone();
    let version = lang.version.to_string();
    let mut failures = Vec::new();
    let tests = &lang.spec.tests;
    for (what, test) in [("hello", &tests.hello), ("echo", &tests.echo)] {
        let Some(t) = test else { continue };
        let body = json!({"language": id, "version": version, "files": [{"content": t.source}], "stdin": t.stdin});
        let r = post_json(app, "/api/v2/execute", &body).await;
        let v: Value = serde_json::from_slice(&r.bytes).unwrap_or_default();
        if r.status != 200 || v["run"]["stdout"] != json!(t.expected) || !v["run"]["status"].is_null() {
            failures.push(format!("{id} {what}: {} {}", r.status, String::from_utf8_lossy(&r.bytes)));
        } else if lang.compiled() && v["compile"]["code"] != json!(0) {
            failures.push(format!("{id} {what}: compile stage {}", v["compile"]));
        }
    }
    if let Some(t) = &tests.compile_error {
        let body = json!({"language": id, "version": version, "files": [{"content": t.source}]});
        let r = post_json(app, "/api/v2/execute", &body).await;
        let v: Value = serde_json::from_slice(&r.bytes).unwrap_or_default();
        let compile = &v["compile"];
        let failed = compile.is_object() && compile["code"] != json!(0) && compile["status"] != json!("XX");
        if r.status != 200 || !failed || v["run"] != *compile {
            failures.push(format!("{id} compile_error: {} {}", r.status, String::from_utf8_lossy(&r.bytes)));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_installed_language_passes_its_test_programs() {
    // EVALD_TEST_LANGUAGES=id,id checks only those (while adding a language).
    let only: Option<Vec<String>> =
        std::env::var("EVALD_TEST_LANGUAGES").ok().map(|s| s.split(',').map(str::to_owned).collect());
    let installed: Vec<_> =
        languages().into_iter().filter(|l| only.as_ref().is_none_or(|o| o.contains(&l.spec.id))).collect();
    eprintln!("{} installed: {:?}", installed.len(), installed.iter().map(|l| l.spec.id.as_str()).collect::<Vec<_>>());
    assert!(!installed.is_empty(), "no language is installed");
    let app = evald_server::app(state(UIDS, 2, |_| {}));
    let failures: Vec<String> = futures_util::stream::iter(installed.iter())
        .map(|l| check(&app, l))
        .buffer_unordered(2)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A request as Piston's CI sends a package's `test.*` program (its CLI's
/// `run RUNTIME -l PACKAGE_VERSION FILE`): the file under its own name,
/// the version of Piston's package (not evald's), the CLI's default
/// timeouts.
fn piston_ci_request(language: &str, file: &str, content: &str) -> Value {
    let version = match language {
        "java" => "15.0.2",
        "cobol" => "3.1.2",
        _ => "2.15.5",
    };
    json!({"language": language, "version": version,
           "files": [{"name": file, "content": content, "encoding": "utf8"}],
           "args": [], "stdin": "", "compile_timeout": 10000, "run_timeout": 3000})
}

// Piston's own test programs (packages/<language>/<version>/test.*), as data.
const PISTON_JAVA: &str = "public class HelloWorld {\n    public static void main(String[] args) {\n        System.out.println(\"OK\");\n    }\n}";
const PISTON_COBOL: &str = "*> Test Program\nidentification division.\nprogram-id. ok-test.\n\nprocedure division.\ndisplay \"OK\"\ngoback.\nend program ok-test.\n";
const PISTON_NASM: &str = "SECTION .DATA\ngood:     db 'OK',10\ntxtlen:  equ $-good\n\nSECTION .TEXT\nGLOBAL _start\n\n_start:\nmov eax,4\nmov ebx,1\nmov ecx,good\nmov edx,txtlen\nint 80h\nmov eax,1\nmov ebx,0\nint 80h";
const PISTON_NASM64: &str = "SECTION .data\n    good:\tdb \"OK\", 0x0\n    txtlen:\tequ $ - good\n\nSECTION .text\nGLOBAL _start\n\n_start:\n    ;sys_write\n    mov rax, 1\n    mov rdi, 1\n    mov rsi, good\n    mov rdx, txtlen\n    syscall\n    ;sys_exit\n    mov rax, 60\n    mov rdi, 0\n    syscall";

/// Issue 13: Piston's Java test declares `public class HelloWorld` in
/// `test.java` (Piston runs it as `java test.java`); it compiles and runs,
/// and a second request is served from the compile cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piston_java_test_runs_although_its_class_is_not_named_after_the_file() {
    assert!(installed("java"), "java is not installed");
    let app = evald_server::app(state(UIDS, 2, |_| {}));
    for round in 0..2 {
        let r = post_json(&app, "/api/v2/execute", &piston_ci_request("java", "test.java", PISTON_JAVA)).await;
        let v = r.json();
        assert_eq!(r.status, 200, "round {round}: {v}");
        assert_eq!(v["run"]["stdout"], json!("OK\n"), "round {round}: {v}");
        assert_eq!(v["run"]["code"], json!(0), "round {round}: {v}");
        assert_eq!(v["compile"]["code"], json!(0), "round {round}: {v}");
    }
    // A class named after its file still runs, and a non-public first class
    // is the main class too.
    let src = "class Greeter {\n    public static void main(String[] a) {\n        System.out.println(\"hi \" + a.length);\n    }\n}\n";
    let body =
        json!({"language": "java", "version": "*", "files": [{"name": "Prog.java", "content": src}], "args": ["x"]});
    let v = post_json(&app, "/api/v2/execute", &body).await.json();
    assert_eq!(v["run"]["stdout"], json!("hi 1\n"), "{v}");
}

/// Issue 13: Piston's COBOL test is free format (Piston compiles with
/// `cobc --free`); it compiles and prints OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piston_cobol_test_compiles_in_free_format() {
    assert!(installed("cobol"), "cobol is not installed");
    let app = evald_server::app(state(UIDS, 2, |_| {}));
    let r = post_json(&app, "/api/v2/execute", &piston_ci_request("cobol", "test.cob", PISTON_COBOL)).await;
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["compile"]["code"], json!(0), "{v}");
    assert_eq!(v["run"]["stdout"], json!("OK\n"), "{v}");
    assert_eq!(v["run"]["code"], json!(0), "{v}");
}

/// Issue 13: Piston's 32-bit `nasm` test (int 80h) fails at compile with a
/// message that says why, instead of dying at run time; its 64-bit test
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piston_nasm_32_bit_test_is_refused_at_compile_and_nasm64_runs() {
    assert!(installed("nasm64"), "nasm64 is not installed");
    let app = evald_server::app(state(UIDS, 2, |_| {}));
    for language in ["nasm", "nasm32"] {
        let v =
            post_json(&app, "/api/v2/execute", &piston_ci_request(language, "test.nasm.asm", PISTON_NASM)).await.json();
        assert_eq!(v["compile"]["code"], json!(1), "{v}");
        let stderr = v["compile"]["stderr"].as_str().unwrap_or_default();
        assert_eq!(
            stderr,
            "test.nasm.asm: 32-bit x86 code (int 0x80 or bits 32) cannot run here: every evald box refuses the \
             i386 system-call ABI (int 0x80) by seccomp; write x86-64 code (syscall, bits 64), which nasm64 \
             assembles with -f elf64\n",
            "{v}"
        );
        assert_eq!(v["run"], v["compile"], "{v}");
    }
    let v =
        post_json(&app, "/api/v2/execute", &piston_ci_request("nasm64", "test.nasm64.asm", PISTON_NASM64)).await.json();
    assert_eq!(v["run"]["stdout"], json!("OK\u{0}"), "{v}");
    assert_eq!(v["run"]["code"], json!(0), "{v}");
}
