//! `deskpulse-agent`: the Deskpulse agent binary. See the library docs for
//! how it is built.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand};
use deskpulse_agent::config::{self, AgentConfig, AgentFlags, LogFormat, ProcessEnv};
use deskpulse_agent::enroll::{self, CaSource};
use deskpulse_agent::session::{self, LiveStatus};
use deskpulse_agent::state::{StateDir, Status};
use deskpulse_agent::{collect, local, spool, transport};
use tokio_util::sync::CancellationToken;

/// The Deskpulse agent: inventory and health of this PC, reported to the
/// collector over mutual TLS.
#[derive(Parser)]
#[command(name = "deskpulse-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this PC with a collector, using a one-time token.
    Enroll(EnrollArgs),
    /// Run the agent service (or report once with --once).
    Run {
        /// Report one inventory and one health sample, then exit; exits 1
        /// unless both were acknowledged.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        flags: AgentFlags,
    },
    /// Print this PC's inventory, as the agent would send it.
    Inventory(LocalArgs),
    /// Print one health sample, as the agent would send it.
    Health(LocalArgs),
    /// Report a problem to the help desk; a health sample of this PC goes
    /// with it. Queued while offline, never lost.
    ReportIssue {
        /// What is wrong, 1-2000 characters, e.g. "Outlook keeps crashing".
        text: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show the enrollment, the last successful report and the last error.
    Status {
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("ca").required(true).args(["ca_file", "ca_sha256"])))]
struct EnrollArgs {
    /// The collector, https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    collector: String,
    /// The enrollment token from `deskpulse-collector enroll-token create`.
    #[arg(long)]
    token: String,
    /// The collector's CA certificate (PEM), from `deskpulse-collector ca export`.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The SHA-256 pin of the collector's CA, printed by `ca export`.
    #[arg(long, value_name = "HEX")]
    ca_sha256: Option<String>,
    #[command(flatten)]
    state: StateArgs,
    /// The root under which file-based sources are read [default: /].
    #[arg(long, value_name = "DIR")]
    system_root: Option<PathBuf>,
}

#[derive(Args)]
struct StateArgs {
    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The agent's state dir [env: DESKPULSE_AGENT_STATE_DIR].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Args)]
struct LocalArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The root under which file-based sources are read (D13) [default: /].
    #[arg(long, value_name = "DIR")]
    system_root: Option<PathBuf>,
    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A failure and its exit code (D11).
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: 2,
        message: message.to_string(),
    }
}

fn failed(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: message.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!(
                "deskpulse-agent: error: {}",
                failure.message.replace('\n', " ")
            );
            ExitCode::from(failure.code)
        }
    }
}

fn resolve(flags: AgentFlags) -> Result<AgentConfig, Failure> {
    config::resolve(&flags, &ProcessEnv).map_err(usage)
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// How long the stopped service waits for blocking-pool jobs to end.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // One thread: the agent's work is small, and a single-threaded runtime
    // keeps its memory and idle CPU near zero.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(failed)?;
    println!("{text}");
    Ok(())
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Enroll(args) => {
            let ca = match (&args.ca_file, &args.ca_sha256) {
                (Some(file), _) => CaSource::File(file.clone()),
                (None, Some(pin)) => CaSource::Pin(transport::parse_pin(pin).map_err(usage)?),
                (None, None) => return Err(usage("give --ca-file or --ca-sha256")),
            };
            transport::parse_collector_url(&args.collector).map_err(usage)?;
            if args.token.trim().is_empty() {
                return Err(usage("--token is empty"));
            }
            let config = resolve(AgentFlags {
                config: args.state.config,
                state_dir: args.state.state_dir,
                system_root: args.system_root,
                ..AgentFlags::default()
            })?;
            init_logging(config.log_format, "warn");
            let state = StateDir::new(&config.state_dir);
            let enrolled = runtime()?
                .block_on(enroll::enroll(
                    &state,
                    &args.collector,
                    &args.token,
                    &ca,
                    &config.system_root,
                    session::now_ms(),
                ))
                .map_err(failed)?;
            if enrolled.relinked {
                println!(
                    "enrolled as host {} (this hardware was enrolled before; linked to its existing host)",
                    enrolled.host_id
                );
            } else {
                println!("enrolled as host {}", enrolled.host_id);
            }
            Ok(())
        }
        Command::Run { once, flags } => {
            let config = resolve(flags)?;
            init_logging(config.log_format, "info");
            let state = StateDir::new(&config.state_dir);
            let _lock = state.lock().map_err(failed)?;
            let rt = runtime()?;
            if once {
                let outcome = rt
                    .block_on(session::run_once(&config, &state))
                    .map_err(failed)?;
                println!(
                    "reported {} records for host {}; all acknowledged",
                    outcome.acknowledged, outcome.host_id
                );
                return Ok(());
            }
            state.credentials().map_err(failed)?;
            let served = rt.block_on(service(&config, &state));
            // Dropping the runtime would wait for every blocking-pool job:
            // a collection stuck in a probe would hold the exit until the
            // probe's deadline, or for ever where a call has none. A
            // diagnostic told to stop kills its processes within
            // milliseconds, so a second is enough for it.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
            served
        }
        Command::Inventory(args) => {
            let config = resolve(AgentFlags {
                config: args.config,
                system_root: args.system_root,
                ..AgentFlags::default()
            })?;
            let inventory = collect::collect_inventory(&config.system_root);
            if args.json {
                print_json(&inventory)
            } else {
                print!("{}", collect::render_inventory(&inventory));
                Ok(())
            }
        }
        Command::Health(args) => {
            let config = resolve(AgentFlags {
                config: args.config,
                system_root: args.system_root,
                ..AgentFlags::default()
            })?;
            let sample =
                collect::HealthSampler::with_settings(&config.system_root, config.health.clone())
                    .sample();
            if args.json {
                print_json(&sample)
            } else {
                print!("{}", collect::render_health(&sample));
                Ok(())
            }
        }
        Command::ReportIssue { text, state } => {
            let text = deskpulse_agent::issue::validate_text(&text).map_err(usage)?;
            let config = resolve(AgentFlags {
                config: state.config,
                state_dir: state.state_dir,
                ..AgentFlags::default()
            })?;
            report_issue(&config, text)
        }
        Command::Status { state, json } => {
            let config = resolve(AgentFlags {
                config: state.config,
                state_dir: state.state_dir,
                ..AgentFlags::default()
            })?;
            status(&config, json)
        }
    }
}

async fn service(config: &AgentConfig, state: &StateDir) -> Result<(), Failure> {
    let shutdown = CancellationToken::new();
    let live = Arc::new(Mutex::new(LiveStatus::default()));
    // A few reports at once is plenty; each waits for its spool write.
    let (issues, issue_queue) = tokio::sync::mpsc::channel(8);
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let endpoint = local::Endpoint::of(state);
    let service = local::Service::new(live.clone(), issues, config.system_root.clone());
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(error) = local::serve(&endpoint, service, shutdown).await {
                tracing::warn!(%error, %endpoint, "the local endpoint is unavailable; `status` will read the saved status");
            }
        }
    });
    session::run_service(config, state, live, issue_queue, shutdown)
        .await
        .map_err(failed)
}

/// `report-issue`: through the running service when there is one, else
/// straight into the spool under the state dir lock.
fn report_issue(config: &AgentConfig, text: String) -> Result<(), Failure> {
    let state = StateDir::new(&config.state_dir);
    if state.enrollment().map_err(failed)?.is_none() {
        return Err(failed(
            "this agent is not enrolled, so the help desk cannot be reached: run `deskpulse-agent enroll` first",
        ));
    }
    let asked = runtime()?.block_on(local::ask(
        &local::Endpoint::of(&state),
        &local::LocalRequest::ReportIssue { text: text.clone() },
        local::REPORT_TIMEOUT,
    ));
    let unreachable = match asked {
        Ok(Some(local::LocalReply::Reported { connected, .. })) => {
            if connected {
                println!("reported; it is on its way to the help desk");
            } else {
                println!("reported; it will reach the help desk (queued while offline)");
            }
            return Ok(());
        }
        Ok(Some(local::LocalReply::Error { message })) => return Err(failed(message)),
        Ok(Some(local::LocalReply::Status(_))) => {
            return Err(failed("the agent service gave an unexpected answer"));
        }
        Ok(None) => None,
        Err(error) => Some(error),
    };
    match deskpulse_agent::issue::report_offline(
        config,
        &state,
        text,
        deskpulse_agent::issue::caller(&config.system_root),
    ) {
        Ok(_) => {
            println!(
                "reported; the agent service is not running, so it will reach the help desk when the service next runs"
            );
            Ok(())
        }
        Err(deskpulse_agent::issue::IssueError::State(
            deskpulse_agent::state::StateError::Busy { .. },
        )) => Err(failed(format!(
            "the agent service is running but did not answer on its local endpoint ({}); try again",
            unreachable.map_or_else(|| "no answer".to_owned(), |e| e.to_string())
        ))),
        Err(error) => Err(failed(error)),
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            shutdown.cancel();
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

#[derive(serde::Serialize)]
struct StatusView {
    state_dir: PathBuf,
    enrolled: bool,
    host_id: Option<String>,
    collector: Option<String>,
    enrolled_at_unix_ms: Option<i64>,
    service_running: bool,
    #[serde(flatten)]
    status: Status,
}

fn format_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "never".into();
    };
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let ago = std::time::SystemTime::now()
        .duration_since(at)
        .map(|d| {
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
        })
        .unwrap_or_else(|_| "0s".into());
    format!("{} ({ago} ago)", humantime::format_rfc3339_seconds(at))
}

fn status(config: &AgentConfig, json: bool) -> Result<(), Failure> {
    let state = StateDir::new(&config.state_dir);
    let enrollment = state.enrollment().map_err(failed)?;
    let live = runtime()?
        .block_on(local::ask(
            &local::Endpoint::of(&state),
            &local::LocalRequest::Status,
            std::time::Duration::from_secs(5),
        ))
        .ok()
        .flatten()
        .and_then(|reply| match reply {
            local::LocalReply::Status(status) => Some(status),
            local::LocalReply::Error { .. } | local::LocalReply::Reported { .. } => None,
        });
    let service_running = live.is_some();
    let status = match live {
        Some(status) => status,
        None => {
            let mut saved = state.status().map_err(failed)?;
            // The saved status may lag a killed service; the spool is exact.
            if let Ok(stats) = spool::Spool::inspect(&state.spool_dir()) {
                saved.unacknowledged =
                    stats.health.records + stats.inventory.records + stats.results.records;
                saved.spool = stats;
            }
            saved
        }
    };
    let view = StatusView {
        state_dir: config.state_dir.clone(),
        enrolled: enrollment.is_some(),
        host_id: enrollment.as_ref().map(|e| e.host_id.clone()),
        collector: enrollment.as_ref().map(|e| e.collector.clone()),
        enrolled_at_unix_ms: enrollment.as_ref().map(|e| e.enrolled_at_unix_ms),
        service_running,
        status,
    };
    if json {
        return print_json(&view);
    }
    match &enrollment {
        Some(e) => println!(
            "enrolled:        host {} with {} since {}",
            e.host_id,
            e.collector,
            format_time(Some(e.enrolled_at_unix_ms))
        ),
        None => println!("enrolled:        no (run `deskpulse-agent enroll`)"),
    }
    println!(
        "service:         {}",
        match (view.service_running, view.status.connected) {
            (true, true) => "running, connected",
            (true, false) => "running, not connected",
            (false, _) => "not running",
        }
    );
    println!(
        "last report:     {}",
        format_time(view.status.last_success_unix_ms)
    );
    match &view.status.last_error {
        Some(error) => println!(
            "last error:      {error} ({})",
            format_time(view.status.last_error_unix_ms)
        ),
        None => println!("last error:      none"),
    }
    println!("unacknowledged:  {}", view.status.unacknowledged);
    let spool = &view.status.spool;
    for (class, depth) in [
        ("health", &spool.health),
        ("inventory", &spool.inventory),
        ("results", &spool.results),
    ] {
        println!(
            "spool {class:<10} {} waiting, {} bytes, oldest {}",
            depth.records,
            depth.bytes,
            format_time(depth.oldest_unix_ms)
        );
    }
    let d = &spool.dropped;
    println!(
        "spool dropped:   {} health thinned, {} health dropped, {} inventories superseded, {} results refused, {} unwritable",
        d.health_thinned, d.health_dropped, d.inventory_superseded, d.results_refused, d.unwritable
    );
    Ok(())
}
