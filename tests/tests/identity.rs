//! Host identity end to end (issue 20): the hardware an enrolling agent
//! claims never hands it another PC's host id without an admin's say: a
//! re-link token, or an approved re-link request (`deskpulse enrollments`).
//! Real collector and agents on loopback; the agents read their hardware
//! from system roots holding the DMI files a PC's firmware would.

use std::path::Path;
use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, Run, run, wait_for};

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

const OFFSET: &str = "DESKPULSE_TEST_CLOCK_OFFSET_SECS";

/// The pending re-link requests, as `--json enrollments pending` lists them.
fn pending(collector: &Collector, token: &str) -> Vec<serde_json::Value> {
    let out = collector
        .cli(token, &["--json", "enrollments", "pending"])
        .expect_code(0);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    list.as_array().expect("a list").clone()
}

fn last_success(agent: &Agent) -> Option<i64> {
    agent.command(&["status", "--json"]).json()["last_success_unix_ms"].as_i64()
}

#[test]
fn an_enrollment_claiming_a_known_pc_waits_for_an_admin_and_approval_hands_it_that_host() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let technician = collector.api_token("tess", "technician");
    let viewer = collector.api_token("vic", "viewer");
    let root = firmware_root(SERIAL, UUID);
    let old = Agent::new();
    enroll_in(
        &old,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    agent_in(&old, root.path(), &["run", "--once"]).expect_code(0);
    let host = old.host_id();
    assert!(pending(&collector, &admin).is_empty());

    // The PC is reinstalled and enrolled with an ordinary token: a new
    // host for now, and a request for an admin.
    let new = Agent::new();
    let out = enroll_in(
        &new,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    assert!(
        out.stdout.contains("an admin may approve"),
        "{}",
        out.stdout
    );
    let interim = new.host_id();
    assert_ne!(interim, host);
    let root_env = root.path().to_str().expect("utf-8").to_owned();
    let service = AgentService::start_with_env(
        &new,
        &[],
        &[("DESKPULSE_AGENT_SYSTEM_ROOT", root_env.as_str())],
    );
    wait_for(Duration::from_secs(60), || last_success(&new))
        .expect("the new enrollment reports as its interim host");

    let listed = collector
        .cli(&technician, &["enrollments", "pending"])
        .expect_code(0);
    for shown in [host.as_str(), interim.as_str(), SERIAL, "127.0.0.1"] {
        assert!(listed.stdout.contains(shown), "{shown}: {}", listed.stdout);
    }
    let requests = pending(&collector, &admin);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request["claimed_host_id"], host.as_str());
    assert_eq!(request["new_host_id"], interim.as_str());
    assert_eq!(request["hardware_uuid"], UUID);
    assert_eq!(request["status"], "pending");
    let id = request["id"].as_i64().expect("id").to_string();

    // Roles, and ids that name nothing: one line each, nothing changes.
    let refused = collector
        .cli(&viewer, &["enrollments", "pending"])
        .expect_code(1);
    assert!(
        refused.error_line().contains("technician role"),
        "{}",
        refused.stderr
    );
    let refused = collector
        .cli(&technician, &["enrollments", "approve", &id])
        .expect_code(1);
    assert!(
        refused.error_line().contains("admin role"),
        "{}",
        refused.stderr
    );
    let unknown = collector
        .cli(&admin, &["enrollments", "approve", "9999"])
        .expect_code(1);
    assert!(
        unknown
            .error_line()
            .contains("no re-link request has id 9999"),
        "{}",
        unknown.stderr
    );
    assert_eq!(pending(&collector, &admin).len(), 1);

    // Approved while the new agent's service is connected: it is handed
    // the certificate of the host it takes over, reconnects as that host
    // and keeps reporting.
    let approved = collector
        .cli(&admin, &["enrollments", "approve", &id])
        .expect_code(0);
    assert!(
        approved
            .stdout
            .contains(&format!("approved re-link request {id}")),
        "{}",
        approved.stdout
    );
    wait_for(Duration::from_secs(60), || {
        (new.host_id() == host).then_some(())
    })
    .expect("the agent takes over the host id");
    let since = last_success(&new).unwrap_or_default();
    wait_for(Duration::from_secs(60), || {
        (last_success(&new) > Some(since)).then_some(())
    })
    .expect("reports go on being acknowledged as the host it took over");
    assert_eq!(service.stop(), Some(0));
    // And once more from a fresh process, with the promoted pair.
    agent_in(&new, root.path(), &["run", "--once"]).expect_code(0);

    // The old installation's certificate no longer works; the interim
    // host is gone; the duplicate ticket is resolved; all of it audited.
    let stale = agent_in(&old, root.path(), &["run", "--once"]).expect_code(1);
    assert!(
        stale.error_line().contains("superseded"),
        "{}",
        stale.stderr
    );
    let gone = collector
        .cli(&admin, &["host", "show", &interim])
        .expect_code(1);
    assert!(gone.error_line().contains("no host"), "{}", gone.stderr);
    let shown = collector
        .cli(&admin, &["--json", "host", "show", &host])
        .expect_code(0);
    assert!(shown.stdout.contains(SERIAL), "{}", shown.stdout);
    assert!(duplicate_tickets(&collector, &admin).is_empty());
    let audit = collector
        .cli(
            &admin,
            &["--json", "audit", "--action", "enrollment.approve"],
        )
        .expect_code(0);
    assert!(audit.stdout.contains(&interim), "{}", audit.stdout);

    // Decided once: approving or denying again says so.
    for verb in ["approve", "deny"] {
        let again = collector
            .cli(&admin, &["enrollments", verb, &id])
            .expect_code(1);
        assert!(
            again.error_line().contains("already approved"),
            "{verb}: {}",
            again.stderr
        );
    }

    // Another claim, denied: it stays a host of its own and keeps working,
    // and the duplicate ticket stays open for a technician.
    let third = Agent::new();
    enroll_in(
        &third,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    let third_host = third.host_id();
    let requests = pending(&collector, &admin);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let id = requests[0]["id"].as_i64().expect("id").to_string();
    let denied = collector
        .cli(&admin, &["enrollments", "deny", &id])
        .expect_code(0);
    assert!(
        denied.stdout.contains("stays separate"),
        "{}",
        denied.stdout
    );
    agent_in(&third, root.path(), &["run", "--once"]).expect_code(0);
    assert_eq!(third.host_id(), third_host);
    agent_in(&new, root.path(), &["run", "--once"]).expect_code(0);
    assert_eq!(duplicate_tickets(&collector, &admin).len(), 1);
    let all = collector
        .cli(&admin, &["enrollments", "pending", "--all"])
        .expect_code(0);
    assert!(
        all.stdout.contains("approved") && all.stdout.contains("denied"),
        "{}",
        all.stdout
    );
}

/// Points the agent's enrollment at `collector` (a restarted collector
/// listens on a new port).
fn follow(agent: &Agent, collector: &Collector) {
    let path = agent.state_dir.path().join("enrollment.toml");
    let text = std::fs::read_to_string(&path).expect("enrollment");
    let old_url = text
        .lines()
        .find_map(|l| l.strip_prefix("collector = "))
        .expect("collector line")
        .trim_matches('"')
        .to_owned();
    std::fs::write(&path, text.replace(&old_url, &collector.url())).expect("rewrite");
}

#[test]
fn an_agent_offline_past_its_certificate_is_refused_and_comes_back_only_with_an_admins_say() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let policy = tempfile::tempdir().expect("tmp");
    let file = policy.path().join("policy.toml");
    std::fs::write(&file, "[certificates]\nlifetime = \"3d\"\n").expect("write");
    collector
        .cli(&admin, &["rules", "apply", file.to_str().expect("utf-8")])
        .expect_code(0);
    let root = firmware_root(SERIAL, UUID);
    let agent = Agent::new();
    enroll_in(
        &agent,
        &collector,
        &collector.enrollment_token(1),
        root.path(),
    )
    .expect_code(0);
    agent_in(&agent, root.path(), &["run", "--once"]).expect_code(0);
    let host = agent.host_id();

    // Four days on, the agent was offline past its certificate's end: the
    // collector refuses it in one line that says what to do, and nothing
    // enrolls it again by itself.
    let past = (4 * 86_400).to_string();
    let collector = Collector::start_with_env(
        collector.into_data_dir(),
        "127.0.0.1:0",
        &[],
        &[(OFFSET, past.as_str())],
    );
    follow(&agent, &collector);
    let refused = agent_in(&agent, root.path(), &["run", "--once"]).expect_code(1);
    let line = refused.error_line();
    assert!(line.contains("expired"), "{}", refused.stderr);
    assert!(line.contains(&format!("--relink {host}")), "{line}");
    assert!(line.contains("deskpulse enrollments approve"), "{line}");
    assert_eq!(agent.host_id(), host);

    // An ordinary token (back on the wall clock, whose certificates rustls
    // accepts) makes a new host until an admin approves it.
    let collector = Collector::start_in(collector.into_data_dir(), &[]);
    let admin = collector.admin_token();
    let ca = collector.ca_file();
    let out = agent_in(
        &agent,
        root.path(),
        &[
            "enroll",
            "--force",
            "--collector",
            &collector.url(),
            "--token",
            &collector.enrollment_token(1),
            "--ca-file",
            ca.to_str().expect("utf-8 path"),
        ],
    )
    .expect_code(0);
    assert!(
        out.stdout.contains("an admin may approve"),
        "{}",
        out.stdout
    );
    assert_ne!(agent.host_id(), host);
    let requests = pending(&collector, &admin);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["claimed_host_id"], host.as_str());
    let id = requests[0]["id"].as_i64().expect("id").to_string();
    collector
        .cli(&admin, &["enrollments", "approve", &id])
        .expect_code(0);
    // Not connected when approved: the next connection is handed the
    // host's certificate, and `run --once` sends everything as that host.
    agent_in(&agent, root.path(), &["run", "--once"]).expect_code(0);
    assert_eq!(agent.host_id(), host);
    agent_in(&agent, root.path(), &["run", "--once"]).expect_code(0);
}

/// Sends one full inventory naming the host `hostname` on `agent`'s own
/// session; the collector's answer.
async fn send_hostname(
    collector: &Collector,
    agent: &Agent,
    seq: u64,
    hostname: &str,
) -> deskpulse_proto::v1::collector_message::Kind {
    use deskpulse_proto::v1::agent_message::Kind;
    use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
    use deskpulse_proto::v1::report::Payload;
    use deskpulse_proto::v1::{AgentMessage, Inventory, OsInfo, Report};
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let inventory = Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        os: Some(OsInfo {
            hostname: hostname.to_owned(),
            name: "Debian".into(),
            ..OsInfo::default()
        }),
        ..Inventory::default()
    };
    let report = AgentMessage {
        kind: Some(Kind::Report(Report {
            spool_id: "hostile-name".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: 1_764_000_000_000 + i64::try_from(seq).expect("small"),
            payload: Some(Payload::Inventory(inventory)),
            sent_at_unix_ms: 0,
        })),
    };
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(vec![
            deskpulse_tests::test_hello(),
            report,
        ]))
        .await
        .expect("session")
        .into_inner();
    replies
        .message()
        .await
        .expect("reply")
        .and_then(|m| m.kind)
        .expect("an answer")
}

/// Issue 20, item 10: an enrolled agent that names itself after another
/// host's id is refused at ingest (and at enrollment), and the id keeps
/// naming that host for `host show` and `run`, even against a name copied
/// into the store before the check existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_copying_another_hosts_id_is_refused_and_the_id_still_names_that_host() {
    use deskpulse_proto::v1::collector_message::Kind as Reply;
    let collector = Collector::start();
    let admin = collector.admin_token();
    let victim = Agent::new();
    victim
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    victim.command(&["run", "--once"]).expect_code(0);
    let victim_id = victim.host_id();
    let hostile = Agent::new();
    hostile
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let hostile_id = hostile.host_id();

    for (seq, name) in [
        victim_id.clone(),
        victim_id.to_uppercase(),
        format!(" {victim_id} "),
    ]
    .iter()
    .enumerate()
    {
        let seq = u64::try_from(seq).expect("small") + 1;
        match send_hostname(&collector, &hostile, seq, name).await {
            Reply::Rejected(rejected) => assert!(
                rejected.reason.contains("looks like a host id"),
                "{rejected:?}"
            ),
            other => panic!("{name:?} was not refused: {other:?}"),
        }
    }
    // Enrolling under such a name is refused before the token is spent.
    let token = collector.enrollment_token(1);
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    let refused = deskpulse_proto::v1::enrollment_client::EnrollmentClient::new(
        collector.channel(None).await,
    )
    .enroll(deskpulse_proto::v1::EnrollRequest {
        token: token.clone(),
        csr_der: csr.der().to_vec(),
        hostname: victim_id.clone(),
        ..Default::default()
    })
    .await
    .expect_err("refused");
    assert!(
        refused.message().contains("looks like a host id"),
        "{refused:?}"
    );
    Agent::new().enroll(&collector, &token).expect_code(0);

    let names: Vec<String> = {
        let db = deskpulse_tests::open_database(collector.data_dir.path());
        let mut statement = db.prepare("SELECT hostname FROM hosts").expect("query");
        statement
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("names")
    };
    assert!(
        !names
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(&victim_id)),
        "{names:?}"
    );

    // A name copied before the check existed: the exact id still wins.
    deskpulse_tests::open_database(collector.data_dir.path())
        .execute(
            "UPDATE hosts SET hostname = ?1 WHERE id = ?2",
            [&victim_id, &hostile_id],
        )
        .expect("copy the name");
    let shown = collector
        .cli(&admin, &["--json", "host", "show", &victim_id])
        .expect_code(0)
        .json();
    assert!(shown.to_string().contains(&victim_id), "{shown}");
    assert!(!shown.to_string().contains(&hostile_id), "{shown}");
    let human = collector
        .cli(&admin, &["host", "show", &victim_id])
        .expect_code(0);
    assert!(!human.stdout.contains(&hostile_id), "{}", human.stdout);
    let job = collector
        .cli(
            &admin,
            &[
                "--json",
                "run",
                &victim_id,
                "ping",
                "--param",
                "host=127.0.0.1",
                "--no-wait",
            ],
        )
        .expect_code(0)
        .json();
    assert_eq!(job["host_id"], victim_id.as_str(), "{job}");
}
