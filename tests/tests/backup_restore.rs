//! A lost database is not silently replaced, and a backup puts it back
//! (issue 20), with the real binaries: a live collector is backed up, its
//! database is lost (emptied, or its write-ahead log deleted after a
//! crash), `serve` refuses to start with a one-line error saying how to
//! restore, `restore` puts the backup back, and the collector serves the
//! same hosts with an audit chain that verifies.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deskpulse_tests::{Agent, Collector, bin, run, wait_for};

/// `serve` on `data_dir`, expected to refuse at once.
fn serve_refused(data_dir: &Path) -> String {
    let out = run(Command::new(bin("deskpulse-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir))
    .expect_code(1);
    let line = out.error_line().to_owned();
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    line
}

fn restore(data_dir: &Path, from: &Path) -> String {
    run(Command::new(bin("deskpulse-collector"))
        .args(["restore", "--from"])
        .arg(from)
        .arg("--data-dir")
        .arg(data_dir))
    .expect_code(0)
    .stderr
}

fn hosts(collector: &Collector) -> String {
    collector
        .cli(&collector.admin_token(), &["hosts"])
        .expect_code(0)
        .stdout
}

#[test]
fn a_lost_database_is_refused_and_restored_from_a_backup() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
    let host = agent.host_id();
    wait_for(Duration::from_secs(30), || {
        hosts(&collector).contains(&host).then_some(())
    })
    .expect("the host is listed");

    let backups = tempfile::tempdir().expect("backup dir");
    let backup = backups.path().join("fleet.db");
    let backup_arg = backup.to_str().expect("utf-8 path");
    collector
        .admin(&["backup", "--to", backup_arg])
        .expect_code(0);
    let again = collector
        .admin(&["backup", "--to", backup_arg])
        .expect_code(2);
    assert!(again.error_line().contains("exists"), "{}", again.stderr);
    // Written after the backup: its audit entry and anchor are not in it.
    collector.enrollment_token(1);
    let data_dir = collector.into_data_dir();

    // The database emptied (and its log gone): refused, with the way out.
    let database = data_dir.path().join("deskpulse.db");
    std::fs::write(&database, b"").expect("empty the database");
    for log in ["deskpulse.db-wal", "deskpulse.db-shm"] {
        let _ = std::fs::remove_file(data_dir.path().join(log));
    }
    let refused = serve_refused(data_dir.path());
    assert!(
        refused.contains("holds none") && refused.contains("restore") && refused.contains("--init"),
        "{refused}"
    );
    let garbage = backups.path().join("garbage.db");
    std::fs::write(&garbage, b"not a database at all, just text").expect("garbage");
    let not_backup = run(Command::new(bin("deskpulse-collector"))
        .args(["restore", "--from"])
        .arg(&garbage)
        .arg("--data-dir")
        .arg(data_dir.path()))
    .expect_code(1);
    assert!(
        not_backup
            .error_line()
            .contains("is not a Deskpulse backup"),
        "{}",
        not_backup.stderr
    );

    let said = restore(data_dir.path(), &backup);
    assert!(said.contains("set aside"), "{said}");
    let collector = Collector::start_in(data_dir, &[]);
    assert!(
        hosts(&collector).contains(&host),
        "the restored fleet has its host"
    );
    let verified = collector.admin(&["audit", "verify"]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);

    // A crash, then the write-ahead log lost: the database is older than
    // the anchors, and serve says so.
    collector.enrollment_token(1);
    let data_dir = collector.kill_9();
    std::fs::remove_file(data_dir.path().join("deskpulse.db-wal")).expect("lose the log");
    let _ = std::fs::remove_file(data_dir.path().join("deskpulse.db-shm"));
    let refused = serve_refused(data_dir.path());
    assert!(
        refused.contains("lost writes") && refused.contains("restore"),
        "{refused}"
    );
    // `audit verify` still runs on it, and names what is missing.
    let verified = run(Command::new(bin("deskpulse-collector"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir.path()))
    .expect_code(1);
    assert!(
        verified.error_line().contains("missing (truncated?)"),
        "{}",
        verified.stderr
    );
    restore(data_dir.path(), &backup);
    let collector = Collector::start_in(data_dir, &[]);
    assert!(hosts(&collector).contains(&host));
    let verified = collector.admin(&["audit", "verify"]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
}

#[test]
fn serve_init_starts_a_new_fleet_beside_an_existing_ca() {
    let collector = Collector::start();
    let first_token = collector.admin_token();
    let data_dir = collector.into_data_dir();
    for file in ["deskpulse.db", "deskpulse.db-wal", "deskpulse.db-shm"] {
        let _ = std::fs::remove_file(data_dir.path().join(file));
    }
    serve_refused(data_dir.path());
    let collector = Collector::start_in(data_dir, &["--init"]);
    assert_ne!(collector.admin_token(), first_token, "a new admin token");
    let verified = collector.admin(&["audit", "verify"]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
}
