//! Bounded memory per agent (issue 20): the fleet policy's inventory limits
//! reach every agent when its session opens; an honest agent over them
//! sends its inventory cut to them and the host shows it truncated; a
//! hostile agent's inventory over them is refused, by its key, before it is
//! decoded, and its session goes on; one huge message is refused by the
//! transport unread. Policy values are checked with one-line errors.

use std::time::Duration;

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, CollectorMessage, HealthSample, Inventory, Package, Report, SoftwareInfo,
};
use deskpulse_tests::{Agent, Collector, test_hello};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Packages in the hostile inventory: the 180,000.
const HOSTILE_PACKAGES: usize = 180_000;

fn apply_policy(collector: &Collector, text: &str) -> deskpulse_tests::Run {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, text).expect("write");
    collector.cli(
        &collector.admin_token(),
        &["rules", "apply", file.to_str().expect("utf-8")],
    )
}

fn inventory_report(seq: u64, packages: usize) -> Report {
    Report {
        spool_id: "hostile".into(),
        seq,
        held_from_seq: 0,
        collected_at_unix_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap_or(0),
        sent_at_unix_ms: 0,
        payload: Some(Payload::Inventory(Inventory {
            schema_version: 1,
            software: Some(SoftwareInfo {
                packages: (0..packages)
                    .map(|i| Package {
                        ecosystem: "dpkg".into(),
                        name: format!("p{i:06}"),
                        version: "1".into(),
                        ..Package::default()
                    })
                    .collect(),
                ..SoftwareInfo::default()
            }),
            ..Inventory::default()
        })),
    }
}

fn health(seq: u64) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            spool_id: "hostile".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap_or(0),
            sent_at_unix_ms: 0,
            payload: Some(Payload::Health(HealthSample::default())),
        })),
    }
}

/// Opens a session as the enrolled `agent`, sends `messages`, and returns
/// the limits header and the stream of replies (the send side stays open).
async fn session(
    collector: &Collector,
    agent: &Agent,
    messages: Vec<AgentMessage>,
) -> (
    Option<String>,
    tonic::Streaming<CollectorMessage>,
    mpsc::Sender<AgentMessage>,
) {
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let (tx, rx) = mpsc::channel(64);
    tx.send(test_hello()).await.expect("hello");
    let feeder = tx.clone();
    tokio::spawn(async move {
        for message in messages {
            if feeder.send(message).await.is_err() {
                return;
            }
        }
    });
    let response = AgentServiceClient::new(channel)
        .session(ReceiverStream::new(rx))
        .await
        .expect("session");
    let limits = response
        .metadata()
        .get(deskpulse_proto::limits::HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (limits, response.into_inner(), tx)
}

/// The next Ack or Rejected, within a minute.
async fn next_answer(replies: &mut tonic::Streaming<CollectorMessage>) -> Reply {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match replies.message().await {
                Ok(Some(CollectorMessage {
                    kind: Some(kind @ (Reply::Ack(_) | Reply::Rejected(_))),
                })) => return kind,
                Ok(Some(_)) => {}
                other => panic!("the session ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer within a minute")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_inventory_over_the_limits_is_refused_unread_and_the_session_goes_on() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);

    // 180,000 packages in 3.5 MB: under the default 4 MiB, over the
    // default 20,000 packages. Refused by its key after the last part,
    // counted on the wire; the health report behind it is stored.
    let hostile = inventory_report(1, HOSTILE_PACKAGES);
    let messages: Vec<AgentMessage> = deskpulse_proto::parts::report_messages(hostile)
        .into_iter()
        .chain([health(2)])
        .collect();
    println!("hostile inventory: {} parts", messages.len() - 1);
    let (limits, mut replies, _tx) = session(&collector, &agent, messages).await;
    assert_eq!(
        limits.as_deref(),
        Some("packages=20000,services=5000,users=5000,bytes=4194304")
    );
    match next_answer(&mut replies).await {
        Reply::Rejected(rejected) => {
            assert_eq!((rejected.spool_id.as_str(), rejected.seq), ("hostile", 1));
            assert_eq!(
                rejected.reason,
                "the inventory lists 180,000 packages, over the collector's limit of 20,000 (policy inventory.max_packages); the agent must send at most that many"
            );
        }
        other => panic!("expected the inventory rejected, got {other:?}"),
    }
    match next_answer(&mut replies).await {
        Reply::Ack(ack) => assert_eq!(ack.seq, 2),
        other => panic!("expected the health report stored, got {other:?}"),
    }
    let shown = collector
        .cli(
            &collector.admin_token(),
            &["host", "show", &agent.host_id()],
        )
        .expect_code(0);
    assert!(
        shown.stdout.contains("inventory      none received yet"),
        "{}",
        shown.stdout
    );

    // Past a smaller byte limit: refused as soon as the parts pass it, the
    // rest of its parts skipped, the session going on.
    apply_policy(&collector, "[inventory]\nmax_bytes = \"64KiB\"\n").expect_code(0);
    let messages: Vec<AgentMessage> =
        deskpulse_proto::parts::report_messages(inventory_report(3, 10_000))
            .into_iter()
            .chain([health(4)])
            .collect();
    let (limits, mut replies, _tx) = session(&collector, &agent, messages).await;
    assert_eq!(
        limits.as_deref(),
        Some("packages=20000,services=5000,users=5000,bytes=65536")
    );
    match next_answer(&mut replies).await {
        Reply::Rejected(rejected) => {
            assert_eq!(rejected.seq, 3);
            assert_eq!(
                rejected.reason,
                "the report is larger than the collector's limit of 64 KiB (policy inventory.max_bytes); the agent must send a smaller inventory"
            );
        }
        other => panic!("expected the inventory rejected, got {other:?}"),
    }
    match next_answer(&mut replies).await {
        Reply::Ack(ack) => assert_eq!(ack.seq, 4),
        other => panic!("expected the health report stored, got {other:?}"),
    }

    // The same inventory in one message, not in parts: the transport
    // refuses it before decoding, and the stream ends with the reason.
    let whole = AgentMessage {
        kind: Some(Kind::Report(inventory_report(5, HOSTILE_PACKAGES))),
    };
    let (_, mut replies, _tx) = session(&collector, &agent, vec![whole]).await;
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match replies.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(
        status.message().starts_with("malformed agent message: ")
            && status.message().contains("limit"),
        "{status:?}"
    );
    assert!(
        collector
            .logs()
            .contains("rejected a report over the inventory limits"),
        "the collector logs each refusal"
    );
}

#[test]
fn bad_inventory_limits_are_refused_with_one_line() {
    let collector = Collector::start();
    for (text, says) in [
        (
            "[inventory]\nmax_packages = 0\n",
            "inventory.max_packages must be a whole number between 100 and 100000; got 0",
        ),
        (
            "[inventory]\nmax_bytes = \"1GiB\"\n",
            "inventory.max_bytes must be a size between 64 KiB and 4 MiB",
        ),
    ] {
        let refused = apply_policy(&collector, text);
        assert_ne!(refused.code, 0, "{text}");
        assert!(refused.error_line().contains(says), "{}", refused.stderr);
        assert_eq!(
            refused.stderr.trim().lines().count(),
            1,
            "{}",
            refused.stderr
        );
    }
}

fn dpkg_status(packages: usize) -> String {
    (0..packages)
        .map(|i| {
            format!(
                "Package: pkg{i:04}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{i}\nMaintainer: Debian <x@lists.debian.org>\n\n"
            )
        })
        .collect()
}

#[test]
fn an_agent_over_the_limits_sends_its_inventory_cut_and_the_host_shows_it_truncated() {
    let collector = Collector::start();
    apply_policy(&collector, "[inventory]\nmax_packages = 100\n").expect_code(0);
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let root = tempfile::tempdir().expect("system root");
    let status_file = root.path().join("var/lib/dpkg/status");
    std::fs::create_dir_all(status_file.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    std::fs::write(
        root.path().join("etc/os-release"),
        "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n",
    )
    .expect("os-release");
    std::fs::write(&status_file, dpkg_status(300)).expect("status");
    let root_arg = root.path().to_str().expect("utf-8");

    // The first run collected before it knew the limits: the collector
    // refuses that inventory with its reason, the agent says so in one
    // line, drops it, and sends it again cut to the limits it just learnt.
    let first = agent
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);
    let refusals: Vec<&str> = first
        .stderr
        .lines()
        .filter(|l| l.contains("the collector rejected a report"))
        .collect();
    assert_eq!(refusals.len(), 1, "{}", first.stderr);
    assert!(
        refusals[0].contains("300 packages, over the collector's limit of 100"),
        "{}",
        refusals[0]
    );
    assert!(
        first
            .stderr
            .contains("the inventory is over the collector's limits; sending it cut to them"),
        "{}",
        first.stderr
    );

    let admin = collector.admin_token();
    let host = agent.host_id();
    let shown = collector
        .cli(&admin, &["host", "show", &host])
        .expect_code(0);
    assert!(
        shown.stdout.contains("packages       100\n"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains(
            "truncated      inventory truncated: software.packages: 300 collected, the first 100 sent: the collector's limit (policy inventory.max_packages)"
        ),
        "{}",
        shown.stdout
    );
    let inventory = collector
        .cli(&admin, &["inventory", &host, "--section", "software"])
        .expect_code(0);
    assert!(
        inventory
            .stdout
            .contains("software.packages: truncated (300 collected, the first 100 sent"),
        "{}",
        inventory.stdout
    );

    // The agent kept the limits: the next run cuts before sending, and
    // nothing is refused or left in the spool.
    std::fs::write(&status_file, dpkg_status(301)).expect("status");
    let second = agent
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);
    assert!(!second.stderr.contains("rejected"), "{}", second.stderr);
    let view = deskpulse_tests::SpoolView::read(agent.state_dir.path());
    assert!(view.waiting().is_empty(), "{:?}", view.waiting());
    let shown = collector
        .cli(&admin, &["host", "show", &host])
        .expect_code(0);
    assert!(
        shown
            .stdout
            .contains("software.packages: 301 collected, the first 100 sent"),
        "{}",
        shown.stdout
    );
}
