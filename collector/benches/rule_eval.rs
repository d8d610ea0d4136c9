//! Rule evaluation throughput (issue "Proactive tickets"): health samples
//! per second through the default rule set's state machines, on one core.
//! This is the engine alone, with states in memory; persisting them in the
//! store is not part of this figure. Target: 50,000 samples/s.
//!
//! `cargo bench -p deskpulse-collector --bench rule_eval`

use std::collections::HashMap;
use std::time::Instant;

use deskpulse_collector::rules::model::{Metric, default_rules};
use deskpulse_collector::rules::{Lifecycle, RuleState, step};

fn main() {
    let rules = default_rules();
    let lifecycle = Lifecycle::default();
    let hosts = 10_000u32;
    let rounds = 30i64;
    let mounts = ["/", "/home", "/var"];
    let mut states: HashMap<(u32, usize, &str), RuleState> = HashMap::new();
    let mut actions = 0u64;
    let started = Instant::now();
    for round in 0..rounds {
        let now = round * 60_000;
        for host in 0..hosts {
            // Deterministic readings: a few hosts run hot, disks fill slowly.
            let hot = host % 97 == 0;
            let cpu = if hot { 99.0 } else { f64::from(host % 50) };
            let memory = if host % 89 == 0 { 97.0 } else { 40.0 };
            for (r, rule) in rules.iter().enumerate() {
                let readings: Vec<(&str, f64)> = match rule.metric {
                    Metric::CpuPercent => vec![("", cpu)],
                    Metric::MemoryUsedPercent => vec![("", memory)],
                    Metric::DiskUsedPercent => mounts
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (*m, f64::from((host + u32::try_from(i).unwrap_or(0)) % 100)))
                        .collect(),
                    Metric::OfflineMinutes => vec![("", 0.0)],
                };
                for (subject, value) in readings {
                    let state = states.entry((host, r, subject)).or_default();
                    let (next, action) = step(rule, *state, Some(value), now, lifecycle);
                    *state = next;
                    actions += u64::from(action.is_some());
                }
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    let samples = f64::from(hosts) * rounds as f64;
    println!(
        "rule evaluation: {samples:.0} health samples x {} rules ({} states) in {took:.2}s = {:.0} samples/s on one core; {actions} ticket actions",
        rules.len(),
        states.len(),
        samples / took
    );
}
