//! One simulated agent, as a real agent behaves on the wire: enrollment with
//! its own key and CSR, then one mutual-TLS connection and one Session
//! stream carrying a Hello, a first full inventory, health samples and now
//! and then an inventory delta whose hashes match.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Incoming;
use deskpulse_proto::v1::enrollment_client::EnrollmentClient;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, CpuInfo, Disk, DiskKind, EnrollRequest, Filesystem, FilesystemUsage, Goodbye,
    GoodbyeReason, HealthSample, Hello, Inventory, MemoryInfo, NetworkInfo, NetworkInterface,
    OsInfo, Package, ProtectionState, Report, SecurityPosture, SoftwareInfo, StorageInfo,
    SystemInfo,
};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::hist::{DELTA, HEALTH, INVENTORY, Latencies};
use super::worker::WorkerConfig;

/// Counters of one worker's agents.
#[derive(Default)]
pub struct Stats {
    pub(super) enrolled: AtomicUsize,
    pub(super) connected: AtomicUsize,
    pub(super) first_inventories: AtomicUsize,
    pub(super) failed_agents: AtomicUsize,
    pub(super) sent: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) deltas: AtomicU64,
    pub(super) error_kinds: Mutex<HashMap<String, u64>>,
    pub(super) latencies: Mutex<Latencies>,
    pub(super) steady_start: OnceLock<Instant>,
    pub(super) stop: AtomicBool,
}

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
pub struct Agent {
    pub index: usize,
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
                state: String::new(),
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
            state: String::new(),
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
                    used_bytes: Some(108 * gib),
                },
                Filesystem {
                    mount_point: "/boot/efi".into(),
                    device: "/dev/nvme0n1p1".into(),
                    fs_type: "vfat".into(),
                    total_bytes: gib / 2,
                    available_bytes: gib / 4,
                    removable: false,
                    used_bytes: Some(gib / 4),
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

/// A health sample; one that `fires` says the antivirus is off.
fn health(uptime: u64, fires: bool) -> HealthSample {
    let mut rng = rand::rng();
    let posture = fires.then_some(SecurityPosture {
        antivirus: ProtectionState::Off as i32,
        firewall: ProtectionState::On as i32,
        encryption: ProtectionState::On as i32,
        checked_at_unix_ms: 0,
    });
    HealthSample {
        posture,
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

/// Enrolls this worker's agents, `concurrency` at a time.
pub async fn enroll_all(cfg: &WorkerConfig, stats: &Arc<Stats>) -> Result<Vec<Agent>> {
    if cfg.tokens.is_empty() {
        anyhow::bail!("no enrollment token");
    }
    // A few shared connections carry every enrollment (HTTP/2 multiplexes).
    let mut channels = Vec::new();
    for _ in 0..4 {
        let endpoint = tls_endpoint(&cfg.url, &cfg.ca_pem, None).await?;
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!("connecting to {} to enroll: {}", cfg.url, error_chain(&e))
        })?;
        channels.push(channel);
    }
    let run = cfg.run_id;
    let semaphore = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for local in 0..cfg.agents {
        let index = cfg.first_index + local;
        let permit = semaphore.clone().acquire_owned().await?;
        let channel = channels[local % channels.len()].clone();
        let token = cfg.tokens[(local / 10_000).min(cfg.tokens.len() - 1)].clone();
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
    let mut agents = Vec::with_capacity(cfg.agents);
    while let Some(joined) = set.join_next().await {
        agents.push(joined??);
    }
    agents.sort_by_key(|a| a.index);
    Ok(agents)
}

/// What one agent's task needs.
pub struct AgentRun {
    pub agent: Agent,
    pub url: String,
    pub ca: String,
    pub packages: usize,
    pub health_interval: Duration,
    pub delta_chance: f64,
    /// When (from the steady start) this agent drops its connection once.
    pub disconnect_after: Option<Duration>,
    pub handshakes: Arc<Semaphore>,
    pub stats: Arc<Stats>,
    pub stop: watch::Receiver<bool>,
    /// Whether its health samples fire the `antivirus-off` rule
    /// (`--fire-same-rule`).
    pub fires: bool,
}

struct Sent {
    at: Instant,
    kind: usize,
    generation: u32,
}

/// Runs one agent until the stop signal; returns when its last reports are
/// acknowledged (or given up).
pub async fn run_agent(mut run: AgentRun) {
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
                    run.stats.error(&format!("connect: {}", error_chain(&e)));
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
                sent_at_unix_ms: 0,
                agent_version: "loadgen".into(),
                inventory_schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
                health_interval_secs: u32::try_from(run.health_interval.as_secs().max(1))
                    .unwrap_or(u32::MAX),
                catalog_version: deskpulse_proto::catalog::CATALOG_VERSION,
                enabled_diagnostics: Vec::new(),
                unavailable_diagnostics: Vec::new(),
            })),
        };
        let _ = tx.send(hello).await;
        let mut inbound = match client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                run.stats
                    .error(&format!("session: {:?}: {}", s.code(), s.message()));
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
        let mut pending: BTreeMap<u64, Sent> = BTreeMap::new();
        // `oldest` is the lowest seq still waiting for its Ack, as an agent's
        // spool reports it.
        let send =
            |seq: &mut u64, oldest: Option<u64>, payload: Payload, kind: usize, generation: u32| {
                *seq += 1;
                (
                    *seq,
                    Sent {
                        at: Instant::now(),
                        kind,
                        generation,
                    },
                    // In parts when large, as the agent sends it.
                    deskpulse_proto::parts::report_messages(Report {
                        sent_at_unix_ms: 0,
                        spool_id: spool_id.clone(),
                        seq: *seq,
                        held_from_seq: oldest.unwrap_or(*seq),
                        collected_at_unix_ms: now_ms(),
                        payload: Some(payload),
                    }),
                )
            };
        // The first inventory (or a full one after a resync).
        if acked_generation.is_none() {
            let (s, sent, msg) = send(
                &mut seq,
                pending.keys().next().copied(),
                Payload::Inventory(inventory(run.agent.index, next_generation, run.packages)),
                INVENTORY,
                next_generation,
            );
            pending.insert(s, sent);
            run.stats.sent.fetch_add(1, Ordering::Relaxed);
            if send_all(&tx, msg).await.is_err() {
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
        // Skip keeps the schedule: a tick a few ms late (a busy machine)
        // does not push every later one back, so N agents at interval S
        // send N / S reports a second, as a fleet of real PCs would.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
                                let micros = u64::try_from(sent.at.elapsed().as_micros()).unwrap_or(u64::MAX);
                                let steady = run.stats.steady(sent.at);
                                run.stats.acked.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut l) = run.stats.latencies.lock() {
                                    l.record(steady, sent.kind, micros);
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
                            let (s, sent, msg) = send(&mut seq, pending.keys().next().copied(), Payload::Inventory(inventory(run.agent.index, next_generation, run.packages)), INVENTORY, next_generation);
                            pending.insert(s, sent);
                            run.stats.sent.fetch_add(1, Ordering::Relaxed);
                            if send_all(&tx, msg).await.is_err() { break true; }
                        }
                        _ => {}
                    },
                    Ok(None) => { run.stats.error("stream ended by the collector"); break true; }
                    Err(s) => { run.stats.error(&format!("stream: {:?}: {}", s.code(), s.message())); break true; }
                },
                _ = ticker.tick(), if first_done && !stopping && !drop_now => {
                    let uptime = started.elapsed().as_secs() + 86_400;
                    let (s, sent, msg) = send(&mut seq, pending.keys().next().copied(), Payload::Health(health(uptime, run.fires)), HEALTH, 0);
                    pending.insert(s, sent);
                    run.stats.sent.fetch_add(1, Ordering::Relaxed);
                    if send_all(&tx, msg).await.is_err() { run.stats.error("stream closed"); break true; }
                    // Now and then, a change: a delta against the acknowledged base.
                    let no_inventory_pending = pending.values().all(|p| p.kind == HEALTH);
                    let want_delta = rand::rng().random_bool(run.delta_chance.clamp(0.0, 1.0));
                    if let (Some(base), true, true) = (acked_generation, no_inventory_pending, want_delta) {
                        next_generation = base + 1;
                        let delta = deskpulse_proto::delta::diff(
                            &inventory(run.agent.index, base, run.packages),
                            &inventory(run.agent.index, next_generation, run.packages),
                        );
                        let (s, sent, msg) = send(&mut seq, pending.keys().next().copied(), Payload::InventoryDelta(delta), DELTA, next_generation);
                        pending.insert(s, sent);
                        run.stats.sent.fetch_add(1, Ordering::Relaxed);
                        run.stats.deltas.fetch_add(1, Ordering::Relaxed);
                        if send_all(&tx, msg).await.is_err() { run.stats.error("stream closed"); break true; }
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
/// Sends one report's messages in order.
async fn send_all(
    tx: &mpsc::Sender<AgentMessage>,
    messages: Vec<AgentMessage>,
) -> Result<(), mpsc::error::SendError<AgentMessage>> {
    for message in messages {
        tx.send(message).await?;
    }
    Ok(())
}

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

/// An error and its sources on one line: tonic's transport errors say little
/// at the top ("transport error") and the cause below.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
