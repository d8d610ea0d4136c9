//! `deskpulse-agent`: the Deskpulse agent binary. See the library docs for
//! how it is built.

// Output goes through `out!`, `outln!` and `errln!`, which end quietly on a
// closed pipe instead of panicking (`deskpulse_proto::output`).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use deskpulse_agent::config::{self, AgentConfig, AgentFlags, ProcessEnv};
use deskpulse_agent::enroll::{self, CaSource};
use deskpulse_agent::logging::init_logging;
use deskpulse_agent::service::{self, Installation};
use deskpulse_agent::session;
use deskpulse_agent::state::{StateDir, Status};
use deskpulse_agent::{collect, local, spool, transport};
use tokio_util::sync::CancellationToken;

/// Writes to stdout like `print!`; a closed pipe ends the process quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        deskpulse_proto::output::write_stdout(PROGRAM, format!($($arg)*).as_bytes())
    };
}

/// Writes a line to stdout like `println!`, as `out!` does.
macro_rules! outln {
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

/// Writes a line to stderr like `eprintln!`, ending quietly on a closed
/// pipe.
macro_rules! errln {
    ($($arg:tt)*) => {
        deskpulse_proto::output::write_stderr(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// The name this program's error lines start with.
const PROGRAM: &str = "deskpulse-agent";

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
        /// Started by the Windows Service Control Manager: answer its
        /// controls (`service install` registers this).
        #[arg(long, hide = true, conflicts_with = "once")]
        windows_service: bool,
        #[command(flatten)]
        flags: AgentFlags,
    },
    /// Install, remove, start, stop or query the agent as an OS service
    /// (systemd, the Windows Service Control Manager, launchd).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
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
        /// Your e-mail address, so the help desk can tell you when it is
        /// fixed (default: your user name at the agent's
        /// reporter_email_domain, when set).
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show your own tickets from this PC: their number, status, the
    /// resolution and the help desk's public notes.
    MyTickets {
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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

#[derive(Subcommand)]
enum ServiceAction {
    /// Install the service (or upgrade it in place, keeping the config and
    /// the enrollment) and start it.
    Install {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Stop and remove the service.
    Uninstall {
        /// Also delete the state dir (key, enrollment, spool) and the
        /// config file.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Start the installed service.
    Start,
    /// Stop the running service.
    Stop,
    /// Whether the service is installed and running, and enrolled.
    Status {
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the systemd unit or the launchd plist that `install` writes,
    /// for packagers.
    Print {
        /// Which service manager's file.
        #[arg(value_enum)]
        manager: Manager,
        /// The installed binary [default: this program].
        #[arg(long, value_name = "FILE")]
        binary: Option<PathBuf>,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Manager {
    Systemd,
    Launchd,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("ca").args(["ca_file", "ca_sha256"])))]
struct EnrollArgs {
    /// The collector, https://HOST:PORT.
    #[arg(long, value_name = "URL", required_unless_present = "from_file")]
    collector: Option<String>,
    /// The enrollment token from `deskpulse-collector enroll-token create`.
    #[arg(long, required_unless_present = "from_file")]
    token: Option<String>,
    /// Enroll from a TOML file with `collector`, `token` and `ca_sha256`
    /// (what packages read from /etc/deskpulse/enroll.toml); the token is
    /// removed from the file once used.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["collector", "token", "ca_file", "ca_sha256"])]
    from_file: Option<PathBuf>,
    /// The collector's CA certificate (PEM), from `deskpulse-collector ca export`.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The SHA-256 pin of the collector's CA, printed by `ca export`.
    #[arg(long, value_name = "HEX")]
    ca_sha256: Option<String>,
    /// Enroll a state dir that is enrolled already, as a new host (or as
    /// the host a re-link token names); the host it was enrolled as stays
    /// in the fleet until an admin retires it (`deskpulse host retire`).
    #[arg(long, conflicts_with = "from_file")]
    force: bool,
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
            errln!(
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

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    service::runtime().map_err(failed)
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(failed)?;
    outln!("{text}");
    Ok(())
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Enroll(args) => enroll_command(args),
        Command::Run {
            once,
            windows_service,
            flags,
        } => {
            let config = resolve(flags)?;
            init_logging(config.log_format, "info");
            if windows_service {
                return run_windows_service(config);
            }
            if once {
                let state = StateDir::new(&config.state_dir);
                let _lock = state.lock().map_err(failed)?;
                let outcome = runtime()?
                    .block_on(session::run_once(&config, &state))
                    .map_err(failed)?;
                outln!(
                    "reported {} records for host {}; all acknowledged",
                    outcome.acknowledged,
                    outcome.host_id
                );
                return Ok(());
            }
            service::run_until_stopped(&config, CancellationToken::new(), true).map_err(failed)
        }
        Command::Service { action } => service_command(action),
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
                out!("{}", collect::render_inventory(&inventory));
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
                out!("{}", collect::render_health(&sample));
                Ok(())
            }
        }
        Command::ReportIssue { text, email, state } => {
            let text = deskpulse_agent::issue::validate_text(&text).map_err(usage)?;
            let email = email
                .map(|address| deskpulse_proto::email::check(&address).map_err(usage))
                .transpose()?;
            let config = resolve(AgentFlags {
                config: state.config,
                state_dir: state.state_dir,
                ..AgentFlags::default()
            })?;
            report_issue(&config, text, email)
        }
        Command::MyTickets { state, json } => {
            let config = resolve(AgentFlags {
                config: state.config,
                state_dir: state.state_dir,
                ..AgentFlags::default()
            })?;
            my_tickets(&config, json)
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

/// `report-issue`: through the running service when there is one, else
/// straight into the spool under the state dir lock.
fn report_issue(config: &AgentConfig, text: String, email: Option<String>) -> Result<(), Failure> {
    let state = StateDir::new(&config.state_dir);
    // An employee may not read the service's files; the service (or the
    // drop box) tells whether this agent is enrolled.
    if readable_enrollment(&state)?.is_some_and(|enrollment| enrollment.is_none()) {
        return Err(failed(
            "this agent is not enrolled, so the help desk cannot be reached: run `deskpulse-agent enroll` first",
        ));
    }
    let asked = runtime()?.block_on(local::ask(
        &local::Endpoint::of(&state),
        &local::LocalRequest::ReportIssue {
            text: text.clone(),
            email: email.clone(),
        },
        local::REPORT_TIMEOUT,
    ));
    let unreachable = match asked {
        Ok(Some(local::LocalReply::Reported {
            connected,
            ticket,
            reference,
            ..
        })) => {
            match (connected, ticket) {
                (_, Some(ticket)) => outln!("Reported. Ticket #{ticket}."),
                (true, None) => outln!(
                    "reported; it is on its way to the help desk (reference {reference}); `deskpulse-agent my-tickets` shows its ticket number once the help desk has it"
                ),
                (false, None) => outln!(
                    "reported; saved on this PC and it will be sent to the help desk when the agent reconnects (reference {reference}); `deskpulse-agent my-tickets` shows its ticket number later"
                ),
            }
            return Ok(());
        }
        Ok(Some(local::LocalReply::AlreadySent { message, .. })) => {
            outln!("{message}");
            return Ok(());
        }
        Ok(Some(local::LocalReply::Error { message })) => return Err(failed(message)),
        Ok(Some(local::LocalReply::Status(_) | local::LocalReply::MyTickets(_))) => {
            return Err(failed("the agent service gave an unexpected answer"));
        }
        Ok(None) => None,
        Err(error) => Some(error),
    };
    let caller = deskpulse_agent::issue::caller(&config.system_root);
    let reporter_email = deskpulse_agent::issue::reporter_email(
        email.as_deref(),
        &caller,
        config.reporter_email_domain.as_deref(),
    )
    .map_err(usage)?;
    match deskpulse_agent::issue::report_offline(
        config,
        &state,
        text.clone(),
        caller.clone(),
        reporter_email,
    ) {
        Ok(_) => {
            outln!(
                "reported; the agent service is not running, so it is queued and will reach the help desk when the service next runs; `deskpulse-agent my-tickets` shows its ticket number later"
            );
            Ok(())
        }
        Err(deskpulse_agent::issue::IssueError::AlreadySent(line)) => {
            outln!("{line}");
            Ok(())
        }
        Err(deskpulse_agent::issue::IssueError::State(
            deskpulse_agent::state::StateError::Busy { .. },
        )) => Err(failed(format!(
            "the agent service is running but did not answer on its local endpoint ({}); try again",
            unreachable.map_or_else(|| "no answer".to_owned(), |e| e.to_string())
        ))),
        // An employee may not open the service's key and spool: the
        // report waits in the drop box, in this user's name.
        Err(deskpulse_agent::issue::IssueError::State(
            deskpulse_agent::state::StateError::Io { source, .. },
        )) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            let file =
                deskpulse_agent::issue::dropbox::drop_report(&state, &text, session::now_ms())
                    .map_err(failed)?;
            outln!(
                "queued: the agent service is not running, so your report waits in {}; it will reach the help desk, in your name, when the service runs again",
                file.display()
            );
            Ok(())
        }
        Err(error) => Err(failed(error)),
    }
}

/// `my-tickets`: the caller's tickets, asked of the running service (which
/// names the caller from the connection and asks the collector). Without
/// a service there is no one to ask: one line, exit 1.
fn my_tickets(config: &AgentConfig, json: bool) -> Result<(), Failure> {
    let state = StateDir::new(&config.state_dir);
    let asked = runtime()?.block_on(local::ask(
        &local::Endpoint::of(&state),
        &local::LocalRequest::MyTickets,
        deskpulse_agent::issue::tickets::ANSWER_TIMEOUT + std::time::Duration::from_secs(5),
    ));
    let view = match asked {
        Ok(Some(local::LocalReply::MyTickets(view))) => view,
        Ok(Some(local::LocalReply::Error { message })) => return Err(failed(message)),
        Ok(Some(_)) => return Err(failed("the agent service gave an unexpected answer")),
        Ok(None) => {
            return Err(failed(
                "the agent service is not running, so your tickets cannot be looked up; start it (`deskpulse-agent service start`) or ask your help desk",
            ));
        }
        Err(error) => return Err(failed(format!("the agent service did not answer: {error}"))),
    };
    if json {
        return print_json(&view);
    }
    out!("{}", deskpulse_agent::issue::tickets::render(&view));
    Ok(())
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

/// The enrollment, or `None` when this user may not read the state dir,
/// which is private to the service.
fn readable_enrollment(
    state: &StateDir,
) -> Result<Option<Option<deskpulse_agent::state::Enrollment>>, Failure> {
    match state.enrollment() {
        Ok(enrollment) => Ok(Some(enrollment)),
        Err(deskpulse_agent::state::StateError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Ok(None)
        }
        Err(error) => Err(failed(error)),
    }
}

fn status(config: &AgentConfig, json: bool) -> Result<(), Failure> {
    let state = StateDir::new(&config.state_dir);
    let readable = readable_enrollment(&state)?;
    let enrollment = readable.clone().flatten();
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
            local::LocalReply::Error { .. }
            | local::LocalReply::Reported { .. }
            | local::LocalReply::AlreadySent { .. }
            | local::LocalReply::MyTickets(_) => None,
        });
    let service_running = live.is_some();
    let status = match live {
        Some(status) => status,
        None if readable.is_none() => {
            return Err(failed(format!(
                "the agent service is not running, and its state dir {} is private to it; run `deskpulse-agent status` as root (as an administrator on Windows)",
                config.state_dir.display()
            )));
        }
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
        // A running service is enrolled: it checks before it serves.
        enrolled: enrollment.is_some() || readable.is_none(),
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
        Some(e) => outln!(
            "enrolled:        host {} with {} since {}",
            e.host_id,
            e.collector,
            format_time(Some(e.enrolled_at_unix_ms))
        ),
        None if view.enrolled => outln!("enrolled:        yes (ask as root for the host id)"),
        None => outln!("enrolled:        no (run `deskpulse-agent enroll`)"),
    }
    outln!(
        "service:         {}",
        match (view.service_running, view.status.connected) {
            (true, true) => "running, connected",
            (true, false) => "running, not connected",
            (false, _) => "not running",
        }
    );
    outln!(
        "last report:     {}",
        format_time(view.status.last_success_unix_ms)
    );
    match &view.status.last_error {
        Some(error) => outln!(
            "last error:      {error} ({})",
            format_time(view.status.last_error_unix_ms)
        ),
        None => outln!("last error:      none"),
    }
    outln!("unacknowledged:  {}", view.status.unacknowledged);
    let spool = &view.status.spool;
    for (class, depth) in [
        ("health", &spool.health),
        ("inventory", &spool.inventory),
        ("results", &spool.results),
    ] {
        outln!(
            "spool {class:<10} {} waiting, {} bytes, oldest {}",
            depth.records,
            depth.bytes,
            format_time(depth.oldest_unix_ms)
        );
    }
    let d = &spool.dropped;
    outln!(
        "spool dropped:   {} health thinned, {} health dropped, {} inventories superseded, {} results refused, {} unwritable",
        d.health_thinned,
        d.health_dropped,
        d.inventory_superseded,
        d.results_refused,
        d.unwritable
    );
    Ok(())
}

fn enroll_command(args: EnrollArgs) -> Result<(), Failure> {
    let from_file = match &args.from_file {
        Some(path) => Some((path.clone(), enroll::read_enroll_file(path).map_err(usage)?)),
        None => None,
    };
    let (collector, token, ca) = match &from_file {
        Some((path, file)) => {
            let Some(token) = file.token.clone() else {
                return Err(usage(format!(
                    "{} holds no token (it was used already, or never set)",
                    path.display()
                )));
            };
            (
                file.collector.clone(),
                token,
                CaSource::Pin(file.ca_sha256.clone()),
            )
        }
        None => {
            let ca = match (&args.ca_file, &args.ca_sha256) {
                (Some(file), _) => CaSource::File(file.clone()),
                (None, Some(pin)) => CaSource::Pin(transport::parse_pin(pin).map_err(usage)?),
                (None, None) => return Err(usage("give --ca-file or --ca-sha256")),
            };
            (
                args.collector.clone().unwrap_or_default(),
                args.token.clone().unwrap_or_default(),
                ca,
            )
        }
    };
    transport::parse_collector_url(&collector).map_err(usage)?;
    if token.trim().is_empty() {
        return Err(usage("the token is empty"));
    }
    let config = resolve(AgentFlags {
        config: args.state.config,
        state_dir: args.state.state_dir,
        system_root: args.system_root,
        ..AgentFlags::default()
    })?;
    init_logging(config.log_format, "warn");
    let state = StateDir::new(&config.state_dir);
    if let (Some((path, file)), Ok(Some(enrollment))) = (&from_file, state.enrollment()) {
        // A package upgrade runs its install script again: an enrolled
        // agent keeps its identity, and the unused token goes.
        enroll::forget_token(path, file).map_err(failed)?;
        outln!(
            "already enrolled as host {} with {}; removed the unused token from {}",
            enrollment.host_id,
            enrollment.collector,
            path.display()
        );
        return Ok(());
    }
    // Enrolling again mints a new host id and leaves the old host behind
    // as a ghost in the fleet: only on purpose.
    let previous = match state.enrollment() {
        Ok(Some(enrollment)) if !args.force => {
            return Err(failed(format!(
                "the state dir {} is enrolled already as host {} with {}; --force enrolls it again as a new host (host {} then stays in the fleet until an admin retires it with `deskpulse host retire {}`)",
                config.state_dir.display(),
                enrollment.host_id,
                enrollment.collector,
                enrollment.host_id,
                enrollment.host_id
            )));
        }
        Ok(enrollment) => enrollment,
        // An enrollment that cannot be read is replaced, as before.
        Err(_) => None,
    };
    let enrolled = runtime()?
        .block_on(enroll::enroll(
            &state,
            &collector,
            &token,
            &ca,
            &config.system_root,
            session::now_ms(),
        ))
        .map_err(failed)?;
    if let Some((path, file)) = &from_file {
        enroll::forget_token(path, file).map_err(failed)?;
    }
    if enrolled.relinked {
        outln!(
            "enrolled as host {} (this hardware was enrolled before; linked to its existing host)",
            enrolled.host_id
        );
    } else if enrolled.awaiting_approval {
        outln!(
            "enrolled as new host {} (this hardware matches an enrolled host: an admin may approve linking it to that host with `deskpulse enrollments approve`; the agent follows by itself)",
            enrolled.host_id
        );
    } else {
        outln!("enrolled as host {}", enrolled.host_id);
    }
    if let Some(previous) = previous.filter(|p| p.host_id != enrolled.host_id) {
        outln!(
            "host {} that this state dir was enrolled as stays in the fleet: retire it with `deskpulse host retire {}`",
            previous.host_id,
            previous.host_id
        );
    }
    Ok(())
}

/// The config file a service is installed with: the one named by the flag
/// or `DESKPULSE_AGENT_CONFIG`, else this OS's default path.
fn service_config_file(state: &StateArgs) -> PathBuf {
    config::named_config_file(state.config.as_deref(), &ProcessEnv)
        .unwrap_or_else(|| config::default_config_file(&ProcessEnv))
}

/// The installation `state` describes: its config file, whether it exists
/// yet or not, and the state dir it (or the flag) names.
fn installation(state: StateArgs, binary: Option<PathBuf>) -> Result<Installation, Failure> {
    let config_file = service_config_file(&state);
    // A config file that does not exist yet is written by `install`.
    let existing = config_file.exists().then(|| config_file.clone());
    let config = resolve(AgentFlags {
        config: existing.clone(),
        state_dir: state.state_dir,
        ..AgentFlags::default()
    })?;
    if existing.is_some() {
        // The service is started with `--config` alone: the state dir it
        // uses is the file's, whatever this command was told.
        let no_environment = std::collections::HashMap::new();
        let service_sees = config::resolve(
            &AgentFlags {
                config: existing,
                ..AgentFlags::default()
            },
            &no_environment,
        )
        .map_err(usage)?
        .state_dir;
        if service_sees != config.state_dir {
            return Err(usage(format!(
                "{} names the state dir {}, which the service would use, not {}: edit the config file, or leave out --state-dir and DESKPULSE_AGENT_STATE_DIR",
                config_file.display(),
                service_sees.display(),
                config.state_dir.display()
            )));
        }
    }
    let mut installation = Installation::of_this_binary(config_file, &config).map_err(failed)?;
    if let Some(binary) = binary {
        installation.binary = binary;
    }
    Ok(installation)
}

fn service_command(action: ServiceAction) -> Result<(), Failure> {
    match action {
        ServiceAction::Install { state } => {
            let installation = installation(state, None)?;
            outln!("{}", service::install(&installation).map_err(failed)?);
            Ok(())
        }
        ServiceAction::Uninstall { purge, state } => {
            let installation = installation(state, None)?;
            outln!(
                "{}",
                service::uninstall(purge, &installation).map_err(failed)?
            );
            Ok(())
        }
        ServiceAction::Start => {
            outln!("{}", service::start().map_err(failed)?);
            Ok(())
        }
        ServiceAction::Stop => {
            outln!("{}", service::stop().map_err(failed)?);
            Ok(())
        }
        ServiceAction::Status { state, json } => service_status(state, json),
        ServiceAction::Print {
            manager,
            binary,
            state,
        } => {
            let installation = installation(state, binary)?;
            match manager {
                Manager::Systemd => out!("{}", service::systemd::unit_file(&installation)),
                Manager::Launchd => {
                    let xml = service::launchd::plist_xml(&installation).map_err(failed)?;
                    out!("{}", String::from_utf8_lossy(&xml));
                }
            }
            Ok(())
        }
    }
}

#[derive(serde::Serialize)]
struct ServiceStatusView {
    #[serde(flatten)]
    service: service::ServiceState,
    state_dir: PathBuf,
    enrolled: bool,
    host_id: Option<String>,
    enrollment_error: Option<String>,
}

fn service_status(state: StateArgs, json: bool) -> Result<(), Failure> {
    let config = resolve(AgentFlags {
        config: state.config,
        state_dir: state.state_dir,
        ..AgentFlags::default()
    })?;
    let service = service::query().map_err(failed)?;
    let enrollment = StateDir::new(&config.state_dir).enrollment();
    let view = ServiceStatusView {
        service,
        state_dir: config.state_dir.clone(),
        enrolled: matches!(enrollment, Ok(Some(_))),
        host_id: enrollment
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map(|e| e.host_id.clone()),
        enrollment_error: enrollment.as_ref().err().map(ToString::to_string),
    };
    if json {
        return print_json(&view);
    }
    outln!(
        "service:   {}",
        match (view.service.installed, view.service.running) {
            (false, _) => "not installed (run `deskpulse-agent service install`)".to_owned(),
            (true, true) => format!("running ({})", view.service.detail),
            (true, false) => format!("installed, not running ({})", view.service.detail),
        }
    );
    if view.service.installed && !view.service.definition.is_empty() {
        outln!("defined:   {}", view.service.definition);
    }
    match (&view.host_id, &view.enrollment_error) {
        (Some(host), _) => outln!("enrolled:  yes, host {host}"),
        (None, Some(error)) => outln!("enrolled:  unknown ({error})"),
        (None, None) => outln!(
            "enrolled:  no (run `deskpulse-agent enroll`, or `deskpulse-agent enroll --from-file {}`)",
            enroll_file_hint()
        ),
    }
    outln!("state dir: {}", view.state_dir.display());
    Ok(())
}

fn enroll_file_hint() -> String {
    config::default_config_file(&ProcessEnv)
        .with_file_name("enroll.toml")
        .display()
        .to_string()
}

#[cfg(windows)]
fn run_windows_service(config: AgentConfig) -> Result<(), Failure> {
    service::windows::run_as_service(config).map_err(failed)
}

#[cfg(not(windows))]
fn run_windows_service(_config: AgentConfig) -> Result<(), Failure> {
    Err(usage("--windows-service is for Windows only"))
}
