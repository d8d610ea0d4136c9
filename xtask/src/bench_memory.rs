//! `cargo xtask bench-memory`: what hostile inventories cost the collector
//! (issue 20, "bounded memory per agent").
//!
//! Starts a collector (`--collector-bin`, the release build by default) on
//! loopback with a fresh data dir, optionally puts `--normal` simulated
//! agents beside it (`cargo xtask loadgen` against it, in a child process),
//! then enrolls `--hostile` agents that each send `--rounds` full
//! inventories of `--hostile-packages` packages in parts, as an agent that
//! ignores the policy would, while a technician tags a host every 100 ms
//! through the API. Prints the collector's resident memory before the
//! hostile agents and its peak (VmHWM), how each hostile inventory was
//! answered, and the tag writes' latency (p50, p99, max). Everything stops
//! by itself; this is a benchmark (D34): it prints figures and asserts
//! nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::enrollment_client::EnrollmentClient;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::technician_client::TechnicianClient;
use deskpulse_proto::v1::{
    AgentMessage, EnrollRequest, Hello, Inventory, OsInfo, Package, Report, SetHostTagRequest,
    SoftwareInfo,
};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Flags of `cargo xtask bench-memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchMemoryArgs {
    /// The collector to run (default: target/release/deskpulse-collector).
    #[arg(long)]
    pub collector_bin: Option<PathBuf>,
    /// Hostile agents, each sending huge inventories.
    #[arg(long, default_value_t = 2)]
    pub hostile: usize,
    /// Packages in each hostile inventory.
    #[arg(long, default_value_t = 180_000)]
    pub hostile_packages: usize,
    /// Inventories each hostile agent sends, one after the other.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Normal simulated agents beside them (`loadgen`), 0 for none.
    #[arg(long, default_value_t = 0)]
    pub normal: usize,
    /// How long the normal agents' ramp is given before the hostile ones
    /// start.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
}

/// A collector this started; killed when dropped.
struct Running {
    child: Child,
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path) -> Result<Running> {
    let dir = tempfile::Builder::new()
        .prefix("deskpulse-bench-memory-")
        .tempdir()?;
    let data_dir = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("collector.log"))?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("collector stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let mut running = Running {
        child,
        _dir: dir,
        data_dir,
        url: String::new(),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow::anyhow!("the collector did not start"))?;
    running.url = format!("https://{addr}");
    Ok(running)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn token(bin: &Path, data_dir: &Path, uses: usize) -> Result<String> {
    let out = Command::new(bin)
        .args(["enroll-token", "create", "--uses", &uses.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("enroll-token create")?;
    if !out.status.success() {
        bail!(
            "enroll-token create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn endpoint(url: &str, ca: &str, identity: Option<Identity>) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Ok(Endpoint::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// Enrolls one agent: its identity and host name.
async fn enroll(url: &str, ca: &str, token: &str, index: usize) -> Result<(Identity, String)> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    let hostname = format!("hostile-{index}");
    let response = EnrollmentClient::new(endpoint(url, ca, None).await?)
        .enroll(EnrollRequest {
            token: token.to_owned(),
            csr_der: csr.der().to_vec(),
            hostname: hostname.clone(),
            hardware_uuid: String::new(),
            hardware_serial: format!("HOSTILE{index}"),
        })
        .await
        .map_err(|s| anyhow::anyhow!("enrolling a hostile agent: {}", s.message()))?
        .into_inner();
    Ok((
        Identity::from_pem(response.certificate_pem, key.serialize_pem()),
        hostname,
    ))
}

fn hostile_inventory(hostname: &str, packages: usize, round: u64) -> Inventory {
    Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        os: Some(OsInfo {
            hostname: hostname.to_owned(),
            name: "Debian GNU/Linux".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages: (0..packages)
                .map(|i| Package {
                    ecosystem: "dpkg".into(),
                    name: format!("p{i:06}"),
                    version: format!("{round}"),
                    ..Package::default()
                })
                .collect(),
            ..SoftwareInfo::default()
        }),
        ..Inventory::default()
    }
}

/// One hostile agent: `rounds` inventories, each answered before the
/// next; what each answer was.
async fn hostile(
    url: String,
    ca: String,
    identity: Identity,
    hostname: String,
    packages: usize,
    rounds: u64,
) -> Result<Vec<String>> {
    let channel = endpoint(&url, &ca, Some(identity)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(AgentMessage {
        kind: Some(Kind::Hello(Hello {
            agent_version: "bench-hostile".into(),
            inventory_schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
            health_interval_secs: 60,
            ..Hello::default()
        })),
    })
    .await?;
    let mut replies = AgentServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("session: {}", s.message()))?
        .into_inner();
    let mut answers = Vec::new();
    for round in 1..=rounds {
        let report = Report {
            spool_id: "hostile".into(),
            seq: round,
            held_from_seq: round,
            collected_at_unix_ms: 1_700_000_000_000 + i64::try_from(round).unwrap_or(0),
            sent_at_unix_ms: 0,
            payload: Some(Payload::Inventory(hostile_inventory(
                &hostname, packages, round,
            ))),
        };
        let sender = tx.clone();
        let parts = deskpulse_proto::parts::report_messages(report);
        tokio::spawn(async move {
            for part in parts {
                if sender.send(part).await.is_err() {
                    return;
                }
            }
        });
        let answer = loop {
            match replies.message().await {
                Ok(Some(message)) => match message.kind {
                    Some(Reply::Ack(_)) => break "stored".to_owned(),
                    Some(Reply::Rejected(r)) => break format!("rejected: {}", r.reason),
                    _ => {}
                },
                Ok(None) => break "stream closed".to_owned(),
                Err(status) => break format!("stream ended: {}", status.message()),
            }
        };
        let ended = answer.starts_with("stream");
        answers.push(answer);
        if ended {
            break;
        }
    }
    Ok(answers)
}

/// Tags a host every 100 ms until `stop`; each call's latency.
async fn technician_writes(
    url: String,
    ca: String,
    token: String,
    host: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<Duration>> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut client = TechnicianClient::with_interceptor(
        endpoint(&url, &ca, None).await?,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        },
    );
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        n += 1;
        let started = Instant::now();
        client
            .set_host_tag(SetHostTagRequest {
                host: host.clone(),
                key: "bench".into(),
                value: n.to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("tagging: {}", s.message()))?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its figures.
pub fn run(root: &Path, args: &BenchMemoryArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = args
        .collector_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/deskpulse-collector"));
    if !bin.exists() {
        bail!(
            "{} is missing; run cargo build --release -p deskpulse-collector --bins",
            bin.display()
        );
    }
    let collector = start(&bin)?;
    let pid = collector.child.id();
    let ca_path = collector.data_dir.join("ca.pem");
    let ca = std::fs::read_to_string(&ca_path).context("reading the collector's CA")?;
    let admin = std::fs::read_to_string(collector.data_dir.join("initial-admin-token"))
        .context("reading the initial admin token")?
        .trim()
        .to_owned();
    let hostile_token = token(&bin, &collector.data_dir, args.hostile.max(1))?;
    println!(
        "collector {} (pid {pid}), {} hostile agents x {} packages x {} rounds, {} normal agents",
        bin.display(),
        args.hostile,
        args.hostile_packages,
        args.rounds,
        args.normal
    );
    let mut fleet = None;
    if args.normal > 0 {
        let normal_token = token(&bin, &collector.data_dir, args.normal)?;
        let duration = args.ramp + Duration::from_secs(60);
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(std::env::temp_dir().join("bench-memory-loadgen.log"))?;
        fleet = Some(
            Command::new(exe)
                .args(["loadgen", "--skip-build", "--collector", &collector.url])
                .arg("--ca-file")
                .arg(&ca_path)
                .args(["--enroll-token", &normal_token])
                .args(["--agents", &args.normal.to_string()])
                .args(["--duration", &format!("{}s", duration.as_secs())])
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .context("starting loadgen")?,
        );
        std::thread::sleep(args.ramp);
    }
    let rss_before = status_kib(pid, "VmRSS:");
    let peak_before = status_kib(pid, "VmHWM:");

    let runtime = tokio::runtime::Runtime::new()?;
    let (answers, latencies, wall) = runtime.block_on(async {
        let mut enrolled = Vec::new();
        for index in 0..args.hostile {
            enrolled.push(enroll(&collector.url, &ca, &hostile_token, index).await?);
        }
        let tagged = enrolled
            .first()
            .map_or_else(|| "hostile-0".to_owned(), |(_, name)| name.clone());
        // A host to tag: the first hostile one, once it has said Hello.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (identity, hostname) in enrolled {
            tasks.push(tokio::spawn(hostile(
                collector.url.clone(),
                ca.clone(),
                identity,
                hostname,
                args.hostile_packages,
                args.rounds,
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let writes = tokio::spawn(technician_writes(
            collector.url.clone(),
            ca.clone(),
            admin.clone(),
            tagged,
            stop_rx,
        ));
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await??);
        }
        let wall = started.elapsed();
        // A few more writes after the last answer: the writer may still
        // be storing what was acknowledged last.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop_tx.send(true);
        let latencies = writes.await??;
        anyhow::Ok((answers, latencies, wall))
    })?;
    let peak = status_kib(pid, "VmHWM:");
    if let Some(mut fleet) = fleet {
        let _ = fleet.kill();
        let _ = fleet.wait();
    }
    let mut sorted = latencies;
    sorted.sort();
    println!(
        "collector RSS before the hostile agents {} MiB (peak so far {} MiB); peak after {} MiB",
        rss_before / 1024,
        peak_before / 1024,
        peak / 1024
    );
    for (i, answers) in answers.iter().enumerate() {
        for (round, answer) in answers.iter().enumerate() {
            println!("hostile agent {i}, inventory {}: {answer}", round + 1);
        }
    }
    println!(
        "hostile inventories answered in {:.1} s; technician tag writes meanwhile: {} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        wall.as_secs_f64(),
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    Ok(())
}
