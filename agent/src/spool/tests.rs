//! The durable spool: reports survive reopening until acknowledged, sequence
//! numbers are never reused, torn and corrupt records are skipped, the
//! per-class bounds thin and drop, and a full disk is an error.

use std::io::Write as _;

use deskpulse_proto::v1::{HealthSample, Inventory};

use super::*;

fn health(cpu: f32) -> Payload {
    Payload::Health(HealthSample {
        cpu_percent: cpu,
        ..HealthSample::default()
    })
}

fn inventory(schema: u32) -> Payload {
    Payload::Inventory(Inventory {
        schema_version: schema,
        ..Inventory::default()
    })
}

fn open(dir: &Path) -> (Spool, Recovery) {
    Spool::open(dir, Limits::default()).expect("open spool")
}

fn seqs(spool: &mut Spool) -> Vec<u64> {
    spool
        .read_after(0, usize::MAX)
        .expect("read")
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn reports_survive_a_reopen_until_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery, Recovery::default());
    let id = spool.spool_id().to_owned();
    for i in 0..5 {
        assert_eq!(
            spool.push(health(i as f32), 1000 + i).expect("push"),
            i as u64 + 1
        );
    }
    assert!(spool.remove(&id, 2, Resolution::Acknowledged).expect("ack"));
    assert!(
        !spool.remove(&id, 2, Resolution::Acknowledged).expect("ack"),
        "a second ack"
    );
    assert!(
        !spool
            .remove("another", 3, Resolution::Acknowledged)
            .expect("ack")
    );
    drop(spool);

    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery.pending, 4);
    assert_eq!(spool.spool_id(), id, "the spool id is kept");
    assert_eq!(seqs(&mut spool), [1, 3, 4, 5]);
    let reports = spool.read_after(3, 10).expect("read");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].spool_id, id);
    assert_eq!(reports[0].collected_at_unix_ms, 1003);
    assert!(matches!(&reports[0].payload, Some(Payload::Health(h)) if h.cpu_percent == 3.0));
    assert_eq!(
        spool.push(health(9.0), 2000).expect("push"),
        6,
        "seq goes on"
    );
}

#[test]
fn reports_carry_the_lowest_seq_the_spool_still_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    let id = spool.spool_id().to_owned();
    for i in 0..4 {
        spool.push(health(i as f32), 1000 + i).expect("push");
    }
    let held = |spool: &mut Spool| -> Vec<u64> {
        spool
            .read_after(0, usize::MAX)
            .expect("read")
            .iter()
            .map(|r| r.held_from_seq)
            .collect()
    };
    assert_eq!(held(&mut spool), [1, 1, 1, 1]);
    // Seq 1 and 3 leave; 2 still waits, so nothing below 2 is forgotten.
    assert!(spool.remove(&id, 1, Resolution::Acknowledged).expect("ack"));
    assert!(spool.remove(&id, 3, Resolution::Acknowledged).expect("ack"));
    assert_eq!(held(&mut spool), [2, 2]);
    assert!(spool.remove(&id, 2, Resolution::Acknowledged).expect("ack"));
    let reports = spool.read_after(0, usize::MAX).expect("read");
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.seq, r.held_from_seq))
            .collect::<Vec<_>>(),
        [(4, 4)],
        "never above the report's own seq"
    );
}

#[test]
fn sequence_numbers_are_never_reused_after_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    let id = spool.spool_id().to_owned();
    for i in 0..3 {
        spool.push(health(1.0), i).expect("push");
    }
    for seq in 1..=3 {
        spool
            .remove(&id, seq, Resolution::Acknowledged)
            .expect("ack");
    }
    spool.compact().expect("compact");
    drop(spool);
    let (mut spool, _) = open(dir.path());
    assert!(spool.is_empty());
    assert_eq!(spool.push(health(1.0), 9).expect("push"), 4);
}

#[test]
fn a_torn_tail_is_skipped_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    for i in 0..3 {
        spool.push(health(i as f32), i).expect("push");
    }
    drop(spool);
    let path = dir.path().join(FILE_NAME);
    let len = std::fs::metadata(&path).expect("meta").len();
    // Cut the last record in half, as kill -9 in mid-write would.
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(len - 20).expect("truncate");
    drop(file);

    let (mut spool, recovery) = open(dir.path());
    assert_eq!(seqs(&mut spool), [1, 2]);
    assert!(recovery.skipped_bytes > 0);
    assert_eq!(recovery.skipped_runs, 1);
    assert_eq!(
        spool.push(health(7.0), 7).expect("push"),
        3,
        "the torn seq was never sent"
    );
    drop(spool);
    let (_, recovery) = open(dir.path());
    assert_eq!(recovery.skipped_bytes, 0, "the file was rewritten clean");
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    for i in 0..3 {
        spool.push(health(i as f32), i).expect("push");
    }
    let second = spool.pending[&2];
    drop(spool);
    let path = dir.path().join(FILE_NAME);
    let mut data = std::fs::read(&path).expect("read");
    let at = usize::try_from(second.offset).expect("offset") + HEADER + 20;
    data[at] ^= 0xff;
    std::fs::write(&path, &data).expect("write");

    let (mut spool, recovery) = open(dir.path());
    assert_eq!(seqs(&mut spool), [1, 3]);
    assert_eq!(recovery.skipped_bytes, second.len);
}

#[test]
fn garbage_becomes_a_new_spool_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(FILE_NAME), b"this is not a spool at all").expect("write");
    let (mut spool, recovery) = open(dir.path());
    assert!(recovery.recreated);
    assert!(spool.is_empty());
    assert_eq!(spool.spool_id().len(), 32);
    assert_eq!(spool.push(health(1.0), 1).expect("push"), 1);
}

#[test]
fn a_lost_header_keeps_the_reports_under_a_new_spool_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    let old_id = spool.spool_id().to_owned();
    spool.push(health(1.0), 1).expect("push");
    spool.push(health(2.0), 2).expect("push");
    drop(spool);
    let path = dir.path().join(FILE_NAME);
    let mut data = std::fs::read(&path).expect("read");
    data[HEADER + 3] ^= 0xff; // inside the meta record
    std::fs::write(&path, &data).expect("write");
    let (mut spool, recovery) = open(dir.path());
    assert!(recovery.recreated);
    assert_ne!(spool.spool_id(), old_id);
    assert_eq!(seqs(&mut spool), [1, 2]);
}

#[test]
fn health_is_thinned_then_the_oldest_dropped_and_the_newest_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = Limits {
        health_bytes: 4096,
        ..Limits::default()
    };
    let (mut spool, _) = Spool::open(dir.path(), limits).expect("open");
    // One sample a minute for 200 minutes.
    for i in 0..200i64 {
        spool.push(health(i as f32), i * 60_000).expect("push");
    }
    let stats = spool.stats();
    assert!(stats.health.bytes <= 4096, "{stats:?}");
    assert!(stats.dropped.health_thinned > 0, "{stats:?}");
    let kept = spool.read_after(0, usize::MAX).expect("read");
    let last = kept.last().expect("newest kept");
    assert_eq!(last.seq, 200, "the newest sample is intact");
    // The newest half is dense: the last ten are one minute apart.
    let tail: Vec<u64> = kept.iter().rev().take(10).map(|r| r.seq).collect();
    assert_eq!(tail, (191..=200).rev().collect::<Vec<_>>());
    assert_eq!(
        stats.dropped.health_thinned + stats.dropped.health_dropped,
        200 - kept.len() as u64
    );

    // Far past the bound, thinning stops at one an hour and the oldest go.
    for i in 200..2000i64 {
        spool.push(health(1.0), i * 3_600_000).expect("push");
    }
    let stats = spool.stats();
    assert!(stats.dropped.health_dropped > 0, "{stats:?}");
    drop(spool);
    let (spool, _) = Spool::open(dir.path(), limits).expect("reopen");
    assert_eq!(
        spool.stats().dropped,
        stats.dropped,
        "counts survive a restart"
    );
}

#[test]
fn a_new_inventory_supersedes_unsent_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    spool.push(inventory(1), 1).expect("push");
    spool.push(health(1.0), 2).expect("push");
    spool.push(inventory(2), 3).expect("push");
    assert_eq!(seqs(&mut spool), [2, 3]);
    assert_eq!(spool.stats().dropped.inventory_superseded, 1);
    assert_eq!(spool.stats().inventory.records, 1);
    assert_eq!(spool.stats().health.oldest_unix_ms, Some(2));
}

// Linux's /dev/full stands for the full disk.
#[test]
#[cfg(target_os = "linux")]
fn a_full_disk_is_an_error_not_a_torn_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    spool.push(health(1.0), 1).expect("push");
    let good = std::mem::replace(
        &mut spool.file,
        OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full"),
    );
    let err = spool.push(health(2.0), 2).expect_err("the disk is full");
    let text = err.to_string();
    assert!(text.contains("No space left on device"), "{text}");
    assert!(!text.contains('\n'));
    assert_eq!(spool.stats().dropped.unwritable, 1);
    spool.file = good;
    assert_eq!(
        spool.push(health(3.0), 3).expect("push"),
        2,
        "the lost seq is reused, it was never sent"
    );
    drop(spool);
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery.skipped_bytes, 0);
    assert_eq!(seqs(&mut spool), [1, 2]);
    assert_eq!(
        spool.stats().dropped.unwritable,
        1,
        "the count went to disk with the next record"
    );
}

#[test]
fn lost_report_counts_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = Limits {
        results_bytes: 600,
        ..Limits::default()
    };
    let issue = || {
        Payload::UserIssue(deskpulse_proto::v1::UserIssue {
            text: "x".repeat(200),
            ..Default::default()
        })
    };
    let (mut spool, _) = Spool::open(dir.path(), tiny).expect("open");
    spool.push(issue(), 1).expect("the first fits");
    let refused = (0..3)
        .filter(|i| spool.push(issue(), 2 + i).is_err())
        .count();
    assert!(refused >= 2, "{refused} refused");
    spool.push(health(1.0), 9).expect("health");
    let id = spool.spool_id().to_owned();
    spool.remove(&id, 1, Resolution::Acknowledged).expect("ack");
    let before = spool.stats().dropped;
    assert_eq!(before.results_refused, refused as u64);
    drop(spool);
    // No compaction happened: the counts are only in the records.
    let (spool, _) = open(dir.path());
    assert_eq!(spool.stats().dropped, before);
    assert_eq!(Spool::inspect(dir.path()).expect("inspect").dropped, before);
}

#[test]
#[cfg(unix)]
fn the_spool_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let spool_dir = dir.path().join("spool");
    let (mut spool, _) = open(&spool_dir);
    spool.push(health(1.0), 1).expect("push");
    spool.compact().expect("compact");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    assert_eq!(mode(&spool_dir.join(FILE_NAME)), 0o600);
}

#[test]
fn acknowledged_records_are_compacted_away() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path());
    let id = spool.spool_id().to_owned();
    let big = Payload::Inventory(Inventory {
        unavailable: vec![
            deskpulse_proto::v1::Unavailable {
                detail: "x".repeat(64 * 1024),
                ..Default::default()
            };
            1
        ],
        ..Inventory::default()
    });
    for i in 0..40 {
        let seq = spool.push(big.clone(), i).expect("push");
        spool
            .remove(&id, seq, Resolution::Acknowledged)
            .expect("ack");
    }
    spool.push(health(1.0), 99).expect("push");
    let size = std::fs::metadata(dir.path().join(FILE_NAME))
        .expect("meta")
        .len();
    assert!(
        size < 2 * 1024 * 1024,
        "{size} bytes after 2.5 MiB of acknowledged reports"
    );
    drop(spool);
    let (mut spool, _) = open(dir.path());
    assert_eq!(seqs(&mut spool), [41]);
}

#[test]
fn an_unwritable_spool_dir_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(b"x"))
        .expect("write");
    let err = Spool::open(&file.join("spool"), Limits::default()).expect_err("must fail");
    assert!(err.to_string().starts_with("spool "), "{err}");
}
