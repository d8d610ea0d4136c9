//! Remote diagnostics from the collector's side (issue 7), with the real
//! collector and CLI and a simulated agent session on its own mutual-TLS
//! certificate: an online run streams the agent's output to the CLI and
//! ends with the stored result; an offline host's request is queued and
//! delivered when the agent connects; roles and parameters are refused
//! before anything reaches an agent. The real agent's side is tested in
//! `diagnostics.rs`.

use std::process::Stdio;
use std::time::Duration;

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, CollectorMessage, DiagnosticOutcome, DiagnosticOutput, DiagnosticResult, Hello,
    Report, RunDiagnostic,
};
use deskpulse_tests::{Agent, Collector, Run};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A session as an agent would hold it, driven by the test.
struct FakeSession {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<CollectorMessage>,
    seq: u64,
}

impl FakeSession {
    async fn open(collector: &Collector, agent: &Agent, enabled: &[&str]) -> Self {
        let (cert, key) = agent.identity();
        let channel = collector.channel(Some((&cert, &key))).await;
        let (tx, outbound) = mpsc::channel(16);
        tx.send(AgentMessage {
            kind: Some(Kind::Hello(Hello {
                sent_at_unix_ms: 0,
                agent_version: "test".into(),
                inventory_schema_version: 1,
                health_interval_secs: 60,
                catalog_version: deskpulse_proto::catalog::CATALOG_VERSION,
                enabled_diagnostics: enabled.iter().map(|s| (*s).to_owned()).collect(),
                unavailable_diagnostics: Vec::new(),
            })),
        })
        .await
        .expect("hello");
        let rx = AgentServiceClient::new(channel)
            .session(ReceiverStream::new(outbound))
            .await
            .expect("session")
            .into_inner();
        Self { tx, rx, seq: 0 }
    }

    async fn next_run(&mut self) -> RunDiagnostic {
        let message = tokio::time::timeout(Duration::from_secs(30), self.rx.message())
            .await
            .expect("a message within 30 s")
            .expect("stream")
            .expect("a message");
        match message.kind {
            Some(Reply::RunDiagnostic(run)) => run,
            other => panic!("expected RunDiagnostic, got {other:?}"),
        }
    }

    async fn output(&self, job: &str, data: &str) {
        self.tx
            .send(AgentMessage {
                kind: Some(Kind::DiagnosticOutput(DiagnosticOutput {
                    job_id: job.into(),
                    seq: 1,
                    data: data.as_bytes().to_vec(),
                })),
            })
            .await
            .expect("output");
    }

    /// Sends the result as a spooled report and waits for its Ack.
    async fn result(&mut self, job: &str, output: &str, exit_code: i32) {
        self.seq += 1;
        self.tx
            .send(AgentMessage {
                kind: Some(Kind::Report(Report {
                    sent_at_unix_ms: 0,
                    spool_id: "fake".into(),
                    seq: self.seq,
                    held_from_seq: 0,
                    collected_at_unix_ms: 1_764_000_000_000,
                    payload: Some(Payload::DiagnosticResult(DiagnosticResult {
                        job_id: job.into(),
                        diagnostic: "ping".into(),
                        outcome: DiagnosticOutcome::Completed as i32,
                        exit_code,
                        output: output.as_bytes().to_vec(),
                        started_at_unix_ms: 1_764_000_000_000,
                        finished_at_unix_ms: 1_764_000_000_040,
                        ..DiagnosticResult::default()
                    })),
                })),
            })
            .await
            .expect("report");
        let reply = self.rx.message().await.expect("stream").expect("reply");
        assert!(matches!(reply.kind, Some(Reply::Ack(_))), "{reply:?}");
    }
}

async fn finish(child: std::process::Child) -> Run {
    tokio::task::spawn_blocking(move || Run::from(child.wait_with_output().expect("wait")))
        .await
        .expect("join")
}

#[tokio::test]
async fn an_online_run_streams_the_output_and_ends_with_the_stored_result() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let mut session = FakeSession::open(&collector, &agent, &["ping"]).await;
    let host = agent.host_id();
    let child = collector
        .cli_command(
            &alice,
            &[
                "run",
                &host,
                "ping",
                "--param",
                "host=127.0.0.1",
                "--param",
                "count=2",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deskpulse run");
    let run = session.next_run().await;
    assert!(run.expires_at_unix_ms > 0);
    session
        .output(&run.job_id, "PING 127.0.0.1: live line\n")
        .await;
    session
        .result(
            &run.job_id,
            "PING 127.0.0.1: live line\n2 packets transmitted\n",
            0,
        )
        .await;
    let out = finish(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("PING 127.0.0.1: live line"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("job {}: ping on", run.job_id))
            && out.stdout.contains("completed, exit status 0"),
        "{}",
        out.stdout
    );
    let shown = collector
        .cli(&alice, &["--json", "job", "show", &run.job_id])
        .expect_code(0);
    let job: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(job["state"], "completed");
    assert_eq!(job["params"], "host=127.0.0.1 count=2");
    assert_eq!(job["requested_by"], "alice");
    assert!(
        job["output"]
            .as_str()
            .unwrap_or("")
            .contains("2 packets transmitted")
    );
}

#[tokio::test]
async fn an_offline_hosts_request_is_queued_and_delivered_when_it_connects() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let queued = collector
        .cli(
            &alice,
            &["--json", "run", &host, "ping", "--param", "host=127.0.0.1"],
        )
        .expect_code(0);
    let job: serde_json::Value = serde_json::from_str(&queued.stdout).expect("json");
    assert_eq!(job["state"], "queued");
    let id = job["id"].as_str().expect("id").to_owned();
    let text = collector
        .cli(
            &alice,
            &[
                "run",
                &host,
                "ping",
                "--param",
                "host=127.0.0.1",
                "--ttl",
                "1h",
            ],
        )
        .expect_code(0);
    assert!(
        text.stdout.contains("queued") && text.stdout.contains("offline"),
        "{}",
        text.stdout
    );

    // The agent connects: both queued jobs arrive, oldest first.
    let mut session = FakeSession::open(&collector, &agent, &["ping"]).await;
    let first = session.next_run().await;
    assert_eq!(first.job_id, id);
    let _second = session.next_run().await;
    session.result(&id, "64 bytes from 127.0.0.1\n", 0).await;
    let listed = collector
        .cli(&alice, &["--json", "jobs", "--host", &host])
        .expect_code(0);
    let jobs: serde_json::Value = serde_json::from_str(&listed.stdout).expect("json");
    let states: Vec<&str> = jobs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|j| j["state"].as_str())
        .collect();
    assert_eq!(states, ["sent", "completed"], "newest first");
    let cancelled = collector
        .cli(
            &alice,
            &["job", "cancel", jobs[0]["id"].as_str().expect("id")],
        )
        .expect_code(0);
    assert!(cancelled.stdout.contains("cancel"), "{}", cancelled.stdout);
}

#[tokio::test]
async fn roles_parameters_and_the_agents_own_set_are_checked_before_anything_is_sent() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let admin = collector.admin_token();
    let alice = collector.api_token("alice", "technician");
    let viewer = collector.api_token("vic", "viewer");
    let _session = FakeSession::open(&collector, &agent, &["ping", "restart_service"]).await;
    let host = agent.host_id();

    let refused = collector.cli(
        &viewer,
        &["run", &host, "ping", "--param", "host=127.0.0.1"],
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.error_line().contains("needs the technician role"),
        "{}",
        refused.stderr
    );

    // A bad parameter is a usage error, found before any I/O.
    for (bad, says) in [
        ("host=8.8.8.8; rm -rf /", "is not a host name or IP address"),
        ("host=$(id)", "is not a host name or IP address"),
        ("host=`id`", "is not a host name or IP address"),
        ("count=-1", "count must not be negative"),
    ] {
        let out = collector.cli(&alice, &["run", &host, "ping", "--param", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.error_line().contains(says), "{bad}: {}", out.stderr);
    }
    let out = collector.cli(&alice, &["run", &host, "ping"]);
    assert_eq!(out.code, 2);
    assert!(
        out.error_line().contains("host is required"),
        "{}",
        out.stderr
    );
    let out = collector.cli(
        &alice,
        &[
            "run",
            &host,
            "disk_usage",
            "--param",
            "path=../../etc/shadow",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.error_line().contains("must be absolute"),
        "{}",
        out.stderr
    );

    let out = collector.cli(
        &alice,
        &["run", &host, "restart_service", "--param", "service=cups"],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("needs the admin role"),
        "{}",
        out.stderr
    );
    let out = collector.cli(&admin, &["run", &host, "flush_dns"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("does not enable flush_dns"),
        "{}",
        out.stderr
    );

    let catalog = collector
        .cli(&viewer, &["--json", "diagnostics", &host])
        .expect_code(0);
    let catalog: serde_json::Value = serde_json::from_str(&catalog.stdout).expect("json");
    let ping = catalog["diagnostics"]
        .as_array()
        .expect("array")
        .iter()
        .find(|d| d["id"] == "ping")
        .cloned()
        .expect("ping");
    assert_eq!(
        (ping["role"].as_str(), ping["enabled_on_host"].as_bool()),
        (Some("technician"), Some(true))
    );
    let jobs = collector.cli(&admin, &["jobs"]).expect_code(0);
    assert!(
        jobs.stdout.contains("no jobs match"),
        "nothing was recorded: {}",
        jobs.stdout
    );
}

/// Issue 20: an enrolled but hostile agent streams four times ping's
/// catalog cap of live output and answers with as much output and times
/// that cannot be (a start before 1970, a finish in 2100). The technician
/// watching sees at most the cap and a line saying it was cut; the stored
/// job keeps at most the cap, times inside the job's life, and a reason
/// that says what the collector changed.
#[tokio::test]
async fn a_hostile_agents_live_output_is_capped_and_its_forged_times_clamped() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let mut session = FakeSession::open(&collector, &agent, &["ping"]).await;
    let host = agent.host_id();
    let cap = deskpulse_proto::catalog::spec("ping")
        .expect("ping")
        .output_cap;
    let child = collector
        .cli_command(&alice, &["run", &host, "ping", "--param", "host=127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deskpulse run");
    let run = session.next_run().await;
    let line = format!("{}\n", "x".repeat(1023));
    for _ in 0..(4 * cap / 1024) {
        session.output(&run.job_id, &line).await;
    }
    session.seq += 1;
    session
        .tx
        .send(AgentMessage {
            kind: Some(Kind::Report(Report {
                sent_at_unix_ms: 0,
                spool_id: "fake".into(),
                seq: session.seq,
                held_from_seq: 0,
                collected_at_unix_ms: 1_764_000_000_000,
                payload: Some(Payload::DiagnosticResult(DiagnosticResult {
                    job_id: run.job_id.clone(),
                    diagnostic: "ping".into(),
                    outcome: DiagnosticOutcome::Completed as i32,
                    exit_code: 0,
                    output: line.repeat(4 * cap / 1024).into_bytes(),
                    started_at_unix_ms: -86_400_000,
                    finished_at_unix_ms: 4_102_444_800_000,
                    ..DiagnosticResult::default()
                })),
            })),
        })
        .await
        .expect("report");
    let out = finish(child).await;
    let live_bytes = out.stdout.matches('x').count();
    assert!(
        live_bytes <= cap,
        "{live_bytes} bytes of live output shown, over the cap of {cap}"
    );
    assert!(
        out.stdout.contains(&format!(
            "the collector cut the live output at the catalog cap of {cap} bytes"
        )),
        "{}",
        &out.stdout[out.stdout.len().saturating_sub(400)..]
    );
    let shown = collector
        .cli(&alice, &["--json", "job", "show", &run.job_id])
        .expect_code(0);
    let job: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    let stored = job["output"].as_str().unwrap_or("").len();
    assert!(
        stored <= cap,
        "{stored} bytes stored, over the cap of {cap}"
    );
    assert_eq!(job["truncated"], true, "{job}");
    let (created, started, finished) = (
        job["created_at"].as_str().unwrap_or(""),
        job["started_at"].as_str().unwrap_or(""),
        job["finished_at"].as_str().unwrap_or(""),
    );
    // RFC 3339 in UTC sorts as text.
    assert!(
        created <= started && started <= finished && !finished.starts_with("2100"),
        "created {created}, started {started}, finished {finished}"
    );
    let reason = job["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("collector: live output past the catalog cap was dropped")
            && reason.contains(&format!("kept the catalog cap of {cap}"))
            && reason.contains("were impossible; clamped"),
        "{reason}"
    );
}

/// Issue 21: `job show` and `job cancel` take a unique start of a job id,
/// as host commands take one of a host id.
#[tokio::test]
async fn job_commands_take_a_unique_start_of_the_job_id() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let queued = collector
        .cli(
            &alice,
            &["--json", "run", &host, "ping", "--param", "host=127.0.0.1"],
        )
        .expect_code(0);
    let job: serde_json::Value = serde_json::from_str(&queued.stdout).expect("json");
    let id = job["id"].as_str().expect("id").to_owned();

    let shown = collector
        .cli(&alice, &["--json", "job", "show", &id[..8].to_uppercase()])
        .expect_code(0);
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(shown["id"], id.as_str());
    let short = collector
        .cli(&alice, &["job", "show", &id[..3]])
        .expect_code(1);
    assert!(short.error_line().contains("too short"), "{}", short.stderr);
    let cancelled = collector
        .cli(&alice, &["--json", "job", "cancel", &id[..6]])
        .expect_code(0);
    let cancelled: serde_json::Value = serde_json::from_str(&cancelled.stdout).expect("json");
    assert_eq!(
        (cancelled["id"].as_str(), cancelled["state"].as_str()),
        (Some(id.as_str()), Some("cancelled"))
    );
}
