//! A panic in the collector is contained (`collector/src/panics.rs`): a
//! panicking request is answered `internal` and a panicking agent session
//! ends alone, while the collector keeps serving every other call and
//! agent. The panics come from the debug build's test hook
//! (`DESKPULSE_COLLECTOR_TEST_PANIC`). The release profile's `panic`
//! setting, which decides whether any of this can happen in production, is
//! checked against the manifest.

use deskpulse_collector::panics::TEST_PANIC_VAR;
use deskpulse_tests::{Agent, Collector};

fn collector_panicking_at(point: &str) -> Collector {
    Collector::start_with_env(
        tempfile::tempdir().expect("temp data dir"),
        "127.0.0.1:0",
        &[],
        &[(TEST_PANIC_VAR, point)],
    )
}

/// The panic is logged as one line of ours, never the standard library's
/// message with its backtrace hint.
fn assert_logged_once(collector: &Collector) {
    let logs = collector.logs();
    assert_eq!(
        logs.matches("a collector task panicked").count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("RUST_BACKTRACE"), "{logs}");
    assert!(!logs.contains("thread '"), "{logs}");
}

#[test]
fn a_panicking_request_is_answered_internal_and_the_collector_keeps_serving() {
    let mut collector = collector_panicking_at("whoami");
    let token = collector.admin_token();

    let failed = collector.cli(&token, &["whoami"]).expect_code(1);
    assert!(
        failed
            .error_line()
            .contains("the collector failed on this request"),
        "{}",
        failed.stderr
    );
    assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);

    // The same call again, and an agent's whole round trip, are served.
    collector.cli(&token, &["whoami"]).expect_code(0);
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let once = agent.command(&["run", "--once"]).expect_code(0);
    assert!(once.stdout.contains("all acknowledged"), "{}", once.stdout);
    let hosts = collector.cli(&token, &["--json", "hosts"]).expect_code(0);
    assert_eq!(hosts.json().as_array().map(Vec::len), Some(1));

    assert_logged_once(&collector);
    assert_eq!(collector.terminate(), Some(0), "{}", collector.logs());
}

#[test]
fn a_panicking_agent_session_ends_alone_and_the_agent_resends() {
    let mut collector = collector_panicking_at("session");
    let token = collector.admin_token();
    let first = Agent::new();
    first
        .enroll(&collector, &collector.enrollment_token(2))
        .expect_code(0);

    let failed = first.command(&["run", "--once"]);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    // The agent reads the collector's `internal` status even when its own
    // side of the stream was closed first (Session::why_closed), and keeps
    // its reports.
    assert!(
        failed
            .stderr
            .contains("the collector failed on this session"),
        "{}",
        failed.stderr
    );

    // Another agent, and the first one again, are served: the first one's
    // spooled reports arrive.
    let second = Agent::new();
    second
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    second.command(&["run", "--once"]).expect_code(0);
    let again = first.command(&["run", "--once"]).expect_code(0);
    assert!(
        again.stdout.contains("all acknowledged"),
        "{}",
        again.stdout
    );
    let hosts = collector.cli(&token, &["--json", "hosts"]).expect_code(0);
    assert_eq!(hosts.json().as_array().map(Vec::len), Some(2));

    assert_logged_once(&collector);
    assert_eq!(collector.terminate(), Some(0), "{}", collector.logs());
}

/// Containment needs unwinding in the build that ships the collector; the
/// agent, one process per PC under a service manager, aborts.
#[test]
fn the_collector_ships_unwinding_and_the_agent_aborting() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("workspace Cargo.toml");
    // The profile's own table, up to the next table header.
    let panic_of = |profile: &str| {
        let header = format!("[profile.{profile}]");
        let start = text.find(&header)?;
        text[start + header.len()..]
            .lines()
            .take_while(|line| !line.starts_with('['))
            .find_map(|line| line.trim().strip_prefix("panic = "))
            .map(|value| value.trim_matches('"').to_owned())
    };
    assert_eq!(panic_of("release").as_deref(), Some("unwind"));
    assert_eq!(panic_of("agent-release").as_deref(), Some("abort"));
}
