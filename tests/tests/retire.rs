//! A PC enrolled again and the host it leaves behind (issue 21), with the
//! real binaries on loopback: `deskpulse-agent enroll` refuses an enrolled
//! state dir without `--force` and says so in one line; with `--force` it
//! enrolls as a new host and names the one left behind; `deskpulse host
//! retire` takes that host out of the fleet lists, closes its open tickets
//! with the reason, revokes its certificate and keeps its history.

use deskpulse_tests::{Agent, Collector, Run};

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).expect("json on stdout")
}

/// `deskpulse-agent enroll` on `agent` with `token`, plus `extra` flags.
fn enroll(agent: &Agent, collector: &Collector, token: &str, extra: &[&str]) -> Run {
    let ca = collector.ca_file();
    let url = collector.url();
    let mut args = vec![
        "enroll",
        "--collector",
        &url,
        "--token",
        token,
        "--ca-file",
        ca.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    agent.command(&args)
}

/// The host ids `hosts` lists with `flags`.
fn listed(collector: &Collector, token: &str, flags: &[&str]) -> Vec<String> {
    let out = collector
        .cli(token, &[&["--json", "hosts"], flags].concat())
        .expect_code(0);
    let mut ids: Vec<String> = json(&out)
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| h["host_id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn an_enrolled_state_dir_enrolls_again_only_with_force_and_the_old_host_can_be_retired() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::new();
    enroll(&agent, &collector, &collector.enrollment_token(1), &[]).expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
    let old = agent.host_id();
    let old_identity = agent.identity();

    // Enrolling again is refused in one line that names the host and says
    // what --force does; the token is not used up and nothing changes.
    let token = collector.enrollment_token(1);
    let refused = enroll(&agent, &collector, &token, &[]).expect_code(1);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    let line = refused.error_line();
    for needle in [
        "enrolled already",
        old.as_str(),
        "--force",
        "deskpulse host retire",
    ] {
        assert!(line.contains(needle), "{needle} in {line}");
    }
    assert_eq!(agent.host_id(), old);

    // With --force: a new host, and the old one named as left behind.
    let forced = enroll(&agent, &collector, &token, &["--force"]).expect_code(0);
    let new = agent.host_id();
    assert_ne!(new, old);
    assert!(
        forced
            .stdout
            .contains(&format!("deskpulse host retire {old}")),
        "{}",
        forced.stdout
    );
    agent.command(&["run", "--once"]).expect_code(0);
    let mut both = vec![old.clone(), new.clone()];
    both.sort();
    assert_eq!(
        listed(&collector, &admin, &[]),
        both,
        "a ghost until retired"
    );

    // The ghost has an open ticket; a technician may not retire it.
    let alice = collector.api_token("alice", "technician");
    let ticket = json(
        &collector
            .cli(
                &alice,
                &["--json", "ticket", "new", &old, "--title", "check the dock"],
            )
            .expect_code(0),
    )["ticket"]["id"]
        .as_i64()
        .expect("ticket id");
    let denied = collector
        .cli(&alice, &["host", "retire", &old])
        .expect_code(1);
    assert!(
        denied.error_line().contains("needs the admin role"),
        "{}",
        denied.stderr
    );

    let retired = collector
        .cli(&admin, &["host", "retire", &old, "--reason", "reinstalled"])
        .expect_code(0);
    assert!(
        retired.stdout.contains(&format!(
            "retired {}",
            agent_hostname(&collector, &admin, &new)
        )),
        "{}",
        retired.stdout
    );
    assert!(
        retired.stdout.contains(&format!("closed ticket {ticket}")),
        "{}",
        retired.stdout
    );

    // Out of the fleet list; listed on request; its history kept.
    assert_eq!(listed(&collector, &admin, &[]), std::slice::from_ref(&new));
    assert_eq!(
        listed(&collector, &admin, &["--retired"]),
        std::slice::from_ref(&old)
    );
    assert_eq!(listed(&collector, &admin, &["--all"]), both);
    let shown = collector
        .cli(&admin, &["host", "show", &old])
        .expect_code(0);
    assert!(shown.stdout.contains("RETIRED"), "{}", shown.stdout);
    assert!(shown.stdout.contains("reinstalled"), "{}", shown.stdout);
    let ticket_json = json(
        &collector
            .cli(&admin, &["--json", "ticket", "show", &ticket.to_string()])
            .expect_code(0),
    );
    assert_eq!(ticket_json["ticket"]["status"], "closed", "{ticket_json}");
    // The shared host name means the host in the fleet.
    let by_name = json(
        &collector
            .cli(
                &admin,
                &[
                    "--json",
                    "host",
                    "show",
                    &agent_hostname(&collector, &admin, &new),
                ],
            )
            .expect_code(0),
    );
    assert_eq!(by_name["host_id"], new.as_str());

    // Once only; audited with the host named.
    let again = collector
        .cli(&admin, &["host", "retire", &old])
        .expect_code(1);
    assert!(
        again.error_line().contains("already retired"),
        "{}",
        again.stderr
    );
    let audit = json(
        &collector
            .cli(&admin, &["--json", "audit", "--action", "host.retire"])
            .expect_code(0),
    );
    assert_eq!(audit["entries"][0]["subject"], old.as_str());
    assert_eq!(audit["entries"][0]["technician"], "admin");

    // The old certificate, were the PC to come back with it, is refused.
    let ghost = Agent::new();
    for name in ["enrollment.toml", "ca.pem"] {
        std::fs::copy(
            agent.state_dir.path().join(name),
            ghost.state_dir.path().join(name),
        )
        .expect("copy state");
    }
    std::fs::write(ghost.state_dir.path().join("agent.pem"), &old_identity.0).expect("cert");
    std::fs::write(ghost.state_dir.path().join("agent.key"), &old_identity.1).expect("key");
    let enrollment = std::fs::read_to_string(ghost.state_dir.path().join("enrollment.toml"))
        .expect("enrollment");
    std::fs::write(
        ghost.state_dir.path().join("enrollment.toml"),
        enrollment.replace(&new, &old),
    )
    .expect("enrollment");
    let back = ghost.command(&["run", "--once"]).expect_code(1);
    assert!(back.error_line().contains("retired"), "{}", back.stderr);
}

/// The host name `collector` shows for `host`.
fn agent_hostname(collector: &Collector, token: &str, host: &str) -> String {
    let out = collector
        .cli(token, &["--json", "host", "show", host])
        .expect_code(0);
    json(&out)["hostname"]
        .as_str()
        .expect("hostname")
        .to_owned()
}
