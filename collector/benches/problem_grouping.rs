//! The cost of grouping tickets into fleet-wide problems on the ingest
//! path (issue 23): 1,000 hosts fire the same rule within one minute, each
//! opening a ticket, stored through `Store::store_reports` on SQLite in
//! batches of 20 (the ingest writer's batches at the loadgen rate of
//! 5,000 agents). Run once with `[problems] enabled = false` and once with
//! grouping on (a problem forms at the 10th host and the other 990 join
//! it); prints the time per ticket opened and per batch for each.
//!
//! `cargo bench -p deskpulse-collector --bench problem_grouping`
//! Sizes: DESKPULSE_BENCH_HOSTS (default 1000).

use std::time::{Duration, Instant};

use deskpulse_collector::rules::model::Metric;
use deskpulse_collector::store::{
    self, AuditEntry, HealthReading, IncomingReport, PolicyRecord, ReportPayload,
};

mod support;

const START_MS: i64 = 1_764_000_000_000;

fn policy(grouping: bool) -> String {
    format!(
        r#"
[problems]
enabled = {grouping}
hosts = 10
window = "15m"

[[rule]]
name = "cpu-bench"
metric = "cpu_percent"
op = ">"
threshold = 80
recover = 50
severity = "medium"
"#
    )
}

/// One firing sample of `host` at `at_ms`.
fn firing(host: &str, at_ms: i64) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "bench".into(),
        seq: 1,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: ReportPayload::Health {
            encoded: Vec::new(),
            free: Vec::new(),
            reading: HealthReading {
                cpu_percent: 95.0,
                memory_used_percent: 40.0,
                disk_used_max_percent: 30.0,
                temperature_max_celsius: None,
            },
            readings: vec![(Metric::CpuPercent, String::new(), 95.0)],
        },
    }
}

async fn run(hosts: usize, grouping: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = store::backend::open(&url).await.expect("open");
    let ids = support::enroll_hosts(&store, hosts).await;
    store
        .apply_policy(
            &policy(grouping),
            "bench",
            None,
            &|_: &PolicyRecord| AuditEntry::system("bench", "", ""),
            START_MS,
        )
        .await
        .expect("store")
        .expect("policy");
    // Spread over one minute, in arrival order.
    let step = 60_000 / i64::try_from(hosts).expect("hosts").max(1);
    let reports: Vec<IncomingReport> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| firing(id, START_MS + i64::try_from(i).expect("small") * step))
        .collect();
    let mut batches: Vec<Duration> = Vec::new();
    let started = Instant::now();
    for batch in reports.chunks(20) {
        let now = batch[batch.len() - 1].collected_at_ms;
        let one = Instant::now();
        store.store_reports(batch, now).await.expect("store");
        batches.push(one.elapsed());
    }
    let took = started.elapsed();
    batches.sort();
    let problems = store.list_problems(None, 10).await.expect("problems");
    let linked = problems.first().map_or(0, |p| p.problem.tickets);
    println!(
        "grouping {}: {hosts} tickets opened in {:.0} ms = {:.3} ms per ticket; batch of 20 median {:.1} ms, worst {:.1} ms; problems {}, tickets linked {linked}",
        if grouping { "on " } else { "off" },
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1000.0 / hosts as f64,
        batches[batches.len() / 2].as_secs_f64() * 1000.0,
        batches[batches.len() - 1].as_secs_f64() * 1000.0,
        problems.len(),
    );
    let read = Instant::now();
    if let Some(p) = problems.first() {
        store.problem(p.problem.id).await.expect("show");
        println!(
            "problem show with {linked} tickets (common changes read per host): {:.1} ms",
            read.elapsed().as_secs_f64() * 1000.0
        );
    }
}

fn main() {
    let hosts = std::env::var("DESKPULSE_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for grouping in [false, true, false, true] {
        runtime.block_on(run(hosts, grouping));
    }
}
