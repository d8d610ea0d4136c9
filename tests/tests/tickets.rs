//! Proactive tickets (issue 6, groundwork), through the real ingest path:
//! health samples sent on an agent's own mutual-TLS session open exactly one
//! ticket once the disk has been full for the rule's duration, with the
//! priority the impact x urgency matrix gives, and `deskpulse tickets`
//! lists it. Sample times, not the wall clock, drive the durations (D30).

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{AgentMessage, FilesystemUsage, HealthSample, Hello, Report};
use deskpulse_tests::{Agent, Collector};

fn sample(seq: u64, minute: i64, used: f32) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            spool_id: "tickets-test".into(),
            seq,
            collected_at_unix_ms: 1_764_000_000_000 + minute * 60_000,
            payload: Some(Payload::Health(HealthSample {
                cpu_percent: 3.0,
                memory_used_percent: 30.0,
                filesystems: vec![
                    FilesystemUsage {
                        mount_point: "/".into(),
                        used_percent: used,
                        available_bytes: 1 << 30,
                    },
                    FilesystemUsage {
                        mount_point: "/data".into(),
                        used_percent: 20.0,
                        available_bytes: 100 << 30,
                    },
                ],
                ..HealthSample::default()
            })),
        })),
    }
}

#[tokio::test]
async fn a_full_disk_for_the_rules_duration_opens_one_prioritised_ticket() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let token = collector.admin_token();
    let host = agent.host_id();
    collector
        .cli(&token, &["host", "tag", &host, "criticality=low"])
        .expect_code(0);

    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let mut messages = vec![AgentMessage {
        kind: Some(Kind::Hello(Hello {
            agent_version: "test".into(),
            inventory_schema_version: 1,
            health_interval_secs: 60,
        })),
    }];
    // Fifteen minutes at 95 % on "/": the disk-full rule (> 90 % for 10 min)
    // fires once; "/data" stays at 20 %.
    messages.extend((0..15).map(|m| sample(m + 1, i64::try_from(m).expect("small"), 95.0)));
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

    let out = collector
        .cli(&token, &["--json", "tickets", "--status", "open"])
        .expect_code(0);
    let tickets: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let tickets = tickets.as_array().expect("array");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let ticket = &tickets[0];
    assert_eq!(ticket["rule"], "disk-full");
    assert_eq!(ticket["subject"], "/");
    assert_eq!(ticket["priority"], "P3", "low impact x high severity");
    assert_eq!(ticket["status"], "new");
    assert_eq!(ticket["occurrences"], 1);
    assert_eq!(ticket["evidence"]["value"], 95.0);
    assert_eq!(ticket["host_id"], host.as_str());

    let text = collector.cli(&token, &["tickets"]).expect_code(0);
    assert!(
        text.stdout.contains("disk-full: / is 95% full"),
        "{}",
        text.stdout
    );
    let none = collector
        .cli(&token, &["tickets", "--priority", "P1"])
        .expect_code(0);
    assert!(none.stdout.contains("no tickets match"), "{}", none.stdout);
    let bad = collector.cli(&token, &["tickets", "--status", "done"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(
        bad.error_line().contains("unknown status \"done\""),
        "{}",
        bad.stderr
    );
}
