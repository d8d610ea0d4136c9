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
//! One connection is one open file and a process here may open 20,000, so
//! the agents run in worker processes ([`worker`]), at most about 9,000 each
//! by default. This parent starts the collector, makes the enrollment tokens,
//! starts the workers, tells them when the steady state begins (once every
//! first inventory of every worker is acknowledged) and when to stop, and
//! merges what they send into one summary: the ramp apart from the steady
//! state, the achieved report rate, report→Ack latency from merged HDR
//! histograms ([`hist`]), errors, and for a collector it started, the
//! collector's CPU, peak RSS, PSS and the store's size. `--anchors` then
//! measures this machine's bare ceilings ([`anchors`]) and prints ours as a
//! fraction of them.
//!
//! This is a benchmark (D34): it prints figures and is not part of the test
//! suite.
//!
//! # Layout
//! - [`sim`]: one simulated agent.
//! - [`worker`]: a worker process and its line protocol with the parent.
//! - [`hist`]: latency histograms that merge across workers.
//! - [`anchors`]: the bare mTLS echo and SQLite insert ceilings.

pub mod anchors;
pub mod hist;
pub mod sim;
pub mod worker;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;

use hist::Latencies;
use worker::WorkerConfig;

/// Agents per worker process when `--workers` is not given: well under the
/// 20,000 open files a process may hold.
const AGENTS_PER_WORKER: usize = 9_000;
/// Files a worker or the collector holds besides its connections.
const SPARE_FILES: u64 = 200;

/// Flags of `cargo xtask loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// How many agents to simulate.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Worker processes to spread the agents over (default: one per 9,000).
    #[arg(long)]
    pub workers: Option<usize>,
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
    /// Multi-use enrollment tokens for `--collector`, comma-separated:
    /// worker i uses token i mod their count, which needs that worker's
    /// share of uses.
    #[arg(long)]
    pub enroll_token: Option<String>,
    /// Passed as `--database` to the collector this starts; its size is
    /// measured at the end (`pg_database_size` for postgres://).
    #[arg(long)]
    pub database: Option<String>,
    /// Do not run `cargo build --release -p deskpulse-collector --bins -p
    /// xtask` (the workers run from the release xtask when it exists).
    #[arg(long)]
    pub skip_build: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Share of agents (0-100) that drop and reconnect once during the
    /// steady state. A few by default, as a real fleet's laptops do.
    #[arg(long, default_value_t = 2.0)]
    pub disconnect_percent: f64,
    /// How many enrollments and handshakes run at once, over all workers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Each health tick, the chance (0-1) that an agent also sends an
    /// inventory delta.
    #[arg(long, default_value_t = 0.02)]
    pub delta_chance: f64,
    /// After the run, measure this machine's bare ceilings (mTLS unary echo,
    /// batched SQLite inserts) and print ours as a fraction of them.
    #[arg(long)]
    pub anchors: bool,
    /// Makes this many agents (the first ones) fire the same rule within
    /// one health interval of the steady state: their health samples say
    /// the antivirus is off, which the default `antivirus-off` rule turns
    /// into a ticket at once, and the tickets group into one fleet-wide
    /// problem (issue 23). 0: none.
    #[arg(long, default_value_t = 0)]
    pub fire_same_rule: usize,
}

/// Checks the flags before anything starts (exit code 2 material).
fn check_args(args: &LoadgenArgs) -> Result<usize> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.health_interval.is_zero() {
        bail!("--health-interval must be more than 0");
    }
    if args.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    if !(0.0..=1.0).contains(&args.delta_chance) {
        bail!("--delta-chance must be between 0 and 1");
    }
    if !(0.0..=100.0).contains(&args.disconnect_percent) {
        bail!("--disconnect-percent must be between 0 and 100");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.fire_same_rule > args.agents {
        bail!(
            "--fire-same-rule must be at most --agents ({})",
            args.agents
        );
    }
    let workers = args
        .workers
        .unwrap_or_else(|| args.agents.div_ceil(AGENTS_PER_WORKER));
    if workers == 0 || workers > args.agents {
        bail!("--workers must be between 1 and --agents ({})", args.agents);
    }
    if let Some(limit) = open_file_limit() {
        let per_worker = args.agents.div_ceil(workers) as u64;
        if per_worker + SPARE_FILES > limit {
            bail!(
                "{workers} workers put {per_worker} agents in one process, over its limit of {limit} open files; \
                 use --workers {} or more",
                args.agents.div_ceil(
                    usize::try_from(limit.saturating_sub(SPARE_FILES))
                        .unwrap_or(1)
                        .max(1)
                )
            );
        }
        if args.collector.is_none() && args.agents as u64 + SPARE_FILES > limit {
            bail!(
                "the collector holds one open file per agent and may open {limit}: \
                 one collector takes at most {} agents",
                limit.saturating_sub(SPARE_FILES)
            );
        }
    }
    if let Some(db) = &args.database
        && !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
    {
        bail!("--database must be a sqlite: or postgres:// URL");
    }
    Ok(workers)
}

/// Builds the release collector and the release xtask (the workers and the
/// anchors run from it: a debug build's TLS and protobuf cost several times
/// the CPU, which would measure the load generator, not the collector).
fn build_release(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // `cargo xtask` runs this with CARGO_PKG_* and friends set for xtask;
    // build scripts (ring's) see them and rebuild, which costs minutes.
    // Build as a plain `cargo build` would.
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || matches!(
                    key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                ))
        {
            build.env_remove(key);
        }
    }
    let status = build
        .args(RELEASE_BUILD)
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo {} failed", RELEASE_BUILD.join(" "));
    }
    Ok(())
}

const RELEASE_BUILD: &[&str] = &[
    "build",
    "--release",
    "-p",
    "deskpulse-collector",
    "--bins",
    "-p",
    "xtask",
];

/// The program the workers and the anchors run: the release xtask when
/// there is one, else this one (said in the summary).
fn helper_exe(root: &Path) -> Result<PathBuf> {
    let release = root.join("target/release/xtask");
    if release.exists() {
        return Ok(release);
    }
    std::env::current_exe().context("finding this program to start workers")
}

/// Runs the anchors in a helper process (release code) and reads its one
/// JSON line.
fn measure_anchors(exe: &Path) -> Result<serde_json::Value> {
    let out = Command::new(exe)
        .arg("loadgen-anchors")
        .stdin(Stdio::null())
        .output()
        .context("starting the anchors")?;
    if !out.status.success() {
        bail!(
            "the anchors failed ({}): {}",
            out.status,
            last_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    serde_json::from_slice(&out.stdout).context("the anchors' output is not JSON")
}

/// The hidden `loadgen-anchors` subcommand: measures and prints one JSON
/// line.
pub fn run_anchors() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(anchors::measure())?;
    println!("{measured}");
    Ok(())
}

/// One worker process, killed on drop if it is still running.
struct Worker {
    id: usize,
    first: usize,
    agents: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    progress: serde_json::Value,
    last: Option<serde_json::Value>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Worker {
    fn name(&self) -> String {
        format!(
            "worker {} (agents {}-{})",
            self.id,
            self.first,
            self.first + self.agents - 1
        )
    }

    fn send(&mut self, command: &str) -> Result<()> {
        let name = self.name();
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("{name}: stdin closed"))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{name} does not listen any more"))
    }

    /// Why the worker is gone, in one line: its exit status and the last
    /// thing it said on stderr.
    fn death(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => match self.child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        let tail = self
            .stderr_tail
            .lock()
            .ok()
            .and_then(|t| t.back().cloned())
            .unwrap_or_else(|| "(nothing on stderr)".into());
        format!("{} exited ({status}): {tail}", self.name())
    }

    fn counter(&self, key: &str) -> u64 {
        self.progress[key].as_u64().unwrap_or(0)
    }
}

enum Event {
    Line(serde_json::Value),
    Closed,
}

/// Starts the workers: this binary again, with the hidden `loadgen-worker`
/// subcommand, each with its configuration on stdin.
fn spawn_workers(
    exe: &Path,
    configs: Vec<WorkerConfig>,
    events: &std_mpsc::Sender<(usize, Event)>,
) -> Result<Vec<Worker>> {
    let mut workers = Vec::new();
    for cfg in configs {
        let mut child = Command::new(exe)
            .arg("loadgen-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting worker {}", cfg.worker))?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        writeln!(stdin, "{}", serde_json::to_string(&cfg)?)?;
        stdin.flush()?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stderr = child.stderr.take().context("worker stderr")?;
        let id = cfg.worker;
        let tx = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line)
                    && tx.send((id, Event::Line(value))).is_err()
                {
                    return;
                }
            }
            let _ = tx.send((id, Event::Closed));
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut t) = tail.lock() {
                    if t.len() == 20 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        workers.push(Worker {
            id,
            first: cfg.first_index,
            agents: cfg.agents,
            child,
            stdin: Some(stdin),
            progress: serde_json::Value::Null,
            last: None,
            stderr_tail,
        });
    }
    Ok(workers)
}

/// Takes the workers' lines for `wait`; fails when a worker reports an
/// error or dies before its final report.
fn pump(
    workers: &mut [Worker],
    events: &std_mpsc::Receiver<(usize, Event)>,
    wait: Duration,
) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (id, event) = match events.recv_timeout(left) {
            Ok(e) => e,
            Err(std_mpsc::RecvTimeoutError::Timeout) => return Ok(()),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                // Every worker closed its output: fine once each sent its
                // final report.
                return match workers.iter_mut().find(|w| w.last.is_none()) {
                    Some(w) => bail!("{}", w.death()),
                    None => Ok(()),
                };
            }
        };
        let Some(worker) = workers.iter_mut().find(|w| w.id == id) else {
            continue;
        };
        match event {
            Event::Line(line) => {
                if let Some(p) = line.get("progress") {
                    worker.progress = p.clone();
                } else if let Some(f) = line.get("final") {
                    worker.progress = f["counters"].clone();
                    worker.last = Some(f.clone());
                } else if let Some(e) = line.get("error").and_then(|e| e.as_str()) {
                    bail!("{} failed: {e}", worker.name());
                }
            }
            Event::Closed if worker.last.is_none() => bail!("{}", worker.death()),
            Event::Closed => {}
        }
    }
}

fn total(workers: &[Worker], key: &str) -> u64 {
    workers.iter().map(|w| w.counter(key)).sum()
}

fn workers_cpu(workers: &[Worker]) -> u64 {
    workers.iter().map(|w| cpu_ticks(w.child.id())).sum::<u64>() + cpu_ticks(std::process::id())
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The worker subcommand's entry point.
pub fn run_worker() -> Result<()> {
    worker::run()
}

/// Runs the load generator and prints the summary.
pub fn run(root: &Path, args: &LoadgenArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers_wanted = check_args(args)?;
    if !args.skip_build {
        build_release(root)?;
    }
    let exe = helper_exe(root)?;
    let (mut own, url, ca, tokens) = match &args.collector {
        Some(url) => {
            let ca_file = args.ca_file.as_ref().context("--ca-file is required")?;
            let ca = std::fs::read_to_string(ca_file)
                .with_context(|| format!("reading {}", ca_file.display()))?;
            let tokens: Vec<String> = args
                .enroll_token
                .as_deref()
                .context("--enroll-token is required")?
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if tokens.is_empty() {
                bail!("--enroll-token is empty");
            }
            (None, url.clone(), ca, Tokens::Given(tokens))
        }
        None => {
            let (own, bin, url) = start_collector(root, args)?;
            let ca = std::fs::read_to_string(own.data_dir.join("ca.pem"))
                .context("reading the collector's ca.pem")?;
            (Some(own), url, ca, Tokens::Make(bin))
        }
    };
    println!(
        "loadgen: {} agents in {workers_wanted} worker processes against {url}",
        args.agents
    );
    let run_id: u64 = rand::rng().random();
    let per = args.agents.div_ceil(workers_wanted);
    let disconnecting = ((args.disconnect_percent / 100.0) * args.agents as f64).round() as usize;
    let mut configs = Vec::new();
    let mut first = 0;
    for worker in 0..workers_wanted {
        let agents = per.min(args.agents - first);
        if agents == 0 {
            break;
        }
        let tokens = match &tokens {
            Tokens::Given(list) => vec![list[worker % list.len()].clone()],
            Tokens::Make(bin) => {
                let own = own.as_ref().context("no collector")?;
                create_tokens(bin, own, args.database.as_deref(), agents)?
            }
        };
        configs.push(WorkerConfig {
            worker,
            first_index: first,
            agents,
            url: url.clone(),
            ca_pem: ca.clone(),
            tokens,
            packages: args.packages,
            health_interval_ms: u64::try_from(args.health_interval.as_millis()).unwrap_or(u64::MAX),
            delta_chance: args.delta_chance,
            disconnecting: disconnecting.saturating_sub(first).min(agents),
            duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
            concurrency: args.concurrency.div_ceil(workers_wanted).max(1),
            run_id,
            firing: args.fire_same_rule.saturating_sub(first).min(agents),
        });
        first += agents;
    }
    let mut summary = drive(args, &exe, configs, own.as_mut())?;
    summary["loadgen"]["program"] = exe.display().to_string().into();
    summary["collector"]["url"] = url.into();
    if let Some(own) = &own {
        summary["collector"]["data_dir"] = own.data_dir.display().to_string().into();
    }
    summary["collector"]["store_bytes"] = store_size(args, own.as_ref());
    drop(own);
    if args.anchors {
        println!("measuring the machine's anchors (bare mTLS echo, bare SQLite inserts)...");
        let measured = measure_anchors(&exe)?;
        summary["anchors"] = anchors::fractions(&summary, measured);
    }
    print_summary(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

enum Tokens {
    /// Given with `--enroll-token`.
    Given(Vec<String>),
    /// Made per worker with this collector binary.
    Make(PathBuf),
}

/// The store's size: `pg_database_size` for PostgreSQL, the files for
/// SQLite (the data dir of a collector this started, or the `--database`
/// file), or null when it cannot be measured.
fn store_size(args: &LoadgenArgs, own: Option<&OwnCollector>) -> serde_json::Value {
    match args.database.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            let size = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(anchors::pg_database_size(url)));
            match size {
                Ok(bytes) => bytes.into(),
                Err(error) => {
                    eprintln!("store size: n/a ({error:#})");
                    serde_json::Value::Null
                }
            }
        }
        Some(url) => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            let size: u64 = ["", "-wal", "-shm"]
                .iter()
                .filter_map(|s| std::fs::metadata(format!("{path}{s}")).ok())
                .map(|m| m.len())
                .sum();
            if size == 0 {
                serde_json::Value::Null
            } else {
                size.into()
            }
        }
        None => own.map_or(serde_json::Value::Null, |o| dir_size(&o.data_dir).into()),
    }
}

fn bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn check_collector(own: &mut Option<&mut OwnCollector>) -> Result<()> {
    if let Some(own) = own
        && let Ok(Some(status)) = own.child.try_wait()
    {
        let log = std::fs::read_to_string(own.data_dir.with_file_name("collector.log"))
            .unwrap_or_default();
        bail!(
            "the collector exited during the run ({status}): {}",
            last_line(&log)
        );
    }
    Ok(())
}

fn drive(
    args: &LoadgenArgs,
    exe: &Path,
    configs: Vec<WorkerConfig>,
    mut own: Option<&mut OwnCollector>,
) -> Result<serde_json::Value> {
    let pid = own.as_ref().map(|o| o.child.id());
    let n = args.agents as u64;
    let (events_tx, events) = std_mpsc::channel();
    let ticks_at_start = pid.map(cpu_ticks).unwrap_or(0);
    let ramp_start = Instant::now();
    let mut workers = spawn_workers(exe, configs, &events_tx)?;
    drop(events_tx);
    let own_at_start = workers_cpu(&workers);

    // One bar for the whole run: agents through the ramp, then seconds.
    let progress = bar(n);
    let mut enrolled_in = None;
    let mut first_connected_in = None;
    let mut connected_in = None;
    let mut peak_rss = 0;
    loop {
        pump(&mut workers, &events, Duration::from_millis(200))?;
        check_collector(&mut own)?;
        if let Some(p) = pid {
            peak_rss = peak_rss.max(status_kib(p, "VmHWM"));
        }
        let enrolled = total(&workers, "enrolled");
        let connected = total(&workers, "connected");
        let failed = total(&workers, "failed_agents");
        let first = total(&workers, "first_inventories");
        if enrolled_in.is_none() && enrolled >= n {
            enrolled_in = Some(ramp_start.elapsed());
        }
        if first_connected_in.is_none() && connected > 0 {
            first_connected_in = Some(ramp_start.elapsed());
        }
        if connected_in.is_none() && connected + failed >= n {
            connected_in = Some(ramp_start.elapsed());
        }
        progress.set_position(first);
        progress.set_message(format!(
            "ramp: {enrolled} enrolled, {connected} connected, {first} first inventories acked, {} errors",
            total(&workers, "errors")
        ));
        if first >= n {
            break;
        }
    }
    let ramp = ramp_start.elapsed();
    // Agents connect once their worker has enrolled them all, so the first
    // inventories flow from the first connection on.
    let inventories = ramp.saturating_sub(first_connected_in.unwrap_or_default());
    for w in &mut workers {
        w.send("steady")?;
    }
    let steady_start = Instant::now();
    let ticks_at_steady = pid.map(cpu_ticks).unwrap_or(0);
    let own_at_steady = workers_cpu(&workers);
    let acked_at_steady = total(&workers, "acked");
    let rss_at_steady = pid.map_or(0, |p| status_kib(p, "VmRSS"));
    let metrics = own.as_ref().map(|o| o.metrics);
    let scrape = || metrics.map_or_else(WriterCounters::default, WriterCounters::scrape);
    let writer_at_steady = scrape();
    progress.println(format!(
        "ramp done in {:.1}s: {} connected, every first inventory acknowledged",
        ramp.as_secs_f64(),
        total(&workers, "connected")
    ));

    let secs = args.duration.as_secs().max(1);
    progress.set_length(secs);
    progress.set_position(0);
    while steady_start.elapsed() < args.duration {
        pump(&mut workers, &events, Duration::from_millis(500))?;
        check_collector(&mut own)?;
        let e = steady_start.elapsed().as_secs_f64().max(0.001);
        let acked = total(&workers, "acked").saturating_sub(acked_at_steady);
        progress.set_position(steady_start.elapsed().as_secs().min(secs));
        progress.set_message(format!(
            "steady: {:.0} acks/s, {} errors, {} reconnects",
            acked as f64 / e,
            total(&workers, "errors"),
            total(&workers, "reconnects")
        ));
        if let Some(p) = pid {
            peak_rss = peak_rss.max(status_kib(p, "VmHWM"));
        }
    }
    let steady = steady_start.elapsed();
    let writer_steady = writer_at_steady.since(scrape(), steady.as_secs_f64());
    let ticks_at_end = pid.map(cpu_ticks).unwrap_or(0);
    let own_at_end = workers_cpu(&workers);
    let rss_at_end = pid.map_or(0, |p| status_kib(p, "VmRSS"));
    let pss_at_end = pid.map_or(0, pss_kib);
    progress.set_message("draining: waiting for the last Acks");
    for w in &mut workers {
        w.send("stop")?;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(90);
    while workers.iter().any(|w| w.last.is_none()) {
        if Instant::now() > drain_deadline {
            let late: Vec<String> = workers
                .iter()
                .filter(|w| w.last.is_none())
                .map(Worker::name)
                .collect();
            bail!("no final report within 90 s from {}", late.join(", "));
        }
        pump(&mut workers, &events, Duration::from_millis(200))?;
    }
    progress.finish_and_clear();
    if let Some(p) = pid {
        peak_rss = peak_rss.max(status_kib(p, "VmHWM"));
    }

    let mut latencies = Latencies::default();
    let mut error_kinds: HashMap<String, u64> = HashMap::new();
    let mut steady_sent = 0;
    let mut drain_s: f64 = 0.0;
    for w in &workers {
        let Some(last) = &w.last else { continue };
        latencies
            .merge_json(&last["latencies"])
            .with_context(|| format!("{}: latencies", w.name()))?;
        steady_sent += last["steady_sent"].as_u64().unwrap_or(0);
        drain_s = drain_s.max(last["drain_s"].as_f64().unwrap_or(0.0));
        if let Some(kinds) = last["error_kinds"].as_object() {
            for (k, v) in kinds {
                *error_kinds.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    let mut errors: Vec<(String, u64)> = error_kinds.into_iter().collect();
    errors.sort();
    let steady_acked = latencies.count(true);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = |a: u64, b: u64| b.saturating_sub(a) as f64 / hz;
    let secs = steady.as_secs_f64();
    Ok(serde_json::json!({
        "agents": args.agents,
        "workers": workers.len(),
        "packages": args.packages,
        "health_interval_s": args.health_interval.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
        "disconnect_percent": args.disconnect_percent,
        "collector": {
            "self_started": pid.is_some(),
            "database": args.database.clone().unwrap_or_else(|| "sqlite (data dir)".into()),
            "cpu_s_ramp": cpu(ticks_at_start, ticks_at_steady),
            "cpu_s_steady": cpu(ticks_at_steady, ticks_at_end),
            "cpu_percent_steady": cpu(ticks_at_steady, ticks_at_end) / secs * 100.0,
            "peak_rss_kib": peak_rss,
            "rss_at_steady_start_kib": rss_at_steady,
            "rss_at_end_kib": rss_at_end,
            "pss_at_end_kib": pss_at_end,
            "ingest_writer_steady": writer_steady,
        },
        "loadgen": {
            "cpu_s_ramp": cpu(own_at_start, own_at_steady),
            "cpu_s_steady": cpu(own_at_steady, own_at_end),
            "cpu_percent_steady": cpu(own_at_steady, own_at_end) / secs * 100.0,
        },
        "ramp": {
            "enrolled_s": enrolled_in.unwrap_or(ramp).as_secs_f64(),
            "connected_s": connected_in.unwrap_or(ramp).as_secs_f64(),
            "first_connected_s": first_connected_in.unwrap_or(ramp).as_secs_f64(),
            "first_inventories_acked_s": ramp.as_secs_f64(),
            "inventories_s": inventories.as_secs_f64(),
            "first_inventory_latency": latencies.summary(false, Some(hist::INVENTORY)),
            "reports_acked": latencies.count(false),
            "package_rows_per_s": (args.agents * args.packages) as f64 / inventories.as_secs_f64(),
        },
        "steady": {
            "seconds": secs,
            "reports_sent": steady_sent,
            "reports_acked": steady_acked,
            "sent_per_s": steady_sent as f64 / secs,
            "acked_per_s": steady_acked as f64 / secs,
            "latency": latencies.summary(true, None),
            "health_latency": latencies.summary(true, Some(hist::HEALTH)),
            "delta_latency": latencies.summary(true, Some(hist::DELTA)),
            "drain_s": drain_s,
        },
        "totals": {
            "reports_sent": total(&workers, "sent"),
            "reports_acked": total(&workers, "acked"),
            "deltas_sent": total(&workers, "deltas"),
            "planned_reconnects": total(&workers, "reconnects"),
            "reconnects_after_errors": total(&workers, "retries"),
            "failed_agents": total(&workers, "failed_agents"),
            "errors": total(&workers, "errors"),
            "error_kinds": errors.into_iter().map(|(k, n)| (k, serde_json::Value::from(n))).collect::<serde_json::Map<String, serde_json::Value>>(),
        },
    }))
}

/// The collector this started, killed on drop.
struct OwnCollector {
    child: Child,
    data_dir: PathBuf,
    /// Its Prometheus endpoint, read for the ingest writer's figures.
    metrics: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// The ingest writer's cumulative counters, from the collector's metrics.
#[derive(Clone, Copy, Default)]
struct WriterCounters {
    batches: f64,
    reports: f64,
    seconds: f64,
}

impl WriterCounters {
    /// Reads them from `/metrics`; zeros if it does not answer, so a
    /// missing figure never fails a run.
    fn scrape(addr: std::net::SocketAddr) -> Self {
        use std::io::Read as _;
        let mut text = String::new();
        let read = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(
            |mut conn| {
                conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: loadgen\r\n\r\n")?;
                conn.read_to_string(&mut text)
            },
        );
        if read.is_err() {
            return Self::default();
        }
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Self {
            batches: value("deskpulse_store_batch_seconds_count"),
            reports: value("deskpulse_store_batch_reports_sum"),
            seconds: value("deskpulse_store_batch_seconds_sum"),
        }
    }

    /// Batches per second, reports per batch, ms per batch and the share of
    /// the wall time the writer spent storing, from `self` to `later`.
    fn since(self, later: Self, wall_s: f64) -> serde_json::Value {
        let batches = later.batches - self.batches;
        let per_batch = |v: f64| if batches > 0.0 { v / batches } else { 0.0 };
        serde_json::json!({
            "batches_per_s": batches / wall_s.max(0.001),
            "reports_per_batch": per_batch(later.reports - self.reports),
            "ms_per_batch": per_batch(later.seconds - self.seconds) * 1000.0,
            "busy_percent": (later.seconds - self.seconds) / wall_s.max(0.001) * 100.0,
        })
    }
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

fn start_collector(root: &Path, args: &LoadgenArgs) -> Result<(OwnCollector, PathBuf, String)> {
    let bin = root.join("target/release/deskpulse-collector");
    if !bin.exists() {
        bail!(
            "{} is missing; run cargo build --release -p deskpulse-collector --bins (or drop --skip-build)",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("deskpulse-loadgen-")
        .tempdir()?;
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("collector.log");
    let log = std::fs::File::create(&log_path)?;
    // A port free a moment ago; the collector fails clearly if it was taken.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the collector's metrics")?;
    let mut serve = Command::new(&bin);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .arg("--metrics-listen")
        .arg(metrics.to_string());
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
        metrics,
        _dir: dir,
    };
    let addr = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
        anyhow::anyhow!(
            "the collector did not start: {}",
            last_line(&std::fs::read_to_string(&log_path).unwrap_or_default())
        )
    })?;
    Ok((own, bin, format!("https://{addr}")))
}

/// Makes enrollment tokens for `agents` enrollments on a collector this
/// started: one per 10,000 uses, the collector's bound per token.
fn create_tokens(
    bin: &Path,
    own: &OwnCollector,
    database: Option<&str>,
    agents: usize,
) -> Result<Vec<String>> {
    let mut tokens = Vec::new();
    let mut left = agents;
    while left > 0 {
        let uses = left.min(10_000);
        let mut create = Command::new(bin);
        create
            .args(["enroll-token", "create", "--uses", &uses.to_string()])
            .arg("--data-dir")
            .arg(&own.data_dir);
        if let Some(db) = database {
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
    Ok(tokens)
}

/// The last non-empty line of a log, for a one-line error.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or_else(|| "(no output)".to_owned(), |l| l.trim().to_owned())
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
    let mib = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "n/a".to_owned(), |k| format!("{:.1}", k / 1024.0))
    };
    let writer = |v: &serde_json::Value| {
        if !v.is_object() {
            return "n/a (not a collector this started)".to_owned();
        }
        format!(
            "{} batches/s, {} reports and {} ms each, busy {} %",
            f(&v["batches_per_s"]),
            f(&v["reports_per_batch"]),
            f(&v["ms_per_batch"]),
            f(&v["busy_percent"])
        )
    };
    let store_mib = s["collector"]["store_bytes"]
        .as_f64()
        .map_or_else(|| "n/a".to_owned(), |b| format!("{:.1}", b / 1_048_576.0));
    let mut rows: Vec<(&str, String)> = vec![
        (
            "agents (worker processes)",
            format!("{} ({})", f(&s["agents"]), f(&s["workers"])),
        ),
        ("packages per first inventory", f(&s["packages"])),
        ("health interval (s)", f(&s["health_interval_s"])),
        ("ramp: enrolled (s)", f(&s["ramp"]["enrolled_s"])),
        ("ramp: all connected (s)", f(&s["ramp"]["connected_s"])),
        (
            "ramp: first inventories acked (s)",
            f(&s["ramp"]["first_inventories_acked_s"]),
        ),
        (
            "ramp: first connection to last first inventory acked (s)",
            f(&s["ramp"]["inventories_s"]),
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
            "ingest writer (steady)",
            writer(&s["collector"]["ingest_writer_steady"]),
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
        (
            "collector peak RSS (MiB)",
            mib(&s["collector"]["peak_rss_kib"]),
        ),
        (
            "collector RSS / PSS at the end (MiB)",
            format!(
                "{} / {}",
                mib(&s["collector"]["rss_at_end_kib"]),
                mib(&s["collector"]["pss_at_end_kib"])
            ),
        ),
        ("store on disk (MiB)", store_mib),
        (
            "ramp: package rows stored/s",
            f(&s["ramp"]["package_rows_per_s"]),
        ),
    ];
    let a = &s["anchors"];
    if a.is_object() {
        let pct = |v: &serde_json::Value| {
            v.as_f64()
                .map_or_else(|| "n/a".to_owned(), |x| format!("{:.2} %", x * 100.0))
        };
        rows.extend([
            ("anchor: mTLS echo 100 B (req/s)", f(&a["echo_100b_per_s"])),
            ("anchor: mTLS echo 4 KiB (req/s)", f(&a["echo_4k_per_s"])),
            (
                "anchor: SQLite multi-row inserts (rows/s)",
                f(&a["sqlite_rows_per_s"]),
            ),
            (
                "steady acked/s as share of echo 100 B",
                pct(&a["steady_acked_vs_echo_100b"]),
            ),
            (
                "ramp package rows/s as share of SQLite",
                pct(&a["ramp_package_rows_vs_sqlite"]),
            ),
        ]);
    }
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
