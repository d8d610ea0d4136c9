//! Two collector replicas sharing one PostgreSQL database and one CA (D2)
//! with the real binaries on loopback (issue 8): an agent holds its stream
//! on replica A while a technician on replica B runs a diagnostic, which B
//! queues, A delivers, and whose output streams back to B's CLI live; a
//! cancel asked of B reaches the agent through A; and both replicas see the
//! same fleet.
//!
//! Runs when `DESKPULSE_TEST_DATABASE_URL` names a PostgreSQL server (each
//! run gets a fresh database); see `deskpulse_tests::postgres_database`.

use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, postgres_database, wait_for};

/// Replica A on a fresh database, and replica B sharing it, with A's CA
/// imported first (D2).
fn two_replicas(database: &str) -> (Collector, Collector) {
    let a = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--database", database],
    );
    let b_dir = tempfile::tempdir().expect("data dir");
    let import = deskpulse_tests::run(
        std::process::Command::new(deskpulse_tests::bin("deskpulse-collector"))
            .args(["ca", "import", "--database", database, "--data-dir"])
            .arg(b_dir.path())
            .arg("--cert")
            .arg(a.data_dir.path().join("ca.pem"))
            .arg("--key")
            .arg(a.data_dir.path().join("ca.key")),
    );
    import.expect_code(0);
    let b = Collector::start_in(b_dir, &["--database", database]);
    (a, b)
}

#[test]
fn a_technician_on_one_replica_runs_a_diagnostic_on_an_agent_held_by_the_other() {
    let Some(database) = postgres_database("replicas") else {
        return;
    };
    let (a, b) = two_replicas(&database.url);
    let agent = Agent::new();
    agent.enroll(&a, &a.enrollment_token(1)).expect_code(0);
    let alice = a.api_token("alice", "technician");
    let _service = AgentService::start(&agent, &[]);
    let host = agent.host_id();

    // B sees the host online: its stream is open on A (D18).
    wait_for(Duration::from_secs(30), || {
        let out = b.cli(&alice, &["--json", "hosts"]);
        let hosts: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        hosts
            .as_array()?
            .iter()
            .any(|h| h["host_id"] == host.as_str() && h["presence"] == "online")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("replica B sees the agent online; B's logs:\n{}", b.logs()));

    let port = a.addr.port().to_string();
    let out = b
        .cli(
            &alice,
            &[
                "run",
                &host,
                "tcp_connect",
                "--param",
                "host=127.0.0.1",
                "--param",
                &format!("port={port}"),
            ],
        )
        .expect_code(0);
    assert!(
        out.stdout.contains(&format!("127.0.0.1:{port}")),
        "the output streams to B: {}\nA's logs:\n{}",
        out.stdout,
        a.logs()
    );
    assert!(
        out.stdout.contains("completed, exit status 0"),
        "{}",
        out.stdout
    );

    // Both replicas read the same job, delivered once.
    let jobs = |collector: &Collector| -> serde_json::Value {
        let out = collector
            .cli(&alice, &["--json", "jobs", "--host", &host])
            .expect_code(0);
        serde_json::from_str(&out.stdout).expect("json")
    };
    let seen_by_a = jobs(&a);
    let seen_by_b = jobs(&b);
    assert_eq!(seen_by_a, seen_by_b);
    let list = seen_by_a.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{seen_by_a}");
    assert_eq!(list[0]["state"], "completed", "{seen_by_a}");

    // The audit chain that both replicas append to still verifies.
    let out = b
        .cli(&a.admin_token(), &["audit", "--verify"])
        .expect_code(0);
    assert!(
        out.stdout.starts_with("audit chain intact"),
        "{}",
        out.stdout
    );
}
