//! Diagnostic round trip (issue "Remote diagnostics"): a technician's
//! `RunDiagnostic` to an online agent on loopback and back, with the real
//! release binaries: the collector, an enrolled `deskpulse-agent run`, and
//! this process as the CLI. Per run it measures the time to the first
//! output at the client and to the final stored result, less the
//! diagnostic's own run time as the agent measured it. Targets: p99 under
//! 50 ms, first output within 200 ms.
//!
//! `cargo build --release --bins && cargo bench -p deskpulse-collector --bench diagnostic_roundtrip`
//! (`DESKPULSE_BENCH_RUNS` sets the number of runs, default 1000).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deskpulse_proto::v1::job_event::Kind as Event;
use deskpulse_proto::v1::technician_client::TechnicianClient;
use deskpulse_proto::v1::{DiagnosticParam, RunDiagnosticRequest};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn release_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --bins` first",
        path.display()
    );
    path
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let runs: usize = std::env::var("DESKPULSE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("collector");
    let state = dir.path().join("agent");
    let collector_bin = release_bin("deskpulse-collector");
    let mut child = Command::new(&collector_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the collector");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let _collector = Killed(child);
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening ADDR")
        .to_owned();
    let token = output(
        Command::new(&collector_bin)
            .args(["enroll-token", "create", "--data-dir"])
            .arg(&data),
    );
    output(
        Command::new(release_bin("deskpulse-agent"))
            .args([
                "enroll",
                "--collector",
                &format!("https://{addr}"),
                "--token",
                &token,
                "--ca-file",
            ])
            .arg(data.join("ca.pem"))
            .arg("--state-dir")
            .arg(&state),
    );
    let _agent = Killed(
        Command::new(release_bin("deskpulse-agent"))
            .args(["run", "--state-dir"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent service"),
    );
    let api = output(
        Command::new(&collector_bin)
            .args([
                "token",
                "create",
                "--role",
                "technician",
                "--name",
                "bench",
                "--data-dir",
            ])
            .arg(&data),
    );
    let enrollment =
        std::fs::read_to_string(state.join("enrollment.toml")).expect("enrollment.toml");
    let host = toml::from_str::<toml::Table>(&enrollment)
        .ok()
        .and_then(|t| t.get("host_id").and_then(|v| v.as_str()).map(str::to_owned))
        .expect("the agent's host id in enrollment.toml");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let ca = std::fs::read_to_string(data.join("ca.pem")).expect("ca.pem");
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .expect("url")
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .expect("tls")
            .connect()
            .await
            .expect("connect");
        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {api}").parse().expect("header");
        let mut client = TechnicianClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
        // A trivial native diagnostic: a TCP connect to the collector itself.
        let port = addr.rsplit(':').next().unwrap_or("0").to_owned();
        let request = || RunDiagnosticRequest {
            host: host.clone(),
            diagnostic: "tcp_connect".into(),
            params: vec![
                DiagnosticParam { key: "host".into(), value: "127.0.0.1".into() },
                DiagnosticParam { key: "port".into(), value: port.clone() },
            ],
            ..RunDiagnosticRequest::default()
        };
        // Wait for the agent to connect: its first runs may find it offline.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut stream = client.run_diagnostic(request()).await.expect("run").into_inner();
            let mut last = None;
            while let Some(event) = stream.message().await.expect("event") {
                if let Some(Event::Job(job)) = event.kind {
                    last = Some(job);
                }
            }
            if last.is_some_and(|j| j.state == "completed") {
                break;
            }
            assert!(Instant::now() < deadline, "the agent did not come online");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut round_trips = Vec::with_capacity(runs);
        let mut first_outputs = Vec::with_capacity(runs);
        let mut own = Vec::with_capacity(runs);
        let started = Instant::now();
        for _ in 0..runs {
            let t0 = Instant::now();
            let mut stream = client.run_diagnostic(request()).await.expect("run").into_inner();
            let mut first = None;
            let mut last = None;
            while let Some(event) = stream.message().await.expect("event") {
                match event.kind {
                    Some(Event::Output(_)) => {
                        first.get_or_insert_with(|| t0.elapsed());
                    }
                    Some(Event::Job(job)) if job.finished_at_unix_ms > 0 => last = Some(job),
                    _ => {}
                }
            }
            let total = t0.elapsed();
            let job = last.expect("a finished job");
            assert_eq!(job.state, "completed", "{job:?}");
            let own_ms = (job.finished_at_unix_ms - job.started_at_unix_ms).max(0) as f64;
            own.push(own_ms);
            round_trips.push((total.as_secs_f64() * 1000.0 - own_ms).max(0.0));
            first_outputs.push(first.unwrap_or(total).as_secs_f64() * 1000.0);
        }
        let took = started.elapsed().as_secs_f64();
        for v in [&mut round_trips, &mut first_outputs, &mut own] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "diagnostic round trip, tcp_connect on a loopback agent, {runs} runs in {took:.1}s ({:.0} runs/s):",
            runs as f64 / took
        );
        println!(
            "  round trip less the diagnostic's own time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 50 ms)",
            percentile(&round_trips, 0.5),
            percentile(&round_trips, 0.99),
            round_trips.last().copied().unwrap_or(0.0)
        );
        println!(
            "  first output at the client: p50 {:.1} ms, p99 {:.1} ms (target < 200 ms)",
            percentile(&first_outputs, 0.5),
            percentile(&first_outputs, 0.99)
        );
        println!(
            "  the diagnostic's own run time on the agent: p50 {:.1} ms, p99 {:.1} ms",
            percentile(&own, 0.5),
            percentile(&own, 0.99)
        );
    });
}
