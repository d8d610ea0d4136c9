//! Spool throughput and inventory delta sizes (issue 5). Prints figures; no
//! timing is asserted.
//!
//! `cargo bench -p deskpulse-agent --bench spool_and_deltas`
//!
//! - Append: each push is fsynced (the spool's policy), so this is the
//!   durable rate on this disk.
//! - Acknowledge: resolving records, compaction included.
//! - Deltas: this machine's real inventory, padded with generated packages
//!   to 1,500, then: a cycle with no change (only volatile readings move),
//!   and one upgraded package. Sizes are protobuf and zstd level 3.

use std::path::Path;
use std::time::Instant;

use deskpulse_agent::collect::collect_inventory;
use deskpulse_agent::spool::{Limits, Resolution, Spool};
use deskpulse_proto::delta;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{HealthSample, Package, Report};
use prost::Message;

fn spool_rates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = Spool::open(dir.path(), Limits::default()).expect("open");
    let id = spool.spool_id().to_owned();
    let sample = Payload::Health(HealthSample {
        cpu_percent: 12.5,
        memory_used_percent: 43.0,
        uptime_secs: 86_400,
        ..HealthSample::default()
    });
    let n = 2_000u64;
    let started = Instant::now();
    for i in 0..n {
        spool
            .push(sample.clone(), i64::try_from(i).unwrap_or(0))
            .expect("push");
    }
    let append = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for seq in 1..=n {
        spool
            .remove(&id, seq, Resolution::Acknowledged)
            .expect("ack");
    }
    let ack = started.elapsed().as_secs_f64();
    println!(
        "spool append (fsync each): {n} records in {append:.2}s = {:.0} records/s",
        n as f64 / append
    );
    println!(
        "spool acknowledge:         {n} records in {ack:.3}s = {:.0} records/s",
        n as f64 / ack
    );
}

fn sizes(label: &str, payload: Payload) {
    let report = Report {
        sent_at_unix_ms: 0,
        spool_id: "0123456789abcdef0123456789abcdef".into(),
        seq: 123_456,
        held_from_seq: 0,
        collected_at_unix_ms: 1_764_000_000_000,
        payload: Some(payload),
    };
    let encoded = report.encode_to_vec();
    let compressed = zstd::encode_all(encoded.as_slice(), 3).expect("zstd");
    println!(
        "{label:<44} {:>8} B protobuf {:>7} B zstd",
        encoded.len(),
        compressed.len()
    );
}

fn deltas() {
    let mut base = collect_inventory(Path::new("/"));
    let software = base.software.get_or_insert_with(Default::default);
    let real = software.packages.len();
    let mut i = 0;
    while software.packages.len() < 1500 {
        software.packages.push(Package {
            ecosystem: "dpkg".into(),
            name: format!("generated-package-{i:04}"),
            version: format!("{}.{}.{}-{}", i % 7, i % 13, i % 5, 1 + i % 3),
            arch: "amd64".into(),
            publisher: "Debian".into(),
            install_date_unix_s: 1_700_000_000 + i64::from(i) * 3_600,
            source: "dpkg".into(),
            state: String::new(),
        });
        i += 1;
    }
    delta::canonicalize(&mut base);
    let packages = base.software.as_ref().map_or(0, |s| s.packages.len());
    println!("\ninventory: {real} real packages padded to {packages}");
    sizes("full snapshot", Payload::Inventory(base.clone()));

    // The next cycle: the real machine again, padded the same way, so only
    // what really moved (uptime, free memory and space) differs.
    let mut next = collect_inventory(Path::new("/"));
    next.software.clone_from(&base.software);
    delta::canonicalize(&mut next);
    sizes(
        "delta, no change",
        Payload::InventoryDelta(delta::diff(&base, &next)),
    );

    let mut upgraded = next.clone();
    if let Some(p) = upgraded
        .software
        .as_mut()
        .and_then(|s| s.packages.get_mut(packages / 2))
    {
        p.version.push_str("+deb12u1");
        p.install_date_unix_s += 86_400;
    }
    sizes(
        "delta, one package upgraded",
        Payload::InventoryDelta(delta::diff(&base, &upgraded)),
    );
}

fn main() {
    spool_rates();
    deltas();
}
