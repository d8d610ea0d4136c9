//! Suggested fixes and change correlation (issue 23), end to end: two PCs
//! upgrade openssl and fill their disks; the ticket that opens on one is
//! suggested the fix a technician wrote on an earlier ticket, and
//! `deskpulse ticket show` prints it with the upgrade and the other PC
//! where the same rule fires after the same upgrade, in text and JSON.

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, FilesystemUsage, HealthSample, Inventory, OsInfo, Package, Report, SoftwareInfo,
};
use deskpulse_tests::{Agent, Collector, send_reports};

const MINUTE: i64 = 60_000;

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

fn report(seq: u64, at_ms: i64, payload: Payload) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            sent_at_unix_ms: 0,
            spool_id: "suggestions-test".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: at_ms,
            payload: Some(payload),
        })),
    }
}

fn inventory(openssl: &str) -> Payload {
    Payload::Inventory(Inventory {
        os: Some(OsInfo {
            hostname: "pc".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages: vec![Package {
                ecosystem: "dpkg".into(),
                name: "openssl".into(),
                version: openssl.into(),
                arch: "amd64".into(),
                ..Package::default()
            }],
            ..SoftwareInfo::default()
        }),
        ..Inventory::default()
    })
}

fn disk(used: f32) -> Payload {
    Payload::Health(HealthSample {
        cpu_percent: 3.0,
        memory_used_percent: 30.0,
        filesystems: vec![FilesystemUsage {
            mount_point: "/".into(),
            used_percent: used,
            available_bytes: 1 << 30,
        }],
        ..HealthSample::default()
    })
}

/// openssl upgraded three hours ago, then the disk full for 15 minutes.
async fn upgrade_then_fill(collector: &Collector, agent: &Agent) {
    let now = now_ms();
    let mut reports = vec![
        report(1, now - 5 * 60 * MINUTE, inventory("3.0.14")),
        report(2, now - 3 * 60 * MINUTE, inventory("3.0.15")),
    ];
    for m in 0..15 {
        reports.push(report(
            10 + m,
            now - 60 * MINUTE + i64::try_from(m).expect("small") * MINUTE,
            disk(95.0),
        ));
    }
    send_reports(collector, agent, reports).await;
}

#[tokio::test]
async fn ticket_show_prints_the_suggested_fix_and_the_change_on_other_hosts() {
    let collector = Collector::start();
    let token = collector.admin_token();
    let pc = Agent::enrolled_to(&collector);
    let other = Agent::enrolled_to(&collector);
    let host = pc.host_id();

    // An earlier ticket a technician resolved, naming the software.
    let earlier = collector
        .cli(
            &token,
            &[
                "--json",
                "ticket",
                "new",
                &host,
                "--title",
                "disk-full: / is full of journal logs",
            ],
        )
        .expect_code(0)
        .json()["ticket"]["id"]
        .as_i64()
        .expect("an id");
    let fix = "The openssl upgrade flooded the journal with warnings; vacuumed the journal";
    collector
        .cli(
            &token,
            &[
                "ticket",
                "resolve",
                &earlier.to_string(),
                "--resolution",
                fix,
            ],
        )
        .expect_code(0);

    upgrade_then_fill(&collector, &other).await;
    upgrade_then_fill(&collector, &pc).await;

    let tickets = collector
        .cli(
            &token,
            &["--json", "tickets", "--status", "open", "--host", &host],
        )
        .expect_code(0)
        .json();
    let ticket = tickets
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["rule"] == "disk-full")
        .unwrap_or_else(|| panic!("a disk-full ticket: {tickets}"))
        .clone();
    let id = ticket["id"].as_i64().expect("an id").to_string();

    let text = collector
        .cli(&token, &["ticket", "show", &id])
        .expect_code(0)
        .stdout;
    let suggestion = text
        .lines()
        .find(|l| l.starts_with("suggestion "))
        .unwrap_or_else(|| panic!("a suggestion line:\n{text}"));
    assert!(
        suggestion.contains(&format!("#{earlier} (")),
        "{suggestion}"
    );
    assert!(suggestion.contains(fix), "{suggestion}");
    assert!(
        suggestion.contains("same software: openssl"),
        "{suggestion}"
    );
    let correlation = text
        .lines()
        .find(|l| l.starts_with("correlation "))
        .unwrap_or_else(|| panic!("a correlation line:\n{text}"));
    assert!(
        correlation.contains("openssl 3.0.14 -> 3.0.15 ("),
        "{correlation}"
    );
    assert!(
        correlation.ends_with("— 1 other host with this change has disk-full open"),
        "{correlation}"
    );

    let shown = collector
        .cli(&token, &["--json", "ticket", "show", &id])
        .expect_code(0)
        .json();
    let suggestions = shown["suggestions"].as_array().expect("suggestions");
    assert_eq!(suggestions[0]["ticket_id"], earlier);
    assert_eq!(suggestions[0]["resolution"], fix);
    assert!(suggestions[0]["score"].as_f64().expect("a score") > 0.0);
    assert!(suggestions[0]["resolved_at"].is_string());
    assert!(
        suggestions[0]["reason"]
            .as_str()
            .expect("a reason")
            .contains("same software: openssl"),
        "{shown}"
    );
    let changes = shown["change_correlation"].as_array().expect("correlation");
    assert_eq!(changes.len(), 1, "{shown}");
    assert_eq!(changes[0]["item"], "package dpkg/openssl:amd64");
    assert_eq!(changes[0]["kind"], "changed");
    assert_eq!(changes[0]["old"], "3.0.14");
    assert_eq!(changes[0]["new"], "3.0.15");
    assert_eq!(changes[0]["other_hosts"], 1);
    let before = changes[0]["before_ms"].as_i64().expect("before_ms");
    assert!(
        (2 * 60 * MINUTE..4 * 60 * MINUTE).contains(&before),
        "{before}"
    );

    // The manual ticket has no rule: its changes carry no count.
    let manual = collector
        .cli(&token, &["--json", "ticket", "show", &earlier.to_string()])
        .expect_code(0)
        .json();
    assert!(manual["suggestions"].as_array().expect("a list").is_empty());
}
