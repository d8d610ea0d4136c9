//! The store: everything the collector keeps, behind one interface that each
//! backend implements. SQL dialect quirks stay inside the backend.
//!
//! # Layout
//! - [`Store`]: the interface the server and admin commands use.
//! - [`sqlite`]: the embedded default (bundled SQLite, WAL mode).
//! - [`postgres`]: PostgreSQL, for large fleets and several replicas
//!   sharing one database.
//! - [`versions`]: per-ecosystem version ordering as sortable keys.
//! - The plain types here are what crosses the interface; wire types do not.

pub(crate) mod engine;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod versions;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not one we support.
    #[error("{0}")]
    Url(String),
    /// A row held something this build cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The host-certificate issuer failed during enrollment.
    #[error("issuing the host certificate failed: {0}")]
    Issue(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Reads an inventory blob of `host`, one it holds (`what` = "stored") or
/// one it was handed: a blob that cannot be decoded is an error that names
/// the host, never an empty inventory, which would log every item as removed.
pub(crate) fn decode_inventory(
    host: &str,
    what: &str,
    blob: &[u8],
) -> StoreResult<deskpulse_proto::v1::Inventory> {
    use prost::Message;
    deskpulse_proto::v1::Inventory::decode(blob).map_err(|error| {
        StoreError::Corrupt(format!(
            "the {what} inventory of host {host} cannot be decoded: {error}"
        ))
    })
}

/// A technician's role. Each includes the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, works tickets, runs diagnostics.
    Technician,
    /// Everything, including tokens and policy.
    Admin,
}

impl Role {
    /// The name used in the database, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Technician => "technician",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "technician" => Ok(Role::Technician),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected admin, technician or viewer"
            )),
        }
    }
}

/// Who is calling the technician API: the token's technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The technician's id.
    pub technician_id: String,
    /// The technician's name.
    pub name: String,
    /// The technician's role.
    pub role: Role,
    /// The id of the token used.
    pub token_id: String,
}

/// The outcome of checking the fleet CA against the store (D2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRecord {
    /// The store had no CA; this one is now recorded.
    Recorded,
    /// The store's CA is this one.
    Matches,
    /// The store holds a different CA, with this fingerprint.
    Mismatch(String),
}

/// A new API token to store.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// The technician's name; the technician is created if new.
    pub technician_name: String,
    /// The role for a new technician. An existing technician keeps theirs
    /// unless it differs, which is an error.
    pub role: Role,
    /// The token id.
    pub token_id: String,
    /// SHA-256 of the token.
    pub token_sha256: String,
}

/// A new enrollment token to store.
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    /// The token id.
    pub id: String,
    /// SHA-256 of the token.
    pub token_sha256: String,
    /// When it stops working.
    pub expires_at_ms: i64,
    /// How many enrollments it allows.
    pub uses: u32,
    /// Who made it: a technician name, or "local-admin" for the CLI on the
    /// server.
    pub created_by: String,
}

/// An enrollment request, as the store sees it.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// SHA-256 of the enrollment token presented.
    pub token_sha256: String,
    /// The host name the agent stated (informational).
    pub hostname: String,
    /// Firmware hardware UUID, or empty.
    pub hardware_uuid: String,
    /// Firmware serial, or empty.
    pub hardware_serial: String,
}

/// A certificate issued inside the enrollment transaction.
#[derive(Debug, Clone)]
pub struct HostCert {
    /// PEM text.
    pub cert_pem: String,
    /// Serial, hex.
    pub serial_hex: String,
    /// SHA-256 of the DER, hex.
    pub sha256_hex: String,
}

/// Issues a certificate for a host id. Called by the store once the token is
/// accepted and the host id is known, inside the same transaction.
pub type IssueCert<'a> = &'a (dyn Fn(&str) -> Result<HostCert, String> + Send + Sync);

/// The outcome of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// Enrolled, with this host id and certificate.
    Enrolled {
        /// The host id.
        host_id: String,
        /// The issued certificate, PEM.
        cert_pem: String,
        /// True if the hardware was known and linked to its old host id.
        relinked: bool,
    },
    /// No such token.
    UnknownToken,
    /// The token has expired.
    ExpiredToken,
    /// The token has no uses left.
    UsedToken,
}

/// The session facts recorded when an agent connects.
#[derive(Debug, Clone, Default)]
pub struct SessionOpen {
    /// The host id from the certificate.
    pub host_id: String,
    /// The replica that holds the stream.
    pub replica: String,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's health interval in seconds.
    pub health_interval_secs: u32,
    /// The agent's diagnostic catalog version.
    pub catalog_version: u32,
    /// The diagnostics the agent's own config enables (D25).
    pub enabled_diagnostics: Vec<String>,
}

/// A report ready to store, already validated.
#[derive(Debug, Clone)]
pub struct IncomingReport {
    /// The host id from the certificate.
    pub host_id: String,
    /// The spool id.
    pub spool_id: String,
    /// The sequence number.
    pub seq: u64,
    /// The lowest seq the agent's spool still held when it sent this; 0 if
    /// not given. Keys of the spool below it can never come again.
    pub held_from_seq: u64,
    /// When the agent collected it.
    pub collected_at_ms: i64,
    /// The payload.
    pub payload: ReportPayload,
}

/// Per (host, spool) in a batch, the seq below which its idempotency keys
/// can be forgotten: the agent holds nothing lower, so it never resends it
/// (D14). Only pairs with something to forget are listed.
pub(crate) fn forgettable_keys(reports: &[IncomingReport]) -> Vec<(&str, &str, u64)> {
    let mut below: HashMap<(&str, &str), u64> = HashMap::new();
    for report in reports {
        // Never past the report itself, whatever the agent claims.
        let from = report.held_from_seq.min(report.seq);
        if from > 1 {
            let slot = below
                .entry((report.host_id.as_str(), report.spool_id.as_str()))
                .or_default();
            *slot = (*slot).max(from);
        }
    }
    below
        .into_iter()
        .map(|((host, spool), seq)| (host, spool, seq))
        .collect()
}

/// What a report carries, encoded, plus the fields the store indexes.
#[derive(Debug, Clone)]
pub enum ReportPayload {
    /// A full inventory.
    Inventory {
        /// The encoded `Inventory` message.
        encoded: Vec<u8>,
        /// Its host name.
        hostname: String,
        /// Its OS name.
        os_name: String,
        /// Its OS version.
        os_version: String,
        /// What fleet queries search.
        facts: Box<InventoryFacts>,
    },
    /// An inventory delta, encoded; the store applies it to the stored
    /// inventory.
    InventoryDelta {
        /// The encoded `InventoryDelta` message.
        encoded: Vec<u8>,
    },
    /// A health sample, encoded.
    Health {
        /// The encoded `HealthSample` message.
        encoded: Vec<u8>,
        /// Free space per filesystem: (mount point, free percent).
        free: Vec<(String, f32)>,
        /// The readings kept in the health history.
        reading: HealthReading,
        /// What the rules evaluate.
        readings: Vec<Reading>,
    },
    /// A diagnostic's final result; finishes its job.
    DiagnosticResult(Box<JobResult>),
    /// An employee's problem report: opens a ticket.
    UserIssue {
        /// What they wrote, checked.
        text: String,
        /// The OS user who reported it.
        os_user: String,
        /// The attached health sample, as evidence JSON.
        health: serde_json::Value,
    },
}

impl ReportPayload {
    /// The payload's kind, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportPayload::Inventory { .. } => "inventory",
            ReportPayload::InventoryDelta { .. } => "inventory_delta",
            ReportPayload::Health { .. } => "health",
            ReportPayload::DiagnosticResult(_) => "diagnostic_result",
            ReportPayload::UserIssue { .. } => "user_issue",
        }
    }
}

/// A diagnostic's final result as the agent sent it (D26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The job id.
    pub job_id: String,
    /// completed, failed, timed_out, refused or cancelled.
    pub outcome: String,
    /// The program's exit code.
    pub exit_code: i32,
    /// The capped output.
    pub output: Vec<u8>,
    /// True when the agent cut the output at the cap.
    pub truncated: bool,
    /// When it started and finished on the agent.
    pub started_at_ms: i64,
    /// When it finished.
    pub finished_at_ms: i64,
    /// Why it was refused or failed.
    pub reason: String,
}

/// A diagnostic job to record.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job id (a UUID).
    pub id: String,
    /// The host.
    pub host_id: String,
    /// The catalog id.
    pub diagnostic: String,
    /// The encoded `DiagnosticParams`.
    pub params: Vec<u8>,
    /// `catalog::describe` of them.
    pub params_text: String,
    /// "read-only" or "changes-state".
    pub risk: String,
    /// Who asked.
    pub caller: Caller,
    /// The ticket to attach the result to.
    pub ticket_id: Option<i64>,
    /// When the request expires if it has not reached the agent.
    pub expires_at_ms: i64,
}

/// One diagnostic job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// The job id.
    pub id: String,
    /// The host.
    pub host_id: String,
    /// Its current name.
    pub hostname: String,
    /// The catalog id.
    pub diagnostic: String,
    /// The encoded `DiagnosticParams`.
    pub params: Vec<u8>,
    /// The parameters as text.
    pub params_text: String,
    /// "read-only" or "changes-state".
    pub risk: String,
    /// Who asked.
    pub requested_by: String,
    /// The ticket the result is attached to.
    pub ticket_id: Option<i64>,
    /// queued, sent, completed, failed, timed_out, refused, cancelled,
    /// expired.
    pub state: String,
    /// When asked.
    pub created_at_ms: i64,
    /// When the request expires unless delivered.
    pub expires_at_ms: i64,
    /// When it was last sent to the agent.
    pub sent_at_ms: Option<i64>,
    /// When it started on the agent.
    pub started_at_ms: Option<i64>,
    /// When it finished.
    pub finished_at_ms: Option<i64>,
    /// The program's exit code.
    pub exit_code: Option<i32>,
    /// Why it was refused, failed, cancelled or expired.
    pub reason: Option<String>,
    /// The capped output.
    pub output: Vec<u8>,
    /// True when the output was cut at the cap.
    pub truncated: bool,
    /// True once a technician asked to cancel it.
    pub cancel_requested: bool,
}

impl JobRow {
    /// True once the job can change no more.
    pub fn is_finished(&self) -> bool {
        !matches!(self.state.as_str(), "queued" | "sent")
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Only this host.
    pub host_id: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// The fleet's state as metrics read it at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Tickets not resolved or closed, by priority.
    pub open_tickets: Vec<(String, u64)>,
    /// Diagnostic jobs, by state.
    pub jobs: Vec<(String, u64)>,
    /// Webhook deliveries waiting.
    pub outbox_pending: u64,
}

/// What a host's agent said about diagnostics on its last connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDiagnostics {
    /// Its catalog version; 0 before it first said.
    pub catalog_version: u32,
    /// The diagnostics its config enables.
    pub enabled: Vec<String>,
}

/// One reading of a health sample for the rules: metric, subject (mount
/// point, sensor, service, device or empty), value.
pub type Reading = (crate::rules::model::Metric, String, f64);

/// The fleet policy in force (D7), as applied.
#[derive(Debug, Clone)]
pub struct PolicyRecord {
    /// Increases with every apply; 0 for the built-in defaults.
    pub version: i64,
    /// The applied TOML text; empty for the defaults.
    pub text: String,
    /// Who applied it.
    pub applied_by: String,
    /// When.
    pub applied_at_ms: i64,
    /// The checked policy.
    pub policy: crate::rules::policy::Policy,
}

/// The readings of one health sample that the history keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthReading {
    /// CPU use, percent.
    pub cpu_percent: f32,
    /// Memory in use, percent.
    pub memory_used_percent: f32,
    /// The fullest filesystem's use, percent.
    pub disk_used_max_percent: f32,
}

/// One point of a host's health history: a raw sample, or an hour of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPoint {
    /// The sample's time, or the start of its hour.
    pub at_ms: i64,
    /// 0 for a raw sample, 3600 for an hourly aggregate.
    pub resolution_s: u32,
    /// How many samples it stands for.
    pub samples: u32,
    /// Average CPU use, percent.
    pub cpu_percent: f32,
    /// Highest CPU use, percent.
    pub cpu_max_percent: f32,
    /// Average memory use, percent.
    pub memory_used_percent: f32,
    /// Highest use of the fullest filesystem, percent.
    pub disk_used_max_percent: f32,
}

/// What storing one report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Stored now.
    Stored,
    /// Stored before (D14); nothing changed.
    Duplicate,
    /// Recorded, but its inventory delta did not fit the stored inventory:
    /// the agent must send a full one. The reason is one line.
    Resync(String),
}

/// Which change-log entries to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeQuery {
    /// One host, or the whole fleet.
    pub host_id: Option<String>,
    /// Only changes observed at or after this time (ms).
    pub since_ms: i64,
    /// Only these sections (D16 names); empty means all.
    pub sections: Vec<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// One change-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// The host.
    pub host_id: String,
    /// Its current host name.
    pub hostname: String,
    /// When the change was observed (the inventory's collection time).
    pub observed_at_ms: i64,
    /// The section.
    pub section: String,
    /// The item.
    pub item: String,
    /// The value before; `None` when the item is new.
    pub old_value: Option<String>,
    /// The value after; `None` when the item is gone.
    pub new_value: Option<String>,
}

/// Ticket statuses (D22), in workflow order.
pub const TICKET_STATUSES: [&str; 6] = [
    "new",
    "open",
    "in_progress",
    "waiting",
    "resolved",
    "closed",
];

/// Which tickets to list.
#[derive(Debug, Clone, Default)]
pub struct TicketQuery {
    /// Only tickets that are not resolved or closed (D22 `--status open`).
    pub open_only: bool,
    /// Only this exact status.
    pub status: Option<String>,
    /// Only this host.
    pub host_id: Option<String>,
    /// Only this priority, "P1" … "P4".
    pub priority: Option<String>,
    /// Only tickets assigned to this technician.
    pub assignee: Option<String>,
    /// Only tickets opened by this rule.
    pub rule: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// One ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketRow {
    /// The ticket id.
    pub id: i64,
    /// The host.
    pub host_id: String,
    /// Its current name.
    pub hostname: String,
    /// The rule that opened it; empty for a manual ticket.
    pub rule: String,
    /// The subject (mount point, service, ...), or empty.
    pub subject: String,
    /// The title.
    pub title: String,
    /// new, open, in_progress, waiting, resolved, closed.
    pub status: String,
    /// "P1" … "P4".
    pub priority: String,
    /// The rule's severity.
    pub severity: String,
    /// The technician working it.
    pub assignee: Option<String>,
    /// How often it was escalated.
    pub escalation: u32,
    /// How often its condition fired.
    pub occurrences: u32,
    /// How often it reopened after resolving.
    pub flaps: u32,
    /// When it opened.
    pub opened_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
    /// When it resolved, if it is resolved.
    pub resolved_at_ms: Option<i64>,
    /// When the first response is due.
    pub response_due_ms: i64,
    /// When the resolution is due.
    pub resolution_due_ms: i64,
    /// What fired it, JSON (D23).
    pub evidence: String,
    /// When a technician first acted on it.
    pub responded_at_ms: Option<i64>,
    /// How it was resolved.
    pub resolution: Option<String>,
}

/// One worklog entry of a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorklogEntry {
    /// When.
    pub at_ms: i64,
    /// "system" or the technician's name.
    pub author: String,
    /// The note.
    pub note: String,
}

/// A technician's change to a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketChange {
    /// Assign to this technician.
    Assign(String),
    /// Add a worklog note.
    Note(String),
    /// Set the status (D22 statuses).
    Status(String),
    /// Resolve with a resolution text.
    Resolve(String),
    /// Raise the escalation level by one.
    Escalate,
    /// Reopen a resolved or closed ticket.
    Reopen,
}

/// What a changed ticket's update did not allow, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketRefusal {
    /// No such ticket.
    NotFound,
    /// The change does not apply to the ticket as it is.
    Invalid(String),
}

/// A ticket event that webhooks subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketEvent {
    /// A ticket opened, or reopened after resolving.
    Opened,
    /// A ticket changed: an occurrence, an assignment, a note, a status.
    Updated,
    /// A ticket's escalation level rose (SLA missed, or by hand).
    Escalated,
    /// A ticket resolved, automatically or by a technician.
    Resolved,
}

impl TicketEvent {
    /// Every event, in the order the CLI lists them.
    pub const ALL: [TicketEvent; 4] = [
        TicketEvent::Opened,
        TicketEvent::Updated,
        TicketEvent::Escalated,
        TicketEvent::Resolved,
    ];

    /// The wire name, e.g. `ticket.opened`.
    pub fn name(self) -> &'static str {
        match self {
            TicketEvent::Opened => "ticket.opened",
            TicketEvent::Updated => "ticket.updated",
            TicketEvent::Escalated => "ticket.escalated",
            TicketEvent::Resolved => "ticket.resolved",
        }
    }
}

impl FromStr for TicketEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TicketEvent::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown event {s:?}: expected ticket.opened, ticket.updated, \
                     ticket.escalated or ticket.resolved"
                )
            })
    }
}

/// A webhook to store, already checked. Its `Debug` leaves the secret out.
#[derive(Clone)]
pub struct NewWebhook {
    /// The receiver's http or https URL.
    pub url: String,
    /// The events it receives; never empty.
    pub events: Vec<TicketEvent>,
    /// The HMAC key. Stored as given, since signing needs it; never returned.
    pub secret: String,
    /// Who added it.
    pub created_by: String,
}

impl fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .field("created_by", &self.created_by)
            .finish()
    }
}

/// A webhook and how its deliveries stand; never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    /// The webhook id.
    pub id: i64,
    /// The receiver's URL.
    pub url: String,
    /// The events it receives.
    pub events: Vec<TicketEvent>,
    /// Whether events are queued for it.
    pub enabled: bool,
    /// When it was added.
    pub created_at_ms: i64,
    /// Who added it.
    pub created_by: String,
    /// Deliveries waiting (first try or retry).
    pub pending: u64,
    /// Deliveries the receiver accepted.
    pub delivered: u64,
    /// Deliveries given up on.
    pub failed: u64,
    /// When a delivery was last tried.
    pub last_attempt_at_ms: Option<i64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A claimed delivery, with what it takes to send it. Its `Debug` leaves
/// the secret out, so logging a delivery cannot leak it.
#[derive(Clone)]
pub struct Delivery {
    /// The outbox row id.
    pub id: i64,
    /// The delivery id the receiver sees (`X-Deskpulse-Delivery`).
    pub delivery_id: String,
    /// The event name.
    pub event: String,
    /// The receiver's URL.
    pub url: String,
    /// The HMAC key.
    pub secret: String,
    /// The JSON body.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the event happened.
    pub created_at_ms: i64,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("delivery_id", &self.delivery_id)
            .field("event", &self.event)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("attempts", &self.attempts)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx with this status.
    Delivered(u16),
    /// It did not; try again at `retry_at_ms`, or give up when `None`.
    Failed {
        /// The HTTP status, if a response came.
        status: Option<u16>,
        /// One line.
        error: String,
        /// The next attempt, or `None` to mark the delivery failed.
        retry_at_ms: Option<i64>,
    },
}

/// One knowledge-base match: a past resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct KbHit {
    /// The ticket id.
    pub ticket_id: i64,
    /// The host.
    pub host_id: String,
    /// Its current name.
    pub hostname: String,
    /// The ticket's title.
    pub title: String,
    /// The rule that opened it; empty for a manual ticket.
    pub rule: String,
    /// How it was resolved; empty when none was written.
    pub resolution: String,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
    /// The backend's relevance score (SQLite FTS5 bm25, PostgreSQL the
    /// negated `ts_rank`): lower is a better match.
    pub rank: f64,
}

/// One installed package, as the store indexes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageKey {
    /// The ecosystem, e.g. "dpkg".
    pub ecosystem: String,
    /// The name.
    pub name: String,
    /// The version.
    pub version: String,
}

/// The searchable facts of an inventory.
#[derive(Debug, Clone, Default)]
pub struct InventoryFacts {
    /// Installed packages.
    pub packages: Vec<PackageKey>,
    /// (kind, value) pairs: user, ip, mac, serial, model, os; lowercased.
    pub facts: Vec<(&'static str, String)>,
    /// Free space per filesystem: (mount point, free percent).
    pub free: Vec<(String, f32)>,
}

/// A comparison in a software filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    /// Older than.
    Less,
    /// Older than or equal.
    LessEqual,
    /// Equal.
    Equal,
    /// Newer than or equal.
    GreaterEqual,
    /// Newer than.
    Greater,
}

impl VersionOp {
    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            VersionOp::Less => "<",
            VersionOp::LessEqual => "<=",
            VersionOp::Equal => "=",
            VersionOp::GreaterEqual => ">=",
            VersionOp::Greater => ">",
        }
    }
}

/// Conditions on hosts; `None` and empty match everything.
#[derive(Debug, Clone, Default)]
pub struct HostQuery {
    /// Package name, with an optional version comparison.
    pub software: Option<(String, Option<(VersionOp, String)>)>,
    /// Substring of "os name version", lowercased.
    pub os: Option<String>,
    /// System serial, lowercased.
    pub serial: Option<String>,
    /// Substring of "vendor model", lowercased.
    pub model: Option<String>,
    /// Some filesystem has less free space than this percentage.
    pub disk_free_below: Option<f32>,
    /// Only offline hosts, as of this time (ms).
    pub offline_at_ms: Option<i64>,
    /// User name, lowercased.
    pub user: Option<String>,
    /// IP address.
    pub ip: Option<String>,
    /// MAC address, lowercased with ':'.
    pub mac: Option<String>,
    /// Tags as (key, value).
    pub tags: Vec<(String, String)>,
}

/// A host's row, as the technician API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    /// The host id.
    pub id: String,
    /// The host name.
    pub hostname: String,
    /// The OS name.
    pub os_name: String,
    /// The OS version.
    pub os_version: String,
    /// When enrolled.
    pub enrolled_at_ms: i64,
    /// When last heard from.
    pub last_seen_at_ms: Option<i64>,
    /// The replica holding its stream, if any.
    pub session_replica: Option<String>,
    /// Why it last said goodbye, if it did since it last connected.
    pub goodbye_reason: Option<String>,
    /// Its health interval, seconds.
    pub health_interval_secs: u32,
    /// The agent's version.
    pub agent_version: String,
    /// Certificate serial, hex.
    pub cert_serial: String,
    /// Certificate SHA-256, hex.
    pub cert_sha256: String,
}

/// How many health intervals of silence make a host offline (D18).
pub const OFFLINE_AFTER_INTERVALS: i64 = 3;

impl HostRow {
    /// Online while it holds a stream, or was seen within its offline window
    /// and has not said goodbye since (D18).
    pub fn is_online(&self, now_ms: i64) -> bool {
        if self.session_replica.is_some() {
            return true;
        }
        if self.goodbye_reason.is_some() {
            return false;
        }
        let window = OFFLINE_AFTER_INTERVALS * i64::from(self.health_interval_secs) * 1000;
        self.last_seen_at_ms
            .is_some_and(|seen| now_ms.saturating_sub(seen) <= window)
    }
}

/// A host in detail: its row plus the latest encoded inventory and health.
#[derive(Debug, Clone)]
pub struct HostDetail {
    /// The summary row.
    pub row: HostRow,
    /// The encoded latest `Inventory` and when it was collected.
    pub inventory: Option<(Vec<u8>, i64)>,
    /// The encoded latest `HealthSample` and when it was collected.
    pub health: Option<(Vec<u8>, i64)>,
    /// The encoded latest `SpoolCounters` and when it came.
    pub spool_counters: Option<(Vec<u8>, i64)>,
}

/// One audit entry to append.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// The technician who acted, if any (a local admin command has none).
    pub technician_id: Option<String>,
    /// The token used, if any.
    pub token_id: Option<String>,
    /// What was done, e.g. "enrollment-token.create".
    pub action: String,
    /// What it was done to, e.g. a host id or token id.
    pub subject: String,
    /// Free text.
    pub detail: String,
}

impl AuditEntry {
    /// An entry for an action a technician took through the API.
    pub fn by(caller: &Caller, action: &str, subject: String, detail: String) -> Self {
        Self {
            technician_id: Some(caller.technician_id.clone()),
            token_id: Some(caller.token_id.clone()),
            action: action.to_owned(),
            subject,
            detail,
        }
    }
}

/// One stored audit entry, with its place in the hash chain (D28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The row id.
    pub id: i64,
    /// Its place in the chain, from 1; None only for a row never chained.
    pub seq: Option<i64>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// The acting technician's id, if any.
    pub technician_id: Option<String>,
    /// That technician's current name, for display (not hashed).
    pub technician_name: Option<String>,
    /// The API token used, if any.
    pub token_id: Option<String>,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub subject: String,
    /// Free text.
    pub detail: String,
    /// The previous entry's hash.
    pub prev_hash: Option<String>,
    /// This entry's hash.
    pub hash: Option<String>,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries whose subject contains this text (a host id).
    pub subject_contains: Option<String>,
    /// Only entries by the technician with this name.
    pub technician: Option<String>,
    /// Only actions starting with this text, e.g. "diagnostic.".
    pub action_prefix: Option<String>,
    /// Only entries at or after this time, ms since the Unix epoch.
    pub since_ms: i64,
    /// Only entries with a smaller id (the page token).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// The audit chain's head: the last seq and its hash (0 and
/// `audit::chain::GENESIS` for an empty chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The last entry's seq.
    pub seq: i64,
    /// The last entry's hash.
    pub hash: String,
}

/// The store interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records the fleet CA on first use, or compares it with the recorded
    /// one (D2).
    async fn record_fleet_ca(&self, fingerprint: &str) -> StoreResult<CaRecord>;

    /// True when at least one technician exists.
    async fn has_technicians(&self) -> StoreResult<bool>;

    /// Stores an API token, creating its technician if new. Returns the
    /// technician id. A technician that exists with another role is a
    /// [`StoreError::Conflict`].
    async fn create_api_token(&self, token: &NewApiToken, now_ms: i64) -> StoreResult<String>;

    /// The caller a token belongs to, if it is known and not revoked.
    async fn authenticate(&self, token_sha256: &str) -> StoreResult<Option<Caller>>;

    /// Stores an enrollment token.
    async fn create_enrollment_token(
        &self,
        token: &NewEnrollmentToken,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// In one transaction: checks and consumes the token, finds the host
    /// this hardware enrolled as before or makes a new id, has `issue` sign a
    /// certificate for it, and records the certificate.
    async fn enroll(
        &self,
        request: &EnrollRequest,
        now_ms: i64,
        issue: IssueCert<'_>,
    ) -> StoreResult<EnrollOutcome>;

    /// The SHA-256 of the host's current certificate, if the host exists.
    async fn host_cert_sha256(&self, host_id: &str) -> StoreResult<Option<String>>;

    /// Records that an agent opened its stream on a replica.
    async fn session_opened(&self, session: &SessionOpen, now_ms: i64) -> StoreResult<()>;

    /// Records that a stream closed, with the goodbye reason if one came.
    async fn session_closed(
        &self,
        host_id: &str,
        replica: &str,
        goodbye: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Clears stream markers a crashed run of this replica left behind.
    async fn clear_replica_sessions(&self, replica: &str) -> StoreResult<()>;

    /// Records that `replica` is alive, and clears the stream markers of
    /// replicas that have not said so for `stale_after_ms`: they crashed or
    /// were cut off, and their agents reconnect elsewhere. Returns how many
    /// markers it cleared.
    async fn replica_alive(
        &self,
        replica: &str,
        now_ms: i64,
        stale_after_ms: i64,
    ) -> StoreResult<u64>;

    /// Stores a batch of reports in one transaction. A report whose key
    /// (host, spool_id, seq) was stored before is skipped (D14). Returns,
    /// once the transaction is committed, one outcome per report.
    async fn store_reports(
        &self,
        reports: &[IncomingReport],
        now_ms: i64,
    ) -> StoreResult<Vec<ReportOutcome>>;

    /// Keeps an agent's latest encoded `SpoolCounters`.
    async fn record_spool_counters(
        &self,
        host_id: &str,
        encoded: &[u8],
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Change-log entries, newest first.
    async fn list_changes(&self, query: &ChangeQuery) -> StoreResult<Vec<ChangeRow>>;

    /// Deletes change-log entries observed before `before_ms`; returns how
    /// many.
    async fn purge_changes(&self, before_ms: i64) -> StoreResult<u64>;

    /// Advances rule timers (quiet periods, reopen windows) and evaluates
    /// the offline rules (D18) at `now_ms`; returns how many ticket actions
    /// that took.
    async fn advance_rule_timers(&self, now_ms: i64) -> StoreResult<u64>;

    /// The fleet policy in force.
    async fn policy(&self) -> StoreResult<std::sync::Arc<PolicyRecord>>;

    /// Checks and applies a policy file (D7); the previous one is kept as
    /// history. `Ok(Err(line))` is a policy the checks refused.
    async fn apply_policy(
        &self,
        text: &str,
        applied_by: &str,
        now_ms: i64,
    ) -> StoreResult<Result<std::sync::Arc<PolicyRecord>, String>>;

    /// Tickets, by priority then resolution due time.
    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Vec<TicketRow>>;

    /// Opens a manual ticket on a host; priority from the host's impact
    /// and medium urgency unless given.
    async fn create_ticket(
        &self,
        host_id: &str,
        title: &str,
        priority: Option<crate::rules::priority::Priority>,
        author: &str,
        now_ms: i64,
    ) -> StoreResult<TicketRow>;

    /// A ticket and its worklog, oldest first.
    async fn ticket(&self, id: i64) -> StoreResult<Option<(TicketRow, Vec<WorklogEntry>)>>;

    /// Applies a technician's change, with a worklog entry. The first
    /// action meets the response target (D22).
    async fn update_ticket(
        &self,
        id: i64,
        change: &TicketChange,
        author: &str,
        now_ms: i64,
    ) -> StoreResult<Result<TicketRow, TicketRefusal>>;

    /// Escalates tickets whose SLA targets passed, and closes resolved
    /// tickets past the reopen window. Returns how many it changed.
    async fn advance_sla(&self, now_ms: i64) -> StoreResult<u64>;

    /// A host's health history since `since_ms`, oldest first.
    async fn health_history(&self, host_id: &str, since_ms: i64) -> StoreResult<Vec<HealthPoint>>;

    /// Folds raw health samples older than `raw_before_ms` into hourly
    /// points and deletes points older than `keep_after_ms`. Returns (raw
    /// samples folded, points deleted).
    async fn downsample_health(
        &self,
        raw_before_ms: i64,
        keep_after_ms: i64,
    ) -> StoreResult<(u64, u64)>;

    /// Hosts matching `query`, ordered by (hostname, id), after the given
    /// key, at most `limit`.
    async fn list_hosts(
        &self,
        query: &HostQuery,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<HostRow>>;

    /// Sets (or with an empty value, removes) a tag on a host.
    async fn set_tag(&self, host_id: &str, key: &str, value: &str) -> StoreResult<()>;

    /// A host's tags, ordered by key.
    async fn tags(&self, host_id: &str) -> StoreResult<Vec<(String, String)>>;

    /// Hosts whose id equals or starts with `query`, or whose host name
    /// equals it (case-insensitively).
    async fn find_hosts(&self, query: &str) -> StoreResult<Vec<HostRow>>;

    /// A host with its latest inventory and health.
    async fn host_detail(&self, host_id: &str) -> StoreResult<Option<HostDetail>>;

    /// Appends to the audit log.
    async fn append_audit(&self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()>;

    /// Records a diagnostic job, queued.
    async fn create_job(&self, job: &NewJob, now_ms: i64) -> StoreResult<JobRow>;

    /// A job by id.
    async fn job(&self, id: &str) -> StoreResult<Option<JobRow>>;

    /// Jobs, newest first.
    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRow>>;

    /// The host's jobs still to deliver: queued or sent, not expired, not
    /// cancelled, oldest first.
    async fn deliverable_jobs(&self, host_id: &str, now_ms: i64) -> StoreResult<Vec<JobRow>>;

    /// Marks a job as sent to its agent.
    async fn job_sent(&self, id: &str, now_ms: i64) -> StoreResult<()>;

    /// Cancels a job: a queued one is finished as cancelled at once; a sent
    /// one is marked, and finishes when the agent reports. `Ok(None)` when
    /// there is no such job.
    async fn cancel_job(&self, id: &str, now_ms: i64) -> StoreResult<Option<JobRow>>;

    /// Finishes queued or sent jobs whose request expired before the
    /// agent started them; returns them.
    async fn expire_jobs(&self, now_ms: i64) -> StoreResult<Vec<JobRow>>;

    /// What a host's agent said about diagnostics when it last connected.
    async fn host_diagnostics(&self, host_id: &str) -> StoreResult<HostDiagnostics>;

    /// Answers when the store can serve requests (gRPC health, D31 issue 8).
    async fn ping(&self) -> StoreResult<()>;

    /// Counts for the metrics endpoint.
    async fn gauges(&self) -> StoreResult<StoreGauges>;

    /// Stores a webhook (D7 policy); returns its id.
    async fn add_webhook(&self, hook: &NewWebhook, now_ms: i64) -> StoreResult<i64>;

    /// Removes a webhook and its queued deliveries; false if there was none.
    async fn remove_webhook(&self, id: i64) -> StoreResult<bool>;

    /// Pauses or resumes a webhook; false if there is none. A paused
    /// webhook gets no new events and its queued deliveries wait.
    async fn set_webhook_enabled(&self, id: i64, enabled: bool) -> StoreResult<bool>;

    /// Every webhook with its delivery counts, by id; secrets left out.
    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookStatus>>;

    /// Claims up to `limit` due pending deliveries, oldest first, for
    /// `lease_ms`: they are not due again until the lease ends, so a
    /// delivery cut off by a crash is retried, not lost.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>>;

    /// Records one attempt of a claimed delivery.
    async fn record_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Deletes finished (delivered or given-up) deliveries of events older
    /// than `before_ms`; returns how many.
    async fn purge_deliveries(&self, before_ms: i64) -> StoreResult<u64>;

    /// Resolved and closed tickets matching `terms` (any of them), best
    /// first by bm25, at most `limit`. Terms are plain words; the backend
    /// quotes them, so no query syntax reaches the index.
    async fn search_kb(&self, terms: &[String], limit: u32) -> StoreResult<Vec<KbHit>>;

    /// Audit entries matching `query`, newest first (by id).
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;

    /// Up to `limit` chained audit entries with seq greater than
    /// `after_seq`, in chain order, for verification.
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    /// The audit chain's head row.
    async fn audit_head(&self) -> StoreResult<AuditHead>;

    /// The smallest id of an audit row outside the chain (no seq or hash).
    async fn first_unchained_audit(&self) -> StoreResult<Option<i64>>;
}

/// The words of a knowledge-base query: split on whitespace, keeping only
/// words with a letter or digit (FTS5 finds nothing in pure punctuation).
/// An empty result means there is nothing to search for.
pub fn search_terms(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .take(32)
        .map(str::to_owned)
        .collect()
}

/// The shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Chassis types (D18, as the agent names SMBIOS chassis codes) of hosts
/// that should always be on; other hosts need the `always-on` tag.
pub const ALWAYS_ON_CHASSIS: [&str; 13] = [
    "desktop",
    "low-profile-desktop",
    "pizza-box",
    "mini-tower",
    "tower",
    "all-in-one",
    "space-saving",
    "lunch-box",
    "main-server-chassis",
    "rack-mount-chassis",
    "multi-system-chassis",
    "blade",
    "mini-pc",
];

/// The URL forms [`open`] accepts, for error messages.
const URL_FORMS: &str = "sqlite://PATH or postgres://USER@HOST:PORT/DATABASE";

/// Which backend `url` names, or a one-line error naming the accepted
/// forms. Config checks it before any I/O, so a bad URL is exit code 2.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite://") || is_postgres_url(url) {
        return Ok(());
    }
    Err(format!(
        "unsupported database URL {url:?}: expected {URL_FORMS}"
    ))
}

/// Whether `url` names a PostgreSQL database (which replicas may share).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by `url` (`sqlite://PATH`, `postgres://…` or
/// `postgresql://…`), creating and migrating it as needed.
pub async fn open(url: &str) -> StoreResult<SharedStore> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path)).await?,
        ));
    }
    if is_postgres_url(url) {
        return Ok(Arc::new(postgres::PostgresStore::open(url).await?));
    }
    Err(StoreError::Url(format!(
        "unsupported database URL {url:?}: expected {URL_FORMS}"
    )))
}

#[cfg(test)]
mod tests;
