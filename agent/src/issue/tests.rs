//! `report-issue`: text checks, the reporter named from passwd or by uid,
//! the live path over the local socket, the offline path into the spool,
//! and the offline path held to the per-user ledger.

use super::*;

// The caller is named from the system root's passwd by uid and reaches the
// service over the Unix socket: the tests of both are Unix only.
#[cfg(unix)]
use {
    crate::config::{AgentFlags, resolve},
    crate::local::{LocalReply, LocalRequest},
    crate::session::LiveStatus,
    crate::state::{Credentials, Enrollment},
    deskpulse_proto::v1::report::Payload,
    std::sync::{Arc, Mutex},
    tokio_util::sync::CancellationToken,
};

#[test]
fn text_is_trimmed_and_checked() {
    assert_eq!(
        validate_text("  Outlook keeps crashing\n\tsince Monday \n"),
        Ok("Outlook keeps crashing\n\tsince Monday".into())
    );
    assert!(
        validate_text(" \n\t ")
            .expect_err("empty")
            .contains("empty")
    );
    assert_eq!(
        validate_text(&"é".repeat(2000)).map(|t| t.chars().count()),
        Ok(2000)
    );
    assert!(
        validate_text(&"x".repeat(2001))
            .expect_err("long")
            .contains("2001 characters")
    );
    for bad in ["bell\u{7}", "esc\u{1b}[31m", "cr\r\nlf", "nul\0"] {
        let error = validate_text(bad).expect_err(bad);
        assert!(error.contains("control character"), "{error}");
        assert!(!error.contains('\n'));
    }
}

#[test]
fn users_are_named_from_passwd_or_by_uid() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\nbroken\n";
    assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
    assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
    assert_eq!(user_name(passwd, 4242), None);
    assert_eq!(os_user(Path::new("/nonexistent-root"), 4242), "uid 4242");
}

/// A system root whose passwd names the user running the tests "tester",
/// and an enrolled state dir whose collector does not answer.
#[cfg(unix)]
fn offline_agent() -> (tempfile::TempDir, AgentConfig, StateDir) {
    let dir = tempfile::tempdir().expect("temp");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::create_dir_all(root.join("proc")).expect("mkdir");
    let uid = rustix::process::getuid().as_raw();
    std::fs::write(
        root.join("etc/passwd"),
        // Only the tester: tests may run as root, and the name must come
        // from this passwd, not the machine's.
        format!("daemon:x:1:1::/:/bin/sh\ntester:x:{uid}:{uid}:Tester:/home/tester:/bin/sh\n"),
    )
    .expect("passwd");
    std::fs::write(root.join("proc/loadavg"), "1.50 1.00 0.50 1/100 42\n").expect("loadavg");
    let flags = AgentFlags {
        state_dir: Some(dir.path().join("state")),
        system_root: Some(root),
        ..AgentFlags::default()
    };
    let config = resolve(&flags, &std::collections::HashMap::new()).expect("config");
    let state = StateDir::new(&config.state_dir);
    // Real PEM: the service checks its credentials before going online.
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["host".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert")
        .pem();
    state
        .save_enrollment(&Credentials {
            enrollment: Enrollment {
                // Port 1 on loopback: nothing listens, so the service stays offline.
                collector: "https://127.0.0.1:1".into(),
                host_id: "00000000-0000-4000-8000-000000000001".into(),
                enrolled_at_unix_ms: 1,
            },
            cert_pem: cert.clone(),
            key_pem: key.serialize_pem(),
            ca_pem: cert,
        })
        .expect("enrollment");
    (dir, config, state)
}

/// The user issues waiting in the spool.
#[cfg(unix)]
fn spooled_issues(config: &AgentConfig, state: &StateDir) -> Vec<deskpulse_proto::v1::UserIssue> {
    let (mut spool, _) = Spool::open(&state.spool_dir(), config.spool_limits).expect("spool");
    spool
        .read_after(0, 1000)
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.payload {
            Some(Payload::UserIssue(issue)) => Some(issue),
            _ => None,
        })
        .collect()
}

#[tokio::test]
#[cfg(unix)]
async fn a_report_over_the_local_socket_lands_in_the_spool_with_the_callers_name() {
    let (_dir, config, state) = offline_agent();
    let shutdown = CancellationToken::new();
    let live = Arc::new(Mutex::new(LiveStatus::default()));
    let (issues, queue) = tokio::sync::mpsc::channel(8);
    let endpoint = crate::local::Endpoint::of(&state);
    std::fs::create_dir_all(state.root()).expect("state dir");
    let served = crate::local::Service::new(live.clone(), issues, config.system_root.clone());
    let served_ledger = served.ledger.clone();
    let (served_endpoint, stop) = (endpoint.clone(), shutdown.clone());
    let socket =
        tokio::spawn(async move { crate::local::serve(&served_endpoint, served, stop).await });
    let (_asks, ask_queue) = tokio::sync::mpsc::channel(1);
    let employees = crate::issue::tickets::Employees {
        ledger: served_ledger,
        recorded: Arc::new(tokio::sync::Notify::new()),
        asks: ask_queue,
        pending: crate::issue::tickets::Pending::default(),
    };
    let service =
        crate::session::run_service(&config, &state, live, queue, employees, shutdown.clone());
    let client = async {
        // The socket is bound by the spawned task; wait until it answers.
        let mut reply = None;
        for _ in 0..500 {
            match crate::local::ask(
                &endpoint,
                &LocalRequest::ReportIssue {
                    text: "  The printer on floor 3 eats paper  ".into(),
                    email: None,
                },
                crate::local::REPORT_TIMEOUT,
            )
            .await
            {
                Ok(Some(answer)) => {
                    reply = Some(answer);
                    break;
                }
                _ => tokio::task::yield_now().await,
            }
        }
        let bad = crate::local::ask(
            &endpoint,
            &LocalRequest::ReportIssue {
                text: "evil\u{1b}[2J".into(),
                email: None,
            },
            crate::local::REPORT_TIMEOUT,
        )
        .await;
        shutdown.cancel();
        (reply, bad)
    };
    let (ran, (reply, bad)) = tokio::join!(service, client);
    ran.expect("service ran");
    socket.await.expect("joined").expect("socket served");
    match reply {
        Some(LocalReply::Reported {
            connected, os_user, ..
        }) => {
            assert!(!connected, "the collector is unreachable");
            assert_eq!(os_user, "tester");
        }
        other => panic!("expected Reported, got {other:?}"),
    }
    match bad {
        Ok(Some(LocalReply::Error { message })) => {
            assert!(message.contains("control character"), "{message}");
        }
        other => panic!("the service must check the text itself: {other:?}"),
    }
    let issues = spooled_issues(&config, &state);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].text, "The printer on floor 3 eats paper");
    assert_eq!(issues[0].os_user, "tester");
    let health = issues[0].health.as_ref().expect("a health sample");
    assert_eq!(health.load_1m, 1.5);
}

#[test]
#[cfg(unix)]
fn without_the_service_the_report_goes_into_the_spool_directly() {
    let (_dir, config, state) = offline_agent();
    let seq = report_offline(
        &config,
        &state,
        "VPN drops every hour".into(),
        caller(&config.system_root),
        None,
    )
    .expect("spooled");
    assert!(seq >= 1);
    let issues = spooled_issues(&config, &state);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].os_user, "tester");
    assert_eq!(issues[0].text, "VPN drops every hour");
    assert_eq!(issues[0].health.as_ref().map(|h| h.load_5m), Some(1.0));
    let stats = Spool::inspect(&state.spool_dir()).expect("inspect");
    assert_eq!(stats.results.records, 1, "a results record, never dropped");

    // A running service holds the lock: the offline path must not write.
    let _held = state.lock().expect("lock");
    let error =
        report_offline(&config, &state, "again".into(), "tester".into(), None).expect_err("busy");
    assert!(
        matches!(error, IssueError::State(StateError::Busy { .. })),
        "{error}"
    );
}
