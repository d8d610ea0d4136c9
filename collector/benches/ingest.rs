//! The ingest write path on SQLite (issue 8): what `Store::store_reports`
//! sustains in the batches the ingest writer forms. Prints figures, asserts
//! nothing (D34). Targets on the 2-core machine: 10,000 health reports/s,
//! 100,000 package rows/s of first inventories (19,000 hosts of ~1,000
//! packages in 3 min), and batch commits quick enough for an Ack p99 under
//! 100 ms at 19k agents with health every 60 s (about 320 reports/s).
//!
//! 1. the machine's ceiling: the same host → package rows inserted bare,
//!    through sqlx (multi-row `VALUES`, and one `json_each` statement per
//!    host) and through rusqlite prepared statements, in the same batches;
//! 2. first inventories (realistic dpkg names and versions, mostly shared
//!    across the fleet, some per host) through `store_reports`;
//! 3. health reports in batches of 512 against the default rules, a few
//!    hosts firing, some hosts tagged;
//! 4. small health batches as at 19k agents every 60 s: commit latency.
//!
//! `cargo bench -p deskpulse-collector --bench ingest`
//! Sizes: DESKPULSE_BENCH_HOSTS (default 2000), DESKPULSE_BENCH_PACKAGES
//! (default 1000), DESKPULSE_BENCH_ROUNDS of health (default 10).

use std::time::Instant;

use deskpulse_collector::facts;
use deskpulse_collector::ingest;
use deskpulse_collector::store::{self, IncomingReport, ReportPayload, SharedStore};
use deskpulse_proto::v1::{
    FilesystemUsage, HealthSample, Inventory, OsInfo, Package, ServiceHealth, SoftwareInfo,
    SystemInfo, TemperatureReading,
};
use prost::Message;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

mod support;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Debian package names as they look on a desktop; the pool below combines
/// them with suffixes into a few thousand distinct names.
const STEMS: [&str; 40] = [
    "libc6",
    "libssl3",
    "libgtk-3-0",
    "libglib2.0-0",
    "python3-apt",
    "python3-gi",
    "fonts-dejavu-core",
    "fonts-noto-cjk",
    "gir1.2-gtk-3.0",
    "linux-image-6.1.0-28-amd64",
    "gnome-shell-extension",
    "xserver-xorg-video",
    "perl-modules-5.36",
    "libreoffice-core",
    "libavcodec59",
    "libqt5widgets5",
    "libx11-6",
    "libxml2",
    "libsystemd0",
    "systemd-timesyncd",
    "firmware-linux",
    "cups-filters",
    "libpulse0",
    "pipewire-audio",
    "libwebkit2gtk-4.1-0",
    "thunderbird-l10n",
    "firefox-esr-l10n",
    "hunspell",
    "ruby3.1",
    "golang-1.19-go",
    "libnss3",
    "libkrb5-3",
    "libldap-2.5-0",
    "openssh-client",
    "network-manager",
    "bluez",
    "printer-driver",
    "tesseract-ocr",
    "texlive-lang",
    "node-",
];

/// Package `id` of the fleet-wide pool: a stable name, a version in
/// Debian's shapes (epochs, `+dfsg`, `~deb12u`, `+b1`).
fn pooled(id: usize, bumped: bool) -> Package {
    let stem = STEMS[id % STEMS.len()];
    let name = if id < STEMS.len() {
        stem.to_owned()
    } else {
        format!("{stem}-{}", id / STEMS.len())
    };
    let mut version = match id % 5 {
        0 => format!("{}.{}.{}-{}", 1 + id % 4, id % 17, id % 9, 1 + id % 3),
        1 => format!("1:{}.{}+dfsg-{}", 2 + id % 3, id % 40, 1 + id % 5),
        2 => format!(
            "{}.{}-{}~deb12u{}",
            3 + id % 2,
            id % 30,
            1 + id % 2,
            1 + id % 4
        ),
        3 => format!("{}.{}.{}-{}+b1", id % 6, id % 11, id % 23, 2 + id % 3),
        _ => format!("{}.{}-{}", 20_230_000 + id % 400, id % 8, 1 + id % 2),
    };
    if bumped {
        version.push_str("+deb12u9");
    }
    Package {
        ecosystem: "dpkg".into(),
        name,
        version,
        arch: if id.is_multiple_of(9) { "all" } else { "amd64" }.into(),
        publisher: "Debian".into(),
        install_date_unix_s: 1_700_000_000 + i64::try_from(id).unwrap_or(0) * 60,
        source: String::new(),
        state: String::new(),
    }
}

/// A host's packages: 90 % from a base every host shares (a quarter of the
/// fleet a point release ahead on some of them), the rest drawn from a
/// larger pool by host, plus one package only this host has.
fn packages(host: usize, count: usize) -> Vec<Package> {
    let base = count * 9 / 10;
    let mut out: Vec<Package> = (0..base)
        .map(|k| pooled(k, host.is_multiple_of(4) && k.is_multiple_of(7)))
        .collect();
    let mut k = 0;
    while out.len() + 1 < count {
        out.push(pooled(base + (host * 31 + k * 97) % 6000, false));
        k += 1;
    }
    out.push(Package {
        ecosystem: "dpkg".into(),
        name: format!("inhouse-tool-pc{host}"),
        version: "1.0-1".into(),
        arch: "amd64".into(),
        publisher: "Example IT".into(),
        install_date_unix_s: 1_760_000_000,
        source: String::new(),
        state: String::new(),
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

fn inventory(host: usize, count: usize) -> Inventory {
    let mut inv = Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        system: Some(SystemInfo {
            vendor: "LENOVO".into(),
            model: "ThinkCentre M70q".into(),
            serial: format!("PC{host:08}"),
            chassis_type: "desktop".into(),
            ..SystemInfo::default()
        }),
        os: Some(OsInfo {
            hostname: format!("pc-{host:05}"),
            name: "Debian GNU/Linux".into(),
            version: "12".into(),
            kernel_version: "6.1.0-28-amd64".into(),
            arch: "x86_64".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages: packages(host, count),
            hotfixes: Vec::new(),
        }),
        ..Inventory::default()
    };
    deskpulse_proto::delta::canonicalize(&mut inv);
    inv
}

fn inventory_report(host_id: &str, host: usize, count: usize, at_ms: i64) -> IncomingReport {
    let inv = inventory(host, count);
    let os = inv.os.clone().unwrap_or_default();
    IncomingReport {
        host_id: host_id.to_owned(),
        spool_id: "bench".into(),
        seq: 1,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: ReportPayload::Inventory {
            inventory: Box::new(inv.clone()),
            hostname: os.hostname,
            os_name: os.name,
            os_version: os.version,
            facts: Box::new(facts::inventory_facts(&inv)),
        },
    }
}

/// A desktop's sample: three filesystems, two sensors, two services; about
/// one host in 30 runs hot, fills a disk or has a failed service.
fn health(host: usize, round: usize) -> HealthSample {
    let hot = host.is_multiple_of(97);
    let fs = |mount: &str, used: usize| FilesystemUsage {
        mount_point: mount.into(),
        used_percent: (used % 100) as f32,
        available_bytes: u64::try_from(100 - used % 100).unwrap_or(0) << 30,
    };
    HealthSample {
        cpu_percent: if hot { 99.0 } else { (host % 50) as f32 },
        memory_used_percent: if host.is_multiple_of(89) { 97.0 } else { 40.0 },
        load_5m: 0.5,
        logical_cpus: 8,
        uptime_secs: 86_400 * 3,
        filesystems: vec![
            fs(
                "/",
                if host.is_multiple_of(61) {
                    97
                } else {
                    40 + round % 5
                },
            ),
            fs("/home", 30 + host % 50),
            fs("/boot/efi", 20),
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
        ..HealthSample::default()
    }
}

fn health_report(host_id: &str, host: usize, round: usize, at_ms: i64) -> IncomingReport {
    let sample = health(host, round);
    IncomingReport {
        host_id: host_id.to_owned(),
        spool_id: "bench".into(),
        seq: 2 + u64::try_from(round).unwrap_or(0),
        // As an agent whose earlier reports were acknowledged sends it.
        held_from_seq: 2 + u64::try_from(round).unwrap_or(0),
        collected_at_ms: at_ms,
        payload: ReportPayload::Health {
            encoded: sample.encode_to_vec(),
            free: facts::health_free(&sample),
            reading: facts::health_reading(&sample),
            readings: facts::health_readings(&sample, at_ms),
        },
    }
}

/// The bench's fleet, every tenth host tagged `criticality=high`.
async fn enroll(store: &SharedStore, hosts: usize) -> Vec<String> {
    let ids = support::enroll_hosts(store, hosts).await;
    for host_id in ids.iter().step_by(10) {
        store
            .set_tag(
                host_id,
                "criticality",
                "high",
                &deskpulse_collector::store::AuditEntry::system("test", "", ""),
                0,
            )
            .await
            .expect("tag");
    }
    ids
}

/// Milliseconds at the p-th percentile of sorted durations.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] * 1000.0
}

/// Stores `reports` in batches of `batch` reports; returns the seconds taken
/// and each batch's commit time.
async fn store_all(
    store: &SharedStore,
    reports: &[IncomingReport],
    batch: usize,
) -> (f64, Vec<f64>) {
    let mut commits = Vec::new();
    let started = Instant::now();
    for chunk in reports.chunks(batch) {
        let at = Instant::now();
        let outcomes = store
            .store_reports(chunk, chunk[0].collected_at_ms)
            .await
            .expect("store");
        assert_eq!(outcomes.len(), chunk.len());
        commits.push(at.elapsed().as_secs_f64());
    }
    commits.sort_by(f64::total_cmp);
    (started.elapsed().as_secs_f64(), commits)
}

/// Bare inserts of the same (host key, catalog id) rows into a table of the
/// same shape, three ways; returns the best rate, the ceiling. Host keys
/// are handed out in order, as the store does (migration 0010).
async fn ceiling(dir: &std::path::Path, rows: &[(i64, Vec<i64>)], batch: usize) -> f64 {
    const TABLE: &str = "CREATE TABLE host_software (host_key INTEGER NOT NULL, catalog_id INTEGER NOT NULL, \
         PRIMARY KEY (host_key, catalog_id)) WITHOUT ROWID; \
         CREATE INDEX host_software_by_catalog ON host_software (catalog_id, host_key)";
    let total: usize = rows.iter().map(|(_, ids)| ids.len()).sum();
    let sqlx_pool = |name: &str| {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(name))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
    };

    let pool = sqlx_pool("values.db").await.expect("open");
    sqlx::raw_sql(TABLE).execute(&pool).await.expect("schema");
    let started = Instant::now();
    for hosts in rows.chunks(batch) {
        let mut tx = pool.begin().await.expect("begin");
        let pairs: Vec<(i64, i64)> = hosts
            .iter()
            .flat_map(|(h, ids)| ids.iter().map(move |id| (*h, *id)))
            .collect();
        for chunk in pairs.chunks(400) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO host_software (host_key, catalog_id) ",
            );
            q.push_values(chunk, |mut b, (h, id)| {
                b.push_bind(*h).push_bind(*id);
            });
            q.build().execute(&mut *tx).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let values = total as f64 / started.elapsed().as_secs_f64();
    pool.close().await;

    let pool = sqlx_pool("json.db").await.expect("open");
    sqlx::raw_sql(TABLE).execute(&pool).await.expect("schema");
    let started = Instant::now();
    for hosts in rows.chunks(batch) {
        let mut tx = pool.begin().await.expect("begin");
        for (host, ids) in hosts {
            let json = serde_json::to_string(ids).expect("json");
            sqlx::query(
                "INSERT INTO host_software (host_key, catalog_id) SELECT ?, value FROM json_each(?)",
            )
            .bind(*host)
            .bind(json)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let json = total as f64 / started.elapsed().as_secs_f64();
    pool.close().await;

    let mut conn = rusqlite::Connection::open(dir.join("rusqlite.db")).expect("open");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .expect("pragmas");
    conn.execute_batch(TABLE).expect("schema");
    let started = Instant::now();
    for hosts in rows.chunks(batch) {
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO host_software (host_key, catalog_id) VALUES (?, ?)")
                .expect("prepare");
            for (host, ids) in hosts {
                for id in ids.iter() {
                    insert.execute((host, id)).expect("insert");
                }
            }
        }
        tx.commit().expect("commit");
    }
    let prepared = total as f64 / started.elapsed().as_secs_f64();

    println!(
        "ceiling: {total} bare host→package rows in batches of {batch} hosts: sqlx multi-row VALUES {values:.0} rows/s, \
         sqlx json_each {json:.0} rows/s, rusqlite prepared {prepared:.0} rows/s"
    );
    values.max(json).max(prepared)
}

async fn run() {
    let hosts = env("DESKPULSE_BENCH_HOSTS", 2000);
    let per_host = env("DESKPULSE_BENCH_PACKAGES", 1000);
    let rounds = env("DESKPULSE_BENCH_ROUNDS", 10);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = store::backend::open(&url).await.expect("open");
    let started = Instant::now();
    let ids = enroll(&store, hosts).await;
    println!(
        "enrolled {hosts} hosts in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // 2. First inventories, in the batches the ingest writer forms.
    let t0 = 1_764_000_000_000;
    let reports: Vec<IncomingReport> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| inventory_report(id, i, per_host, t0))
        .collect();
    let package_rows: usize = reports
        .iter()
        .map(|r| match &r.payload {
            ReportPayload::Inventory { facts, .. } => facts.packages.len(),
            _ => 0,
        })
        .sum();
    let bytes: usize = reports
        .iter()
        .map(|r| match &r.payload {
            ReportPayload::Inventory { inventory, .. } => inventory.encoded_len(),
            _ => 0,
        })
        .sum();
    let batch = ingest::INVENTORIES_PER_BATCH;
    let (took, commits) = store_all(&store, &reports, batch).await;
    let rows_per_s = package_rows as f64 / took;
    println!(
        "first inventories: {hosts} x ~{per_host} packages ({package_rows} rows, {:.0} KB encoded each) \
         in batches of {batch} in {took:.1}s = {:.0} inventories/s, {rows_per_s:.0} package rows/s; \
         commit p50 {:.0} ms, p99 {:.0} ms",
        bytes as f64 / hosts as f64 / 1000.0,
        hosts as f64 / took,
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
    );
    println!(
        "  19,000 first inventories would take {:.0}s (target under 180s)",
        19_000.0 * took / hosts as f64
    );
    drop(reports);

    // 3. Health in batches of 512.
    let mut reports = Vec::with_capacity(hosts * rounds);
    for round in 0..rounds {
        let at = t0 + 60_000 * (1 + i64::try_from(round).unwrap_or(0));
        for (i, id) in ids.iter().enumerate() {
            reports.push(health_report(id, i, round, at));
        }
    }
    let health_batch = env("DESKPULSE_BENCH_HEALTH_BATCH", ingest::MAX_BATCH);
    let (took, commits) = store_all(&store, &reports, health_batch).await;
    let tickets = store
        .list_tickets(&store::TicketQuery {
            limit: 10_000,
            ..store::TicketQuery::default()
        })
        .await
        .map(|t| t.len())
        .unwrap_or(0);
    println!(
        "health: {} reports ({hosts} hosts x {rounds} rounds, default rules, {tickets} tickets opened) \
         in batches of {health_batch} in {took:.2}s = {:.0} reports/s; commit p50 {:.1} ms, p99 {:.1} ms",
        reports.len(),
        reports.len() as f64 / took,
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
    );

    // 4. Steady state at 19k agents every 60 s: ~320 reports/s, so a batch
    // holds what arrived while the previous one committed; 32 is generous.
    let mut small = Vec::with_capacity(hosts);
    let at = t0 + 60_000 * (2 + i64::try_from(rounds).unwrap_or(0));
    for (i, id) in ids.iter().enumerate() {
        small.push(health_report(id, i, rounds, at));
    }
    let (took, commits) = store_all(&store, &small, 32).await;
    println!(
        "steady health: {} reports in batches of 32 in {took:.2}s = {:.0} reports/s; commit p50 {:.1} ms, p99 {:.1} ms",
        small.len(),
        small.len() as f64 / took,
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
    );

    // 1. The ceiling, on the same rows as the first inventories.
    let rows: Vec<(i64, Vec<i64>)> = (0..ids.len())
        .zip(1..)
        .map(|(i, key)| {
            let ids = packages(i, per_host)
                .iter()
                .map(|p| i64::try_from(p.name.len() * 100_000 + p.version.len()).unwrap_or(0))
                .enumerate()
                .map(|(k, v)| v * 10_000 + i64::try_from(k).unwrap_or(0))
                .collect();
            (key, ids)
        })
        .collect();
    let best = ceiling(dir.path(), &rows, batch).await;
    println!(
        "ours: first inventories at {:.0} % of the bare-insert ceiling ({rows_per_s:.0} of {best:.0} rows/s)",
        100.0 * rows_per_s / best
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
