//! Host certificates renew and expire (issue 20), with the real binaries on
//! loopback and time moved by `DESKPULSE_TEST_CLOCK_OFFSET_SECS` (read by
//! debug builds only) instead of waited for.
//!
//! The renewal phase keeps the collector on the wall clock and moves only
//! the agent: the collector's TLS stack checks a client certificate's dates
//! against the wall clock, so a certificate issued by a collector whose
//! clock runs ahead would not be valid yet. The expiry phase moves the
//! collector too, which its own expiry check (not rustls') then enforces.

use std::time::Duration;

use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_tests::{Agent, AgentService, Collector, test_hello, wait_for};

const OFFSET: &str = "DESKPULSE_TEST_CLOCK_OFFSET_SECS";
const DAY: i64 = 86_400;

fn cert_sha256(pem: &str) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM");
    deskpulse_collector::secrets::sha256_hex(der.as_ref())
}

fn current_cert_sha256(collector: &Collector, host: &str) -> String {
    let db = rusqlite::Connection::open(collector.data_dir.path().join("deskpulse.db"))
        .expect("open the database");
    db.query_row(
        "SELECT cert_sha256 FROM hosts WHERE id = ?1",
        [host],
        |row| row.get(0),
    )
    .expect("the host's certificate")
}

/// Opens a session with `identity`; the refusal's message, if refused.
async fn session_refusal(collector: &Collector, identity: (&str, &str)) -> Option<String> {
    let channel = collector.channel(Some(identity)).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(test_hello()).await.expect("queue hello");
    let result = AgentServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    result.err().map(|status| {
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        status.message().to_owned()
    })
}

fn apply_lifetime(collector: &Collector, lifetime: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        format!("[certificates]\nlifetime = \"{lifetime}\"\n"),
    )
    .expect("write");
    let admin = collector.admin_token();
    collector
        .cli(&admin, &["rules", "apply", file.to_str().expect("utf-8")])
        .expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_with_a_new_key_and_an_expired_one_must_enroll_again() {
    let collector = Collector::start();
    let bad = tempfile::tempdir().expect("tmp");
    let bad_file = bad.path().join("bad.toml");
    std::fs::write(&bad_file, "[certificates]\nlifetime = \"5m\"\n").expect("write");
    let refused = collector.cli(
        &collector.admin_token(),
        &["rules", "apply", bad_file.to_str().expect("utf-8")],
    );
    assert!(
        refused
            .error_line()
            .contains("certificates.lifetime must be between"),
        "{}",
        refused.error_line()
    );
    apply_lifetime(&collector, "3d");

    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let (old_cert, old_key) = agent.identity();
    assert_eq!(
        current_cert_sha256(&collector, &host),
        cert_sha256(&old_cert)
    );

    // Two and a half days on (past two thirds of 3 days): the service asks
    // for a new certificate over its session, reconnects with it, and keeps
    // reporting.
    let ahead = (5 * DAY / 2).to_string();
    let service = AgentService::start_with_env(&agent, &[], &[(OFFSET, ahead.as_str())]);
    let renewed = wait_for(Duration::from_secs(60), || {
        let (cert, key) = agent.identity();
        let next_waiting = agent.state_dir.path().join("agent-next.json").exists();
        (cert != old_cert && !next_waiting).then_some((cert, key))
    })
    .expect("the agent renews its certificate within 60 s");
    let (new_cert, new_key) = renewed;
    assert_ne!(new_key, old_key, "a renewal brings a new key");
    assert_eq!(
        current_cert_sha256(&collector, &host),
        cert_sha256(&new_cert),
        "the collector made the renewed certificate current"
    );
    let logs = collector.logs();
    assert!(logs.contains("renewed the host certificate"), "{logs}");
    let before = wait_for(Duration::from_secs(30), || {
        let line = agent.command(&["status", "--json"]).json();
        line["last_success_unix_ms"].as_i64()
    })
    .expect("reports acknowledged");
    wait_for(Duration::from_secs(30), || {
        let line = agent.command(&["status", "--json"]).json();
        (line["last_success_unix_ms"].as_i64() > Some(before)).then_some(())
    })
    .expect("reports go on being acknowledged with the renewed certificate");

    // The old certificate stopped working when the new one was presented.
    let refusal = session_refusal(&collector, (&old_cert, &old_key))
        .await
        .expect("the old certificate is refused");
    assert!(refusal.contains("superseded"), "{refusal}");
    assert_eq!(service.stop(), Some(0));

    // Four days on, with the agent offline past its new certificate's end.
    let data_dir = collector.into_data_dir();
    let past = (4 * DAY).to_string();
    let collector =
        Collector::start_with_env(data_dir, "127.0.0.1:0", &[], &[(OFFSET, past.as_str())]);
    // The collector's own check refuses it (rustls, on the wall clock,
    // would still accept it) ...
    let refusal = session_refusal(&collector, (&new_cert, &new_key))
        .await
        .expect("an expired certificate is refused");
    assert!(
        refusal.contains("expired") && refusal.contains("fresh token"),
        "{refusal}"
    );
    // ... and the agent says so in one line, whether its own clock or the
    // collector noticed, and does not keep retrying.
    let url_fix = |agent: &Agent| {
        let path = agent.state_dir.path().join("enrollment.toml");
        let text = std::fs::read_to_string(&path).expect("enrollment");
        let old_url = text
            .lines()
            .find_map(|l| l.strip_prefix("collector = "))
            .expect("collector line")
            .trim_matches('"')
            .to_owned();
        std::fs::write(&path, text.replace(&old_url, &collector.url())).expect("rewrite");
    };
    url_fix(&agent);
    for offset in [past.as_str(), "0"] {
        let once = agent
            .cmd(&["run", "--once"])
            .env(OFFSET, offset)
            .output()
            .expect("run --once");
        assert_eq!(once.status.code(), Some(1), "offset {offset}");
        let stderr = String::from_utf8_lossy(&once.stderr);
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.contains("expired") && line.contains("fresh token"),
            "offset {offset}: {stderr}"
        );
    }
    let service = AgentService::start_with_env(&agent, &[], &[(OFFSET, "0")]);
    let said = wait_for(Duration::from_secs(30), || {
        let line = agent.command(&["status", "--json"]).json();
        line["last_error"]
            .as_str()
            .filter(|e| e.contains("expired"))
            .map(str::to_owned)
    })
    .expect("status says the certificate expired");
    assert!(said.contains("enroll again with a fresh token"), "{said}");
    std::thread::sleep(Duration::from_secs(3));
    let attempts = collector
        .logs()
        .matches("refused an expired host certificate")
        .count();
    // One from the probe above, one from each `run --once` that reached
    // the collector, one from the service: no retry loop.
    assert!(
        attempts <= 3,
        "{attempts} refusals: the agent retries in a loop"
    );
    assert_eq!(service.stop(), Some(0));

    // A fresh token enrolls it again, with `--force` (back on the wall clock, whose
    // certificates rustls accepts; whether it keeps its host id depends on
    // the hardware ids this container may lack, D4).
    let collector = Collector::start_in(collector.into_data_dir(), &[]);
    agent
        .enroll_again(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
}
