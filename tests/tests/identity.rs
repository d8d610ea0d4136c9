//! Host identity end to end (issue 20): the hardware an enrolling agent
//! claims never hands it another PC's host id without an admin's say. Real
//! collector and agents on loopback; the agents read their hardware from
//! system roots holding the DMI files a PC's firmware would.

use std::path::Path;

use deskpulse_tests::{Agent, Collector, Run, run};

const SERIAL: &str = "PF3ABCDE";
const UUID: &str = "12345678-9abc-def0-0123-456789abcdef";
const DUPLICATE_RULE: &str = "duplicate-hardware-identity";

/// A system root whose firmware reports `serial` and `uuid`.
fn firmware_root(serial: &str, uuid: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp root");
    let dmi = root.path().join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).expect("dmi dir");
    std::fs::write(dmi.join("product_serial"), format!("{serial}\n")).expect("serial");
    std::fs::write(dmi.join("product_uuid"), format!("{uuid}\n")).expect("uuid");
    root
}

fn agent_in(agent: &Agent, root: &Path, args: &[&str]) -> Run {
    let mut cmd = agent.cmd(args);
    cmd.env("DESKPULSE_AGENT_SYSTEM_ROOT", root);
    run(&mut cmd)
}

fn enroll_in(agent: &Agent, collector: &Collector, token: &str, root: &Path) -> Run {
    let ca = collector.ca_file();
    let url = collector.url();
    agent_in(
        agent,
        root,
        &[
            "enroll",
            "--collector",
            &url,
            "--token",
            token,
            "--ca-file",
            ca.to_str().expect("utf-8 path"),
        ],
    )
}

/// The open duplicate-identity tickets, as the CLI lists them.
fn duplicate_tickets(collector: &Collector, token: &str) -> Vec<serde_json::Value> {
    let out = collector
        .cli(token, &["--json", "tickets", "--status", "open"])
        .expect_code(0);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .filter(|t| t["rule"] == DUPLICATE_RULE)
        .cloned()
        .collect()
}

#[test]
fn an_ordinary_token_claiming_another_pcs_hardware_gets_a_new_host_and_raises_a_ticket() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let root = firmware_root(SERIAL, UUID);
    let real = Agent::new();
    enroll_in(
        &real,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    agent_in(&real, root.path(), &["run", "--once"]).expect_code(0);

    // The attacker holds an ordinary token and claims the real PC's
    // serial (with another UUID) and then both of its identifiers.
    let attacker_root = firmware_root(SERIAL, "00000000-0000-0000-0000-00000000beef");
    let attacker = Agent::new();
    let out = enroll_in(
        &attacker,
        &collector,
        &collector.enrollment_token(1),
        attacker_root.path(),
    )
    .expect_code(0);
    assert!(!out.stdout.contains("linked"), "{}", out.stdout);
    assert_ne!(attacker.host_id(), real.host_id());
    let second = Agent::new();
    enroll_in(
        &second,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    assert_ne!(second.host_id(), real.host_id());

    // The real PC is not superseded: it still reports as itself.
    agent_in(&real, root.path(), &["run", "--once"]).expect_code(0);
    // The attacker's reports land on its own, new host.
    agent_in(&attacker, attacker_root.path(), &["run", "--once"]).expect_code(0);

    // One ticket on the real host, counting both claims, with the first
    // claim as its evidence. (The second claim matched the attacker's new
    // host too, which gets a ticket of its own.)
    let tickets = duplicate_tickets(&collector, &admin);
    let on_real: Vec<_> = tickets
        .iter()
        .filter(|t| t["host_id"] == real.host_id().as_str())
        .collect();
    assert_eq!(on_real.len(), 1, "{tickets:?}");
    let ticket = on_real[0];
    assert_eq!(ticket["occurrences"], 2, "{ticket}");
    assert_eq!(
        ticket["evidence"]["claimed_by_host"],
        attacker.host_id().as_str(),
        "{ticket}"
    );
    assert_eq!(ticket["evidence"]["hardware_serial"], SERIAL, "{ticket}");

    // The audit log names the refused re-link.
    let audit = collector
        .cli(&admin, &["--json", "audit", "--action", "host.enroll"])
        .expect_code(0);
    assert!(audit.stdout.contains("duplicate of"), "{}", audit.stdout);
}

#[test]
fn a_relink_token_made_for_a_host_relinks_it_once_and_supersedes_its_old_certificate() {
    let collector = Collector::start();
    let root = firmware_root(SERIAL, UUID);
    let real = Agent::new();
    enroll_in(
        &real,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    let host = real.host_id();

    // An unknown host, or a host and several uses, is a usage error.
    let unknown = collector
        .admin(&["enroll-token", "create", "--relink", "no-such-host"])
        .expect_code(2);
    assert!(
        unknown.error_line().contains("no host matches"),
        "{}",
        unknown.stderr
    );
    let many = collector
        .admin(&["enroll-token", "create", "--relink", &host, "--uses", "2"])
        .expect_code(2);
    assert!(many.error_line().contains("one use"), "{}", many.stderr);

    // The PC is reinstalled: the admin makes a token to re-link it.
    let relink = collector
        .admin(&["enroll-token", "create", "--relink", &host])
        .expect_code(0);
    let relink_token = relink.stdout.trim().to_owned();
    assert!(relink.stderr.contains(&host), "{}", relink.stderr);
    let reinstalled = Agent::new();
    let out = enroll_in(&reinstalled, &collector, &relink_token, root.path()).expect_code(0);
    assert!(
        out.stdout.contains("linked to its existing host"),
        "{}",
        out.stdout
    );
    assert_eq!(reinstalled.host_id(), host);
    agent_in(&reinstalled, root.path(), &["run", "--once"]).expect_code(0);
    let stale = agent_in(&real, root.path(), &["run", "--once"]).expect_code(1);
    assert!(
        stale.error_line().contains("superseded"),
        "{}",
        stale.stderr
    );
    // Spent: it re-links nothing more.
    let again = enroll_in(&Agent::new(), &collector, &relink_token, root.path()).expect_code(1);
    assert!(
        again.error_line().contains("no uses left"),
        "{}",
        again.stderr
    );
    let admin = collector.admin_token();
    assert!(duplicate_tickets(&collector, &admin).is_empty());
}
