//! The agent's state dir with the real binaries: nothing in it is readable
//! by another local user (an install with the old, open modes is fixed at
//! start), a damaged certificate or key is one line at start naming the
//! file, and the spool's counts of lost reports survive a restart and reach
//! the collector.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deskpulse_agent::spool::{Limits, Spool};
use deskpulse_proto::v1::UserIssue;
use deskpulse_proto::v1::report::Payload;
use deskpulse_tests::{Agent, AgentService, Collector, Run, run, wait_for};

fn is_root() -> bool {
    run(std::process::Command::new("id").arg("-u"))
        .stdout
        .trim()
        == "0"
}

/// Runs `argv` as user `nobody`, group `nogroup`, no supplementary groups.
fn as_nobody(argv: &[&str]) -> Run {
    run(std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(argv))
}

/// Every path under `dir`, depth first, without following links.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if entry.file_type().expect("type").is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

fn connected(agent: &Agent) -> Option<()> {
    let out = agent.command(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    (s["service_running"] == true && s["connected"] == true && s["last_success_unix_ms"].is_i64())
        .then_some(())
}

/// An install made by an older agent (files 0644 in 0755 directories, a
/// spool full of reports) is made private when the service starts: user
/// `nobody` can list nothing and read nothing in the state dir, yet still
/// reach the local socket. Switching users needs root: as any other user
/// this test says so and checks nothing.
#[test]
fn nothing_in_the_state_dir_is_readable_by_another_user() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        eprintln!("SKIPPED: switching to another user needs root");
        return;
    }
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let state = agent.state_dir.path();
    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(30), || connected(&agent)).expect("the service connects");
    assert_eq!(service.stop(), Some(0));
    // What an older agent left: everything open to read.
    for path in walk(state).into_iter().chain([state.to_path_buf()]) {
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if meta.file_type().is_symlink() || name == "reports" || name == "agent.sock" {
            continue;
        }
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let spool_log = state.join("spool/records.log");
    let readable = as_nobody(&["cat", spool_log.to_str().expect("utf-8")]);
    assert_eq!(readable.code, 0, "the old modes are open: {readable:?}");

    let _service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(30), || connected(&agent)).expect("the service connects again");
    let state_text = state.to_str().expect("utf-8");
    let listed = as_nobody(&["ls", state_text]);
    assert_ne!(listed.code, 0, "nobody lists the state dir: {listed:?}");
    let mut checked = 0;
    for path in walk(state) {
        // The running agent replaces files by renaming a temporary one into
        // place: a temporary seen by the walk may be gone already.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "reports" || name == "agent.sock" {
            continue;
        }
        let text = path.to_str().expect("utf-8");
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{text}");
            let out = as_nobody(&["ls", text]);
            assert_ne!(out.code, 0, "nobody lists {text}");
        } else {
            assert_eq!(mode, 0o600, "{text}");
            let out = as_nobody(&["cat", text]);
            assert_ne!(out.code, 0, "nobody reads {text}: {}", out.stdout);
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} paths in {state_text}");
    // The endpoint stays open: nobody may ask the running service.
    let status = as_nobody(&[
        deskpulse_tests::bin("deskpulse-agent")
            .to_str()
            .expect("utf-8"),
        "status",
        "--state-dir",
        state_text,
    ]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("running, connected"),
        "{}",
        status.stdout
    );
}

/// A damaged certificate or key stops `run` (and `run --once`) at once
/// with one line that names the file and says to enroll again.
#[test]
fn a_corrupt_certificate_or_key_is_one_line_at_start() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let state = agent.state_dir.path();
    let (cert, key) = agent.identity();
    let other = Agent::new();
    other
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let (_, other_key) = other.identity();
    let cases: [(&str, String, &str); 4] = [
        ("agent.pem", "not a certificate\n".into(), "agent.pem"),
        ("agent.pem", cert.replace("MII", "MIX"), "agent.pem"),
        ("agent.key", key[..key.len() / 2].to_owned(), "agent.key"),
        (
            "agent.key",
            other_key,
            "agent.pem was not issued for the key",
        ),
    ];
    for (file, damaged, needle) in cases {
        std::fs::write(state.join(file), &damaged).expect("damage");
        for args in [&["run"][..], &["run", "--once"][..]] {
            let started = std::time::Instant::now();
            let out = agent.command(args).expect_code(1);
            let lines: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(lines.len(), 1, "{args:?} with a bad {file}: {}", out.stderr);
            assert!(
                lines[0].contains(needle) && lines[0].contains("enroll again"),
                "{args:?}: {}",
                lines[0]
            );
            assert!(!lines[0].contains("cannot reach"), "{}", lines[0]);
            eprintln!(
                "{args:?} with a damaged {file}: exit 1 after {:?}: {}",
                started.elapsed(),
                lines[0]
            );
        }
        std::fs::write(state.join("agent.pem"), &cert).expect("restore");
        std::fs::write(state.join("agent.key"), &key).expect("restore");
    }
    agent.command(&["run", "--once"]).expect_code(0);
}

/// Reports the spool refused (its results bound reached) are counted, the
/// count survives a restart of the agent, and every new session sends it.
#[test]
fn lost_report_counts_survive_a_restart_and_are_sent() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let spool_dir = agent.state_dir.path().join("spool");
    {
        // The agent's own spool code, with a tiny results bound, as a
        // spool whose results class is full sees it.
        let tiny = Limits {
            results_bytes: 1024,
            ..Limits::default()
        };
        let (mut spool, _) = Spool::open(&spool_dir, tiny).expect("spool");
        let issue = Payload::UserIssue(UserIssue {
            text: "x".repeat(400),
            ..UserIssue::default()
        });
        let refused = (0..5)
            .filter(|i| spool.push(issue.clone(), 1 + i).is_err())
            .count();
        assert_eq!(refused, 3, "two fit, three are refused");
    }
    let token = collector.admin_token();
    let refused_shown = || {
        let out = collector
            .cli(&token, &["--json", "host", "show", &host])
            .expect_code(0);
        let detail: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        detail["spool"]["results_refused"].as_u64()
    };
    for round in 0..2 {
        // Forget what the last session sent, so only a new one can show it.
        deskpulse_tests::open_database(collector.data_dir.path())
            .execute(
                "UPDATE hosts SET spool_counters = NULL WHERE id = ?1",
                [&host],
            )
            .expect("forget the counters");
        let service = AgentService::start(&agent, &[]);
        let refused = wait_for(Duration::from_secs(30), refused_shown)
            .expect("the session sends its spool counters");
        assert_eq!(
            refused, 3,
            "round {round}: the count came back after a restart"
        );
        assert_eq!(service.stop(), Some(0));
        let stats = Spool::inspect(&spool_dir).expect("inspect");
        assert_eq!(stats.dropped.results_refused, 3, "round {round}");
    }
}

/// Issue 20: an employee's report, acknowledged, then the state dir put
/// back as a copy taken before the acknowledgement (a VM snapshot
/// restored): the agent sends the report again, and the collector raises
/// no second ticket, because the report carries the key it was made with.
#[test]
fn a_report_sent_again_from_a_restored_state_dir_raises_no_second_ticket() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let state = agent.state_dir.path();
    agent
        .command(&["report-issue", "The scanner on floor 2 is offline"])
        .expect_code(0);
    let snapshot = tempfile::tempdir().expect("temp");
    let copy = |from: &Path, to: &Path| {
        let out = run(std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", from.display()))
            .arg(to));
        assert_eq!(out.code, 0, "{out:?}");
    };
    copy(state, snapshot.path());
    let token = collector.admin_token();
    let tickets = || {
        let out = collector.cli(&token, &["--json", "tickets"]).expect_code(0);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        list.as_array().map_or(0, |all| {
            all.iter().filter(|t| t["rule"] == "user-report").count()
        })
    };
    let results_waiting = || {
        Spool::inspect(&state.join("spool"))
            .map(|s| s.results.records)
            .unwrap_or(u64::MAX)
    };
    for round in ["first run", "after the restore"] {
        let service = AgentService::start(&agent, &[]);
        wait_for(Duration::from_secs(30), || {
            let out = agent.command(&["status", "--json"]);
            let s: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            (s["spool"]["results"]["records"] == 0 && s["connected"] == true).then_some(())
        })
        .unwrap_or_else(|| panic!("{round}: the report is acknowledged"));
        // Health samples move the spool on, so the collector forgets the
        // report's (spool, seq) key, as it does in the field.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(service.stop(), Some(0));
        assert_eq!(results_waiting(), 0, "{round}");
        assert_eq!(tickets(), 1, "{round}: one ticket");
        for entry in std::fs::read_dir(state).expect("list").flatten() {
            let path = entry.path();
            if entry.file_type().expect("type").is_dir() {
                std::fs::remove_dir_all(&path).expect("remove");
            } else {
                std::fs::remove_file(&path).expect("remove");
            }
        }
        copy(snapshot.path(), state);
        assert_eq!(results_waiting(), 1, "the restored spool holds the report");
    }
}
