//! Rule evaluation throughput (issue "Proactive tickets"): health samples
//! per second through the default rule set, on one core. Two figures:
//!
//! 1. the engine: each sample's readings taken at the boundary
//!    (`facts::health_readings`) and stepped through every default rule's
//!    state machine, states in memory. Target: 50,000 samples/s.
//! 2. the stored path: the same samples through `Store::store_reports` on
//!    SQLite in batches of 500 (as the ingest writer batches), so rule
//!    states load and save in the sample's transaction (D21), beside the
//!    health history and free-space rows.
//!
//! `cargo bench -p deskpulse-collector --bench rule_eval`

use std::collections::HashMap;
use std::time::Instant;

use deskpulse_collector::facts;
use deskpulse_collector::rules::policy::Policy;
use deskpulse_collector::rules::{RuleState, step};
use deskpulse_collector::store::{self, IncomingReport, ReportPayload};
use deskpulse_proto::v1::{
    FilesystemUsage, HealthSample, SecurityPosture, ServiceHealth, TemperatureReading,
};

/// A realistic sample: three filesystems, two sensors, two watched
/// services, posture; a few hosts run hot and disks fill slowly.
fn sample(host: u32, round: i64) -> HealthSample {
    let hot = host.is_multiple_of(97);
    let fs = |mount: &str, used: u32| FilesystemUsage {
        mount_point: mount.into(),
        used_percent: used as f32,
        available_bytes: u64::from(100 - used) << 30,
    };
    HealthSample {
        cpu_percent: if hot { 99.0 } else { (host % 50) as f32 },
        memory_used_percent: if host.is_multiple_of(89) { 97.0 } else { 40.0 },
        load_5m: 0.5,
        logical_cpus: 8,
        uptime_secs: 86_400 * 3,
        filesystems: vec![
            fs("/", (host + round as u32) % 100),
            fs("/home", (host + 1) % 100),
            fs("/var", (host + 2) % 100),
        ],
        temperatures: vec![
            TemperatureReading {
                sensor: "coretemp Package id 0".into(),
                celsius: if hot { 95.0 } else { 55.0 },
                critical_celsius: 100.0,
            },
            TemperatureReading {
                sensor: "nvme Composite".into(),
                celsius: 40.0,
                critical_celsius: 85.0,
            },
        ],
        services: vec![
            ServiceHealth {
                name: "cups.service".into(),
                state: if host.is_multiple_of(53) {
                    "failed"
                } else {
                    "running"
                }
                .into(),
            },
            ServiceHealth {
                name: "sshd.service".into(),
                state: "running".into(),
            },
        ],
        last_update_unix_ms: 1_764_000_000_000,
        posture: Some(SecurityPosture {
            antivirus: 1,
            firewall: 1,
            encryption: 1,
            checked_at_unix_ms: 1_764_000_000_000,
        }),
        ..HealthSample::default()
    }
}

fn engine(policy: &Policy, hosts: u32, rounds: i64) {
    let mut states: HashMap<(u32, usize, String), RuleState> = HashMap::new();
    let mut actions = 0u64;
    let started = Instant::now();
    for round in 0..rounds {
        let now = 1_764_000_000_000 + round * 60_000;
        for host in 0..hosts {
            let readings = facts::health_readings(&sample(host, round), now);
            for (r, rule) in policy.rules.iter().enumerate() {
                for (_, subject, value) in readings.iter().filter(|(m, _, _)| *m == rule.metric) {
                    let state = states.entry((host, r, subject.clone())).or_default();
                    let (next, action) = step(rule, *state, Some(*value), now, policy.lifecycle);
                    *state = next;
                    actions += u64::from(action.is_some());
                }
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    let samples = f64::from(hosts) * rounds as f64;
    println!(
        "engine: {samples:.0} health samples x {} rules ({} states) in {took:.2}s = {:.0} samples/s on one core; {actions} ticket actions",
        policy.rules.len(),
        states.len(),
        samples / took
    );
}

async fn stored(hosts: u32, rounds: i64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = store::backend::open(&url).await.expect("open");
    let mut ids = Vec::new();
    for h in 0..hosts {
        let token = format!("t{h}");
        store
            .create_enrollment_token(
                &store::NewEnrollmentToken {
                    id: token.clone(),
                    token_sha256: token.clone(),
                    expires_at_ms: i64::MAX,
                    uses: 1,
                    created_by: "bench".into(),
                    relink_host: None,
                },
                &store::AuditEntry::system("test", "", ""),
                0,
            )
            .await
            .expect("token");
        let issue = |id: &str| {
            Ok(store::HostCert {
                cert_pem: String::new(),
                serial_hex: id.into(),
                sha256_hex: id.into(),
                ca_sha256: "ca-1".into(),
            })
        };
        let outcome = store
            .enroll(
                &store::EnrollRequest {
                    token_sha256: token,
                    hostname: format!("pc-{h}"),
                    hardware_uuid: String::new(),
                    hardware_serial: String::new(),
                    source_addr: String::new(),
                    csr_der: Vec::new(),
                },
                0,
                &issue,
            )
            .await
            .expect("enroll");
        if let store::EnrollOutcome::Enrolled { host_id, .. } = outcome {
            ids.push(host_id);
        }
    }
    let mut reports = Vec::new();
    for round in 0..rounds {
        let now = 1_764_000_000_000 + round * 60_000;
        for (h, id) in ids.iter().enumerate() {
            let health = sample(u32::try_from(h).unwrap_or(0), round);
            reports.push(IncomingReport {
                host_id: id.clone(),
                spool_id: "bench".into(),
                seq: u64::try_from(round).unwrap_or(0) + 1,
                held_from_seq: 0,
                collected_at_ms: now,
                payload: ReportPayload::Health {
                    encoded: prost::Message::encode_to_vec(&health),
                    free: facts::health_free(&health),
                    reading: facts::health_reading(&health),
                    readings: facts::health_readings(&health, now),
                },
            });
        }
    }
    let started = Instant::now();
    for batch in reports.chunks(500) {
        let now = batch[0].collected_at_ms;
        store.store_reports(batch, now).await.expect("store");
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "stored: {} health samples through store_reports (SQLite, batches of 500, rules evaluated in the transaction) in {took:.2}s = {:.0} samples/s",
        reports.len(),
        reports.len() as f64 / took
    );
}

fn main() {
    let policy = Policy::default();
    engine(&policy, 10_000, 30);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(stored(2_000, 10));
}
