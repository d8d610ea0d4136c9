//! An enrolled but hostile agent floods employee reports: 2,000 in one
//! session, each under a user it chose. The collector stores at most its
//! per-host allowance, rejects the rest with a reason the agent can log,
//! and folds the same text again into the ticket it already opened.

use std::time::Duration;

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{AgentMessage, Report, UserIssue};
use deskpulse_tests::{Agent, Collector, test_hello};
use tokio_stream::StreamExt;

/// Reports sent in all.
const FLOOD: u64 = 2000;
/// The first ones all carry the same text.
const SAME_TEXT: u64 = 20;
/// What the collector takes from one host in an hour
/// (`server::limits::MAX_USER_REPORTS_PER_HOST`).
const PER_HOST: u64 = 30;

fn issue(seq: u64) -> AgentMessage {
    let text = if seq <= SAME_TEXT {
        "The printer is on fire".to_owned()
    } else {
        format!("Problem number {seq}")
    };
    AgentMessage {
        kind: Some(Kind::Report(Report {
            sent_at_unix_ms: 0,
            spool_id: "flood".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: 1_700_000_000_000 + seq as i64,
            payload: Some(Payload::UserIssue(UserIssue {
                text,
                os_user: format!("user{seq}"),
                health: None,
                report_key: String::new(),
                reporter_email: String::new(),
            })),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooding_employee_reports_gets_its_allowance_and_one_ticket_per_text() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let messages: Vec<_> = std::iter::once(test_hello())
        .chain((1..=FLOOD).map(issue))
        .collect();
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages).chain(tokio_stream::pending()))
        .await
        .expect("session")
        .into_inner();
    let (mut acked, mut rejected) = (0u64, Vec::new());
    let answered = tokio::time::timeout(Duration::from_secs(120), async {
        while acked + (rejected.len() as u64) < FLOOD {
            match replies.message().await.expect("reply").expect("some").kind {
                Some(Reply::Ack(ack)) => acked += u64::from(ack.seq > 0),
                Some(Reply::Rejected(r)) => rejected.push(r),
                _ => {}
            }
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "only {acked} acks and {} rejections",
        rejected.len()
    );
    println!(
        "{FLOOD} employee reports from one host: {acked} stored, {} rejected",
        rejected.len()
    );
    assert_eq!(acked, PER_HOST);
    assert_eq!(rejected.len() as u64, FLOOD - PER_HOST);
    let reason = &rejected[0].reason;
    assert!(
        reason.starts_with("too many employee reports from this PC: at most 30 per 60 min"),
        "{reason}"
    );

    let db = rusqlite::Connection::open(collector.data_dir.path().join("deskpulse.db"))
        .expect("open the store");
    let tickets: i64 = db
        .query_row(
            "SELECT count(*) FROM tickets WHERE rule = 'user-report'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let repeated: i64 = db
        .query_row(
            "SELECT occurrences FROM tickets WHERE title LIKE '%printer is on fire%'",
            [],
            |r| r.get(0),
        )
        .expect("the printer ticket");
    // 20 of the same text are one ticket; 10 more texts are 10 more.
    assert_eq!(tickets, (PER_HOST - SAME_TEXT + 1) as i64);
    assert_eq!(repeated, SAME_TEXT as i64);
    assert!(
        collector
            .logs()
            .contains("a host sent more employee reports than allowed"),
        "{}",
        collector.logs()
    );
}
