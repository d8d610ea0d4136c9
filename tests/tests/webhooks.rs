//! Webhooks and the knowledge base through the real binaries: an admin adds
//! a webhook with `deskpulse webhooks add --secret-file`, a full disk on a
//! real agent session opens a ticket, and the running collector's delivery
//! task POSTs a signed `ticket.opened` to a receiver on loopback, which
//! verifies it; `deskpulse webhooks` then shows it delivered, and once a
//! technician resolves the ticket `deskpulse kb search` finds it. Bad input
//! is refused with the documented exit codes.

use std::time::Duration;

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{AgentMessage, FilesystemUsage, HealthSample, Report};
use deskpulse_tests::notify::http_receiver as receiver;
use deskpulse_tests::{Agent, Collector, test_hello, wait_for};
use tokio::net::TcpListener;

/// An hour ago: recent enough that the collector's clock window (90 days
/// back) believes the samples' times.
fn an_hour_ago_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits") - 3_600_000
}

fn sample(seq: u64, minute: i64, used: f32) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            sent_at_unix_ms: 0,
            spool_id: "webhooks-test".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: an_hour_ago_ms() + minute * 60_000,
            payload: Some(Payload::Health(HealthSample {
                cpu_percent: 3.0,
                memory_used_percent: 30.0,
                filesystems: vec![FilesystemUsage {
                    mount_point: "/".into(),
                    used_percent: used,
                    available_bytes: 1 << 30,
                }],
                ..HealthSample::default()
            })),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_ticket_is_delivered_signed_to_a_webhook_added_from_the_cli() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let viewer = collector.api_token("vera", "viewer");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/deskpulse", listener.local_addr().expect("addr"));
    let mut received = receiver(listener);

    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "e2e-webhook-secret\n").expect("write secret");
    let empty_file = dir.path().join("empty.secret");
    std::fs::write(&empty_file, "\n").expect("write empty");
    let secret_arg = secret_file.to_str().expect("utf-8 path");

    // Bad input: usage errors (2) before the collector is asked.
    for args in [
        &[
            "webhooks",
            "add",
            "ftp://example.com/",
            "--secret-file",
            secret_arg,
        ][..],
        &[
            "webhooks",
            "add",
            &url,
            "--event",
            "ticket.deleted",
            "--secret-file",
            secret_arg,
        ],
        &["webhooks", "add", &url],
        &[
            "webhooks",
            "add",
            &url,
            "--secret-file",
            empty_file.to_str().expect("utf-8 path"),
        ],
        &["kb", "search", "  "],
    ] {
        let out = collector.cli(&admin, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error") || out.stderr.starts_with("deskpulse: error"),
            "{}",
            out.stderr
        );
    }
    // A viewer may not add one (1: the collector refuses).
    let denied = collector.cli(
        &viewer,
        &["webhooks", "add", &url, "--secret-file", secret_arg],
    );
    assert_eq!(denied.code, 1, "{}", denied.stderr);
    assert!(denied.error_line().contains("admin"), "{}", denied.stderr);

    let added = collector
        .cli(
            &admin,
            &[
                "--json",
                "webhooks",
                "add",
                &url,
                "--event",
                "ticket.opened",
                "--secret-file",
                secret_arg,
            ],
        )
        .expect_code(0);
    let added: serde_json::Value = serde_json::from_str(&added.stdout).expect("json");
    assert_eq!(added["events"], serde_json::json!(["ticket.opened"]));
    let id = added["id"].as_i64().expect("id");

    // A full disk on a real agent session opens a disk-full ticket.
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let mut messages = vec![test_hello()];
    messages.extend((0..12).map(|m| sample(m + 1, i64::try_from(m).expect("small"), 95.0)));
    let expected = messages.len() - 1;
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages))
        .await
        .expect("session")
        .into_inner();
    for _ in 0..expected {
        let reply = replies.message().await.expect("reply").expect("some");
        assert!(matches!(reply.kind, Some(Reply::Ack(_))), "{reply:?}");
    }

    // The delivery task polls every 5 s; allow a generous margin.
    let request = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the webhook arrives")
        .expect("a request");
    assert_eq!(request.headers["x-deskpulse-event"], "ticket.opened");
    let now_s = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("now");
    deskpulse_collector::webhooks::verify(
        "e2e-webhook-secret",
        &request.headers["x-deskpulse-signature"],
        &request.body,
        now_s,
        300,
    )
    .expect("the signature verifies with the secret from the file");
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json body");
    assert_eq!(body["event"], "ticket.opened");
    assert_eq!(
        body["delivery_id"],
        request.headers["x-deskpulse-delivery"].as_str()
    );
    assert_eq!(body["ticket"]["rule"], "disk-full");
    assert_eq!(body["ticket"]["host_id"], agent.host_id().as_str());

    // Any role may list; the secret never appears.
    let listed = wait_for(Duration::from_secs(10), || {
        let out = collector
            .cli(&viewer, &["--json", "webhooks"])
            .expect_code(0);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        (list[0]["delivered"] == 1).then_some(out.stdout)
    })
    .expect("listed as delivered");
    assert!(!listed.contains("e2e-webhook-secret"), "{listed}");
    let table = collector.cli(&viewer, &["webhooks"]).expect_code(0);
    assert!(table.stdout.contains(&url), "{}", table.stdout);

    let none = collector
        .cli(&viewer, &["kb", "search", "spooler crash"])
        .expect_code(0);
    assert!(
        none.stdout.contains("no past resolution matches"),
        "{}",
        none.stdout
    );

    // A technician resolves the ticket, saying how; the knowledge base
    // finds it by a word of that resolution, for any role.
    let ticket_id = body["ticket"]["id"]
        .as_i64()
        .expect("ticket id")
        .to_string();
    collector
        .cli(
            &admin,
            &[
                "ticket",
                "resolve",
                &ticket_id,
                "--resolution",
                "Purged the print spooler queue and rotated old logs",
            ],
        )
        .expect_code(0);
    let found = collector
        .cli(&viewer, &["--json", "kb", "search", "spooler crash"])
        .expect_code(0);
    let found: serde_json::Value = serde_json::from_str(&found.stdout).expect("json");
    assert_eq!(found[0]["ticket_id"].to_string(), ticket_id, "{found}");
    assert_eq!(found[0]["rule"], "disk-full");
    assert!(found[0]["resolved_at"].is_string(), "{found}");
    let text = collector
        .cli(&viewer, &["kb", "search", "spooler"])
        .expect_code(0);
    assert!(
        text.stdout.contains("> Purged the print spooler queue"),
        "{}",
        text.stdout
    );

    collector
        .cli(&admin, &["webhooks", "remove", &id.to_string()])
        .expect_code(0);
    let gone = collector.cli(&admin, &["webhooks", "remove", &id.to_string()]);
    assert_eq!(gone.code, 1, "{}", gone.stderr);
}
