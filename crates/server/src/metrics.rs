//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! A deliberately small registry written by hand: two series are recorded
//! here (runs by language and verdict, and the histogram of their
//! durations); every other series is a gauge read from its owner at scrape
//! time (admission, sessions, compile cache), so there is no second copy of
//! a number that could drift from the truth. The series and what to do with
//! them are documented in `docs/operations.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the run-duration histogram buckets.
pub const RUN_SECONDS_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The series recorded by the handlers.
#[derive(Default)]
pub struct Metrics {
    /// (language, status) -> runs. A `Mutex` (not a lock-free map): it is
    /// taken once per finished run and once per scrape, never across an await.
    runs: Mutex<BTreeMap<(String, String), u64>>,
    buckets: [AtomicU64; RUN_SECONDS_BUCKETS.len()],
    run_count: AtomicU64,
    /// Sum of run durations in microseconds.
    run_micros: AtomicU64,
    /// HAProxy agent checks answered.
    agent_checks: AtomicU64,
}

impl Metrics {
    /// Records a finished batch run (native or Piston) of `language` with
    /// the verdict `status`, which took `took` from admission to result.
    pub fn record_run(&self, language: &str, status: &str, took: Duration) {
        if let Ok(mut runs) = self.runs.lock() {
            *runs.entry((language.to_owned(), status.to_owned())).or_default() += 1;
        }
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(RUN_SECONDS_BUCKETS) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.run_count.fetch_add(1, Ordering::Relaxed);
        self.run_micros.fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Records an answered agent check.
    pub fn record_agent_check(&self) {
        self.agent_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the recorded series to `out`.
    fn render_recorded(&self, out: &mut String) {
        header(out, "evald_agent_checks_total", "counter", "HAProxy agent checks answered");
        let _ = writeln!(out, "evald_agent_checks_total {}", self.agent_checks.load(Ordering::Relaxed));
        header(out, "evald_runs_total", "counter", "Batch runs (native and Piston) by language and verdict");
        if let Ok(runs) = self.runs.lock() {
            for ((language, status), n) in runs.iter() {
                let _ = writeln!(
                    out,
                    "evald_runs_total{{language=\"{}\",status=\"{}\"}} {n}",
                    escape(language),
                    escape(status)
                );
            }
        }
        header(out, "evald_sandbox_run_seconds", "histogram", "Duration of batch runs (all stages of a job)");
        for (bucket, bound) in self.buckets.iter().zip(RUN_SECONDS_BUCKETS) {
            let _ =
                writeln!(out, "evald_sandbox_run_seconds_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.run_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "evald_sandbox_run_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.run_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "evald_sandbox_run_seconds_sum {sum}");
        let _ = writeln!(out, "evald_sandbox_run_seconds_count {count}");
    }
}

/// Values read from their owners at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub sessions_active: usize,
    pub session_clients_connected: usize,
    pub queue_depth: usize,
    pub free_slots: usize,
    pub free_memory_bytes: u64,
    pub draining: bool,
    pub cache_entries: usize,
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// The whole exposition: recorded series then gauges.
pub fn render(metrics: &Metrics, g: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    metrics.render_recorded(&mut out);
    let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    gauge("evald_sessions_active", "gauge", "Interactive sessions open on this node", g.sessions_active as u64);
    gauge(
        "evald_session_clients_connected",
        "gauge",
        "WebSocket clients attached to this node's sessions",
        g.session_clients_connected as u64,
    );
    gauge("evald_queue_depth", "gauge", "Requests waiting for a sandbox slot or memory", g.queue_depth as u64);
    gauge("evald_free_slots", "gauge", "Sandbox slots free now", g.free_slots as u64);
    gauge(
        "evald_free_memory_bytes",
        "gauge",
        "Admission memory budget not reserved by running jobs",
        g.free_memory_bytes,
    );
    gauge(
        "evald_draining",
        "gauge",
        "1 from the start of a drain (its window included) until it ends, else 0",
        u64::from(g.draining),
    );
    gauge(
        "evald_compile_cache_entries",
        "gauge",
        "Compiled programs held in the compile cache",
        g.cache_entries as u64,
    );
    gauge("evald_compile_cache_bytes", "gauge", "Bytes held in the compile cache", g.cache_bytes);
    gauge("evald_compile_cache_hits", "counter", "Compilations answered from the cache", g.cache_hits);
    gauge("evald_compile_cache_misses", "counter", "Compilations not found in the cache", g.cache_misses);
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the text format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines() {
        let m = Metrics::default();
        m.record_run("python", "ok", Duration::from_millis(70));
        m.record_run("python", "ok", Duration::from_millis(3000));
        m.record_run("c\"x", "runtime_error", Duration::from_millis(20));
        let text = render(&m, &Gauges { free_slots: 3, draining: true, ..Gauges::default() });
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# TYPE evald_runs_total counter",
            "evald_runs_total{language=\"python\",status=\"ok\"} 2",
            "evald_runs_total{language=\"c\\\"x\",status=\"runtime_error\"} 1",
            "evald_sandbox_run_seconds_bucket{le=\"0.05\"} 1",
            "evald_sandbox_run_seconds_bucket{le=\"0.1\"} 2",
            "evald_sandbox_run_seconds_bucket{le=\"2.5\"} 2",
            "evald_sandbox_run_seconds_bucket{le=\"5\"} 3",
            "evald_sandbox_run_seconds_bucket{le=\"+Inf\"} 3",
            "evald_sandbox_run_seconds_sum 3.09",
            "evald_sandbox_run_seconds_count 3",
            "evald_free_slots 3",
            "evald_draining 1",
            "# TYPE evald_compile_cache_hits counter",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
    }
}
