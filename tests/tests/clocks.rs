//! Clocks that lie (issue 20, item 14), against the real collector and CLI
//! with an agent session on its own mutual-TLS certificate: one health
//! sample dated 2100 used to freeze the host's latest health for good; now
//! the latest is the one received last, the claimed time is replaced by
//! the receive time and kept as evidence, and a PC whose clock is 3 h
//! behind shows it in `deskpulse host show`. Hostile times (i64::MAX,
//! negative) are clamps or one-line refusals, never panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, CollectorMessage, HealthSample, Hello, Inventory, OsInfo, Report,
};
use deskpulse_tests::{Agent, Collector};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const YEAR_2100_MS: i64 = 4_102_444_800_000;
const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A session whose PC clock is `offset_ms` off.
struct LyingSession {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<CollectorMessage>,
    seq: u64,
    offset_ms: i64,
}

impl LyingSession {
    async fn open(collector: &Collector, agent: &Agent, offset_ms: i64) -> Self {
        let (cert, key) = agent.identity();
        let channel = collector.channel(Some((&cert, &key))).await;
        let (tx, outbound) = mpsc::channel(16);
        tx.send(AgentMessage {
            kind: Some(Kind::Hello(Hello {
                agent_version: "test".into(),
                inventory_schema_version: 1,
                health_interval_secs: 60,
                sent_at_unix_ms: now_ms().saturating_add(offset_ms),
                ..Hello::default()
            })),
        })
        .await
        .expect("hello");
        let rx = AgentServiceClient::new(channel)
            .session(ReceiverStream::new(outbound))
            .await
            .expect("session")
            .into_inner();
        Self {
            tx,
            rx,
            seq: 0,
            offset_ms,
        }
    }

    /// Sends a report dated `collected_at` and returns the collector's
    /// answer.
    async fn send(&mut self, collected_at: i64, payload: Payload) -> Reply {
        self.seq += 1;
        self.tx
            .send(AgentMessage {
                kind: Some(Kind::Report(Report {
                    spool_id: "lying".into(),
                    seq: self.seq,
                    held_from_seq: 0,
                    collected_at_unix_ms: collected_at,
                    sent_at_unix_ms: now_ms().saturating_add(self.offset_ms),
                    payload: Some(payload),
                })),
            })
            .await
            .expect("report");
        let reply = tokio::time::timeout(Duration::from_secs(30), self.rx.message())
            .await
            .expect("an answer within 30 s")
            .expect("stream")
            .expect("a message");
        reply.kind.expect("a kind")
    }

    async fn stored(&mut self, collected_at: i64, payload: Payload) {
        let reply = self.send(collected_at, payload).await;
        assert!(matches!(reply, Reply::Ack(_)), "{reply:?}");
    }
}

fn health(cpu: f32) -> Payload {
    Payload::Health(HealthSample {
        cpu_percent: cpu,
        memory_used_percent: 40.0,
        ..HealthSample::default()
    })
}

#[tokio::test]
async fn a_sample_dated_2100_no_longer_freezes_the_latest_health_and_a_clock_3_h_behind_shows() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let host = agent.host_id();
    let viewer = collector.api_token("vera", "viewer");
    let mut session = LyingSession::open(&collector, &agent, -3 * HOUR_MS).await;

    // The attack: one sample from the year 2100, then honest ones (by the
    // PC's clock, 3 h behind).
    session.stored(YEAR_2100_MS, health(11.0)).await;
    let pc_now = now_ms() - 3 * HOUR_MS;
    session.stored(pc_now, health(22.0)).await;
    let shown = collector
        .cli(&viewer, &["--json", "host", "show", &host])
        .expect_code(0)
        .json();
    assert_eq!(
        shown["health"]["cpu_percent"].as_f64(),
        Some(22.0),
        "the latest health froze on the sample dated 2100: {}",
        shown["health"]
    );
    let clock = &shown["clock"];
    let offset = clock["offset_ms"].as_i64().expect("an offset");
    assert!(
        (offset + 3 * HOUR_MS).abs() < 60_000,
        "measured {offset} ms, expected about -3 h"
    );
    assert_eq!(clock["beyond_window"], true, "{clock}");
    assert_eq!(clock["window_ms"], 300_000, "{clock}");
    assert_eq!(clock["clamped_reports"], 1, "{clock}");
    assert_eq!(clock["last_clamped_claim_unix_ms"], YEAR_2100_MS, "{clock}");
    assert_eq!(
        clock["last_clamped_claim"], "2100-01-01T00:00:00Z",
        "{clock}"
    );
    assert!(
        clock["offset"]
            .as_str()
            .is_some_and(|words| words.starts_with("3h") && words.ends_with(" behind")),
        "{clock}"
    );

    let text = collector
        .cli(&viewer, &["host", "show", &host])
        .expect_code(0);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("clock "))
        .unwrap_or_else(|| panic!("no clock line in:\n{}", text.stdout));
    println!("{line}");
    assert!(line.contains(" behind (measured "), "{line}");
    assert!(line.contains("OFF: beyond the 5m window"), "{line}");
    assert!(
        line.contains("1 report dated outside the window was stored at the time received (the last claimed 2100-01-01T00:00:00Z)"),
        "{line}"
    );
    // The health history holds the 2100 sample at its receive time.
    let history = deskpulse_tests::health_history_ms(collector.data_dir.path(), &host);
    assert!(
        history.iter().all(|at| *at < YEAR_2100_MS),
        "a sample stored in 2100: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_times_are_clamped_or_refused_in_one_line_and_nothing_panics() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let host = agent.host_id();
    let viewer = collector.api_token("vera", "viewer");
    // A clock at the end of time.
    let mut session = LyingSession::open(&collector, &agent, i64::MAX).await;
    session.stored(i64::MAX, health(33.0)).await;
    // Before 1970, and unset: refused, in one line, and the session goes on.
    for bad in [-1, i64::MIN, 0] {
        match session.send(bad, health(1.0)).await {
            Reply::Rejected(rejected) => {
                assert_eq!(rejected.reason, "collected_at_unix_ms must be set");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // An inventory whose boot time and install date are past any calendar.
    session
        .stored(
            i64::MAX,
            Payload::Inventory(Inventory {
                os: Some(OsInfo {
                    hostname: "liar".into(),
                    boot_time_unix_s: i64::MAX,
                    install_date_unix_s: i64::MAX,
                    ..OsInfo::default()
                }),
                ..Inventory::default()
            }),
        )
        .await;
    session.stored(now_ms(), health(44.0)).await;
    // The first clamp of a session is recorded at once, later ones at most
    // once a minute, and what is left when the session ends.
    drop(session);
    let shown = deskpulse_tests::wait_for(Duration::from_secs(20), || {
        let shown = collector
            .cli(&viewer, &["--json", "host", "show", &host])
            .expect_code(0)
            .json();
        (shown["clock"]["clamped_reports"] == 2).then_some(shown)
    })
    .expect("both clamped reports recorded once the session ended");
    assert_eq!(shown["health"]["cpu_percent"].as_f64(), Some(44.0));
    assert_eq!(shown["clock"]["beyond_window"], true);
    assert_eq!(shown["clock"]["offset"], "36600d ahead");
    let inventory_at = shown["inventory_at"].as_str().expect("inventory_at");
    assert!(!inventory_at.starts_with("after"), "{inventory_at}");
    for args in [
        vec!["host", "show", host.as_str()],
        vec!["inventory", host.as_str()],
    ] {
        let run = collector.cli(&viewer, &args).expect_code(0);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    let inventory = collector.cli(&viewer, &["inventory", &host]).expect_code(0);
    assert!(
        inventory.stdout.contains("after 9999"),
        "{}",
        inventory.stdout
    );
    assert!(
        !collector.logs().contains("panicked"),
        "{}",
        collector.logs()
    );
}
