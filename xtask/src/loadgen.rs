//! `cargo xtask loadgen`: simulates a fleet of agents against a collector and
//! prints what it achieved (issue 8, "Scale").
//!
//! Each simulated agent is enrolled through the real Enrollment RPC (its own
//! P-256 key and CSR, a multi-use enrollment token), then holds its own
//! mutual-TLS connection and one `AgentService.Session` stream, like a real
//! agent: a Hello, a first full inventory, then a health sample every
//! `--health-interval` (with a jittered start) and now and then an inventory
//! delta (made with [`deskpulse_proto::delta::diff`], so its hashes match).
//! `--disconnect-percent` of the agents drop their connection once during the
//! steady state and reconnect; those are planned and not errors.
//!
//! It measures the achieved report rate, report→Ack latency per report,
//! errors (anything that is not an Ack, plus reports never acknowledged), and
//! for a collector it started itself, the collector's CPU seconds, peak RSS
//! and the store's size on disk. The ramp (enrollment, connections and first
//! inventories acknowledged) is reported apart from the steady state.
//!
//! All agents run in this one process: one connection is one file, and a
//! process here may open about 19,000 files, which is the ceiling of one
//! run. Splitting over worker processes is not built.
//!
//! This is a benchmark (D34): it prints figures and is not part of the test
//! suite.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Incoming;
use deskpulse_proto::v1::enrollment_client::EnrollmentClient;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, CpuInfo, Disk, DiskKind, EnrollRequest, Filesystem, FilesystemUsage, Goodbye,
    GoodbyeReason, HealthSample, Hello, Inventory, MemoryInfo, NetworkInfo, NetworkInterface,
    OsInfo, Package, Report, SoftwareInfo, StorageInfo, SystemInfo,
};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Flags of `cargo xtask loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// How many agents to simulate.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// How long the steady state lasts, after the ramp (e.g. 30s, 2m).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How often each agent sends a health sample (e.g. 1s, 60s).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// Packages in each agent's first inventory.
    #[arg(long, default_value_t = 1000)]
    pub packages: usize,
    /// An existing collector (https://HOST:PORT); otherwise one is started.
    #[arg(long, requires_all = ["ca_file", "enroll_token"])]
    pub collector: Option<String>,
    /// The fleet CA (PEM) of `--collector`.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A multi-use enrollment token for `--collector` (at least N uses).
    #[arg(long)]
    pub enroll_token: Option<String>,
    /// Passed as `--database` to the collector this starts.
    #[arg(long)]
    pub database: Option<String>,
    /// Do not run `cargo build --release -p deskpulse-collector --bins`.
    #[arg(long)]
    pub skip_build: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Share of agents (0-100) that drop and reconnect once during the
    /// steady state.
    #[arg(long, default_value_t = 0.0)]
    pub disconnect_percent: f64,
    /// How many enrollments and handshakes run at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Each health tick, the chance (0-1) that an agent also sends an
    /// inventory delta.
    #[arg(long, default_value_t = 0.02)]
    pub delta_chance: f64,
}

/// The collector this started, killed on drop.
struct OwnCollector {
    child: Child,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for OwnCollector {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the ")" of the command name: state is field 3, utime 14.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn start_collector(root: &Path, args: &LoadgenArgs) -> Result<(OwnCollector, String, String)> {
    if !args.skip_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "deskpulse-collector", "--bins"])
            .current_dir(root)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p deskpulse-collector --bins failed");
        }
    }
    let bin = root.join("target/release/deskpulse-collector");
    if !bin.exists() {
        bail!(
            "{} is missing; run cargo build --release -p deskpulse-collector --bins",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("deskpulse-loadgen-")
        .tempdir()?;
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("collector.log");
    let log = std::fs::File::create(&log_path)?;
    let mut serve = Command::new(&bin);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir);
    if let Some(db) = &args.database {
        serve.args(["--database", db]);
    }
    let mut child = serve
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting deskpulse-collector serve")?;
    let stdout = child.stdout.take().context("collector stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let own = OwnCollector {
        child,
        data_dir: data_dir.clone(),
        _dir: dir,
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .with_context(|| format!("the collector did not start; see {}", log_path.display()))?;
    // One token per 10,000 uses (the collector's bound per token).
    let mut tokens = Vec::new();
    let mut left = args.agents;
    while left > 0 {
        let uses = left.min(10_000);
        let mut create = Command::new(&bin);
        create
            .args(["enroll-token", "create", "--uses", &uses.to_string()])
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(db) = &args.database {
            create.args(["--database", db]);
        }
        let out = create.output().context("enroll-token create")?;
        if !out.status.success() {
            bail!(
                "enroll-token create failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tokens.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        left -= uses;
    }
    Ok((own, format!("https://{addr}"), tokens.join(",")))
}

/// Shared counters of a run.
#[derive(Default)]
struct Stats {
    enrolled: AtomicUsize,
    connected: AtomicUsize,
    first_inventories: AtomicUsize,
    failed_agents: AtomicUsize,
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    retries: AtomicU64,
    deltas: AtomicU64,
    error_kinds: Mutex<HashMap<String, u64>>,
    /// (steady?, kind, microseconds from send to Ack).
    latencies: Mutex<Vec<(bool, u8, u32)>>,
    steady_start: OnceLock<Instant>,
    stop: AtomicBool,
}

const INVENTORY: u8 = 0;
const HEALTH: u8 = 1;
const DELTA: u8 = 2;

impl Stats {
    fn error(&self, kind: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kinds) = self.error_kinds.lock() {
            *kinds.entry(kind.to_owned()).or_default() += 1;
        }
    }
    fn steady(&self, at: Instant) -> bool {
        self.steady_start.get().is_some_and(|s| at >= *s)
    }
}

/// One enrolled simulated agent.
struct Agent {
    index: usize,
    identity: Identity,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A deterministic package list for agent `index` at generation `generation`:
/// most agents share most packages, as in a real fleet; each generation bumps
/// a few versions and adds one package.
fn packages(index: usize, generation: u32, count: usize) -> Vec<Package> {
    let names = [
        "lib", "python3-", "gir1.2-", "fonts-", "linux-", "gnome-", "x11-", "perl-",
    ];
    let mut out: Vec<Package> = (0..count)
        .map(|k| {
            // A fleet-wide pool of names, with a per-agent slice of variety.
            let id = if k % 10 == 0 {
                k + index % 7 * count
            } else {
                k
            };
            let prefix = names[id % names.len()];
            Package {
                ecosystem: "dpkg".into(),
                name: format!("{prefix}foo{id}"),
                version: format!("{}.{}.{}-{}", 1 + id % 5, id % 13, id % 7, 1 + id % 4),
                arch: if id % 9 == 0 { "all" } else { "amd64" }.into(),
                publisher: "Debian".into(),
                install_date_unix_s: 1_700_000_000 + i64::try_from(id).unwrap_or(0) * 60,
                source: String::new(),
            }
        })
        .collect();
    for g in 1..=generation as usize {
        if !out.is_empty() {
            let k = (g * 37 + index) % out.len();
            out[k].version.push_str(&format!("+lg{g}"));
        }
        out.push(Package {
            ecosystem: "dpkg".into(),
            name: format!("lgextra{g}"),
            version: format!("0.{g}-1"),
            arch: "amd64".into(),
            publisher: "Debian".into(),
            install_date_unix_s: 1_800_000_000,
            source: String::new(),
        });
    }
    out
}

fn hardware_uuid(index: usize, run: u64) -> String {
    let v = u128::from(run) << 64 | index as u128;
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn inventory(index: usize, generation: u32, count: usize) -> Inventory {
    let gib = 1u64 << 30;
    let mut inv = Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        system: Some(SystemInfo {
            vendor: "LENOVO".into(),
            model: "ThinkCentre M70q".into(),
            serial: format!("LG{index:08}"),
            chassis_type: "desktop".into(),
            bios_vendor: "LENOVO".into(),
            bios_version: "M3AKT4FA".into(),
            ..SystemInfo::default()
        }),
        os: Some(OsInfo {
            hostname: format!("lg-{index:05}"),
            name: "Debian GNU/Linux".into(),
            version: "13".into(),
            kernel_version: "6.12.48-amd64".into(),
            arch: "x86_64".into(),
            boot_time_unix_s: 1_790_000_000,
            timezone: "Europe/Berlin".into(),
            ..OsInfo::default()
        }),
        cpu: Some(CpuInfo {
            model: "Intel(R) Core(TM) i5-10400T CPU @ 2.00GHz".into(),
            vendor: "GenuineIntel".into(),
            logical_cores: 12,
            physical_cores: 6,
            frequency_mhz: 2000,
            arch: "x86_64".into(),
        }),
        memory: Some(MemoryInfo {
            total_bytes: 16 * gib,
            available_bytes: 9 * gib,
            swap_total_bytes: 2 * gib,
            modules: Vec::new(),
        }),
        storage: Some(StorageInfo {
            filesystems: vec![
                Filesystem {
                    mount_point: "/".into(),
                    device: "/dev/nvme0n1p2".into(),
                    fs_type: "ext4".into(),
                    total_bytes: 240 * gib,
                    available_bytes: 120 * gib,
                    removable: false,
                },
                Filesystem {
                    mount_point: "/boot/efi".into(),
                    device: "/dev/nvme0n1p1".into(),
                    fs_type: "vfat".into(),
                    total_bytes: gib / 2,
                    available_bytes: gib / 4,
                    removable: false,
                },
            ],
            disks: vec![Disk {
                name: "nvme0n1".into(),
                model: "SAMSUNG MZVLB256HBHQ".into(),
                serial: format!("S4{index:010}"),
                size_bytes: 256 * gib,
                kind: DiskKind::Nvme as i32,
                removable: false,
            }],
        }),
        network: Some(NetworkInfo {
            interfaces: vec![NetworkInterface {
                name: "enp0s31f6".into(),
                mac: format!(
                    "02:00:{:02x}:{:02x}:{:02x}:01",
                    (index >> 16) & 0xff,
                    (index >> 8) & 0xff,
                    index & 0xff
                ),
                ipv4: vec![format!(
                    "10.{}.{}.{}",
                    index >> 16 & 0xff,
                    index >> 8 & 0xff,
                    index & 0xff
                )],
                ipv6: Vec::new(),
                up: true,
                speed_mbps: 1000,
                wireless: false,
            }],
            default_gateways: vec!["10.0.0.1".into()],
            dns_servers: vec!["10.0.0.53".into()],
        }),
        software: Some(SoftwareInfo {
            packages: packages(index, generation, count),
            hotfixes: Vec::new(),
        }),
        ..Inventory::default()
    };
    deskpulse_proto::delta::canonicalize(&mut inv);
    inv
}

fn health(uptime: u64) -> HealthSample {
    let mut rng = rand::rng();
    HealthSample {
        cpu_percent: rng.random_range(1.0..40.0),
        memory_used_percent: rng.random_range(30.0..70.0),
        uptime_secs: uptime,
        filesystems: vec![
            FilesystemUsage {
                mount_point: "/".into(),
                used_percent: 50.0,
                available_bytes: 120 << 30,
            },
            FilesystemUsage {
                mount_point: "/boot/efi".into(),
                used_percent: 50.0,
                available_bytes: 1 << 28,
            },
        ],
        load_1m: rng.random_range(0.0..2.0),
        load_5m: 0.5,
        load_15m: 0.4,
        logical_cpus: 12,
        swap_used_percent: 1.0,
        ..HealthSample::default()
    }
}

async fn tls_endpoint(url: &str, ca: &str, identity: Option<Identity>) -> Result<Endpoint> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Ok(Endpoint::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20)))
}

async fn enroll_all(
    url: &str,
    ca: &str,
    tokens: &[String],
    args: &LoadgenArgs,
    stats: &Arc<Stats>,
) -> Result<Vec<Agent>> {
    // A few shared connections carry every enrollment (HTTP/2 multiplexes).
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(tls_endpoint(url, ca, None).await?.connect().await?);
    }
    let run: u64 = rand::rng().random();
    let semaphore = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for index in 0..args.agents {
        let permit = semaphore.clone().acquire_owned().await?;
        let channel = channels[index % channels.len()].clone();
        let token = tokens[(index / 10_000).min(tokens.len() - 1)].clone();
        let stats = stats.clone();
        set.spawn(async move {
            let _permit = permit;
            let key = rcgen::KeyPair::generate()?;
            let params = rcgen::CertificateParams::default();
            let csr = params.serialize_request(&key)?;
            let response = EnrollmentClient::new(channel)
                .enroll(EnrollRequest {
                    token,
                    csr_der: csr.der().to_vec(),
                    hostname: format!("lg-{index:05}"),
                    hardware_uuid: hardware_uuid(index, run),
                    hardware_serial: format!("LG{run:x}{index:08}"),
                })
                .await
                .map_err(|s| anyhow::anyhow!("enrolling agent {index}: {}", s.message()))?
                .into_inner();
            stats.enrolled.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(Agent {
                index,
                identity: Identity::from_pem(response.certificate_pem, key.serialize_pem()),
            })
        });
    }
    let mut agents = Vec::with_capacity(args.agents);
    while let Some(joined) = set.join_next().await {
        agents.push(joined??);
    }
    agents.sort_by_key(|a| a.index);
    Ok(agents)
}

/// What one agent's task needs.
struct AgentRun {
    agent: Agent,
    url: String,
    ca: String,
    packages: usize,
    health_interval: Duration,
    delta_chance: f64,
    /// When (from the steady start) this agent drops its connection once.
    disconnect_after: Option<Duration>,
    handshakes: Arc<Semaphore>,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
}

struct Sent {
    at: Instant,
    kind: u8,
    generation: u32,
}

/// Runs one agent until the stop signal; returns when its last reports are
/// acknowledged (or given up).
async fn run_agent(mut run: AgentRun) {
    let spool_id = format!("{:032x}", rand::rng().random::<u128>());
    let mut seq = 0u64;
    let mut acked_generation: Option<u32> = None;
    let mut next_generation = 0u32;
    let mut first_done = false;
    let mut disconnect_at = None;
    let started = Instant::now();
    let mut reconnected = false;
    let mut ever_connected = false;
    let mut failures = 0u32;
    'session: loop {
        let endpoint = match tls_endpoint(&run.url, &run.ca, Some(run.agent.identity.clone())).await
        {
            Ok(e) => e,
            Err(e) => {
                run.stats.error(&format!("endpoint: {e}"));
                break 'session;
            }
        };
        let channel: Channel = {
            let Ok(_permit) = run.handshakes.acquire().await else {
                break 'session;
            };
            match endpoint.connect().await {
                Ok(c) => c,
                Err(e) => {
                    run.stats.error(&format!("connect: {e}"));
                    drop(_permit);
                    if !retry(&mut failures, &run).await {
                        break 'session;
                    }
                    continue 'session;
                }
            }
        };
        let mut client = AgentServiceClient::new(channel)
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd);
        let (tx, rx) = mpsc::channel::<AgentMessage>(64);
        let hello = AgentMessage {
            kind: Some(Kind::Hello(Hello {
                agent_version: "loadgen".into(),
                inventory_schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
                health_interval_secs: u32::try_from(run.health_interval.as_secs().max(1))
                    .unwrap_or(u32::MAX),
                catalog_version: deskpulse_proto::catalog::CATALOG_VERSION,
                enabled_diagnostics: Vec::new(),
            })),
        };
        let _ = tx.send(hello).await;
        let mut inbound = match client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                run.stats.error(&format!("session: {}", s.message()));
                if !retry(&mut failures, &run).await {
                    break 'session;
                }
                continue 'session;
            }
        };
        if !ever_connected {
            ever_connected = true;
            run.stats.connected.fetch_add(1, Ordering::Relaxed);
        } else if reconnected {
            run.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut pending: HashMap<u64, Sent> = HashMap::new();
        let send = |seq: &mut u64, payload: Payload, kind: u8, generation: u32| {
            *seq += 1;
            (
                *seq,
                Sent {
                    at: Instant::now(),
                    kind,
                    generation,
                },
                AgentMessage {
                    kind: Some(Kind::Report(Report {
                        spool_id: spool_id.clone(),
                        seq: *seq,
                        collected_at_unix_ms: now_ms(),
                        payload: Some(payload),
                    })),
                },
            )
        };
        // The first inventory (or a full one after a resync).
        if acked_generation.is_none() {
            let (s, sent, msg) = send(
                &mut seq,
                Payload::Inventory(inventory(run.agent.index, next_generation, run.packages)),
                INVENTORY,
                next_generation,
            );
            pending.insert(s, sent);
            run.stats.sent.fetch_add(1, Ordering::Relaxed);
            if tx.send(msg).await.is_err() {
                run.stats.error("stream closed");
                if !retry(&mut failures, &run).await {
                    break 'session;
                }
                continue 'session;
            }
        }
        let jitter = run
            .health_interval
            .mul_f64(rand::rng().random_range(0.0..1.0));
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + jitter, run.health_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drop_now = false;
        let mut stopping = *run.stop.borrow();
        let mut stop_deadline = None;
        let failed = loop {
            if stopping && pending.is_empty() {
                break false;
            }
            if drop_now && pending.is_empty() {
                break false;
            }
            let disconnect_sleep = async {
                match disconnect_at {
                    Some(at) if !drop_now => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let deadline_sleep = async {
                match stop_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(m)) => match m.kind {
                        Some(Incoming::Ack(ack)) => {
                            if let Some(sent) = pending.remove(&ack.seq) {
                                let micros = u32::try_from(sent.at.elapsed().as_micros()).unwrap_or(u32::MAX);
                                let steady = run.stats.steady(sent.at);
                                run.stats.acked.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut l) = run.stats.latencies.lock() {
                                    l.push((steady, sent.kind, micros));
                                }
                                if sent.kind != HEALTH {
                                    acked_generation = Some(sent.generation);
                                }
                                if sent.kind == INVENTORY && !first_done {
                                    first_done = true;
                                    run.stats.first_inventories.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some(Incoming::Rejected(r)) => {
                            pending.remove(&r.seq);
                            run.stats.error(&format!("rejected: {}", r.reason));
                        }
                        Some(Incoming::ResyncInventory(_)) => {
                            run.stats.error("resync asked (a delta did not apply)");
                            acked_generation = None;
                            let (s, sent, msg) = send(&mut seq, Payload::Inventory(inventory(run.agent.index, next_generation, run.packages)), INVENTORY, next_generation);
                            pending.insert(s, sent);
                            run.stats.sent.fetch_add(1, Ordering::Relaxed);
                            if tx.send(msg).await.is_err() { break true; }
                        }
                        _ => {}
                    },
                    Ok(None) => { run.stats.error("stream ended by the collector"); break true; }
                    Err(s) => { run.stats.error(&format!("stream: {}", s.message())); break true; }
                },
                _ = ticker.tick(), if first_done && !stopping && !drop_now => {
                    let uptime = started.elapsed().as_secs() + 86_400;
                    let (s, sent, msg) = send(&mut seq, Payload::Health(health(uptime)), HEALTH, 0);
                    pending.insert(s, sent);
                    run.stats.sent.fetch_add(1, Ordering::Relaxed);
                    if tx.send(msg).await.is_err() { run.stats.error("stream closed"); break true; }
                    // Now and then, a change: a delta against the acknowledged base.
                    let no_inventory_pending = pending.values().all(|p| p.kind == HEALTH);
                    let want_delta = rand::rng().random_bool(run.delta_chance.clamp(0.0, 1.0));
                    if let (Some(base), true, true) = (acked_generation, no_inventory_pending, want_delta) {
                        next_generation = base + 1;
                        let delta = deskpulse_proto::delta::diff(
                            &inventory(run.agent.index, base, run.packages),
                            &inventory(run.agent.index, next_generation, run.packages),
                        );
                        let (s, sent, msg) = send(&mut seq, Payload::InventoryDelta(delta), DELTA, next_generation);
                        pending.insert(s, sent);
                        run.stats.sent.fetch_add(1, Ordering::Relaxed);
                        run.stats.deltas.fetch_add(1, Ordering::Relaxed);
                        if tx.send(msg).await.is_err() { run.stats.error("stream closed"); break true; }
                    }
                }
                () = disconnect_sleep => { drop_now = true; }
                changed = run.stop.changed(), if !stopping => {
                    if changed.is_err() || *run.stop.borrow() {
                        stopping = true;
                        stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                    }
                }
                () = deadline_sleep => {
                    for _ in 0..pending.len() { run.stats.error("not acknowledged by the end"); }
                    pending.clear();
                }
            }
            // The steady state began: plan this agent's one disconnect.
            if disconnect_at.is_none()
                && !reconnected
                && let (Some(after), Some(start)) =
                    (run.disconnect_after, run.stats.steady_start.get())
            {
                disconnect_at = Some(tokio::time::Instant::from_std(*start + after));
            }
        };
        if failed {
            for _ in 0..pending.len() {
                run.stats.error("not acknowledged (stream failed)");
            }
            if !retry(&mut failures, &run).await {
                break 'session;
            }
            continue 'session;
        }
        let reason = if drop_now && !stopping {
            GoodbyeReason::Sleep
        } else {
            GoodbyeReason::ServiceStop
        };
        let _ = tx
            .send(AgentMessage {
                kind: Some(Kind::Goodbye(Goodbye {
                    reason: reason as i32,
                })),
            })
            .await;
        drop(tx);
        // Let the collector see the Goodbye and end the stream.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        if stopping || !drop_now {
            return;
        }
        // A planned disconnect: a short pause, then a new connection.
        reconnected = true;
        disconnect_at = None;
        let pause = Duration::from_millis(rand::rng().random_range(200..2000));
        tokio::time::sleep(pause).await;
        if *run.stop.borrow() {
            return;
        }
    }
    // Given up: counted as done, so the ramp can end.
    run.stats.failed_agents.fetch_add(1, Ordering::Relaxed);
    if !first_done {
        run.stats.first_inventories.fetch_add(1, Ordering::Relaxed);
    }
}

/// After a failure (already counted as an error): waits and says whether to
/// try again, as a real agent would, up to [`MAX_RETRIES`] times.
async fn retry(failures: &mut u32, run: &AgentRun) -> bool {
    *failures += 1;
    if *failures > MAX_RETRIES || *run.stop.borrow() {
        return false;
    }
    run.stats.retries.fetch_add(1, Ordering::Relaxed);
    let pause = Duration::from_millis(500 * u64::from(*failures));
    tokio::time::sleep(pause).await;
    !*run.stop.borrow()
}

/// How often one agent reconnects after failures before giving up.
const MAX_RETRIES: u32 = 5;

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn latency_json(mut v: Vec<u32>) -> serde_json::Value {
    v.sort_unstable();
    serde_json::json!({
        "count": v.len(),
        "p50_ms": percentile(&v, 0.50),
        "p99_ms": percentile(&v, 0.99),
        "max_ms": v.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
    })
}

/// Runs the load generator and prints the summary.
pub fn run(root: &Path, args: &LoadgenArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if let Some(limit) = open_file_limit() {
        let need = args.agents as u64 + 200;
        if need > limit {
            bail!(
                "{} agents need about {need} open files in this process, over its limit of {limit}; \
                 splitting over worker processes is not built, so one run holds at most about {} agents",
                args.agents,
                limit.saturating_sub(200)
            );
        }
    }
    let (own, url, ca, tokens) = match &args.collector {
        Some(url) => {
            let ca_file = args.ca_file.as_ref().context("--ca-file is required")?;
            let ca = std::fs::read_to_string(ca_file)
                .with_context(|| format!("reading {}", ca_file.display()))?;
            let token = args
                .enroll_token
                .clone()
                .context("--enroll-token is required")?;
            (None, url.clone(), ca, vec![token])
        }
        None => {
            let (own, url, tokens) = start_collector(root, args)?;
            let ca = std::fs::read_to_string(own.data_dir.join("ca.pem"))
                .context("reading the collector's ca.pem")?;
            let tokens = tokens.split(',').map(str::to_owned).collect();
            (Some(own), url, ca, tokens)
        }
    };
    let pid = own.as_ref().map(|o| o.child.id());
    println!("loadgen: {} agents against {url}", args.agents);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(drive(args, &url, &ca, &tokens, pid))?;
    let mut summary = summary;
    if let Some(own) = &own {
        summary["collector"]["store_bytes"] = dir_size(&own.data_dir).into();
        summary["collector"]["data_dir"] = own.data_dir.display().to_string().into();
    }
    print_summary(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(own);
    Ok(())
}

fn bar(len: u64, message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

async fn drive(
    args: &LoadgenArgs,
    url: &str,
    ca: &str,
    tokens: &[String],
    pid: Option<u32>,
) -> Result<serde_json::Value> {
    let stats = Arc::new(Stats::default());
    let ticks_at_start = pid.map(cpu_ticks).unwrap_or(0);
    let me = std::process::id();
    let own_at_start = cpu_ticks(me);
    let ramp_start = Instant::now();

    let progress = bar(args.agents as u64, "enrolling");
    let enrolling = {
        let stats = stats.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                progress.set_position(stats.enrolled.load(Ordering::Relaxed) as u64);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let agents = enroll_all(url, ca, tokens, args, &stats).await;
    enrolling.abort();
    let agents = agents?;
    let enrolled_in = ramp_start.elapsed();
    progress.finish_and_clear();
    println!(
        "enrolled {} agents in {:.1}s",
        agents.len(),
        enrolled_in.as_secs_f64()
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let disconnecting =
        ((args.disconnect_percent.clamp(0.0, 100.0) / 100.0) * args.agents as f64).round() as usize;
    for agent in agents {
        let disconnect_after = (agent.index < disconnecting)
            .then(|| args.duration.mul_f64(rand::rng().random_range(0.1..0.8)));
        set.spawn(run_agent(AgentRun {
            agent,
            url: url.to_owned(),
            ca: ca.to_owned(),
            packages: args.packages,
            health_interval: args.health_interval,
            delta_chance: args.delta_chance,
            disconnect_after,
            handshakes: handshakes.clone(),
            stats: stats.clone(),
            stop: stop_rx.clone(),
        }));
    }
    let progress = bar(
        args.agents as u64,
        "connected / first inventories acknowledged",
    );
    let mut connected_in = None;
    while stats.first_inventories.load(Ordering::Relaxed) < args.agents {
        let connected = stats.connected.load(Ordering::Relaxed);
        if connected_in.is_none()
            && connected + stats.failed_agents.load(Ordering::Relaxed) >= args.agents
        {
            connected_in = Some(ramp_start.elapsed());
        }
        progress.set_position(stats.first_inventories.load(Ordering::Relaxed) as u64);
        progress.set_message(format!(
            "first inventories acknowledged ({connected} connected, {} errors)",
            stats.errors.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connected_in = connected_in.unwrap_or_else(|| ramp_start.elapsed());
    let ramp = ramp_start.elapsed();
    progress.finish_and_clear();
    let steady_start = Instant::now();
    let _ = stats.steady_start.set(steady_start);
    let ticks_at_steady = pid.map(cpu_ticks).unwrap_or(0);
    let own_at_steady = cpu_ticks(me);
    let acked_at_steady = stats.acked.load(Ordering::Relaxed);
    let sent_at_steady = stats.sent.load(Ordering::Relaxed);
    println!(
        "ramp done in {:.1}s: {} connected, first inventories acknowledged",
        ramp.as_secs_f64(),
        stats.connected.load(Ordering::Relaxed)
    );

    let secs = args.duration.as_secs().max(1);
    let progress = bar(secs, "steady state");
    let mut peak_rss = pid.map_or(0, |p| status_kib(p, "VmHWM"));
    while steady_start.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = steady_start.elapsed().as_secs_f64().max(0.001);
        let acked = stats.acked.load(Ordering::Relaxed) - acked_at_steady;
        progress.set_position(steady_start.elapsed().as_secs().min(secs));
        progress.set_message(format!(
            "{:.0} acks/s, {} errors, {} reconnects",
            acked as f64 / e,
            stats.errors.load(Ordering::Relaxed),
            stats.reconnects.load(Ordering::Relaxed)
        ));
        if let Some(p) = pid {
            peak_rss = peak_rss.max(status_kib(p, "VmHWM"));
        }
    }
    let steady = steady_start.elapsed();
    let ticks_at_end = pid.map(cpu_ticks).unwrap_or(0);
    let own_at_end = cpu_ticks(me);
    let sent_steady = stats.sent.load(Ordering::Relaxed) - sent_at_steady;
    progress.finish_and_clear();
    let _ = stop_tx.send(true);
    stats.stop.store(true, Ordering::Relaxed);
    let drain = Instant::now();
    while set.join_next().await.is_some() {}
    let drained = drain.elapsed();
    if let Some(p) = pid {
        peak_rss = peak_rss.max(status_kib(p, "VmHWM"));
    }

    let latencies = stats
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let pick = |steady: bool, kind: Option<u8>| -> Vec<u32> {
        latencies
            .iter()
            .filter(|(s, k, _)| *s == steady && kind.is_none_or(|want| want == *k))
            .map(|(_, _, m)| *m)
            .collect()
    };
    let steady_acked = pick(true, None).len();
    let hz = 100.0; // USER_HZ on Linux
    let mut errors: Vec<(String, u64)> = stats
        .error_kinds
        .lock()
        .map(|k| k.iter().map(|(a, b)| (a.clone(), *b)).collect())
        .unwrap_or_default();
    errors.sort();
    Ok(serde_json::json!({
        "agents": args.agents,
        "packages": args.packages,
        "health_interval_s": args.health_interval.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
        "disconnect_percent": args.disconnect_percent,
        "collector": {
            "url": url,
            "self_started": pid.is_some(),
            "database": args.database.clone().unwrap_or_else(|| "sqlite (data dir)".into()),
            "cpu_s_ramp": (ticks_at_steady.saturating_sub(ticks_at_start)) as f64 / hz,
            "cpu_s_steady": (ticks_at_end.saturating_sub(ticks_at_steady)) as f64 / hz,
            "cpu_percent_steady": (ticks_at_end.saturating_sub(ticks_at_steady)) as f64 / hz / steady.as_secs_f64() * 100.0,
            "peak_rss_kib": peak_rss,
        },
        "loadgen": {
            "cpu_s_ramp": (own_at_steady.saturating_sub(own_at_start)) as f64 / hz,
            "cpu_s_steady": (own_at_end.saturating_sub(own_at_steady)) as f64 / hz,
            "cpu_percent_steady": (own_at_end.saturating_sub(own_at_steady)) as f64 / hz / steady.as_secs_f64() * 100.0,
        },
        "ramp": {
            "enrolled_s": enrolled_in.as_secs_f64(),
            "connected_s": connected_in.as_secs_f64(),
            "first_inventories_acked_s": ramp.as_secs_f64(),
            "first_inventory_latency": latency_json(pick(false, Some(INVENTORY))),
            "reports_acked": pick(false, None).len(),
        },
        "steady": {
            "seconds": steady.as_secs_f64(),
            "reports_sent": sent_steady,
            "reports_acked": steady_acked,
            "sent_per_s": sent_steady as f64 / steady.as_secs_f64(),
            "acked_per_s": steady_acked as f64 / steady.as_secs_f64(),
            "latency": latency_json(pick(true, None)),
            "health_latency": latency_json(pick(true, Some(HEALTH))),
            "delta_latency": latency_json(pick(true, Some(DELTA))),
            "drain_s": drained.as_secs_f64(),
        },
        "totals": {
            "reports_sent": stats.sent.load(Ordering::Relaxed),
            "reports_acked": stats.acked.load(Ordering::Relaxed),
            "deltas_sent": stats.deltas.load(Ordering::Relaxed),
            "planned_reconnects": stats.reconnects.load(Ordering::Relaxed),
            "reconnects_after_errors": stats.retries.load(Ordering::Relaxed),
            "failed_agents": stats.failed_agents.load(Ordering::Relaxed),
            "errors": stats.errors.load(Ordering::Relaxed),
            "error_kinds": errors.into_iter().map(|(k, n)| (k, serde_json::Value::from(n))).collect::<serde_json::Map<String, serde_json::Value>>(),
        },
    }))
}

fn print_summary(s: &serde_json::Value) {
    let f = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:.2}"),
            _ => n.to_string(),
        },
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let lat = |v: &serde_json::Value| {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms (n={})",
            f(&v["p50_ms"]),
            f(&v["p99_ms"]),
            f(&v["max_ms"]),
            f(&v["count"])
        )
    };
    let rss_mib = s["collector"]["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0;
    let store_mib = s["collector"]["store_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0;
    let rows: Vec<(&str, String)> = vec![
        ("agents", f(&s["agents"])),
        ("packages per first inventory", f(&s["packages"])),
        ("health interval (s)", f(&s["health_interval_s"])),
        ("ramp: enrolled (s)", f(&s["ramp"]["enrolled_s"])),
        ("ramp: all connected (s)", f(&s["ramp"]["connected_s"])),
        (
            "ramp: first inventories acked (s)",
            f(&s["ramp"]["first_inventories_acked_s"]),
        ),
        (
            "ramp: first inventory latency",
            lat(&s["ramp"]["first_inventory_latency"]),
        ),
        ("steady: seconds", f(&s["steady"]["seconds"])),
        ("steady: reports sent/s", f(&s["steady"]["sent_per_s"])),
        ("steady: reports acked/s", f(&s["steady"]["acked_per_s"])),
        ("steady: report->Ack latency", lat(&s["steady"]["latency"])),
        (
            "steady: health latency",
            lat(&s["steady"]["health_latency"]),
        ),
        ("steady: delta latency", lat(&s["steady"]["delta_latency"])),
        (
            "reports sent / acked (total)",
            format!(
                "{} / {}",
                f(&s["totals"]["reports_sent"]),
                f(&s["totals"]["reports_acked"])
            ),
        ),
        ("deltas sent", f(&s["totals"]["deltas_sent"])),
        ("planned reconnects", f(&s["totals"]["planned_reconnects"])),
        (
            "reconnects after errors",
            f(&s["totals"]["reconnects_after_errors"]),
        ),
        ("agents given up", f(&s["totals"]["failed_agents"])),
        ("errors", f(&s["totals"]["errors"])),
        (
            "collector CPU s (ramp / steady)",
            format!(
                "{} / {}",
                f(&s["collector"]["cpu_s_ramp"]),
                f(&s["collector"]["cpu_s_steady"])
            ),
        ),
        (
            "collector CPU % of one core (steady)",
            f(&s["collector"]["cpu_percent_steady"]),
        ),
        (
            "loadgen CPU s (ramp / steady)",
            format!(
                "{} / {}",
                f(&s["loadgen"]["cpu_s_ramp"]),
                f(&s["loadgen"]["cpu_s_steady"])
            ),
        ),
        (
            "loadgen CPU % of one core (steady)",
            f(&s["loadgen"]["cpu_percent_steady"]),
        ),
        ("collector peak RSS (MiB)", format!("{rss_mib:.1}")),
        ("store on disk (MiB)", format!("{store_mib:.1}")),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!();
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
    if let Some(kinds) = s["totals"]["error_kinds"].as_object() {
        for (kind, n) in kinds {
            println!("  error: {kind}: {n}");
        }
    }
    if !s["collector"]["self_started"].as_bool().unwrap_or(false) {
        println!(
            "(collector CPU, RSS and store size are measured only for a collector this started)"
        );
    }
}
