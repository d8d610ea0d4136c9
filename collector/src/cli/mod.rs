//! The technician CLI, `deskpulse`: talks TLS to the collector's technician
//! API with an API token. Human tables by default; `--json` gives stable
//! JSON for scripts (documented in `docs/cli-json.md`).
//!
//! # Layout
//! - [`settings`]: connection settings from flags, env and `cli.toml` (D8).
//! - [`output`]: tables, time formatting and the JSON shapes.
//! - `audit`: `deskpulse audit`, listing and `--verify`.
//! - `revocation`: `host revoke`, `tokens`, `token revoke`, `enroll-token
//!   list|revoke` (issue 20).
//! - `enrollments`: `deskpulse enrollments`, the re-link approval queue.
//! - `login`: `deskpulse login` and `logout`, the token kept in `cli.toml`.
//! - [`terminal`]: the one way to the terminal; untrusted text made inert.
//! - this module: the commands and their dispatch.

// Every byte for the terminal goes through `terminal` (untrusted text).
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
pub mod terminal;
mod audit;
mod diagnostics;
mod enrollments;
pub(crate) mod login;
pub mod output;
mod problems;
mod revocation;
pub mod settings;
mod suggestions;

use std::time::Duration;

use clap::{Parser, Subcommand};
use deskpulse_proto::v1::technician_client::TechnicianClient;
use deskpulse_proto::v1::update_ticket_request::Change;
use deskpulse_proto::v1::{
    AddWebhookRequest, ListWebhooksRequest, RemoveWebhookRequest, SearchKbRequest,
    SetWebhookEnabledRequest,
};
use deskpulse_proto::v1::{
    ApplyRulesRequest, CreateEnrollmentTokenRequest, CreateTicketRequest, GetHostRequest,
    GetTicketRequest, GetTicketResponse, ListChangesRequest, ListHostsRequest, ListRulesRequest,
    ListTicketsRequest, SetHostTagRequest, UpdateTicketRequest, WhoAmIRequest,
};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::exit::{CommandResult, Failure};
use settings::{ConnectionFlags, Settings};

/// The Deskpulse technician CLI.
#[derive(Debug, Parser)]
#[command(name = "deskpulse", version)]
pub struct Cli {
    #[command(flatten)]
    connection: ConnectionFlags,
    /// Print stable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List hosts with OS, last seen and online/offline; the filters
    /// combine with AND.
    Hosts(HostFilterArgs),
    /// A host's inventory, or one section of it.
    Inventory {
        /// A host name, a host id, or a unique prefix of an id.
        host: String,
        /// system, cpu, memory, storage, network, gpu, battery, os, users,
        /// security, software, services, or hardware (system, cpu, memory,
        /// storage, gpu and battery).
        #[arg(long, value_parser = parse_section)]
        section: Option<Sections>,
    },
    /// One host.
    #[command(subcommand)]
    Host(HostCommand),
    /// The change log: what changed on one host, or across the fleet,
    /// newest first.
    Changes {
        /// A host name, a host id, or a unique prefix of an id; omit for the
        /// whole fleet.
        host: Option<String>,
        /// How far back, e.g. 24h or 7d.
        #[arg(long, default_value = "7d", value_parser = parse_since)]
        since: Duration,
        /// Only this section (system, cpu, ..., software, services, or
        /// hardware); repeat for more.
        #[arg(long = "section", value_parser = parse_section)]
        sections: Vec<Sections>,
        /// At most this many entries.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
        limit: u32,
    },
    /// Tickets, by priority then SLA due time.
    Tickets {
        /// "open" (anything not resolved), or new, in_progress, waiting,
        /// resolved, closed.
        #[arg(long)]
        status: Option<String>,
        /// P1, P2, P3 or P4.
        #[arg(long)]
        priority: Option<String>,
        /// A host name, a host id, or a unique prefix of an id.
        #[arg(long)]
        host: Option<String>,
        /// A technician's name, or "me".
        #[arg(long)]
        assignee: Option<String>,
    },
    /// One ticket: show it, open one by hand, or work it.
    #[command(subcommand)]
    Ticket(TicketCommand),
    /// The rules in force, with SLA targets and business hours; `rules
    /// apply FILE` applies a policy file (admin), `rules export` prints
    /// the policy in force as one.
    Rules {
        #[command(subcommand)]
        command: Option<RulesCommand>,
    },
    /// Show who the API token belongs to.
    Whoami,
    /// Check an API token with the collector and save it, with the
    /// collector and CA file, in ~/.config/deskpulse/cli.toml (0600), so
    /// no other command needs a token. The token is typed without echo, or
    /// read from stdin when stdin is not a terminal.
    Login,
    /// Remove the saved API token from ~/.config/deskpulse/cli.toml.
    Logout,
    /// Enrollment tokens (admin).
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(EnrollTokenCommand),
    /// Webhooks for ticket events, each with its delivery status; `add`,
    /// `remove`, `disable` and `enable` need the admin role.
    Webhooks {
        #[command(subcommand)]
        command: Option<WebhookCommand>,
    },
    /// The knowledge base: past resolutions.
    #[command(subcommand)]
    Kb(KbCommand),
    /// Run an allow-listed diagnostic on a host: streams its output while
    /// the host is online; queues it while the host is offline.
    Run(diagnostics::RunArgs),
    /// Diagnostic jobs, newest first.
    Jobs {
        /// A host name, a host id, or a unique prefix of an id.
        #[arg(long)]
        host: Option<String>,
        /// queued, sent, completed, failed, timed_out, refused, cancelled
        /// or expired.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// One diagnostic job: show it, or cancel it.
    #[command(subcommand)]
    Job(diagnostics::JobCommand),
    /// The diagnostic catalog; with a host, what its agent enables.
    Diagnostics {
        /// A host name, a host id, or a unique prefix of an id.
        host: Option<String>,
    },
    /// The audit log, newest first; `--verify` checks its hash chain and
    /// signed anchors (admin).
    Audit(audit::AuditArgs),
    /// API tokens with technician, role, state, created, last used and
    /// expiry; never the secrets (admin).
    Tokens,
    /// An API token: `token revoke ID` (admin).
    #[command(subcommand)]
    Token(revocation::TokenCommand),
    /// Enrollments that claimed an existing host's hardware identity:
    /// list them, approve (the new enrollment takes the host over) or deny
    /// (admin).
    #[command(subcommand)]
    Enrollments(enrollments::EnrollmentsCommand),
    /// Fleet-wide problems: tickets of one rule, or the same employee
    /// report, from many hosts; open first, newest first.
    Problems(problems::ListArgs),
    /// One problem: `problem show ID`, `problem resolve ID --resolution TEXT`.
    #[command(subcommand)]
    Problem(problems::ProblemCommand),
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Add a webhook or an e-mail channel (admin). A generic webhook's
    /// secret, which signs its payloads, is read from --secret-file, or
    /// from DESKPULSE_WEBHOOK_SECRET, never from the command line; Slack,
    /// Teams and e-mail take none.
    Add {
        /// The receiver's http:// or https:// URL; or mailto:ADDRESS (e.g. a
        /// group address), or mailto:reporter (the employee who reported).
        #[arg(value_parser = parse_target)]
        url: String,
        /// ticket.opened, ticket.updated, ticket.escalated,
        /// ticket.resolved, problem.opened, problem.updated or
        /// problem.resolved; repeat for more. Default: all of them; for
        /// e-mail to an address, tickets opened and escalated and problems
        /// opened; every ticket event with --assignee; resolved to
        /// mailto:reporter.
        #[arg(long = "event", value_name = "EVENT", value_parser = parse_event)]
        events: Vec<crate::model::TicketEvent>,
        /// generic (signed JSON), slack, teams or email. Default: email for
        /// a mailto: target, generic otherwise.
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: Option<crate::model::WebhookFormat>,
        /// Only tickets of this priority (P1 … P4); repeat for more.
        /// Default: every priority.
        #[arg(long = "priority", value_name = "PRIORITY")]
        priorities: Vec<String>,
        /// Only tickets assigned to this technician (e.g. their own
        /// mailto: address).
        #[arg(long, value_name = "NAME")]
        assignee: Option<String>,
        /// A file holding the secret (one line); "-" reads stdin.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
    },
    /// Remove a webhook and its queued deliveries (admin).
    Remove {
        /// The webhook id, as `deskpulse webhooks` lists it.
        id: i64,
    },
    /// Pause a webhook: no events are queued for it, and queued deliveries
    /// wait (admin).
    Disable {
        /// The webhook id.
        id: i64,
    },
    /// Resume a paused webhook (admin).
    Enable {
        /// The webhook id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum KbCommand {
    /// Past resolutions matching any of the words, best match first.
    Search {
        /// Plain words, e.g. "spooler crash".
        #[arg(value_parser = parse_kb_query)]
        query: String,
        /// At most this many matches.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
        /// Also tickets that only "recovered by itself" (resolved by their
        /// rule, with no technician's resolution).
        #[arg(long)]
        include_auto: bool,
    },
}

fn parse_event(text: &str) -> Result<crate::model::TicketEvent, String> {
    text.trim().parse()
}

/// A webhook's target: an http(s) URL, or a `mailto:` address or
/// `mailto:reporter`.
fn parse_target(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => {
            let target = &text[7..];
            if target.trim() == "reporter" {
                Ok(crate::webhooks::route::REPORTER_TARGET.to_owned())
            } else {
                crate::webhooks::route::check_address(target).map(|a| format!("mailto:{a}"))
            }
        }
        _ => crate::webhooks::format::check_url(text),
    }
}

fn parse_format(text: &str) -> Result<crate::model::WebhookFormat, String> {
    text.trim().parse()
}

fn parse_kb_query(text: &str) -> Result<String, String> {
    if crate::model::search_terms(text).is_empty() {
        return Err("the search is empty: give one or more words".into());
    }
    Ok(text.to_owned())
}

/// Checks `webhooks add`'s arguments as the collector will, and reads the
/// secret a generic webhook needs (Slack, Teams and e-mail take none); the
/// secret, or an empty one.
fn webhook_destination(
    url: &str,
    events: &[crate::model::TicketEvent],
    format: Option<crate::model::WebhookFormat>,
    priorities: &[String],
    assignee: Option<&str>,
    secret_file: Option<&std::path::Path>,
    env: &dyn crate::config::Env,
) -> CommandResult<String> {
    let format_name = format.map_or("", |f| f.name());
    let events: Vec<String> = events.iter().map(|e| e.name().to_owned()).collect();
    let assignee = assignee.unwrap_or_default();
    // The format the collector will take: --format, else by the target.
    let generic = match format {
        Some(format) => format == crate::model::WebhookFormat::Generic,
        None => !url.trim().to_ascii_lowercase().starts_with("mailto:"),
    };
    let secret = if generic {
        webhook_secret(secret_file, env)?
    } else if secret_file.is_some() {
        return Err(Failure::usage(
            "--secret-file is for generic webhooks only: Slack and Teams URLs are their own \
             secret, and e-mail is not signed",
        ));
    } else {
        String::new()
    };
    crate::webhooks::route::check_destination(
        url,
        format_name,
        &events,
        priorities,
        assignee,
        &secret,
    )
    .map_err(Failure::usage)?;
    Ok(secret)
}

/// The environment variable a webhook secret may come from.
const WEBHOOK_SECRET_ENV: &str = "DESKPULSE_WEBHOOK_SECRET";

/// The secret for `webhooks add`, from its file, stdin or the environment.
/// An unreadable file is a failure (1); a missing or bad secret is a usage
/// error (2), found before the collector is contacted.
fn webhook_secret(
    file: Option<&std::path::Path>,
    env: &dyn crate::config::Env,
) -> CommandResult<String> {
    let text = match file {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                .map_err(|e| Failure::runtime(format!("cannot read the secret from stdin: {e}")))?;
            text
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Failure::runtime(format!("cannot read secret file {}: {e}", path.display()))
        })?,
        None => env.var(WEBHOOK_SECRET_ENV).ok_or_else(|| {
            Failure::usage(format!(
                "webhooks add needs a secret: --secret-file FILE, --secret-file - (stdin) or {WEBHOOK_SECRET_ENV}"
            ))
        })?,
    };
    crate::webhooks::format::check_secret(&text).map_err(Failure::usage)
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// A host's summary, inventory, last health sample and recent changes.
    Show {
        /// A host name, a host id, or a unique prefix of an id.
        host: String,
        /// Also show the health trend over this long, e.g. 24h or 30d.
        #[arg(long, value_name = "DURATION", value_parser = parse_since)]
        health: Option<Duration>,
    },
    /// Set a tag (key=value) on a host, or remove it (key=).
    Tag {
        /// A host name, a host id, or a unique prefix of an id.
        host: String,
        /// key=value, e.g. criticality=high or site=berlin.
        #[arg(value_parser = |t: &str| crate::query::parse_tag(t, true))]
        tag: (String, String),
    },
    /// Revoke a host (admin): its certificate is refused from now on and
    /// its live session ends on every replica; the PC comes back only by
    /// enrolling again with a fresh token, as a new host.
    Revoke {
        /// A host name, a host id, or a unique prefix of an id.
        host: String,
        /// Why, kept in the audit log and shown by `host show`.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Retire a host gone for good (admin): it leaves the fleet lists and
    /// raises no more tickets, its open tickets close with the reason, its
    /// certificate is revoked (the PC comes back only by enrolling again),
    /// and its history stays (`host show`, `hosts --retired`).
    Retire {
        /// A host name, a host id, or a unique prefix of an id.
        host: String,
        /// Why, kept in the audit log, written into each ticket it closes
        /// and shown by `host show`.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TicketCommand {
    /// A ticket with its evidence, worklog and the host's context.
    Show {
        /// The ticket id.
        id: i64,
    },
    /// Open a ticket by hand.
    New {
        /// A host name, a host id, or a unique prefix of an id.
        host: String,
        /// What is wrong, 1-200 characters.
        #[arg(long)]
        title: String,
        /// P1, P2, P3 or P4; by default the host's impact x medium urgency.
        #[arg(long, value_parser = parse_priority)]
        priority: Option<String>,
    },
    /// Assign a ticket to a technician ("me" for yourself).
    Assign {
        /// The ticket id.
        id: i64,
        /// The technician's name, or "me".
        technician: String,
    },
    /// Add a note to a ticket's worklog.
    Note {
        /// The ticket id.
        id: i64,
        /// The note.
        text: String,
        /// Mark the note public: the employee who reported the ticket reads
        /// it (`deskpulse-agent my-tickets`), and webhooks carry its text.
        /// Notes are private without it.
        #[arg(long)]
        public: bool,
    },
    /// Set a ticket's status: new, open, in_progress, waiting (pauses the
    /// SLA clock) or closed.
    Status {
        /// The ticket id.
        id: i64,
        /// The new status.
        #[arg(value_parser = ["new", "open", "in_progress", "waiting", "closed"])]
        status: String,
    },
    /// Resolve a ticket, saying how: the knowledge base searches this.
    Resolve {
        /// The ticket id.
        id: i64,
        /// How it was fixed.
        #[arg(long)]
        resolution: String,
    },
    /// Raise a ticket's escalation level by one.
    Escalate {
        /// The ticket id.
        id: i64,
    },
    /// Reopen a resolved or closed ticket.
    Reopen {
        /// The ticket id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Check and apply a policy file (TOML; see docs/rules.md) to the
    /// fleet, and print what it changed. Admin only.
    Apply {
        /// The policy file.
        file: std::path::PathBuf,
        /// Check the file and print what it would change; apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply it even though it drops rules or SLA targets that the
        /// policy in force set (refused without this, naming them).
        #[arg(long)]
        replace: bool,
    },
    /// Print the policy in force as a file `rules apply` takes back.
    Export,
}

fn parse_priority(text: &str) -> Result<String, String> {
    crate::rules::priority::Priority::parse(text).map(|p| p.name().to_owned())
}

#[derive(Debug, Subcommand)]
enum EnrollTokenCommand {
    /// Print a new enrollment token on stdout.
    Create {
        /// How long it works, e.g. 24h (at most 30d).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        uses: u32,
    },
    /// Enrollment tokens, newest first: id, state, created, expiry, uses
    /// left, the host a re-link token re-links; never the secrets.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Revoke an enrollment token: it enrolls nothing from now on.
    Revoke {
        /// The token id, as `enroll-token list` shows it.
        id: String,
    },
}

/// The filters of `deskpulse hosts`.
#[derive(Debug, Clone, Default, clap::Args)]
struct HostFilterArgs {
    /// Hosts with a package installed: NAME, or NAME<VERSION (also `<=`,
    /// `=`, `>=`, `>`), ordered by the package's own ecosystem rules. Any case; `*`
    /// matches any run of characters (`libssl*`). The matching installed
    /// versions are shown.
    #[arg(long, value_name = "SPEC", value_parser = crate::query::parse_software)]
    software: Option<(String, Option<(crate::model::VersionOp, String)>)>,
    /// OS name, version or codename containing TEXT (`bookworm`, `11`).
    #[arg(long, value_name = "TEXT")]
    os: Option<String>,
    /// The system serial number.
    #[arg(long)]
    serial: Option<String>,
    /// Vendor or model containing TEXT.
    #[arg(long, value_name = "TEXT")]
    model: Option<String>,
    /// A filesystem with less free space than PCT percent.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    disk_free_below: Option<f32>,
    /// Only offline hosts.
    #[arg(long)]
    offline: bool,
    /// A local account, logged-in user or last user named NAME: whose PC is this?
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// An IP address of the host.
    #[arg(long, value_name = "ADDR", value_parser = crate::query::parse_ip)]
    ip: Option<String>,
    /// A MAC address of the host.
    #[arg(long, value_name = "ADDR", value_parser = crate::query::parse_mac)]
    mac: Option<String>,
    /// A tag key=value; repeat for more.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = |t: &str| crate::query::parse_tag(t, false))]
    tags: Vec<(String, String)>,
    /// Only retired hosts (`host retire`), which are left out otherwise.
    #[arg(long, conflicts_with = "all")]
    retired: bool,
    /// Retired hosts too.
    #[arg(long)]
    all: bool,
}

impl HostFilterArgs {
    fn to_wire(&self) -> deskpulse_proto::v1::HostFilter {
        let (software_name, software_op, software_version) = match &self.software {
            Some((name, Some((op, version)))) => (
                name.clone(),
                crate::query::op_symbol(*op).to_owned(),
                version.clone(),
            ),
            Some((name, None)) => (name.clone(), String::new(), String::new()),
            None => Default::default(),
        };
        deskpulse_proto::v1::HostFilter {
            software_name,
            software_op,
            software_version,
            os: self.os.clone().unwrap_or_default(),
            serial: self.serial.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            disk_free_below: self.disk_free_below.unwrap_or(0.0),
            offline: self.offline,
            user: self.user.clone().unwrap_or_default(),
            ip: self.ip.clone().unwrap_or_default(),
            mac: self.mac.clone().unwrap_or_default(),
            tags: self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            retired: if self.retired {
                deskpulse_proto::v1::RetiredHosts::Only
            } else if self.all {
                deskpulse_proto::v1::RetiredHosts::Included
            } else {
                deskpulse_proto::v1::RetiredHosts::Excluded
            } as i32,
        }
    }
}

fn parse_percent(text: &str) -> Result<f32, String> {
    let value: f32 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(value > 0.0 && value <= 100.0) {
        return Err("must be more than 0 and at most 100".into());
    }
    Ok(value)
}

/// The sections one `--section` name stands for.
#[derive(Debug, Clone)]
struct Sections(Vec<deskpulse_proto::v1::InventorySection>);

fn parse_section(text: &str) -> Result<Sections, String> {
    deskpulse_proto::sections::parse(text).map(Sections)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn parse_since(text: &str) -> Result<Duration, String> {
    let since = humantime::parse_duration(text).map_err(|e| format!("{e}; try e.g. 24h or 7d"))?;
    if since.is_zero() || since > Duration::from_secs(100 * 365 * 24 * 3600) {
        return Err("must be more than 0 and at most 100 years".into());
    }
    Ok(since)
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e}; try e.g. 24h"))?;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err("must be between 1m and 30d".into());
    }
    Ok(ttl)
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = TechnicianClient<InterceptedService<Channel, BearerToken>>;

async fn connect(settings: &Settings) -> CommandResult<Client> {
    let ca = std::fs::read_to_string(&settings.ca_file).map_err(|e| {
        Failure::runtime(format!(
            "cannot read CA file {}: {e}",
            settings.ca_file.display()
        ))
    })?;
    let token = format!("Bearer {}", settings.token)
        .parse()
        .map_err(|_| Failure::usage("the API token contains characters not allowed in a header"))?;
    let endpoint = Endpoint::from(settings.collector.clone())
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|e| Failure::runtime(deskpulse_proto::client::describe_error(&e)))?
        .connect_timeout(Duration::from_secs(10));
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::runtime(format!(
            "cannot reach the collector at {}: {}",
            settings.collector,
            deskpulse_proto::client::describe_error(&e)
        ))
    })?;
    Ok(
        TechnicianClient::with_interceptor(channel, BearerToken(token))
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

async fn update(
    client: &mut Client,
    id: i64,
    change: Change,
) -> Result<tonic::Response<GetTicketResponse>, tonic::Status> {
    client
        .update_ticket(UpdateTicketRequest {
            id,
            change: Some(change),
        })
        .await
}

/// A refused policy file: each error on its own line, named by the file
/// (`rules.toml: line 12: rule x: op is required`), then the summary.
fn rule_file_refused(file: &std::path::Path, status: tonic::Status) -> Failure {
    if status.code() != tonic::Code::InvalidArgument {
        return call_failed(status);
    }
    let errors: Vec<&str> = status.message().lines().collect();
    if let [only] = errors.as_slice() {
        return Failure::runtime(format!("{}: {only}", file.display()));
    }
    for line in &errors {
        errln!("{}: {}", file.display(), terminal::inert(line));
    }
    Failure::runtime(format!(
        "{}: {} errors; nothing was applied",
        file.display(),
        errors.len()
    ))
}

fn call_failed(status: tonic::Status) -> Failure {
    Failure::runtime(deskpulse_proto::client::describe_status(&status))
}

async fn set_webhook_enabled(
    client: &mut Client,
    id: i64,
    enabled: bool,
    json: bool,
) -> CommandResult {
    let hook = client
        .set_webhook_enabled(SetWebhookEnabledRequest { id, enabled })
        .await
        .map_err(call_failed)?
        .into_inner();
    if json {
        return output::webhook_added(&hook, json);
    }
    let state = if hook.enabled { "enabled" } else { "paused" };
    outln!("webhook {} {state}: {}", hook.id, hook.url);
    Ok(())
}

/// Runs the CLI; returns the failure to report, if any.
pub fn main(cli: Cli, env: &dyn crate::config::Env) -> CommandResult {
    match cli.command {
        Command::Login => return login::login(&cli.connection, env, cli.json),
        Command::Logout => return login::logout(env, cli.json),
        _ => {}
    }
    let settings = settings::resolve(&cli.connection, env).map_err(Failure::usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    // Read and checked before any connection, so a missing secret or a bad
    // destination is a usage error.
    let secret = match &cli.command {
        Command::Webhooks {
            command:
                Some(WebhookCommand::Add {
                    url,
                    events,
                    format,
                    priorities,
                    assignee,
                    secret_file,
                }),
        } => Some(webhook_destination(
            url,
            events,
            *format,
            priorities,
            assignee.as_deref(),
            secret_file.as_deref(),
            env,
        )?),
        _ => None,
    };
    if let Command::Run(args) = &cli.command {
        args.check()?;
    }
    runtime.block_on(run(cli.command, &settings, cli.json, secret))
}

async fn run(
    command: Command,
    settings: &Settings,
    json: bool,
    secret: Option<String>,
) -> CommandResult {
    let mut client = connect(settings).await?;
    match command {
        Command::Hosts(filter) => {
            let mut hosts = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_hosts(ListHostsRequest {
                        page_size: 500,
                        page_token,
                        filter: Some(filter.to_wire()),
                    })
                    .await
                    .map_err(call_failed)?
                    .into_inner();
                hosts.extend(page.hosts);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::hosts(&hosts, filter.software.is_some(), json)
        }
        Command::Host(HostCommand::Show { host, health }) => {
            let health_since_unix_ms = health.map_or(0, |window| {
                now_ms().saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
            });
            let detail = client
                .get_host(GetHostRequest {
                    host,
                    health_since_unix_ms,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            output::host(&detail, health.is_some(), json)
        }
        Command::Inventory { host, section } => {
            let detail = client
                .get_host(GetHostRequest {
                    host,
                    health_since_unix_ms: 0,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            let sections = section.map_or_else(|| deskpulse_proto::sections::ALL.to_vec(), |s| s.0);
            output::inventory(&detail, &sections, json)
        }
        Command::Host(HostCommand::Tag {
            host,
            tag: (key, value),
        }) => {
            let reply = client
                .set_host_tag(SetHostTagRequest { host, key, value })
                .await
                .map_err(call_failed)?
                .into_inner();
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"host_id": reply.host_id, "tags": reply.tags})
                );
            } else {
                outln!("{}: {}", reply.host_id, reply.tags.join(" "));
            }
            Ok(())
        }
        Command::Changes {
            host,
            since,
            sections,
            limit,
        } => {
            let since_ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
            let list = client
                .list_changes(ListChangesRequest {
                    host: host.unwrap_or_default(),
                    since_unix_ms: now_ms().saturating_sub(since_ms),
                    sections: sections
                        .iter()
                        .flat_map(|s| &s.0)
                        .map(|s| deskpulse_proto::sections::name(*s).to_owned())
                        .collect(),
                    limit,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            output::changes(&list, json)
        }
        Command::Tickets {
            status,
            priority,
            host,
            assignee,
        } => {
            let list = client
                .list_tickets(ListTicketsRequest {
                    status: status.unwrap_or_default(),
                    host: host.unwrap_or_default(),
                    priority: priority.unwrap_or_default(),
                    limit: 0,
                    assignee: assignee.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            output::tickets(&list.tickets, json)
        }
        Command::Ticket(command) => {
            let reply = match command {
                TicketCommand::Show { id } => client.get_ticket(GetTicketRequest { id }).await,
                TicketCommand::New {
                    host,
                    title,
                    priority,
                } => {
                    client
                        .create_ticket(CreateTicketRequest {
                            host,
                            title,
                            priority: priority.unwrap_or_default(),
                        })
                        .await
                }
                TicketCommand::Assign { id, technician } => {
                    update(&mut client, id, Change::Assign(technician)).await
                }
                TicketCommand::Note { id, text, public } => {
                    let change = if public {
                        Change::PublicNote(text)
                    } else {
                        Change::Note(text)
                    };
                    update(&mut client, id, change).await
                }
                TicketCommand::Status { id, status } => {
                    update(&mut client, id, Change::Status(status)).await
                }
                TicketCommand::Resolve { id, resolution } => {
                    update(&mut client, id, Change::Resolve(resolution)).await
                }
                TicketCommand::Escalate { id } => {
                    update(&mut client, id, Change::Escalate(true)).await
                }
                TicketCommand::Reopen { id } => update(&mut client, id, Change::Reopen(true)).await,
            };
            output::ticket(&reply.map_err(call_failed)?.into_inner(), json)
        }
        Command::Rules { command } => match command {
            None => {
                let policy = client
                    .list_rules(ListRulesRequest { export: false })
                    .await
                    .map_err(call_failed)?;
                output::rules(&policy.into_inner(), json)
            }
            Some(RulesCommand::Export) => {
                let policy = client
                    .list_rules(ListRulesRequest { export: true })
                    .await
                    .map_err(call_failed)?;
                output::rules_export(&policy.into_inner(), json)
            }
            Some(RulesCommand::Apply {
                file,
                dry_run,
                replace,
            }) => {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    Failure::usage(format!("cannot read rule file {}: {e}", file.display()))
                })?;
                let policy = client
                    .apply_rules(ApplyRulesRequest {
                        text,
                        dry_run,
                        replace,
                    })
                    .await
                    .map_err(|status| rule_file_refused(&file, status))?;
                output::rules_applied(&policy.into_inner(), dry_run, json)
            }
        },
        Command::Whoami => {
            let me = client
                .who_am_i(WhoAmIRequest {})
                .await
                .map_err(call_failed)?
                .into_inner();
            output::whoami(&me, json)
        }
        Command::EnrollToken(EnrollTokenCommand::Create { ttl, uses }) => {
            let created = client
                .create_enrollment_token(CreateEnrollmentTokenRequest {
                    ttl_secs: ttl.as_secs(),
                    uses,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            outln!("{}", created.token);
            errln!(
                "allows {} enrollment(s); expires {}",
                created.uses,
                output::time(created.expires_at_unix_ms)
            );
            Ok(())
        }
        Command::Webhooks { command: None } => {
            let list = client
                .list_webhooks(ListWebhooksRequest {})
                .await
                .map_err(call_failed)?
                .into_inner();
            output::webhooks(&list.webhooks, json)
        }
        Command::Webhooks {
            command:
                Some(WebhookCommand::Add {
                    url,
                    events,
                    format,
                    priorities,
                    assignee,
                    ..
                }),
        } => {
            let added = client
                .add_webhook(AddWebhookRequest {
                    url,
                    events: events.iter().map(|e| e.name().to_owned()).collect(),
                    secret: secret.unwrap_or_default(),
                    format: format.map(|f| f.name().to_owned()).unwrap_or_default(),
                    priorities,
                    assignee: assignee.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            output::webhook_added(&added, json)
        }
        Command::Webhooks {
            command: Some(WebhookCommand::Remove { id }),
        } => {
            let removed = client
                .remove_webhook(RemoveWebhookRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            if json {
                outln!("{}", serde_json::json!({ "removed": removed.id }));
            } else {
                outln!("webhook {} removed", removed.id);
            }
            Ok(())
        }
        Command::Webhooks {
            command: Some(WebhookCommand::Enable { id }),
        } => set_webhook_enabled(&mut client, id, true, json).await,
        Command::Webhooks {
            command: Some(WebhookCommand::Disable { id }),
        } => set_webhook_enabled(&mut client, id, false, json).await,
        Command::Run(args) => diagnostics::run(&mut client, args, json).await,
        Command::Jobs { host, state, limit } => {
            diagnostics::list(&mut client, host, state, limit, json).await
        }
        Command::Job(command) => diagnostics::job(&mut client, command, json).await,
        Command::Diagnostics { host } => diagnostics::catalog(&mut client, host, json).await,
        Command::Kb(KbCommand::Search {
            query,
            limit,
            include_auto,
        }) => {
            let found = client
                .search_kb(SearchKbRequest {
                    query,
                    limit,
                    include_auto,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            output::kb(&found.matches, json)
        }
        Command::Audit(args) => audit::run(&mut client, args, json).await,
        Command::Host(HostCommand::Revoke { host, reason }) => {
            revocation::revoke_host(&mut client, host, reason, json).await
        }
        Command::Host(HostCommand::Retire { host, reason }) => {
            revocation::retire_host(&mut client, host, reason, json).await
        }
        Command::Tokens => revocation::tokens(&mut client, json).await,
        Command::Token(command) => revocation::token(&mut client, command, json).await,
        Command::EnrollToken(EnrollTokenCommand::List { limit }) => {
            revocation::enrollment_tokens(&mut client, limit, json).await
        }
        Command::EnrollToken(EnrollTokenCommand::Revoke { id }) => {
            revocation::revoke_enrollment_token(&mut client, id, json).await
        }
        Command::Enrollments(command) => enrollments::run(&mut client, command, json).await,
        Command::Problems(args) => problems::list(&mut client, args, json).await,
        Command::Problem(command) => problems::run(&mut client, command, json).await,
        // `main` runs these before any settings are resolved.
        Command::Login | Command::Logout => {
            Err(Failure::usage("login and logout run on their own"))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn filters_and_sections_parse_before_any_network_io() {
        let cli = Cli::try_parse_from([
            "deskpulse",
            "hosts",
            "--software",
            "openssl<3.0.13",
            "--mac",
            "A0-B1-C2-D3-E4-F5",
            "--tag",
            "site=berlin",
        ])
        .expect("parses");
        let Command::Hosts(filter) = cli.command else {
            panic!("hosts");
        };
        let wire = filter.to_wire();
        assert_eq!(
            (
                wire.software_name.as_str(),
                wire.software_op.as_str(),
                wire.software_version.as_str()
            ),
            ("openssl", "<", "3.0.13")
        );
        assert_eq!(wire.mac, "a0:b1:c2:d3:e4:f5");
        assert_eq!(wire.tags, ["site=berlin"]);
        let error = Cli::try_parse_from(["deskpulse", "inventory", "pc", "--section", "disks"])
            .expect_err("bad section");
        assert_eq!(error.exit_code(), 2);
    }

    struct Vars(Vec<(&'static str, &'static str)>);

    impl crate::config::Env for Vars {
        fn var(&self, key: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn bad_webhook_and_kb_input_is_a_usage_error_before_any_io() {
        for args in [
            &["deskpulse", "webhooks", "add", "ftp://example.com/hook"][..],
            &["deskpulse", "webhooks", "add", "not a url"],
            &["deskpulse", "webhooks", "add", "https://u:pw@example.com/"],
            &[
                "deskpulse",
                "webhooks",
                "add",
                "https://example.com/",
                "--event",
                "ticket.deleted",
            ],
            &["deskpulse", "kb", "search", "   "],
            &["deskpulse", "kb", "search", "-- *"],
            &["deskpulse", "webhooks", "remove", "seven"],
        ] {
            let error = Cli::try_parse_from(args).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "deskpulse",
            "webhooks",
            "add",
            "https://hooks.example.com/deskpulse",
            "--event",
            "ticket.opened",
            "--event",
            "ticket.resolved",
        ])
        .expect("parses");
        let Command::Webhooks {
            command: Some(WebhookCommand::Add { events, .. }),
        } = cli.command
        else {
            panic!("webhooks add");
        };
        assert_eq!(
            events,
            [
                crate::model::TicketEvent::Opened,
                crate::model::TicketEvent::Resolved
            ]
        );

        // The secret: from the environment, never empty, one line.
        let missing = webhook_secret(None, &Vars(vec![])).expect_err("no secret");
        assert_eq!(missing.code, 2);
        let empty =
            webhook_secret(None, &Vars(vec![(WEBHOOK_SECRET_ENV, " ")])).expect_err("empty");
        assert_eq!(empty.code, 2);
        assert_eq!(
            webhook_secret(None, &Vars(vec![(WEBHOOK_SECRET_ENV, "s3cret\n")])).expect("ok"),
            "s3cret"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file\n").expect("write");
        assert_eq!(
            webhook_secret(Some(&file), &Vars(vec![])).expect("ok"),
            "from-a-file"
        );
        let unreadable =
            webhook_secret(Some(&dir.path().join("nope")), &Vars(vec![])).expect_err("no file");
        assert_eq!(unreadable.code, 1);
    }
}
