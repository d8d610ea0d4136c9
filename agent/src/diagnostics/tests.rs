//! The executor against real programs and real sockets on loopback where
//! this machine can run them, the parsers on fixture text where it cannot
//! (no systemd, chrony, real disks or batteries here), and the refusals
//! fed to the executor by hand, bypassing the collector's checks.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::time::Duration;

use deskpulse_proto::v1::diagnostic_params::Kind;
use deskpulse_proto::v1::*;

use super::plan::{Native, Platform, Post, Step};
use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diagnostics");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture")
}

fn params(kind: Kind) -> DiagnosticParams {
    DiagnosticParams { kind: Some(kind) }
}

fn request(job: &str, params: DiagnosticParams) -> RunDiagnostic {
    RunDiagnostic {
        job_id: job.to_owned(),
        params: Some(params),
        expires_at_unix_ms: now_ms() + 600_000,
    }
}

fn ping(host: &str, count: u32) -> DiagnosticParams {
    params(Kind::Ping(PingParams {
        host: host.into(),
        count,
    }))
}

/// The agent's default `disk_usage` roots, as a config without the key has.
fn default_roots() -> Vec<String> {
    crate::config::DEFAULT_DISK_USAGE_ROOTS
        .iter()
        .map(|r| (*r).to_owned())
        .collect()
}

struct Fixture {
    _state: tempfile::TempDir,
    executor: Executor,
}

fn executor_with(root: &Path, enabled: Vec<&'static str>) -> Fixture {
    let state = tempfile::tempdir().expect("temp dir");
    let (executor, interrupted) = Executor::open(
        state.path(),
        Context {
            system_root: root.to_path_buf(),
            // The tests' servers listen on loopback.
            http_allow_loopback: true,
            disk_usage_roots: default_roots(),
        },
        enabled,
    );
    assert!(interrupted.is_empty());
    Fixture {
        _state: state,
        executor,
    }
}

fn executor() -> Fixture {
    executor_with(Path::new("/"), catalog::default_enabled())
}

fn outcome(result: &DiagnosticResult) -> DiagnosticOutcome {
    DiagnosticOutcome::try_from(result.outcome).expect("known outcome")
}

fn text(result: &DiagnosticResult) -> String {
    String::from_utf8_lossy(&result.output).into_owned()
}

/// Waits for `job`'s result, recording each result as the session does;
/// returns it with the live chunks seen for it.
async fn wait_for(ex: &mut Executor, job: &str) -> (DiagnosticResult, Vec<DiagnosticOutput>) {
    let mut chunks = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(120), ex.next_event())
            .await
            .expect("a result within two minutes");
        match event {
            Event::Output(chunk) => chunks.push(chunk),
            Event::Done(result) => {
                let more = ex.recorded(&result);
                assert!(more.is_empty(), "{more:?}");
                if result.job_id == job {
                    while let Ok(chunk) = ex.output_rx.try_recv() {
                        chunks.push(chunk);
                    }
                    chunks.retain(|c| c.job_id == job);
                    return (result, chunks);
                }
            }
        }
    }
}

async fn run(ex: &mut Executor, job: &str, p: DiagnosticParams) -> DiagnosticResult {
    match ex.submit(request(job, p)) {
        Some(answer) => answer,
        None => wait_for(ex, job).await.0,
    }
}

fn assert_refused(result: &DiagnosticResult, needle: &str) {
    assert_eq!(outcome(result), DiagnosticOutcome::Refused, "{result:?}");
    assert!(result.reason.contains(needle), "{:?}", result.reason);
    assert!(
        !result.reason.contains('\n'),
        "one line: {:?}",
        result.reason
    );
    assert!(result.reason.len() < 400, "short: {:?}", result.reason);
    assert!(result.output.is_empty());
}

// ---- refusals: nothing runs ----

#[tokio::test]
async fn a_diagnostic_disabled_by_config_is_refused_even_sent_directly() {
    let mut f = executor();
    let restart = params(Kind::RestartService(RestartServiceParams {
        service: "cups.service".into(),
    }));
    let answer = f
        .executor
        .submit(request("job-1", restart))
        .expect("answered");
    assert_refused(
        &answer,
        "restart_service is disabled in this agent's config",
    );
    // A read-only one this agent's config switched off.
    let mut enabled = catalog::default_enabled();
    enabled.retain(|id| *id != "ping");
    let mut f2 = executor_with(Path::new("/"), enabled);
    let answer = f2
        .executor
        .submit(request("job-2", ping("127.0.0.1", 1)))
        .expect("answered");
    assert_refused(&answer, "ping is disabled");
    assert_eq!(f.executor.started_count() + f2.executor.started_count(), 0);
}

#[tokio::test]
async fn expired_or_undated_requests_are_refused() {
    let mut f = executor();
    let mut old = request("job-1", ping("127.0.0.1", 1));
    old.expires_at_unix_ms = now_ms() - 5_000;
    assert_refused(&f.executor.submit(old).expect("answered"), "expired");
    let mut undated = request("job-2", ping("127.0.0.1", 1));
    undated.expires_at_unix_ms = 0;
    assert_refused(&f.executor.submit(undated).expect("answered"), "no expiry");
    let empty = RunDiagnostic {
        job_id: "job-3".into(),
        params: Some(DiagnosticParams { kind: None }),
        expires_at_unix_ms: now_ms() + 60_000,
    };
    assert_refused(
        &f.executor.submit(empty).expect("answered"),
        "no diagnostic",
    );
    assert_eq!(f.executor.started_count(), 0);
}

#[tokio::test]
async fn injection_attempts_are_refused_and_nothing_runs() {
    let mut f = executor();
    let huge = "a".repeat(1024 * 1024);
    let attempts: Vec<(DiagnosticParams, &str)> = vec![
        (ping("8.8.8.8; rm -rf /", 1), "not a host name"),
        (ping("$(id)", 1), "not a host name"),
        (ping("`id`", 1), "not a host name"),
        (ping("127.0.0.1\0-f", 1), "NUL"),
        (ping("-f", 1), "not a host name"),
        (ping(&huge, 1), "longer than"),
        (ping("127.0.0.1", 11), "count must be between 1 and 10"),
        (
            ping("127.0.0.1", u32::MAX),
            "count must be between 1 and 10",
        ),
        (
            params(Kind::DiskUsage(DiskUsageParams {
                path: "../../etc/shadow".into(),
                depth: 1,
            })),
            "must be absolute",
        ),
        (
            params(Kind::DiskUsage(DiskUsageParams {
                path: "/tmp/../../etc/shadow".into(),
                depth: 1,
            })),
            "may not contain . or ..",
        ),
        (
            params(Kind::DiskUsage(DiskUsageParams {
                path: "/etc/shadow".into(),
                depth: 1,
            })),
            "is a secret store",
        ),
        (
            params(Kind::ServiceStatus(ServiceStatusParams {
                service: "cups; reboot".into(),
            })),
            "must be 1-128 characters",
        ),
        (
            params(Kind::ServiceStatus(ServiceStatusParams {
                service: "--help".into(),
            })),
            "must be 1-128 characters",
        ),
        (
            params(Kind::LogErrors(LogErrorsParams {
                count: 10,
                filter: "$(id)".into(),
                hours: 1,
            })),
            "filter",
        ),
        (
            params(Kind::TopProcesses(TopProcessesParams {
                count: 1_000_000,
                sort_by: String::new(),
            })),
            "count must be between 1 and 50",
        ),
        (
            params(Kind::HttpCheck(HttpCheckParams {
                url: "http://example.com/`id`".into(),
            })),
            "backticks",
        ),
        (
            params(Kind::DnsLookup(DnsLookupParams {
                name: "example.com".into(),
                record_type: "ANY".into(),
                server: "127.0.0.1; id".into(),
                server_port: 53,
            })),
            "type",
        ),
        (
            params(Kind::SmartReport(SmartReportParams {
                device: "/dev/../etc/shadow".into(),
            })),
            "must be a disk",
        ),
    ];
    for (i, (p, needle)) in attempts.into_iter().enumerate() {
        let answer = f
            .executor
            .submit(request(&format!("job-{i}"), p))
            .expect("answered at once");
        assert_refused(&answer, needle);
        assert!(answer.reason.starts_with("parameters refused: "));
    }
    // A negative count cannot even be written in the typed message; from
    // text it is refused by the same catalog the CLI uses.
    let error = catalog::parse(
        "ping",
        &[("host".into(), "x".into()), ("count".into(), "-1".into())],
    )
    .expect_err("negative");
    assert!(error.contains("negative"), "{error}");
    assert_eq!(f.executor.started_count(), 0, "no job ran");
    assert_eq!(f.executor.running_count(), 0);
}

#[tokio::test]
async fn every_refusal_is_answered_and_past_the_hourly_budget_briefly() {
    let mut f = executor();
    let mut answers = Vec::new();
    for i in 0..(REFUSALS_PER_HOUR + 50) {
        let answer = f
            .executor
            .submit(request(&format!("job-{i}"), ping("$(id)", 1)))
            .expect("every refusal gets its final answer");
        assert_eq!(answer.outcome(), DiagnosticOutcome::Refused);
        answers.push(answer.reason);
    }
    let budget = REFUSALS_PER_HOUR as usize;
    assert!(
        answers[..budget]
            .iter()
            .all(|r| r.contains("parameters refused")),
        "{:?}",
        &answers[..3]
    );
    assert!(
        answers[budget..].iter().all(|r| r
            == &format!("refused: this PC has refused more than {REFUSALS_PER_HOUR} diagnostic requests this hour")),
        "{:?}",
        &answers[budget..budget + 1]
    );
    assert_eq!(f.executor.started_count(), 0);
}

#[tokio::test]
async fn a_malformed_job_id_is_ignored() {
    let mut f = executor();
    assert!(
        f.executor
            .submit(request("bad id\n", ping("127.0.0.1", 1)))
            .is_none()
    );
    assert!(
        f.executor
            .submit(request("", ping("127.0.0.1", 1)))
            .is_none()
    );
    assert_eq!(f.executor.started_count(), 0);
}

// ---- redelivery and restarts ----

#[tokio::test]
async fn a_job_delivered_again_is_not_run_twice_even_after_a_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = u32::from(listener.local_addr().expect("addr").port());
    let connect = || {
        params(Kind::TcpConnect(TcpConnectParams {
            host: "127.0.0.1".into(),
            port,
        }))
    };
    let state = tempfile::tempdir().expect("temp dir");
    let context = Context {
        system_root: "/".into(),
        http_allow_loopback: true,
        disk_usage_roots: default_roots(),
    };
    let (mut ex, _) = Executor::open(state.path(), context.clone(), catalog::default_enabled());
    let first = run(&mut ex, "job-1", connect()).await;
    assert_eq!(outcome(&first), DiagnosticOutcome::Completed);
    assert!(ex.submit(request("job-1", connect())).is_none());
    assert_eq!(ex.started_count(), 1);
    drop(ex);
    let (mut ex, interrupted) = Executor::open(state.path(), context, catalog::default_enabled());
    assert!(interrupted.is_empty());
    assert!(
        ex.submit(request("job-1", connect())).is_none(),
        "remembered across a restart"
    );
    assert_eq!(ex.started_count(), 0);
}

#[tokio::test]
async fn a_job_cut_off_by_a_restart_is_answered_failed_not_rerun() {
    let state = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        state.path().join("jobs"),
        "S job-1 restart_service\nS job-0 ping\nF job-0\nS job-2 ping\nF job-2\nS job-3 pin",
    )
    .expect("write");
    let context = Context {
        system_root: "/".into(),
        http_allow_loopback: true,
        disk_usage_roots: default_roots(),
    };
    let (mut ex, interrupted) =
        Executor::open(state.path(), context.clone(), catalog::default_enabled());
    let ids: Vec<(&str, &str)> = interrupted
        .iter()
        .map(|r| (r.job_id.as_str(), r.diagnostic.as_str()))
        .collect();
    // job-3's line is torn: its fsync never returned, so it never ran.
    assert_eq!(ids, [("job-1", "restart_service")], "{interrupted:?}");
    for r in &interrupted {
        assert_eq!(outcome(r), DiagnosticOutcome::Failed);
        assert!(r.reason.contains("not run again"));
    }
    assert!(ex.submit(request("job-1", ping("127.0.0.1", 1))).is_none());
    drop(ex);
    // Answered once: the next start has nothing left to answer.
    let (_, again) = Executor::open(state.path(), context, catalog::default_enabled());
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn the_journal_compacts_and_keeps_the_newest_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut journal, _) = journal::Journal::open(dir.path());
    for i in 0..(journal::KEEP * 2 + 10) {
        let job = format!("job-{i}");
        journal.started(&job, "ping").expect("write");
        journal.finished(&job).expect("write");
    }
    let lines = std::fs::read_to_string(dir.path().join("jobs"))
        .expect("read")
        .lines()
        .count();
    assert!(lines <= journal::KEEP * 4 + 1, "{lines}");
    let (journal, interrupted) = journal::Journal::open(dir.path());
    assert!(interrupted.is_empty());
    assert!(journal.contains(&format!("job-{}", journal::KEEP * 2 + 9)));
    assert!(!journal.contains("job-0"));
}

// ---- live: programs on loopback ----

#[cfg(not(windows))]
fn require(program: &str, package: &str) -> bool {
    if run::which(program).is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{program} is missing, and CI runs every test; `cargo xtask provision` installs {package}"
    );
    eprintln!(
        "SKIPPED: {program} is not installed (`cargo xtask provision` installs {package}, as root)"
    );
    false
}

// iputils' ping: its summary line and one echo a second. Windows' ping.exe
// words it differently, and Wine's does not wait between echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(not(windows))]
async fn ping_loopback_streams_live_output() {
    if !require("ping", "iputils-ping") {
        return;
    }
    let mut f = executor();
    assert!(
        f.executor
            .submit(request("job-1", ping("127.0.0.1", 2)))
            .is_none()
    );
    let (result, chunks) = wait_for(&mut f.executor, "job-1").await;
    assert_eq!(outcome(&result), DiagnosticOutcome::Completed, "{result:?}");
    assert_eq!(result.exit_code, 0, "{}", text(&result));
    assert!(
        text(&result).contains("2 packets transmitted, 2 received"),
        "{}",
        text(&result)
    );
    assert!(!chunks.is_empty(), "output streamed live");
    let live: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(live, result.output, "the live chunks add up to the result");
    let seqs: Vec<u32> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=chunks.len() as u32).collect::<Vec<_>>());
    assert!(result.started_at_unix_ms <= result.finished_at_unix_ms);
    assert_eq!(result.diagnostic, "ping");
}

// iputils' tracepath; Windows runs tracert.exe, which Wine does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn tracepath_to_loopback() {
    if !require("tracepath", "iputils-tracepath") {
        return;
    }
    let mut f = executor();
    let p = params(Kind::Traceroute(TracerouteParams {
        host: "127.0.0.1".into(),
        max_hops: 3,
    }));
    let result = run(&mut f.executor, "job-1", p).await;
    assert_eq!(outcome(&result), DiagnosticOutcome::Completed, "{result:?}");
    assert!(text(&result).contains("127.0.0.1"), "{}", text(&result));
    assert_eq!(result.exit_code, 0, "{}", text(&result));
}

// Needs a ping that takes seconds to cancel halfway: Wine's ping.exe sends
// all its echoes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(not(windows))]
async fn cancel_kills_a_running_diagnostic_and_drops_a_queued_one() {
    if !require("ping", "iputils-ping") {
        return;
    }
    let mut f = executor();
    let ex = &mut f.executor;
    // Ten pings take nine seconds; two run and the third waits.
    for job in ["job-1", "job-2", "job-3"] {
        assert!(ex.submit(request(job, ping("127.0.0.1", 10))).is_none());
    }
    assert_eq!((ex.running_count(), ex.queued_count()), (2, 1));
    let queued = ex
        .cancel("job-3")
        .expect("a queued job is answered at once");
    assert_eq!(outcome(&queued), DiagnosticOutcome::Cancelled);
    assert!(
        ex.cancel("no-such-job").is_none(),
        "unknown ids are ignored"
    );
    // Cancel once job-1 has printed something: it is really running.
    let started = std::time::Instant::now();
    loop {
        match ex.next_event().await {
            Event::Output(chunk) if chunk.job_id == "job-1" => break,
            Event::Output(_) => {}
            Event::Done(r) => panic!("finished early: {r:?}"),
        }
    }
    assert!(ex.cancel("job-1").is_none());
    assert!(ex.cancel("job-2").is_none());
    // Both results, in whichever order they finish.
    let mut done = Vec::new();
    while done.len() < 2 {
        if let Event::Done(result) = ex.next_event().await {
            assert!(ex.recorded(&result).is_empty());
            done.push(result);
        }
    }
    done.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    assert_eq!(
        outcome(&done[0]),
        DiagnosticOutcome::Cancelled,
        "{:?}",
        done[0]
    );
    assert!(!done[0].output.is_empty(), "what it printed before is kept");
    assert_eq!(
        outcome(&done[1]),
        DiagnosticOutcome::Cancelled,
        "{:?}",
        done[1]
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "killed, not waited out"
    );
    assert_eq!(ex.running_count(), 0);
    assert_eq!(
        ex.started_count(),
        2,
        "the cancelled queued job never started"
    );
}

/// A job with a test-made spec: the executor's timeout and cap, without a
/// production knob to shorten them.
#[cfg(not(windows))]
async fn run_with_spec(spec: &'static Spec, p: DiagnosticParams) -> DiagnosticResult {
    let job = super::Job {
        job_id: "job-1".into(),
        params: p,
        spec,
        context: Context {
            system_root: "/".into(),
            http_allow_loopback: true,
            disk_usage_roots: default_roots(),
        },
        token: CancellationToken::new(),
        live: None,
    };
    job.run().await
}

// Needs a ping that is still running at the timeout: Wine's ping.exe sends
// all its echoes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(not(windows))]
async fn the_timeout_and_the_output_cap_are_enforced() {
    if !require("ping", "iputils-ping") {
        return;
    }
    let base = catalog::spec("ping").expect("ping");
    let short: &'static Spec = Box::leak(Box::new(Spec {
        timeout: Duration::from_millis(1500),
        ..*base
    }));
    let started = std::time::Instant::now();
    let result = run_with_spec(short, ping("127.0.0.1", 10)).await;
    assert_eq!(outcome(&result), DiagnosticOutcome::TimedOut, "{result:?}");
    assert!(result.reason.contains("timeout"), "{}", result.reason);
    assert!(text(&result).contains("127.0.0.1"), "output so far is kept");
    assert!(started.elapsed() < Duration::from_secs(6));

    let small: &'static Spec = Box::leak(Box::new(Spec {
        output_cap: 100,
        ..*base
    }));
    let result = run_with_spec(small, ping("127.0.0.1", 10)).await;
    assert_eq!(result.output.len(), 100, "{}", text(&result));
    assert!(result.truncated);
    assert!(result.reason.contains("cap"), "{}", result.reason);
    assert_eq!(outcome(&result), DiagnosticOutcome::Completed);
}

// ---- live: native diagnostics on loopback ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connect_to_an_open_and_a_closed_port() {
    let mut f = executor();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = u32::from(listener.local_addr().expect("addr").port());
    let open = params(Kind::TcpConnect(TcpConnectParams {
        host: "127.0.0.1".into(),
        port,
    }));
    let result = run(&mut f.executor, "job-1", open).await;
    assert_eq!(
        (outcome(&result), result.exit_code),
        (DiagnosticOutcome::Completed, 0)
    );
    assert!(
        text(&result).contains(&format!("connected to 127.0.0.1:{port} in")),
        "{}",
        text(&result)
    );
    drop(listener);
    let closed = params(Kind::TcpConnect(TcpConnectParams {
        host: "127.0.0.1".into(),
        port,
    }));
    let result = run(&mut f.executor, "job-2", closed).await;
    assert_eq!(
        (outcome(&result), result.exit_code),
        (DiagnosticOutcome::Completed, 1)
    );
    assert!(
        text(&result).to_lowercase().contains("refused"),
        "{}",
        text(&result)
    );
}

/// Serves one HTTP request with `reply`, handing back what it received.
fn http_server(reply: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(reply.as_bytes()).expect("reply");
        String::from_utf8_lossy(&got).into_owned()
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_against_a_loopback_server() {
    let mut f = executor();
    let (port, server) = http_server(
        "HTTP/1.1 503 Service Unavailable\r\nServer: test-server\r\nContent-Length: 0\r\n\r\n",
    );
    let p = params(Kind::HttpCheck(HttpCheckParams {
        url: format!("http://127.0.0.1:{port}/health?full=1"),
    }));
    let result = run(&mut f.executor, "job-1", p).await;
    let request = server.join().expect("server");
    assert!(
        request.starts_with("GET /health?full=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{request}"
    );
    let out = text(&result);
    assert_eq!(outcome(&result), DiagnosticOutcome::Completed);
    assert!(
        out.contains("HTTP/1.1 503 Service Unavailable (answered in"),
        "{out}"
    );
    assert!(out.contains("server: test-server"), "{out}");
    assert_eq!(result.exit_code, 1, "a 5xx is a failed check");

    let (port, server) = http_server("HTTP/1.1 204 No Content\r\n\r\n");
    let p = params(Kind::HttpCheck(HttpCheckParams {
        url: format!("http://127.0.0.1:{port}"),
    }));
    let result = run(&mut f.executor, "job-2", p).await;
    assert!(server.join().expect("server").starts_with("GET / HTTP/1.1"));
    assert_eq!(result.exit_code, 0, "{}", text(&result));
}

/// Runs `http_check` of `url` on an agent whose config leaves loopback
/// refused (the default).
async fn http_check_by_default(url: &str) -> DiagnosticResult {
    let state = tempfile::tempdir().expect("state");
    let context = Context {
        system_root: "/".into(),
        http_allow_loopback: false,
        disk_usage_roots: default_roots(),
    };
    let (mut ex, _) = Executor::open(state.path(), context, catalog::default_enabled());
    let p = params(Kind::HttpCheck(HttpCheckParams { url: url.into() }));
    run(&mut ex, "job-ssrf", p).await
}

// Issue 20: a collector must not reach what listens only on the PC or a
// cloud metadata service, by address or by a name that resolves to one;
// nothing is connected to (the listener would see the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_refuses_loopback_link_local_and_metadata_after_resolution() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://127.1.2.3:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://100.100.100.200/".to_owned(),
    ] {
        let result = http_check_by_default(&url).await;
        assert_eq!(
            result.outcome(),
            DiagnosticOutcome::Failed,
            "{url}: {result:?}"
        );
        assert!(
            result.reason.starts_with("refused: ")
                && result.reason.contains("http_check does not connect to"),
            "{url}: {}",
            result.reason
        );
    }
    assert!(
        listener.accept().is_err(),
        "nothing connected to the loopback listener"
    );
    // The documented setting lets loopback through, and only loopback.
    let mut f = executor();
    let (port, server) = http_server("HTTP/1.1 200 OK\r\n\r\n");
    let p = params(Kind::HttpCheck(HttpCheckParams {
        url: format!("http://localhost:{port}/"),
    }));
    let result = run(&mut f.executor, "job-allowed", p).await;
    server.join().expect("server");
    assert_eq!(result.exit_code, 0, "{}", text(&result));
    let p = params(Kind::HttpCheck(HttpCheckParams {
        url: "http://169.254.169.254/".into(),
    }));
    let result = run(&mut f.executor, "job-metadata", p).await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Failed, "{result:?}");
    assert!(
        !result.reason.contains("http_check_allow_loopback"),
        "{}",
        result.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_never_echoes_a_banner_that_is_not_http() {
    let mut f = executor();
    for (n, banner) in [
        "SSH-2.0-OpenSSH_9.6 secret-build-7\r\n\r\n",
        "220 mail.corp.example ESMTP Postfix (internal-relay-3)\r\n\r\n",
        "HTTP/1.1 secret-banner\r\n\r\n",
        "HTTP/9.9 200 secret\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let (port, server) = http_server(banner);
        let p = params(Kind::HttpCheck(HttpCheckParams {
            url: format!("http://127.0.0.1:{port}/"),
        }));
        let result = run(&mut f.executor, &format!("job-banner-{n}"), p).await;
        server.join().expect("server");
        let out = text(&result);
        assert!(out.contains("not an HTTP response"), "{banner:?}: {out}");
        assert!(
            !out.contains("secret") && !out.contains("OpenSSH") && !out.contains("Postfix"),
            "{banner:?} echoed: {out}"
        );
        assert_eq!(result.exit_code, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_an_untrusted_certificate_reports_the_error_and_the_expiry() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut cert_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    cert_params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let cert = cert_params.self_signed(&key).expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).expect("conn");
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                break;
            }
        }
    });
    let mut f = executor();
    let p = params(Kind::HttpCheck(HttpCheckParams {
        url: format!("https://localhost:{port}/"),
    }));
    let result = run(&mut f.executor, "job-1", p).await;
    server.join().expect("server");
    let out = text(&result);
    assert_eq!(outcome(&result), DiagnosticOutcome::Completed, "{result:?}");
    assert_eq!(result.exit_code, 1);
    assert!(out.contains("TLS handshake failed"), "{out}");
    assert!(
        out.contains("UnknownIssuer") || out.contains("no trusted CA"),
        "{out}"
    );
    assert!(
        out.contains("expires 2031-05-17 00:00:00 UTC (in "),
        "{out}"
    );
    assert!(
        out.contains("subject CN=rcgen self signed cert, issuer CN=rcgen self signed cert"),
        "{out}"
    );
}

#[test]
fn a_certificate_names_its_subject_and_escapes_what_a_hostile_server_put_in_it() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example Ltd");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "evil\x1b[2J\u{7}.example");
    params.distinguished_name.push(
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 97]),
        rcgen::DnValue::PrintableString("VATDE-123".try_into().expect("printable")),
    );
    params.not_after = rcgen::date_time_ymd(2030, 1, 2);
    let cert = params.self_signed(&key).expect("cert");
    let line = http::describe_certificate(cert.der(), 1_893_456_000 - 86_400);
    assert_eq!(
        line,
        "certificate: subject O=Example Ltd, CN=evil\\1b[2J\\07.example, 2.5.4.97=VATDE-123, \
         issuer O=Example Ltd, CN=evil\\1b[2J\\07.example, 2.5.4.97=VATDE-123, \
         expires 2030-01-02 00:00:00 UTC (in 2 days)"
    );
}

#[test]
fn a_certificate_that_cannot_be_read_is_named_so() {
    for der in [&b""[..], b"\x30\x03abc", b"not DER at all"] {
        let line = http::describe_certificate(der, 0);
        assert!(
            line.starts_with("certificate: cannot be parsed ("),
            "{line}"
        );
    }
}

/// Answers one DNS query with an A record 192.0.2.7 (and MX for type 15).
fn dns_server() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, peer) = socket.recv_from(&mut buf).expect("query");
        let query = buf[..n].to_vec();
        let qtype = u16::from_be_bytes([query[n - 4], query[n - 3]]);
        let mut answer = query.clone();
        answer[2] = 0x81;
        answer[3] = 0x80;
        answer[7] = 1; // one answer
        answer.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        answer.extend_from_slice(&qtype.to_be_bytes());
        answer.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        if qtype == 15 {
            // preference 10, exchange "mx" + pointer to the question name
            answer.extend_from_slice(&[0, 7, 0, 10, 2, b'm', b'x', 0xC0, 0x0C]);
        } else {
            answer.extend_from_slice(&[0, 4, 192, 0, 2, 7]);
        }
        socket.send_to(&answer, peer).expect("answer");
        query
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lookup_through_a_given_server_and_the_system_resolver() {
    let mut f = executor();
    let (port, server) = dns_server();
    let p = params(Kind::DnsLookup(DnsLookupParams {
        name: "printer.corp.example".into(),
        record_type: "A".into(),
        server: "127.0.0.1".into(),
        server_port: u32::from(port),
    }));
    let result = run(&mut f.executor, "job-1", p).await;
    let query = server.join().expect("server");
    assert!(
        query.windows(7).any(|w| w == b"printer"),
        "the name was asked"
    );
    let out = text(&result);
    assert!(
        out.contains(&format!(
            "printer.corp.example A from 127.0.0.1:{port}: NOERROR"
        )),
        "{out}"
    );
    assert!(out.contains("printer.corp.example 60 A 192.0.2.7"), "{out}");
    assert_eq!(result.exit_code, 0);

    let (port, server) = dns_server();
    let p = params(Kind::DnsLookup(DnsLookupParams {
        name: "corp.example".into(),
        record_type: "MX".into(),
        server: "127.0.0.1".into(),
        server_port: u32::from(port),
    }));
    let result = run(&mut f.executor, "job-2", p).await;
    server.join().expect("server");
    assert!(
        text(&result).contains("corp.example 60 MX 10 mx.corp.example"),
        "{}",
        text(&result)
    );

    let p = params(Kind::DnsLookup(DnsLookupParams {
        name: "localhost".into(),
        ..DnsLookupParams::default()
    }));
    let result = run(&mut f.executor, "job-3", p).await;
    let out = text(&result);
    assert!(out.contains("localhost via the system resolver"), "{out}");
    assert!(
        out.contains("A 127.0.0.1") || out.contains("AAAA ::1"),
        "{out}"
    );
    assert_eq!(result.exit_code, 0);
}

// Native on Linux (/proc/net); on Windows this runs netstat.exe, whose
// plan `windows_and_macos_plans_cover_the_catalog` checks, and Wine's
// netstat lists no listening sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn listening_ports_show_our_own_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut f = executor();
    let result = run(
        &mut f.executor,
        "job-1",
        params(Kind::ListeningPorts(ListeningPortsParams {})),
    )
    .await;
    let out = text(&result);
    let line = out
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("our listener is listed: {out}"));
    assert!(line.starts_with("tcp"), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
}

// Native on Linux (/proc); on Windows this runs a PowerShell cmdlet, and
// Wine's powershell.exe is a stub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn top_processes_by_cpu_and_by_memory() {
    let mut f = executor();
    let by_memory = params(Kind::TopProcesses(TopProcessesParams {
        count: 3,
        sort_by: "memory".into(),
    }));
    let result = run(&mut f.executor, "job-1", by_memory).await;
    let out = text(&result);
    assert!(out.contains("top 3 by memory"), "{out}");
    let rss: Vec<f64> = out
        .lines()
        .skip(2)
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|v| v.parse().ok())
                .expect("rss")
        })
        .collect();
    assert_eq!(rss.len(), 3, "{out}");
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "sorted: {out}");
    let result = run(
        &mut f.executor,
        "job-2",
        params(Kind::TopProcesses(TopProcessesParams::default())),
    )
    .await;
    assert!(text(&result).contains("top 10 by CPU"), "{}", text(&result));
}

// Native on Linux (/proc, resolv.conf); on Windows this is ipconfig.exe
// and route.exe, in the words of Windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn network_config_lists_interfaces_routes_and_dns() {
    let mut f = executor();
    let result = run(
        &mut f.executor,
        "job-1",
        params(Kind::NetworkConfig(NetworkConfigParams {})),
    )
    .await;
    let out = text(&result);
    for part in [
        "interfaces:",
        "routes (IPv4):",
        "default gateways:",
        "dns servers:",
    ] {
        assert!(out.contains(part), "{part}: {out}");
    }
    assert_eq!(result.exit_code, 0);
}

// Linux disks (/sys/block) and smartctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn smart_report_runs_smartctl_on_every_whole_disk() {
    if !require("smartctl", "smartmontools") {
        return;
    }
    let disks = crate::collect::health::smart_devices(Path::new("/"));
    if disks.is_empty() {
        eprintln!("SKIPPED: no whole disk under /sys/block");
        return;
    }
    let mut f = executor();
    let result = run(
        &mut f.executor,
        "job-1",
        params(Kind::SmartReport(SmartReportParams::default())),
    )
    .await;
    let out = text(&result);
    assert_eq!(outcome(&result), DiagnosticOutcome::Completed, "{result:?}");
    // One smartctl run and one summary line per disk, whatever the disk
    // is (our virtio disk cannot be assessed, and says so).
    for disk in &disks {
        assert!(out.contains(&format!("\"{disk}\"")), "{disk}: {out}");
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("summary: ")).count(),
        disks.len(),
        "{out}"
    );
}

// apt; on Windows this is the Windows Update agent through PowerShell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn pending_updates_asks_the_package_manager() {
    // apt reads its local lists; nothing leaves the machine.
    if run::which("apt").is_none() {
        eprintln!("SKIPPED: no apt here");
        return;
    }
    let mut f = executor();
    let result = run(
        &mut f.executor,
        "job-1",
        params(Kind::PendingUpdates(PendingUpdatesParams {})),
    )
    .await;
    assert_eq!(
        (outcome(&result), result.exit_code),
        (DiagnosticOutcome::Completed, 0)
    );
    assert!(text(&result).contains("Listing..."), "{}", text(&result));
}

// ---- disk usage and clear_temp under a fixture root (D13) ----

#[cfg(unix)]
fn write(root: &Path, rel: &str, bytes: usize) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(path, vec![7u8; bytes]).expect("write");
}

#[cfg(unix)]
fn age(root: &Path, rel: &str, days: u64) {
    let file = std::fs::File::options()
        .write(true)
        .open(root.join(rel))
        .expect("open");
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(days * 86_400))
        .expect("mtime");
}

// Unix only: the fixture tree holds a symlink, which Windows makes only
// with privilege.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn disk_usage_totals_directories_and_never_follows_links() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    write(r, "home/alice/videos/a.mp4", 3 << 20);
    write(r, "home/alice/docs/b.txt", 100 << 10);
    write(r, "elsewhere/huge.bin", 8 << 20);
    std::os::unix::fs::symlink(r.join("elsewhere"), r.join("home/alice/link")).expect("link");
    let mut f = executor_with(r, catalog::default_enabled());
    let p = params(Kind::DiskUsage(DiskUsageParams {
        path: "/home/alice".into(),
        depth: 1,
    }));
    let result = run(&mut f.executor, "job-1", p).await;
    let out = text(&result);
    let dirs: Vec<&str> = out.lines().filter(|l| l.contains("/home/alice/")).collect();
    assert!(
        dirs[0].ends_with("/home/alice/videos") && dirs[0].contains("MiB"),
        "{out}"
    );
    assert!(dirs[1].ends_with("/home/alice/docs"), "{out}");
    // Below the filesystem line, whose free space is this machine's own
    // (11.8 GiB free once failed this).
    let tree: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        !tree
            .iter()
            .any(|l| l.contains("8.0 MiB") || l.contains("11.")),
        "the link was not followed: {out}"
    );
    assert!(out.starts_with("filesystem: "), "{out}");

    let p = params(Kind::DiskUsage(DiskUsageParams {
        path: "/home/alice/link".into(),
        depth: 1,
    }));
    let result = run(&mut f.executor, "job-2", p).await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Failed, "{result:?}");
    assert!(
        result.reason.contains(
            "resolves to /elsewhere; refused: path \"/elsewhere\" is not under this agent's disk_usage_roots"
        ),
        "{}",
        result.reason
    );
    assert_eq!(result.output, b"", "nothing listed");
}

/// Runs `disk_usage` of `path` under the system root `root`.
#[cfg(unix)]
async fn disk_usage_of(root: &Path, path: &str) -> DiagnosticResult {
    let mut f = executor_with(root, catalog::default_enabled());
    let p = params(Kind::DiskUsage(DiskUsageParams {
        path: path.into(),
        depth: 2,
    }));
    run(&mut f.executor, "job-escape", p).await
}

// The issue-20 escapes: a trailing `/` on a link, a link in the middle of
// the path, and links to secret stores, each in a real temp tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn disk_usage_cannot_escape_its_roots_through_links() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    write(r, "root/.ssh/id_ed25519", 400);
    write(r, "etc/ssl/private/server.key", 1700);
    write(r, "run/secret.sock", 10);
    write(r, "home/alice/docs/a.txt", 10);
    write(r, "home/alice/.ssh/id_rsa", 3000);
    std::fs::create_dir_all(r.join("var")).expect("var");
    std::fs::create_dir_all(r.join("etc/ssl/certs")).expect("certs");
    // Absolute targets inside the system root, relative ones too.
    symlink("../../root", r.join("home/alice/rootlink")).expect("link");
    symlink("../run", r.join("var/run")).expect("link");
    symlink("../../etc/ssl", r.join("home/alice/ssl")).expect("link");
    for (path, resolved) in [
        ("/home/alice/rootlink/", "/root"),
        ("/home/alice/rootlink", "/root"),
        ("/var/run/", "/run"),
        ("/home/alice/ssl/private", "/etc/ssl/private"),
        ("/home/alice/ssl/private/", "/etc/ssl/private"),
    ] {
        let result = disk_usage_of(r, path).await;
        assert_eq!(
            result.outcome(),
            DiagnosticOutcome::Failed,
            "{path}: {result:?}"
        );
        assert!(
            result
                .reason
                .contains(&format!("resolves to {resolved}; refused")),
            "{path}: {}",
            result.reason
        );
        let out = String::from_utf8_lossy(&result.output);
        assert!(
            !out.contains("id_ed25519") && !out.contains("server.key") && !out.contains("secret"),
            "{path} listed: {out}"
        );
    }
    // A secret store under an allowed root is refused outright, and a walk
    // that meets one skips it.
    let result = disk_usage_of(r, "/home/alice/.ssh/").await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Refused, "{result:?}");
    assert!(result.reason.contains("secret store"), "{}", result.reason);
    let result = disk_usage_of(r, "/home/").await;
    let out = text(&result);
    assert_eq!(result.outcome(), DiagnosticOutcome::Completed, "{result:?}");
    assert!(out.contains("/home/alice/docs"), "{out}");
    assert!(!out.contains(".ssh"), "{out}");
    assert!(out.contains("1 secret stores skipped"), "{out}");
}

// A full disk's ticket names its mount point, `/` most often, which is
// never a root itself: the roots on its filesystem are shown instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn disk_usage_of_a_mount_point_above_the_roots_shows_the_roots_on_it() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    write(r, "var/log/huge.log", 4 << 20);
    write(r, "home/alice/video.mp4", 2 << 20);
    write(r, "etc/shadow", 1000);
    write(r, "root/.ssh/id_ed25519", 400);
    let result = disk_usage_of(r, "/").await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Completed, "{result:?}");
    let out = text(&result);
    assert!(
        out.contains(
            "/ is not under this agent's disk_usage_roots; showing the roots on its filesystem: "
        ),
        "{out}"
    );
    let listed: Vec<&str> = out.lines().filter(|l| l.contains("iB  /")).collect();
    assert!(listed[0].ends_with("/var/log"), "{out}");
    assert!(out.contains("/home/alice"), "{out}");
    assert!(
        !out.contains("/etc") && !out.contains("/root") && !out.contains("shadow"),
        "only the roots are walked: {out}"
    );
    // A directory above no root is still refused.
    let result = disk_usage_of(r, "/etc").await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Failed, "{result:?}");
    assert!(
        result
            .reason
            .contains("not under this agent's disk_usage_roots"),
        "{}",
        result.reason
    );
}

/// `disk_usage` of `path` under `root` with the given roots.
#[cfg(unix)]
async fn disk_usage_with_roots(root: &Path, roots: &[&str], path: &str) -> DiagnosticResult {
    let state = tempfile::tempdir().expect("state");
    let context = Context {
        system_root: root.to_path_buf(),
        http_allow_loopback: false,
        disk_usage_roots: roots.iter().map(|r| (*r).to_owned()).collect(),
    };
    let (mut ex, _) = Executor::open(state.path(), context, catalog::default_enabled());
    let p = params(Kind::DiskUsage(DiskUsageParams {
        path: path.into(),
        depth: 1,
    }));
    run(&mut ex, "job-roots", p).await
}

// Issue 21: /usr, where a full root filesystem's space often is, is listed
// by default; the roots are the agent's setting, checked on the resolved
// path, and secret stores stay refused under any root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn disk_usage_roots_are_the_agents_setting_checked_after_resolving() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    write(r, "usr/lib/big.so", 2 << 20);
    write(r, "usr/share/doc/readme", 10);
    write(r, "etc/ssh/ssh_host_ed25519_key", 400);
    write(r, "etc/app/conf", 10);
    write(r, "srv/shares/a.bin", 1 << 20);
    symlink("../etc", r.join("usr/etc-link")).expect("link");
    symlink("srv/shares", r.join("shares")).expect("link");

    let result = disk_usage_with_roots(
        r,
        &default_roots()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "/usr",
    )
    .await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Completed, "{result:?}");
    assert!(text(&result).contains("/usr/lib"), "{}", text(&result));

    // A link out of the roots is refused once resolved.
    let result = disk_usage_with_roots(r, &["/usr"], "/usr/etc-link").await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Failed, "{result:?}");
    assert!(
        result.reason.contains(
            "/usr/etc-link resolves to /etc; refused: path \"/etc\" is not under this agent's disk_usage_roots (/usr)"
        ),
        "{}",
        result.reason
    );
    // A path outside the configured roots is refused, inside them listed,
    // and a link into them is followed to its real place.
    let result = disk_usage_with_roots(r, &["/srv/shares"], "/usr").await;
    assert!(
        result
            .reason
            .contains("refused: path \"/usr\" is not under"),
        "{}",
        result.reason
    );
    let result = disk_usage_with_roots(r, &["/srv/shares"], "/shares").await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Completed, "{result:?}");
    assert!(
        text(&result).contains("/shares resolves to /srv/shares"),
        "{}",
        text(&result)
    );
    // Even "/" as a root never lists a secret store.
    let result = disk_usage_with_roots(r, &["/"], "/etc/ssh").await;
    assert_eq!(result.outcome(), DiagnosticOutcome::Refused, "{result:?}");
    let result = disk_usage_with_roots(r, &["/"], "/etc").await;
    let out = text(&result);
    assert_eq!(result.outcome(), DiagnosticOutcome::Completed, "{result:?}");
    assert!(out.contains("/etc/app") && !out.contains("ssh"), "{out}");
    assert!(out.contains("1 secret stores skipped"), "{out}");
}

/// Mounts a tmpfs of `size` at `dir`; false (and says so) when this
/// machine refuses.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).expect("dir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: mount -t tmpfs was refused here (needs root)");
    }
    ok
}

fn umount(dir: &Path) {
    let _ = std::process::Command::new("umount").arg(dir).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_usage_of_a_full_filesystem() {
    let root = tempfile::tempdir().expect("root");
    let mount = root.path().join("data/share");
    if !mount_tmpfs(&mount, "1m") {
        return;
    }
    // Fill it to the last block.
    let mut file = std::fs::File::create(mount.join("fill.bin")).expect("create");
    let block = vec![1u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    drop(file);
    let mut f = executor_with(root.path(), catalog::default_enabled());
    let p = params(Kind::DiskUsage(DiskUsageParams {
        path: "/data/share".into(),
        depth: 1,
    }));
    let result = run(&mut f.executor, "job-1", p).await;
    umount(&mount);
    let out = text(&result);
    assert!(
        out.starts_with("filesystem: 1.0 MiB total, 1.0 MiB used (100%), 0 B available"),
        "{out}"
    );
    assert!(out.contains("/data/share/fill.bin"), "{out}");
}

// clear_temp itself is Unix only (it walks with openat and no-follow flags).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn clear_temp_deletes_only_old_regular_files_under_the_system_root() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    write(r, "tmp/old.log", 1000);
    age(r, "tmp/old.log", 10);
    write(r, "tmp/new.log", 10);
    write(r, "tmp/deep/er/old.bin", 2000);
    age(r, "tmp/deep/er/old.bin", 30);
    write(r, "var/tmp/old.tmp", 500);
    age(r, "var/tmp/old.tmp", 8);
    write(r, "precious/keep.db", 10);
    age(r, "precious/keep.db", 100);
    std::os::unix::fs::symlink(r.join("precious"), r.join("tmp/dir-link")).expect("link");
    std::os::unix::fs::symlink(r.join("precious/keep.db"), r.join("tmp/file-link")).expect("link");
    let mounted = mount_tmpfs(&r.join("tmp/mnt"), "1m");
    if mounted {
        write(r, "tmp/mnt/other-fs.log", 10);
        age(r, "tmp/mnt/other-fs.log", 100);
    }
    // Off by default: enabled here, as an admin would in the config.
    let mut enabled = catalog::default_enabled();
    enabled.push("clear_temp");
    let mut f = executor_with(r, enabled);
    let p = params(Kind::ClearTemp(ClearTempParams { older_than_days: 7 }));
    let result = run(&mut f.executor, "job-1", p).await;
    let other_fs_kept = !mounted || r.join("tmp/mnt/other-fs.log").exists();
    if mounted {
        umount(&r.join("tmp/mnt"));
    }
    let out = text(&result);
    assert_eq!(
        (outcome(&result), result.exit_code),
        (DiagnosticOutcome::Completed, 0),
        "{out}"
    );
    assert!(
        out.contains("/tmp: deleted 2 files (2.9 KiB) older than 7 days"),
        "{out}"
    );
    assert!(out.contains("/var/tmp: deleted 1 files (500 B)"), "{out}");
    assert!(!r.join("tmp/old.log").exists() && !r.join("tmp/deep/er/old.bin").exists());
    assert!(!r.join("var/tmp/old.tmp").exists());
    assert!(r.join("tmp/new.log").exists(), "young files stay");
    assert!(
        r.join("precious/keep.db").exists(),
        "links are not followed"
    );
    assert!(
        r.join("tmp/dir-link").symlink_metadata().is_ok()
            && r.join("tmp/file-link").symlink_metadata().is_ok()
    );
    assert!(r.join("tmp/deep/er").is_dir(), "directories stay");
    assert!(other_fs_kept, "another filesystem is not crossed");
}

// ---- fixtures: what our VMs cannot run ----

// Linux's /sys/class/power_supply; on Windows this is WMI through
// PowerShell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(target_os = "linux")]
async fn battery_report_reads_power_supply_under_the_root() {
    let root = tempfile::tempdir().expect("root");
    let bat = root.path().join("sys/class/power_supply/BAT0");
    std::fs::create_dir_all(&bat).expect("dirs");
    for (file, value) in [
        ("type", "Battery"),
        ("manufacturer", "LGC"),
        ("model_name", "5B10W13930"),
        ("energy_full_design", "57000000"),
        ("energy_full", "45600000"),
        ("cycle_count", "412"),
        ("capacity", "81"),
    ] {
        std::fs::write(bat.join(file), format!("{value}\n")).expect("write");
    }
    std::fs::create_dir_all(root.path().join("sys/class/power_supply/AC")).expect("ac");
    std::fs::write(
        root.path().join("sys/class/power_supply/AC/type"),
        "Mains\n",
    )
    .expect("ac");
    let mut f = executor_with(root.path(), catalog::default_enabled());
    let result = run(
        &mut f.executor,
        "job-1",
        params(Kind::BatteryReport(BatteryReportParams {})),
    )
    .await;
    let out = text(&result);
    assert_eq!(
        out.trim(),
        "BAT0: LGC 5B10W13930 charge 81% health 80% (45600 of 57000 mWh design) cycles 412"
    );
}

// The zone comes from etc/localtime's symlink into zoneinfo, as on Unix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(unix)]
async fn clock_status_always_reports_the_clock_and_zone() {
    let root = tempfile::tempdir().expect("root");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::os::unix::fs::symlink(
        "/usr/share/zoneinfo/Europe/Berlin",
        root.path().join("etc/localtime"),
    )
    .expect("link");
    let mut f = executor_with(root.path(), catalog::default_enabled());
    let result = run(
        &mut f.executor,
        "job-1",
        params(Kind::ClockStatus(ClockStatusParams {})),
    )
    .await;
    let out = text(&result);
    assert!(out.contains("system clock: 20"), "{out}");
    assert!(out.contains("time zone: Europe/Berlin"), "{out}");
}

#[test]
fn parsers_read_fixture_output() {
    let journal = fixture("journal-err.txt");
    let lines = parse::log_filter(&journal, "ATA1.00: EXCEPTION", 5);
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with("2026-12-01T08:02:31"));
    let all = parse::log_filter(&journal, "", 3);
    assert_eq!(all.len(), 3, "the boot marker is not a line");
    assert!(all[0].contains("Failed to start cups.service"));
    assert!(parse::log_filter(&journal, "nothing-like-this", 5).is_empty());

    assert_eq!(
        parse::systemctl_active(&fixture("systemctl-status-cups.txt")).as_deref(),
        Some("failed (Result: exit-code) since Mon 2026-12-01 07:55:10 CET; 2h 3min ago")
    );
    assert_eq!(
        parse::timedatectl(&fixture("timedatectl-status.txt")).as_deref(),
        Some("synchronized no, NTP service inactive, time zone Europe/Berlin (CET, +0100)")
    );
    assert_eq!(
        parse::chronyc(&fixture("chronyc-tracking.txt")).as_deref(),
        Some(
            "reference C0A80101 (gateway.corp.example), system time 0.000012345 seconds fast of NTP time, leap status Normal"
        )
    );
    let smart_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smart");
    let read = |f: &str| std::fs::read_to_string(Path::new(smart_dir).join(f)).expect("fixture");
    assert!(
        parse::smart(&read("nvme.json"))
            .expect("summary")
            .contains(": PASSED")
    );
    assert!(
        parse::smart(&read("sata-failing.json"))
            .expect("summary")
            .contains(": FAILED")
    );
    assert!(
        parse::smart(&read("virtio-unsupported.json"))
            .expect("summary")
            .contains("not assessed (")
    );
    assert_eq!(parse::utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(parse::utc(1_954_800_000), "2031-12-12 00:00:00 UTC");
    assert_eq!(parse::utc(951_782_400), "2000-02-29 00:00:00 UTC");
}

#[test]
fn proc_net_tables_and_process_stats_parse() {
    let tcp = parse::proc_net(&fixture("proc-net-tcp.txt"), false);
    assert_eq!(tcp.len(), 3);
    assert_eq!(tcp[0].local.to_string(), "127.0.0.53:53");
    assert_eq!((tcp[0].uid, tcp[0].inode), (101, 18721));
    assert!(parse::listening(&tcp[1], true));
    assert!(
        !parse::listening(&tcp[2], true),
        "an established connection"
    );
    assert_eq!(tcp[2].local.to_string(), "10.0.0.2:53924");
    let tcp6 = parse::proc_net(&fixture("proc-net-tcp6.txt"), true);
    assert_eq!(tcp6[0].local.to_string(), "[::1]:631");
    let udp = parse::proc_net(&fixture("proc-net-udp.txt"), false);
    assert!(parse::listening(&udp[0], false));
    assert!(!parse::listening(&udp[1], false), "a connected UDP socket");
    assert_eq!(parse::socket_inode("socket:[24510]"), Some(24510));
    assert_eq!(parse::socket_inode("pipe:[1]"), None);

    let stat = "4242 (Web Content (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 30 0 5000 1234567 2048 18446744073709551615";
    assert_eq!(
        parse::proc_stat(stat),
        Some(parse::ProcStat {
            pid: 4242,
            name: "Web Content (x)".into(),
            ticks: 175,
            rss_pages: 2048,
        })
    );
    let routes = parse::routes(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\neth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
    );
    assert_eq!(routes[0].destination, "0.0.0.0/0");
    assert_eq!(routes[0].gateway.to_string(), "10.0.0.1");
    assert_eq!(routes[1].destination, "10.0.0.0/24");
}

#[test]
fn dns_messages_round_trip_and_bad_ones_are_errors() {
    let q = dns::build_query(0x1234, "Example.COM.", 28);
    assert_eq!(&q[..2], &[0x12, 0x34]);
    assert_eq!(&q[12..25], b"\x07Example\x03COM\x00");
    assert_eq!(&q[25..], &[0, 28, 0, 1]);
    assert!(
        dns::parse_response(&q, 0x1234).is_err(),
        "a query is not a response"
    );
    assert!(dns::parse_response(&[0x12, 0x34, 0x81], 0x1234).is_err());
    // A pointer to itself must not loop.
    let mut looped = q.clone();
    looped[2] = 0x81;
    looped[7] = 1;
    looped.extend_from_slice(&[0xC0, 25 + 4]);
    looped.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert!(dns::parse_response(&looped, 0x1234).is_err());
}

// ---- plans: argv per platform ----

fn no_tools(_: &str) -> bool {
    false
}

fn argv_of(steps: &[Step]) -> Vec<Vec<String>> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Program { argv, .. } => Some(argv.clone()),
            Step::Native(_) => None,
        })
        .collect()
}

#[test]
fn linux_plans_put_operands_after_double_dash() {
    let root = Path::new("/");
    let linux =
        |p: DiagnosticParams| plan::plan(&p, Platform::Linux, root, &no_tools).expect("plan");
    assert_eq!(
        argv_of(&linux(ping("pc-01.corp.example", 0))),
        [[
            "ping",
            "-n",
            "-c",
            "4",
            "-W",
            "2",
            "--",
            "pc-01.corp.example"
        ]]
    );
    assert_eq!(
        argv_of(&linux(params(Kind::Traceroute(TracerouteParams {
            host: "10.0.0.1".into(),
            max_hops: 0,
        })))),
        [["tracepath", "-n", "-m", "20", "--", "10.0.0.1"]]
    );
    assert_eq!(
        argv_of(&linux(params(Kind::ServiceStatus(ServiceStatusParams {
            service: "cups.service".into(),
        })))),
        [
            vec!["systemctl", "status", "--no-pager", "--", "cups.service"],
            vec![
                "journalctl",
                "--unit=cups.service",
                "-n",
                "20",
                "--no-pager"
            ],
        ]
    );
    let logs = linux(params(Kind::LogErrors(LogErrorsParams {
        count: 5,
        filter: "usb".into(),
        hours: 2,
    })));
    assert_eq!(
        argv_of(&logs),
        [[
            "journalctl",
            "-p",
            "err",
            "-n",
            "10000",
            "--since=-2h",
            "--no-pager",
            "-o",
            "short-iso"
        ]]
    );
    assert!(matches!(
        &logs[0],
        Step::Program { post: Post::LogFilter { filter, count: 5 }, .. } if filter == "usb"
    ));
    assert_eq!(
        argv_of(&linux(params(Kind::RestartService(RestartServiceParams {
            service: "cups".into(),
        }))))[0],
        ["systemctl", "restart", "--", "cups"]
    );
    assert_eq!(
        linux(params(Kind::ClearTemp(ClearTempParams::default()))),
        [Step::Native(Native::ClearTemp {
            days: 7,
            dirs: vec!["tmp", "var/tmp"],
        })]
    );
    let updates = |tool: &'static str| {
        let have = move |p: &str| p == tool;
        argv_of(
            &plan::plan(
                &params(Kind::PendingUpdates(PendingUpdatesParams {})),
                Platform::Linux,
                root,
                &have,
            )
            .expect("plan"),
        )
    };
    assert_eq!(updates("apt"), [["apt", "list", "--upgradable"]]);
    assert_eq!(updates("dnf"), [["dnf", "-q", "check-update"]]);
    assert!(
        plan::plan(
            &params(Kind::PendingUpdates(PendingUpdatesParams {})),
            Platform::Linux,
            root,
            &no_tools,
        )
        .expect_err("none")
        .contains("no supported package manager")
    );
}

#[test]
fn dhcp_renewal_picks_the_first_tool_that_applies() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    for (name, state) in [("eth0", "up"), ("wlan0", "down"), ("lo", "up")] {
        std::fs::create_dir_all(r.join("sys/class/net").join(name)).expect("dir");
        std::fs::write(r.join("sys/class/net").join(name).join("operstate"), state).expect("w");
    }
    let ifaces = plan::dhcp_interfaces(r, "");
    assert_eq!(ifaces, ["eth0"], "up and not loopback");
    assert_eq!(plan::dhcp_interfaces(r, "wlan0"), ["wlan0"]);
    let all = |_: &str| true;
    // networkctl is installed on our VMs, but networkd does not run.
    assert_eq!(
        argv_of(&plan::linux_dhcp(r, &ifaces, &all).expect("plan")),
        [["nmcli", "device", "reapply", "eth0"]]
    );
    std::fs::create_dir_all(r.join("run/systemd/netif/links")).expect("networkd");
    assert_eq!(
        argv_of(&plan::linux_dhcp(r, &ifaces, &all).expect("plan")),
        [["networkctl", "renew", "--", "eth0"]]
    );
    let dhclient = |p: &str| p == "dhclient";
    assert_eq!(
        argv_of(&plan::linux_dhcp(r, &ifaces, &dhclient).expect("plan")),
        [["dhclient", "-r", "eth0"], ["dhclient", "-1", "eth0"]]
    );
    assert!(plan::linux_dhcp(r, &ifaces, &no_tools).is_err());
    assert!(plan::linux_dhcp(r, &[], &all).is_err());
}

/// Every catalog entry with sample parameters, checked.
fn samples() -> Vec<DiagnosticParams> {
    let pairs: &[(&str, &[(&str, &str)])] = &[
        ("ping", &[("host", "10.0.0.1")]),
        ("traceroute", &[("host", "10.0.0.1")]),
        ("dns_lookup", &[("name", "corp.example")]),
        ("tcp_connect", &[("host", "10.0.0.1"), ("port", "443")]),
        ("http_check", &[("url", "https://intranet.corp.example/")]),
        ("network_config", &[]),
        ("listening_ports", &[]),
        ("top_processes", &[("sort", "memory")]),
        ("disk_usage", &[("path", "/home")]),
        ("service_status", &[("service", "Spooler")]),
        ("log_errors", &[("filter", "disk")]),
        ("pending_updates", &[]),
        ("smart_report", &[("device", "/dev/sda")]),
        ("battery_report", &[]),
        ("clock_status", &[]),
        ("restart_service", &[("service", "Spooler")]),
        ("flush_dns", &[]),
        ("clear_temp", &[]),
        ("renew_dhcp", &[("interface", "en0")]),
    ];
    assert_eq!(
        pairs.len(),
        catalog::CATALOG.len(),
        "every diagnostic has a sample"
    );
    pairs
        .iter()
        .map(|(id, kv)| {
            let kv: Vec<(String, String)> =
                kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            catalog::parse(id, &kv).expect("sample parses")
        })
        .collect()
}

#[test]
fn windows_and_macos_plans_cover_the_catalog() {
    for platform in [Platform::Windows, Platform::Macos, Platform::Linux] {
        for p in samples() {
            let id = catalog::id_of(&p);
            match plan::plan(&p, platform, Path::new("/"), &no_tools) {
                Ok(steps) => {
                    assert!(!steps.is_empty(), "{platform:?} {id}");
                    for argv in argv_of(&steps) {
                        assert!(!argv[0].is_empty() && !argv[0].contains(' '), "{argv:?}");
                    }
                }
                Err(error) => {
                    // What cannot run says so in one line.
                    assert!(!error.contains('\n'), "{error}");
                    let expected = matches!(
                        (platform, id),
                        (Platform::Windows, "clear_temp")
                            | (
                                Platform::Linux,
                                "pending_updates" | "flush_dns" | "renew_dhcp"
                            )
                    );
                    assert!(expected, "{platform:?} {id}: {error}");
                }
            }
        }
    }
    let windows = |p: DiagnosticParams| {
        argv_of(&plan::plan(&p, Platform::Windows, Path::new("/"), &no_tools).expect("plan"))
    };
    assert_eq!(
        windows(ping("10.0.0.1", 2)),
        [["ping.exe", "-n", "2", "-w", "2000", "10.0.0.1"]]
    );
    let restart = windows(params(Kind::RestartService(RestartServiceParams {
        service: "Spooler".into(),
    })));
    assert_eq!(
        restart[0][..4],
        [
            "powershell.exe",
            "-NoProfile",
            "-NonInteractive",
            "-Command"
        ]
    );
    assert!(restart[0][4].starts_with("Restart-Service -Name 'Spooler' -Force"));
    let macos = |p: DiagnosticParams| {
        argv_of(&plan::plan(&p, Platform::Macos, Path::new("/"), &no_tools).expect("plan"))
    };
    assert_eq!(
        macos(ping("10.0.0.1", 0)),
        [[
            "/sbin/ping",
            "-n",
            "-c",
            "4",
            "-W",
            "2000",
            "--",
            "10.0.0.1"
        ]]
    );
    assert_eq!(
        macos(params(Kind::ServiceStatus(ServiceStatusParams {
            service: "com.apple.cupsd".into(),
        }))),
        [["/bin/launchctl", "print", "system/com.apple.cupsd"]]
    );
}

#[test]
fn sink_caps_and_drops_live_chunks_rather_than_block() {
    let (tx, mut rx) = mpsc::channel(1);
    let mut sink = Sink::new("job-1", 10, Some(tx));
    sink.write(b"hello ");
    sink.write(b"world!");
    sink.write(b"more");
    assert_eq!(sink.output(), b"hello worl");
    assert!(sink.truncated);
    // The queue held one chunk; the second was dropped, never waited for.
    assert_eq!(rx.try_recv().expect("first").data, b"hello ");
    assert!(rx.try_recv().is_err());
}
