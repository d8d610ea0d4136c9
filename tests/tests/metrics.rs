//! Prometheus metrics (issue 8, observability): the real collector serves
//! `/metrics` on `--metrics-listen` in the standard text format, checked by
//! `promtool check metrics` (Debian package `prometheus`; required in CI),
//! and the counters move when an agent reports.

use std::io::Write;
use std::time::Duration;

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{AgentMessage, HealthSample, Report};
use deskpulse_tests::{Agent, Collector, http_get, strip_ansi, test_hello, wait_for};

#[tokio::test]
async fn metrics_are_served_in_the_exposition_format_and_count_reports() {
    let collector = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let addr = wait_for(Duration::from_secs(30), || {
        let logs = strip_ansi(&collector.logs());
        let line = logs.lines().find(|l| l.contains("metrics listening"))?;
        let at = line.find("addr=")? + 5;
        Some(line[at..].split_whitespace().next()?.to_owned())
    })
    .expect("the collector logs its metrics address");

    // Before anything happened, every metric is there at 0, with the
    // build and the process's own figures.
    let (_, body) = http_get(&addr, "/metrics");
    for wanted in [
        "deskpulse_reports_total{kind=\"health\"} 0",
        "deskpulse_reports_total{kind=\"inventory\"} 0",
        "deskpulse_reports_rejected_total 0",
        "deskpulse_ingest_latency_seconds_count 0",
        "deskpulse_store_batch_seconds_count 0",
        "deskpulse_store_batch_reports_count 0",
        "deskpulse_agents_connected 0",
        "deskpulse_ingest_queue_depth 0",
        "deskpulse_jobs{state=\"queued\"} 0",
        "deskpulse_jobs{state=\"completed\"} 0",
        concat!(
            "deskpulse_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(body.contains(wanted), "{wanted} at start-up in\n{body}");
    }
    let (head, body) = http_get(&addr, "/healthz");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");

    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let messages = vec![
        test_hello(),
        AgentMessage {
            kind: Some(Kind::Report(Report {
                sent_at_unix_ms: 0,
                spool_id: "metrics".into(),
                seq: 1,
                held_from_seq: 0,
                collected_at_unix_ms: 1_764_000_000_000,
                payload: Some(Payload::Health(HealthSample {
                    cpu_percent: 5.0,
                    ..HealthSample::default()
                })),
            })),
        },
    ];
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages))
        .await
        .expect("session")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("some");
    assert!(matches!(reply.kind, Some(Reply::Ack(_))), "{reply:?}");

    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for wanted in [
        "deskpulse_reports_total{kind=\"health\"} 1",
        "deskpulse_ingest_latency_seconds_bucket",
        "deskpulse_store_batch_seconds_count",
        "deskpulse_tickets_open{priority=\"P1\"} 0",
        "deskpulse_webhook_outbox_pending 0",
        "deskpulse_store_up 1",
        "# HELP deskpulse_agents_connected",
    ] {
        assert!(body.contains(wanted), "{wanted} in\n{body}");
    }
    let (head, _) = http_get(&addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // A job queued for a PC that is away counts as queued; once it leaves
    // that state, queued reads 0 again, not the last count it had.
    let away = Agent::new();
    away.enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let admin = collector.admin_token();
    let queued = collector
        .cli(
            &admin,
            &[
                "--json",
                "run",
                &away.host_id(),
                "ping",
                "--param",
                "host=127.0.0.1",
            ],
        )
        .expect_code(0);
    let job: serde_json::Value = serde_json::from_str(&queued.stdout).expect("job JSON");
    let id = job["id"].as_str().expect("job id").to_owned();
    let (_, during) = http_get(&addr, "/metrics");
    assert!(
        during.contains("deskpulse_jobs{state=\"queued\"} 1"),
        "{during}"
    );
    collector
        .cli(&admin, &["job", "cancel", &id])
        .expect_code(0);
    let (_, after) = http_get(&addr, "/metrics");
    for wanted in [
        "deskpulse_jobs{state=\"queued\"} 0",
        "deskpulse_jobs{state=\"cancelled\"} 1",
    ] {
        assert!(after.contains(wanted), "{wanted} in\n{after}");
    }

    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("feed promtool");
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(error) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "promtool is required in CI: {error}"
            );
            eprintln!("SKIPPED: promtool did not run: {error}");
        }
    }
}

#[test]
fn a_bad_metrics_address_is_a_config_error() {
    let out = deskpulse_tests::run(
        std::process::Command::new(deskpulse_tests::bin("deskpulse-collector"))
            .args([
                "serve",
                "--metrics-listen",
                "nine-four-six-four",
                "--data-dir",
            ])
            .arg(tempfile::tempdir().expect("dir").path()),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.error_line().contains("metrics listen address"),
        "{}",
        out.stderr
    );
}

/// The collector's open descriptors.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn idle_scrapers_cannot_take_the_collectors_descriptors() {
    let collector = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let addr = wait_for(Duration::from_secs(30), || {
        let logs = strip_ansi(&collector.logs());
        let line = logs.lines().find(|l| l.contains("metrics listening"))?;
        let at = line.find("addr=")? + 5;
        Some(line[at..].split_whitespace().next()?.to_owned())
    })
    .expect("the collector logs its metrics address");
    let pid = collector.pid().expect("the collector runs");
    let before = open_descriptors(pid);
    // Sockets that connect and never send a request: fewer than the
    // listener's backlog (128), so each connect completes at once.
    let idle: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = open_descriptors(pid);
    eprintln!(
        "{} idle scrapers connected; the collector's descriptors: {before} before, {during} during",
        idle.len()
    );
    assert!(
        during <= before + 16,
        "{} idle scrapers took {} descriptors",
        idle.len(),
        during - before
    );
    // The agents' port and the CLI keep working meanwhile.
    collector
        .cli(&collector.admin_token(), &["whoami"])
        .expect_code(0);
    // Once the flood goes, the scrapers' turn comes again.
    drop(idle);
    let (head, body) = http_get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("deskpulse_store_up"), "{body}");
}
