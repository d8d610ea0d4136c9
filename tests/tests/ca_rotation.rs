//! Rotating the fleet CA end to end (issue 20, docs/ca-rotation.md), with
//! the real collector and agents on loopback: agents enrolled on the first
//! CA renew onto the new one right after `ca rotate` (no waiting for two
//! thirds of their lifetime), `ca status` counts who is where, `ca retire`
//! refuses while a host is left behind, and once forced, the straggler is
//! refused with a reason while the renewed agent keeps reporting. The
//! running collector follows every step without a restart.

use std::time::Duration;

use deskpulse_collector::pki::rotation::issued_by;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_tests::{Agent, AgentService, Collector, postgres_database, test_hello, wait_for};

fn ders(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("certificate").to_vec())
        .collect()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Opens a session with `identity` over a channel trusting the data dir's
/// `ca.pem`; the refusal's message, if refused.
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

/// `ca status` rows: (state, sha256, hosts).
fn status(collector: &Collector) -> (Vec<(String, String, u64)>, String) {
    let out = collector.admin(&["ca", "status"]).expect_code(0);
    let rows = out
        .stdout
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields.last().expect("hosts").parse().expect("a count"),
            )
        })
        .collect();
    (rows, out.stderr)
}

fn last_success(agent: &Agent) -> Option<i64> {
    agent.command(&["status", "--json"]).json()["last_success_unix_ms"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_move_to_a_rotated_ca_and_a_straggler_is_refused_after_a_forced_retire() {
    let collector = Collector::start();
    let first_ca = read(&collector.ca_file());
    let first_pin = deskpulse_collector::secrets::sha256_hex(&ders(&first_ca)[0]);
    let moving = Agent::new();
    moving
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let straggler = Agent::new();
    straggler
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let (first_cert, first_key) = moving.identity();
    let (straggler_cert, straggler_key) = straggler.identity();

    let (rows, said) = status(&collector);
    assert_eq!(rows, vec![("active".into(), first_pin.clone(), 2)]);
    assert!(said.contains("no rotation in progress"), "{said}");

    // Wrong inputs, each one line, nothing changed.
    let nothing = collector.admin(&["ca", "retire"]).expect_code(2);
    assert!(
        nothing.error_line().contains("nothing to retire"),
        "{}",
        nothing.stderr
    );
    let junk = tempfile::tempdir().expect("tmp");
    let corrupt = junk.path().join("new-ca.pem");
    std::fs::write(
        &corrupt,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let corrupt_arg = corrupt.to_str().expect("utf-8");
    let refused = collector
        .admin(&["ca", "rotate", "--cert", corrupt_arg, "--key", corrupt_arg])
        .expect_code(2);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(
        refused.error_line().contains("new-ca.pem"),
        "{}",
        refused.stderr
    );
    let again = collector
        .admin(&[
            "ca",
            "rotate",
            "--cert",
            &collector.ca_file().display().to_string(),
            "--key",
            &collector
                .data_dir
                .path()
                .join("ca.key")
                .display()
                .to_string(),
        ])
        .expect_code(2);
    assert!(
        again.error_line().contains("already the fleet's active CA"),
        "{}",
        again.stderr
    );
    assert_eq!(status(&collector).0.len(), 1);

    // The moving agent runs; the straggler stays off through the overlap.
    let service = AgentService::start(&moving, &[]);
    let before_rotation =
        wait_for(Duration::from_secs(60), || last_success(&moving)).expect("the agent reports");

    let rotated = collector.admin(&["ca", "rotate"]).expect_code(0);
    let new_pin = rotated.stdout.trim().to_owned();
    assert_eq!(new_pin.len(), 64, "{}", rotated.stdout);
    assert!(rotated.stderr.contains("2 host(s)"), "{}", rotated.stderr);
    let twice = collector.admin(&["ca", "rotate"]).expect_code(2);
    assert!(
        twice.error_line().contains("already in progress"),
        "{}",
        twice.stderr
    );
    // The server still presents the first CA's chain, so ca.pem and the pin
    // stay the first CA's during the overlap; the new CA waits beside it.
    assert_eq!(read(&collector.ca_file()), first_ca);
    let export = collector.admin(&["ca", "export"]).expect_code(0);
    assert!(
        export.stderr.contains(&first_pin) && export.stderr.contains(&new_pin),
        "{}",
        export.stderr
    );
    let new_ca = read(&collector.data_dir.path().join("ca-next.pem"));
    let new_der = ders(&new_ca).remove(0);
    assert_eq!(deskpulse_collector::secrets::sha256_hex(&new_der), new_pin);

    // The running agent renews onto the new CA at once, and trusts both.
    wait_for(Duration::from_secs(60), || {
        let (cert, _) = moving.identity();
        let next_waiting = moving.state_dir.path().join("agent-next.json").exists();
        (issued_by(&ders(&cert)[0], &new_der) && !next_waiting).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent renews onto the new CA; collector logs:\n{}",
            collector.logs()
        )
    });
    let trusted = ders(&read(&moving.state_dir.path().join("ca.pem")));
    assert!(trusted.contains(&new_der) && trusted.contains(&ders(&first_ca)[0]));
    let logs = collector.logs();
    assert!(logs.contains("renewed the host certificate"), "{logs}");
    wait_for(Duration::from_secs(60), || {
        (last_success(&moving) > Some(before_rotation)).then_some(())
    })
    .expect("reports go on with the new certificate");

    let (rows, said) = status(&collector);
    assert_eq!(
        rows,
        vec![
            ("old".into(), first_pin.clone(), 1),
            ("active".into(), new_pin.clone(), 1)
        ]
    );
    assert!(said.contains("1 host(s) still hold"), "{said}");
    let held = collector.admin(&["ca", "retire"]).expect_code(2);
    assert!(
        held.error_line()
            .contains("1 host(s) still hold certificates from the old CA"),
        "{}",
        held.stderr
    );
    assert_eq!(held.stderr.trim().lines().count(), 1, "{}", held.stderr);

    // Forced: the straggler is cut off, the moving agent is not.
    let retired = collector.admin(&["ca", "retire", "--force"]).expect_code(0);
    assert!(
        retired.stderr.contains("1 host(s) still on it"),
        "{}",
        retired.stderr
    );
    assert_eq!(read(&collector.ca_file()), new_ca, "the new CA serves now");
    assert!(!collector.data_dir.path().join("ca-next.key").exists());
    let (rows, _) = status(&collector);
    assert_eq!(
        rows,
        vec![
            ("retired".into(), first_pin.clone(), 1),
            ("active".into(), new_pin.clone(), 1)
        ]
    );
    // The agent drops the retired CA from its trust, and keeps reporting
    // through a server certificate from the new CA.
    wait_for(Duration::from_secs(60), || {
        (ders(&read(&moving.state_dir.path().join("ca.pem"))) == vec![new_der.clone()])
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent drops the retired CA; collector logs:\n{}",
            collector.logs()
        )
    });
    let after_retire = last_success(&moving);
    wait_for(Duration::from_secs(60), || {
        (last_success(&moving) > after_retire).then_some(())
    })
    .expect("the renewed agent keeps reporting after the retirement");

    // A certificate from the retired CA is refused in words ...
    let refusal = session_refusal(&collector, (&straggler_cert, &straggler_key))
        .await
        .expect("the straggler's certificate is refused");
    assert!(
        refusal.contains("retired") && refusal.contains("fresh token"),
        "{refusal}"
    );
    let refusal = session_refusal(&collector, (&first_cert, &first_key))
        .await
        .expect("the moving agent's old certificate is refused");
    assert!(refusal.contains("retired"), "{refusal}");
    // ... and the straggler, which trusts only the retired CA, says why it
    // cannot connect.
    let once = straggler.command(&["run", "--once"]);
    assert_ne!(once.code, 0);
    let line = once.error_line();
    assert!(
        line.contains("not from a CA this agent trusts") && line.contains("fresh token"),
        "{}",
        once.stderr
    );

    // Both steps are in the audit log.
    let admin = collector.admin_token();
    let audit = collector
        .cli(&admin, &["audit", "--action", "ca."])
        .expect_code(0);
    assert!(
        audit.stdout.contains("ca.rotate") && audit.stdout.contains("ca.retire"),
        "{}",
        audit.stdout
    );
    let nothing = collector.admin(&["ca", "retire", "--force"]).expect_code(2);
    assert!(
        nothing.error_line().contains("nothing to retire"),
        "{}",
        nothing.stderr
    );
    assert_eq!(service.stop(), Some(0));
}

fn sha256_of_first(pem: &str) -> String {
    deskpulse_collector::secrets::sha256_hex(&ders(pem)[0])
}

/// Two replicas sharing PostgreSQL, each with its own data dir: the
/// rotation run on one reaches the other through the store (its sealed
/// key), and the agent streaming to the other moves onto the new CA.
#[test]
fn a_rotation_run_on_one_replica_reaches_the_other_and_its_agents() {
    let Some(database) = postgres_database("ca_rotation") else {
        return;
    };
    let a = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--database", &database.url],
    );
    let b_dir = tempfile::tempdir().expect("data dir");
    deskpulse_tests::run(
        std::process::Command::new(deskpulse_tests::bin("deskpulse-collector"))
            .args(["ca", "import", "--database", &database.url, "--data-dir"])
            .arg(b_dir.path())
            .arg("--cert")
            .arg(a.data_dir.path().join("ca.pem"))
            .arg("--key")
            .arg(a.data_dir.path().join("ca.key")),
    )
    .expect_code(0);
    let b = Collector::start_in(b_dir, &["--database", &database.url]);
    let agent = Agent::new();
    agent.enroll(&b, &b.enrollment_token(1)).expect_code(0);
    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(60), || last_success(&agent)).expect("the agent reports to B");

    let new_pin = a
        .admin(&["ca", "rotate"])
        .expect_code(0)
        .stdout
        .trim()
        .to_owned();
    let b_next = b.data_dir.path().join("ca-next.pem");
    let new_ca = wait_for(Duration::from_secs(30), || {
        let pem = std::fs::read_to_string(&b_next).ok()?;
        (sha256_of_first(&pem) == new_pin).then_some(pem)
    })
    .unwrap_or_else(|| panic!("B takes the new CA from the store; B's logs:\n{}", b.logs()));
    let new_der = ders(&new_ca).remove(0);
    wait_for(Duration::from_secs(60), || {
        let (cert, _) = agent.identity();
        let next_waiting = agent.state_dir.path().join("agent-next.json").exists();
        (issued_by(&ders(&cert)[0], &new_der) && !next_waiting).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent on B renews onto the new CA; B's logs:\n{}",
            b.logs()
        )
    });
    let (rows, _) = status(&b);
    assert_eq!(rows[0].2, 0, "{rows:?}");
    assert_eq!(rows[1], ("active".into(), new_pin.clone(), 1));

    a.admin(&["ca", "retire"]).expect_code(0);
    wait_for(Duration::from_secs(30), || {
        let serving = std::fs::read_to_string(b.ca_file()).ok()?;
        (sha256_of_first(&serving) == new_pin && !b_next.exists()).then_some(())
    })
    .unwrap_or_else(|| panic!("B serves from the new CA alone; B's logs:\n{}", b.logs()));
    wait_for(Duration::from_secs(60), || {
        (ders(&read(&agent.state_dir.path().join("ca.pem"))) == vec![new_der.clone()]).then_some(())
    })
    .expect("the agent drops the retired CA");
    let after = last_success(&agent);
    wait_for(Duration::from_secs(60), || {
        (last_success(&agent) > after).then_some(())
    })
    .expect("the agent keeps reporting to B");
    assert_eq!(service.stop(), Some(0));
}
