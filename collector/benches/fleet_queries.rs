//! Fleet queries on SQLite with generated data: 10,000 hosts with 1,500
//! packages each (issue 4). Prints the load rate and, per query, the
//! median and worst time over several runs. Target: each under 200 ms.
//!
//! `cargo bench -p deskpulse-collector --bench fleet_queries`
//! Sizes: DESKPULSE_BENCH_HOSTS (default 10000), DESKPULSE_BENCH_PACKAGES
//! (default 1500).

use std::time::{Duration, Instant};

use deskpulse_collector::store::{
    self, HostQuery, IncomingReport, InventoryFacts, PackageKey, ReportPayload, SharedStore,
    VersionOp,
};

mod support;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const OPENSSL_DEB: [&str; 3] = ["3.0.11-1~deb12u2", "3.0.13-1~deb12u1", "3.0.15-1~deb12u1"];
const OPENSSL_RPM: [&str; 3] = ["1:3.0.7-24.el9", "1:3.0.7-27.el9", "1:3.2.2-6.el9"];

fn packages(rng: &mut Rng, host: usize, count: usize, rpm: bool) -> Vec<PackageKey> {
    let ecosystem = if rpm { "rpm" } else { "dpkg" };
    let mut out = Vec::with_capacity(count);
    let pick = |rng: &mut Rng, options: &[&str; 3]| {
        options[usize::try_from(rng.below(3)).unwrap_or(0)].to_owned()
    };
    out.push(PackageKey {
        ecosystem: ecosystem.into(),
        name: "openssl".into(),
        version: if rpm {
            pick(rng, &OPENSSL_RPM)
        } else {
            pick(rng, &OPENSSL_DEB)
        },
    });
    if host.is_multiple_of(3) {
        out.push(PackageKey {
            ecosystem: ecosystem.into(),
            name: "firefox".into(),
            version: format!("{}.0-1", 115 + rng.below(10)),
        });
    }
    // A common base every host shares, then a tail drawn from a larger pool.
    let common = count * 4 / 5;
    for i in 0..common {
        out.push(PackageKey {
            ecosystem: ecosystem.into(),
            name: format!("lib-common-{i}"),
            version: format!("{}.{}-{}", 1 + i % 7, rng.below(3), 1 + i % 4),
        });
    }
    while out.len() < count {
        let i = rng.below(6000);
        out.push(PackageKey {
            ecosystem: ecosystem.into(),
            name: format!("tool-{i}"),
            version: format!("{}.{}", i % 9, rng.below(4)),
        });
    }
    out
}

async fn load(store: &SharedStore, hosts: usize, per_host: usize) -> Vec<String> {
    let ids = support::enroll_hosts(store, hosts).await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut rows = 0usize;
    for (batch_no, batch) in ids.chunks(16).enumerate() {
        let reports: Vec<IncomingReport> = batch
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let n = batch_no * 16 + j;
                let rpm = n.is_multiple_of(5);
                let pkgs = packages(&mut rng, n, per_host, rpm);
                rows += pkgs.len();
                let user = if n == 4242 % hosts.max(1) {
                    "alice".to_owned()
                } else {
                    format!("user{n}")
                };
                let ip = format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256);
                IncomingReport {
                    host_id: id.clone(),
                    spool_id: "bench".into(),
                    seq: u64::try_from(n + 1).unwrap_or(1),
                    held_from_seq: 0,
                    collected_at_ms: 1,
                    payload: ReportPayload::Inventory {
                        inventory: Box::default(),
                        hostname: format!("pc-{n:05}"),
                        os_name: if rpm {
                            "Rocky Linux".into()
                        } else {
                            "Debian GNU/Linux".into()
                        },
                        os_version: if rpm { "9.3".into() } else { "12".into() },
                        facts: Box::new(InventoryFacts {
                            packages: pkgs,
                            facts: vec![
                                ("user", user),
                                ("ip", ip),
                                ("os", "debian gnu/linux 12".into()),
                            ],
                            free: vec![
                                ("/".into(), (rng.below(900) as f32) / 10.0),
                                ("/home".into(), 50.0),
                            ],
                        }),
                    },
                }
            })
            .collect();
        store.store_reports(&reports, 1).await.expect("store");
        if batch_no.is_multiple_of(100) {
            eprint!("\rloaded {} of {hosts} hosts", (batch_no + 1) * 16);
        }
    }
    let took = started.elapsed();
    eprintln!();
    println!(
        "load: {hosts} hosts x {per_host} packages = {rows} rows in {:.1}s ({:.0} package rows/s through the store's write path)",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64()
    );
    ids
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hosts = env("DESKPULSE_BENCH_HOSTS", 10_000);
    let per_host = env("DESKPULSE_BENCH_PACKAGES", 1_500);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = store::backend::open(&url).await.expect("open store");
    load(&store, hosts, per_host).await;

    let software = |name: &str, op: Option<(VersionOp, &str)>| HostQuery {
        software: Some((name.into(), op.map(|(o, v)| (o, v.into())))),
        ..HostQuery::default()
    };
    let queries: Vec<(&str, HostQuery)> = vec![
        (
            "--software 'openssl<3.0.13'",
            software("openssl", Some((VersionOp::Less, "3.0.13"))),
        ),
        ("--software firefox", software("firefox", None)),
        (
            "--user alice",
            HostQuery {
                user: Some("alice".into()),
                ..HostQuery::default()
            },
        ),
        (
            "--ip 10.1.2.3",
            HostQuery {
                ip: Some("10.1.2.3".into()),
                ..HostQuery::default()
            },
        ),
        (
            "--disk-free-below 10",
            HostQuery {
                disk_free_below: Some(10.0),
                ..HostQuery::default()
            },
        ),
    ];
    println!(
        "\n{:<32} {:>8} {:>10} {:>10}",
        "query (first page of 500)", "hosts", "p50 ms", "max ms"
    );
    for (name, query) in &queries {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..7 {
            let started = Instant::now();
            // What the CLI does: pages of 500 until the end.
            let mut after: Option<(String, String)> = None;
            let mut total = 0;
            loop {
                let page = store
                    .list_hosts(
                        query,
                        after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                        500,
                    )
                    .await
                    .expect("query");
                total += page.len();
                match page.last() {
                    Some(last) if page.len() == 500 => {
                        after = Some((last.hostname.clone(), last.id.clone()))
                    }
                    _ => break,
                }
            }
            times.push(started.elapsed());
            found = total;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<32} {found:>8} {:>10.1} {:>10.1}",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
}
