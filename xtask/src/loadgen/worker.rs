//! A worker process: runs one share of the simulated agents and talks to the
//! parent over its standard streams.
//!
//! The parent re-executes this binary with the hidden `loadgen-worker`
//! subcommand, one worker per ~9,000 agents, because one connection is one
//! open file and a process here may open only 20,000.
//!
//! - stdin, first line: the [`WorkerConfig`] as JSON. Then commands, one per
//!   line: `steady` (every agent of every worker has its first inventory
//!   acknowledged: from now on, latencies count as steady state) and `stop`.
//!   End of input counts as `stop`, so a worker never outlives its parent.
//! - stdout: JSON lines. `{"progress": {...}}` every 250 ms with the
//!   counters, then one `{"final": {...}}` with the counters, the error
//!   kinds and the latency histograms' buckets; or `{"error": "..."}` when
//!   the worker cannot go on (enrollment failed).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};

use super::sim::{self, AgentRun, Stats};

/// What one worker runs, sent by the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// This worker's number, for messages.
    pub worker: usize,
    /// The fleet-wide index of this worker's first agent (host names and
    /// hardware ids are made from it).
    pub first_index: usize,
    /// How many agents this worker runs.
    pub agents: usize,
    /// The collector, https://HOST:PORT.
    pub url: String,
    /// The fleet CA, PEM.
    pub ca_pem: String,
    /// Enrollment tokens; agent k of this worker uses token k / 10,000.
    pub tokens: Vec<String>,
    /// Packages in each first inventory.
    pub packages: usize,
    /// Health sample interval.
    pub health_interval_ms: u64,
    /// Chance per health tick of an inventory delta.
    pub delta_chance: f64,
    /// How many of this worker's agents drop and reconnect once.
    pub disconnecting: usize,
    /// The steady state's length, to place the planned disconnects in it.
    pub duration_ms: u64,
    /// Enrollments and handshakes in flight at once in this worker.
    pub concurrency: usize,
    /// Shared by every worker of a run, so hardware ids differ between runs
    /// but not between workers' views.
    pub run_id: u64,
    /// How many of this worker's agents (its first ones) fire the same
    /// rule (`--fire-same-rule`).
    #[serde(default)]
    pub firing: usize,
}

fn emit(line: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // The parent reads lines; a failed write means it is gone, and the end
    // of stdin will stop this worker.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn counters(stats: &Stats) -> serde_json::Value {
    serde_json::json!({
        "enrolled": stats.enrolled.load(Ordering::Relaxed),
        "connected": stats.connected.load(Ordering::Relaxed),
        "first_inventories": stats.first_inventories.load(Ordering::Relaxed),
        "failed_agents": stats.failed_agents.load(Ordering::Relaxed),
        "sent": stats.sent.load(Ordering::Relaxed),
        "acked": stats.acked.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "reconnects": stats.reconnects.load(Ordering::Relaxed),
        "retries": stats.retries.load(Ordering::Relaxed),
        "deltas": stats.deltas.load(Ordering::Relaxed),
    })
}

/// The `loadgen-worker` subcommand.
pub fn run() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // stdin blocks and its lock is not Send: one plain thread reads it all,
    // the configuration first, then the commands.
    let (config_tx, config_rx) = std::sync::mpsc::channel::<std::io::Result<String>>();
    let (commands_tx, commands) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        let mut lines = std::io::stdin().lock().lines();
        match lines.next() {
            Some(first) => {
                if config_tx.send(first).is_err() {
                    return;
                }
            }
            None => return,
        }
        for line in lines.map_while(Result::ok) {
            if commands_tx.send(line.trim().to_owned()).is_err() {
                return;
            }
        }
        let _ = commands_tx.send("stop".into());
    });
    let first = config_rx
        .recv()
        .context("no worker configuration on stdin")?
        .context("reading the worker configuration")?;
    let cfg: WorkerConfig =
        serde_json::from_str(&first).context("the worker configuration is not valid JSON")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(drive(cfg, commands));
    if let Err(error) = &result {
        emit(&serde_json::json!({ "error": format!("{error:#}") }));
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn drive(cfg: WorkerConfig, mut commands: mpsc::UnboundedReceiver<String>) -> Result<()> {
    let stats = Arc::new(Stats::default());
    let reporter = {
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                emit(&serde_json::json!({ "progress": counters(&stats) }));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let agents = sim::enroll_all(&cfg, &stats)
        .await
        .with_context(|| format!("worker {}", cfg.worker))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let duration = Duration::from_millis(cfg.duration_ms);
    for agent in agents {
        let local = agent.index - cfg.first_index;
        let disconnect_after = (local < cfg.disconnecting)
            .then(|| duration.mul_f64(rand::rng().random_range(0.1..0.8)));
        set.spawn(sim::run_agent(AgentRun {
            agent,
            url: cfg.url.clone(),
            ca: cfg.ca_pem.clone(),
            packages: cfg.packages,
            health_interval: Duration::from_millis(cfg.health_interval_ms.max(1)),
            delta_chance: cfg.delta_chance,
            disconnect_after,
            handshakes: handshakes.clone(),
            stats: stats.clone(),
            stop: stop_rx.clone(),
            fires: local < cfg.firing,
        }));
    }
    let mut sent_at_steady = None;
    while let Some(command) = commands.recv().await {
        match command.as_str() {
            "steady" if sent_at_steady.is_none() => {
                let _ = stats.steady_start.set(Instant::now());
                sent_at_steady = Some(stats.sent.load(Ordering::Relaxed));
            }
            "stop" => break,
            _ => {}
        }
    }
    let sent_at_stop = stats.sent.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    stats.stop.store(true, Ordering::Relaxed);
    let drain = Instant::now();
    while set.join_next().await.is_some() {}
    reporter.abort();
    let latencies = stats
        .latencies
        .lock()
        .map(|l| l.to_json())
        .unwrap_or_default();
    let error_kinds: serde_json::Map<String, serde_json::Value> = stats
        .error_kinds
        .lock()
        .map(|k| k.iter().map(|(a, b)| (a.clone(), (*b).into())).collect())
        .unwrap_or_default();
    emit(&serde_json::json!({ "final": {
        "counters": counters(&stats),
        "steady_sent": sent_at_steady.map_or(0, |s| sent_at_stop.saturating_sub(s)),
        "drain_s": drain.elapsed().as_secs_f64(),
        "error_kinds": error_kinds,
        "latencies": latencies,
    }}));
    Ok(())
}
