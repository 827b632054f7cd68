//! The information routes: statuses, about, version, isolate, license,
//! system and configuration info, statistics and workers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};

use crate::http::{json_response, plain};
use crate::request::defaults::*;
use crate::service::{now_ms, Judge0};
use crate::wire::{civil, timestamp, Ordered, Submission, STATUSES};

/// The Judge0 version this API answers as (the SDK's language tables are
/// keyed on it).
pub const VERSION: &str = "1.13.1";

pub async fn statuses() -> Response {
    let body: Vec<Ordered> = STATUSES
        .iter()
        .enumerate()
        .map(|(i, d)| Ordered(vec![("id".into(), json!(i + 1)), ("description".into(), json!(d))]))
        .collect();
    json_response(StatusCode::OK, &body)
}

pub async fn about() -> Response {
    let body = Ordered(vec![
        ("version".into(), json!(VERSION)),
        ("homepage".into(), json!("https://judge0.com")),
        ("source_code".into(), json!("https://github.com/judge0/judge0")),
        ("maintainer".into(), json!("Herman Zvonimir Došilović <hermanz.dosilovic@gmail.com>")),
    ]);
    json_response(StatusCode::OK, &body)
}

pub async fn version() -> Response {
    plain(VERSION.to_owned())
}

pub async fn isolate() -> Response {
    plain(format!(
        "evald {} (Judge0 API {VERSION}): runs are sandboxed by evald's own sandbox, not isolate\n",
        env!("CARGO_PKG_VERSION")
    ))
}

pub async fn license() -> Response {
    plain(format!(
        "evald is licensed under the {} license. This API follows the interface of Judge0 CE (GPL-3.0); \
         it contains none of Judge0's code.\n",
        env!("CARGO_PKG_LICENSE")
    ))
}

/// `lscpu`'s pairs and `free -h`'s Mem and Swap totals, all strings.
pub async fn system_info() -> Response {
    let text = tokio::process::Command::new("lscpu").output().await.map(|o| o.stdout).unwrap_or_default();
    let mut pairs: Vec<(String, Value)> = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), json!(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let human = |k: u64| format!("{:.1}Gi", k as f64 / (1024.0 * 1024.0));
    pairs.push(("Mem".into(), json!(human(kib("MemTotal:")))));
    pairs.push(("Swap".into(), json!(human(kib("SwapTotal:")))));
    json_response(StatusCode::OK, &Ordered(pairs))
}

/// The 39 keys of v1.13.1's `/config_info`, with its spellings.
pub async fn config_info(State(j0): State<Arc<Judge0>>) -> Response {
    let c = j0.config();
    let pairs: Vec<(&str, Value)> = vec![
        ("maintenance_mode", json!(false)),
        ("enable_wait_result", json!(true)),
        ("enable_compiler_options", json!(true)),
        ("allowed_languages_for_compile_options", json!([])),
        ("enable_command_line_arguments", json!(true)),
        ("enable_submission_delete", json!(c.enable_submission_delete)),
        ("enable_callbacks", json!(c.enable_callbacks)),
        ("callbacks_max_tries", json!(crate::callback::Callbacks::TRIES)),
        ("callbacks_timeout", json!(crate::callback::Callbacks::TIMEOUT.as_secs_f64())),
        ("enable_additional_files", json!(true)),
        ("max_queue_size", json!(c.max_queue_size)),
        ("cpu_time_limit", json!(CPU_TIME_LIMIT)),
        ("max_cpu_time_limit", json!(MAX_CPU_TIME_LIMIT)),
        ("cpu_extra_time", json!(CPU_EXTRA_TIME)),
        ("max_cpu_extra_time", json!(MAX_CPU_EXTRA_TIME)),
        ("wall_time_limit", json!(WALL_TIME_LIMIT)),
        ("max_wall_time_limit", json!(MAX_WALL_TIME_LIMIT)),
        ("memory_limit", json!(MEMORY_LIMIT)),
        ("max_memory_limit", json!(MAX_MEMORY_LIMIT)),
        ("stack_limit", json!(STACK_LIMIT)),
        ("max_stack_limit", json!(MAX_STACK_LIMIT)),
        ("max_processes_and_or_threads", json!(MAX_PROCESSES_AND_OR_THREADS)),
        ("max_max_processes_and_or_threads", json!(MAX_MAX_PROCESSES_AND_OR_THREADS)),
        ("enable_per_process_and_thread_time_limit", json!(false)),
        ("allow_enable_per_process_and_thread_time_limit", json!(true)),
        ("enable_per_process_and_thread_memory_limit", json!(false)),
        ("allow_enable_per_process_and_thread_memory_limit", json!(true)),
        ("max_file_size", json!(MAX_FILE_SIZE)),
        ("max_max_file_size", json!(MAX_MAX_FILE_SIZE)),
        ("number_of_runs", json!(NUMBER_OF_RUNS)),
        ("max_number_of_runs", json!(MAX_NUMBER_OF_RUNS)),
        ("redirect_stderr_to_stdout", json!(false)),
        ("max_extract_size", json!(MAX_EXTRACT_SIZE)),
        ("enable_batched_submissions", json!(true)),
        ("max_submission_batch_size", json!(crate::http::MAX_BATCH)),
        ("submission_cache_duration", json!(1.0)),
        ("use_docs_as_homepage", json!(false)),
        ("allow_enable_network", json!(c.allow_enable_network)),
        ("enable_network", json!(false)),
    ];
    json_response(StatusCode::OK, &Ordered(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// `[{queue, size, available, idle, working, paused, failed}]`: the
/// node's capacity seen as Judge0's worker queue.
pub async fn workers(State(j0): State<Arc<Judge0>>) -> Response {
    let capacity = j0.engine().capacity();
    let slots = capacity.slots() as usize;
    let idle = capacity.free_slots().min(slots);
    let body = vec![Ordered(vec![
        ("queue".into(), json!(VERSION)),
        ("size".into(), json!(j0.waiting().await)),
        ("available".into(), json!(slots)),
        ("idle".into(), json!(idle)),
        ("working".into(), json!(slots - idle)),
        ("paused".into(), json!(0)),
        ("failed".into(), json!(0)),
    ])];
    json_response(StatusCode::OK, &body)
}

/// The statistics are cached for ten minutes, as Judge0 caches them.
pub type StatisticsCache = Mutex<Option<(u64, Arc<Statistics>)>>;
const STATISTICS_TTL_MS: u64 = 600_000;
const DAY_MS: u64 = 86_400_000;

/// `/statistics`, its keys in Judge0's order.
#[derive(Serialize)]
pub struct Statistics {
    created_at: String,
    cached_until: String,
    submissions: Counts,
    languages: Vec<LanguageCount>,
    statuses: Vec<StatusCount>,
    database: Database,
}

#[derive(Serialize)]
struct Counts {
    total: u64,
    today: u64,
    /// The 30 days before today, newest first, each with its count (0 too).
    last_30_days: Ordered,
}

#[derive(Serialize)]
struct IdName {
    id: u32,
    name: String,
}

#[derive(Serialize)]
struct LanguageCount {
    language: IdName,
    count: u64,
}

#[derive(Serialize)]
struct StatusCount {
    status: IdName,
    count: u64,
}

#[derive(Serialize)]
struct Database {
    size_pretty: String,
    size_in_bytes: u64,
}

/// Rails' `DateTime#as_json` (what `DateTime.now` gives): milliseconds and
/// `+00:00`, where a record's `Time` gives `Z`.
fn datetime(ms: u64) -> String {
    let t = timestamp(ms);
    format!("{}+00:00", t.trim_end_matches('Z'))
}

fn date(ms: u64) -> String {
    let (y, m, d) = civil(ms / DAY_MS);
    format!("{y:04}-{m:02}-{d:02}")
}

pub async fn statistics(
    State(j0): State<Arc<Judge0>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let now = now_ms();
    let invalidate = q.get("invalidate_cache").is_some_and(|v| v == "true");
    if !invalidate {
        if let Ok(cached) = j0.statistics.lock() {
            if let Some((_, body)) = cached.as_ref().filter(|(at, _)| now < at + STATISTICS_TTL_MS) {
                return json_response(StatusCode::OK, body.as_ref());
            }
        }
    }
    let page = match j0.store().list(0, j0.config().retention.max_count).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "statistics: the submission store failed");
            return crate::http::error(StatusCode::SERVICE_UNAVAILABLE, "the submission store is unavailable");
        }
    };
    let today = now / DAY_MS;
    let (mut total_today, mut days) = (0u64, BTreeMap::<u64, u64>::new());
    let (mut by_language, mut by_status) = (BTreeMap::<(u32, String), u64>::new(), BTreeMap::<u8, u64>::new());
    let mut bytes = 0u64;
    for b in &page.bodies {
        bytes += b.len() as u64;
        let Ok(s) = serde_json::from_slice::<Submission>(b) else { continue };
        let day = s.created_at_ms / DAY_MS;
        if day == today {
            total_today += 1;
        }
        *days.entry(day).or_default() += 1;
        *by_language.entry((s.language_id, s.language_name.clone())).or_default() += 1;
        *by_status.entry(s.status_id).or_default() += 1;
    }
    // Most counted first, as Judge0 sorts them.
    let mut languages: Vec<_> = by_language.into_iter().collect();
    languages.sort_by_key(|l| std::cmp::Reverse(l.1));
    let mut statuses: Vec<_> = by_status.into_iter().collect();
    statuses.sort_by_key(|s| std::cmp::Reverse(s.1));
    let last_30_days = (1..=30u64)
        .filter_map(|back| today.checked_sub(back))
        .map(|day| (date(day * DAY_MS), json!(days.get(&day).copied().unwrap_or(0))))
        .collect();
    let body = Arc::new(Statistics {
        created_at: datetime(now),
        cached_until: datetime(now + STATISTICS_TTL_MS),
        submissions: Counts { total: page.total, today: total_today, last_30_days: Ordered(last_30_days) },
        languages: languages
            .into_iter()
            .map(|((id, name), count)| LanguageCount { language: IdName { id, name }, count })
            .collect(),
        statuses: statuses
            .into_iter()
            .map(|(id, count)| {
                let name = STATUSES.get(usize::from(id).wrapping_sub(1)).copied().unwrap_or("").to_owned();
                StatusCount { status: IdName { id: id.into(), name }, count }
            })
            .collect(),
        database: Database { size_pretty: format!("{} kB", bytes / 1024), size_in_bytes: bytes },
    });
    if let Ok(mut cached) = j0.statistics.lock() {
        *cached = Some((now, body.clone()));
    }
    json_response(StatusCode::OK, body.as_ref())
}
