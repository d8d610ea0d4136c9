//! The collector's plain domain types: who calls (roles, callers), what
//! enrollment and diagnostics exchange, and what is kept and listed
//! (hosts, tickets, jobs, changes, webhooks, the audit log).
//!
//! They cross the [`crate::store::Store`] interface, but belong to no
//! backend: the rules, the queries, the facts, the webhook payloads and the
//! technician API use them without depending on the store, so this module
//! imports nothing of the collector's.

use std::fmt;
use std::str::FromStr;

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
    /// When the token stops working, if it has an expiry (issue 20).
    pub expires_at_ms: Option<i64>,
    /// When the token was last recorded as used (at most once a minute).
    pub last_used_at_ms: Option<i64>,
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
    /// When the token stops working; `None` for no expiry.
    pub expires_at_ms: Option<i64>,
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
    /// The host an enrollment with it re-links to (an admin's say, issue
    /// 20); `None` for an ordinary token, which always makes a new host.
    pub relink_host: Option<String>,
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
    /// The address the enrollment came from, for a re-link request.
    pub source_addr: String,
    /// The CSR, kept with a re-link request so that approval can issue a
    /// certificate for the claimed host to the key the agent holds.
    pub csr_der: Vec<u8>,
}

/// An enrollment under an ordinary token that claimed the hardware
/// identity of an existing host (issue 20): an admin approves it (the new
/// enrollment takes over the host) or denies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelinkRequest {
    /// The request's id.
    pub id: i64,
    /// The existing host whose identity was claimed.
    pub claimed_host_id: String,
    /// Its host name as stored; empty when it is gone.
    pub claimed_hostname: String,
    /// The host id the new enrollment was given.
    pub new_host_id: String,
    /// The host name the new enrollment stated.
    pub hostname: String,
    /// The hardware UUID it stated.
    pub hardware_uuid: String,
    /// The hardware serial it stated.
    pub hardware_serial: String,
    /// Where the enrollment came from.
    pub source_addr: String,
    /// When.
    pub requested_at_ms: i64,
    /// pending, approved, denied or void.
    pub status: String,
    /// When it was decided.
    pub decided_at_ms: Option<i64>,
    /// Who decided it.
    pub decided_by: Option<String>,
}

/// Why a re-link request could not be decided; each is one line for the
/// caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelinkRefusal {
    /// No request has this id.
    NotFound(i64),
    /// It was decided already.
    Decided(RelinkRequest),
    /// The host it claims is no longer enrolled.
    ClaimedHostGone(RelinkRequest),
    /// The new enrollment's own host is gone.
    NewHostGone(RelinkRequest),
}

impl std::fmt::Display for RelinkRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelinkRefusal::NotFound(id) => write!(f, "no re-link request has id {id}"),
            RelinkRefusal::Decided(r) => write!(
                f,
                "re-link request {} is already {}{}",
                r.id,
                r.status,
                r.decided_by
                    .as_deref()
                    .filter(|by| !by.is_empty())
                    .map(|by| format!(" (by {by})"))
                    .unwrap_or_default()
            ),
            RelinkRefusal::ClaimedHostGone(r) => write!(
                f,
                "re-link request {}: host {} is no longer enrolled; deny the request",
                r.id, r.claimed_host_id
            ),
            RelinkRefusal::NewHostGone(r) => write!(
                f,
                "re-link request {}: the new enrollment's host {} is gone; deny the request",
                r.id, r.new_host_id
            ),
        }
    }
}

/// Who decides a re-link request, for its record and the audit entry.
#[derive(Debug, Clone)]
pub struct RelinkDecision {
    /// The request's id.
    pub id: i64,
    /// True to approve, false to deny.
    pub approve: bool,
    /// The deciding technician's name.
    pub by: String,
    /// The audit entry's caller fields (action, subject and detail are
    /// the store's).
    pub audit: AuditEntry,
}

/// Issues a certificate for a host id to the key of a stored CSR (DER):
/// approval hands the agent a certificate for the host it took over.
pub type ReissueCert<'a> = &'a (dyn Fn(&[u8], &str) -> Result<HostCert, String> + Send + Sync);

/// A certificate issued inside the enrollment transaction.
#[derive(Debug, Clone)]
pub struct HostCert {
    /// PEM text.
    pub cert_pem: String,
    /// Serial, hex.
    pub serial_hex: String,
    /// SHA-256 of the DER, hex.
    pub sha256_hex: String,
    /// SHA-256 of the issuing fleet CA's DER, hex (CA rotation counts the
    /// hosts still on an old CA by it).
    pub ca_sha256: String,
}

/// Where a fleet CA stands in a rotation (docs/ca-rotation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaState {
    /// Issues host certificates; trusted.
    Active,
    /// Replaced by the active one but still trusted during the overlap,
    /// and still the issuer of the server certificate agents verify.
    Old,
    /// No longer trusted: its host certificates are refused.
    Retired,
}

impl CaState {
    /// The word stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            CaState::Active => "active",
            CaState::Old => "old",
            CaState::Retired => "retired",
        }
    }

    /// The state a stored word names.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(CaState::Active),
            "old" => Some(CaState::Old),
            "retired" => Some(CaState::Retired),
            _ => None,
        }
    }
}

/// One CA the fleet has had, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCa {
    /// SHA-256 of its DER, hex: its `--ca-sha256` pin.
    pub sha256: String,
    /// Its certificate, PEM.
    pub cert_pem: String,
    /// Its private key sealed under the key of the CA it replaced
    /// (`crate::pki::seal_key`); `None` for the fleet's first CA.
    pub sealed_key: Option<String>,
    /// The CA whose key sealed it.
    pub sealed_by: Option<String>,
    /// Where it stands.
    pub state: CaState,
    /// When it was made (rotated in), ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Its certificate's expiry, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// When it was retired.
    pub retired_at_ms: Option<i64>,
    /// Hosts whose current certificate it issued.
    pub hosts: u64,
}

/// What retiring the old fleet CA did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRetirement {
    /// The old CA is retired; `hosts` still held its certificates (forced).
    Done {
        /// The retired CA.
        sha256: String,
        /// Hosts whose current certificate it issued.
        hosts: u64,
    },
    /// Not retired: hosts still hold its certificates and it was not
    /// forced.
    HostsRemain {
        /// The old CA.
        sha256: String,
        /// How many.
        hosts: u64,
    },
}

/// Where a presented host certificate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStanding {
    /// It is the host's current certificate.
    Current,
    /// It was the host's renewed certificate, presented for the first
    /// time: it is current now, and the one it renewed is retired.
    Renewed,
    /// Another certificate has replaced it (a renewal or a new enrollment).
    Superseded,
    /// No such host.
    UnknownHost,
    /// The host was revoked (issue 20): none of its certificates open a
    /// session again.
    Revoked {
        /// When, ms since the Unix epoch.
        at_ms: i64,
    },
    /// Its host was merged into another by an approved re-link request:
    /// the agent is to use `cert_pem`, issued for `host_id` to the same key.
    Relinked {
        /// The host the enrollment took over.
        host_id: String,
        /// The certificate issued for it at approval.
        cert_pem: String,
    },
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
        /// True if a re-link token linked it to its existing host id.
        relinked: bool,
        /// The hosts whose hardware identity it claimed under an ordinary
        /// token: each claim waits for an admin's approval.
        awaiting_approval_for: Vec<String>,
    },
    /// No such token.
    UnknownToken,
    /// The token has expired.
    ExpiredToken,
    /// The token has no uses left.
    UsedToken,
    /// The token re-links a host that is no longer stored.
    RelinkHostGone,
    /// An admin revoked the token (issue 20).
    RevokedToken,
    /// The token re-links a host that was revoked: a revoked host comes
    /// back only as a new host.
    RelinkHostRevoked,
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
    /// Enabled diagnostics the agent cannot run on its PC, with why: (id,
    /// one-line reason), checked by the session.
    pub unavailable_diagnostics: Vec<(String, String)>,
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
    pub requester: JobRequester,
    /// The ticket to attach the result to.
    pub ticket_id: Option<i64>,
    /// When the request expires if it has not reached the agent.
    pub expires_at_ms: i64,
}

/// Who asks for a diagnostic job.
#[derive(Debug, Clone)]
pub enum JobRequester {
    /// A technician, through the API or the web console.
    Technician(Caller),
    /// A rule's automatic triage, when its ticket opened (issue 23).
    Triage {
        /// The rule.
        rule: String,
    },
}

impl JobRequester {
    /// The name jobs list as who asked: the technician, or "triage".
    pub fn name(&self) -> &str {
        match self {
            JobRequester::Technician(caller) => &caller.name,
            JobRequester::Triage { .. } => TRIAGE_REQUESTER,
        }
    }

    /// The technician and token, for the audit entry; none for triage.
    pub fn ids(&self) -> (Option<&str>, Option<&str>) {
        match self {
            JobRequester::Technician(caller) => {
                (Some(&caller.technician_id), Some(&caller.token_id))
            }
            JobRequester::Triage { .. } => (None, None),
        }
    }
}

/// Who asked, on a job a rule's triage queued.
pub const TRIAGE_REQUESTER: &str = "triage";

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

/// Every state a diagnostic job can be in (the `jobs.state` column).
pub const JOB_STATES: [&str; 8] = [
    "queued",
    "sent",
    "completed",
    "failed",
    "timed_out",
    "refused",
    "cancelled",
    "expired",
];

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
    /// Those it cannot run on its PC: (id, reason), e.g. ("ping", "ping is
    /// not installed").
    pub unavailable: Vec<(String, String)>,
}

impl HostDiagnostics {
    /// Why the host cannot run `id`, if its agent said so.
    pub fn unavailable_reason(&self, id: &str) -> Option<&str> {
        self.unavailable
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, reason)| reason.as_str())
    }
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
    /// The hottest sensor, Celsius; `None` when the PC reports none.
    pub temperature_max_celsius: Option<f32>,
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
    /// The hottest sensor's highest reading, Celsius; `None` when none was
    /// reported.
    pub temperature_max_celsius: Option<f32>,
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

/// The resolution of a ticket its rule resolved when the condition
/// recovered and no technician had resolved it. The knowledge base leaves
/// such tickets out unless asked: they say nothing about a fix.
pub const AUTO_RESOLUTION: &str = "recovered by itself";

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
    /// Marked public: the employee who reported the ticket reads it.
    pub public: bool,
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
    /// Add a worklog note the reporting employee may read (issue 23).
    PublicNote(String),
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
    /// A fleet-wide problem opened (issue 23).
    ProblemOpened,
    /// A problem's priority rose, or it reopened.
    ProblemUpdated,
    /// A problem resolved.
    ProblemResolved,
}

impl TicketEvent {
    /// Every event, in the order the CLI lists them.
    pub const ALL: [TicketEvent; 7] = [
        TicketEvent::Opened,
        TicketEvent::Updated,
        TicketEvent::Escalated,
        TicketEvent::Resolved,
        TicketEvent::ProblemOpened,
        TicketEvent::ProblemUpdated,
        TicketEvent::ProblemResolved,
    ];

    /// The wire name, e.g. `ticket.opened`.
    pub fn name(self) -> &'static str {
        match self {
            TicketEvent::Opened => "ticket.opened",
            TicketEvent::Updated => "ticket.updated",
            TicketEvent::Escalated => "ticket.escalated",
            TicketEvent::Resolved => "ticket.resolved",
            TicketEvent::ProblemOpened => "problem.opened",
            TicketEvent::ProblemUpdated => "problem.updated",
            TicketEvent::ProblemResolved => "problem.resolved",
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
                     ticket.escalated, ticket.resolved, problem.opened, problem.updated \
                     or problem.resolved"
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
    /// Its format and which tickets' events it gets.
    pub route: WebhookRoute,
}

impl fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .field("created_by", &self.created_by)
            .field("route", &self.route)
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
    /// Its format and which tickets' events it gets.
    pub route: WebhookRoute,
    /// Attempts of the delivery tried last.
    pub last_attempts: u32,
    /// When the next pending delivery is due, if one waits.
    pub next_attempt_at_ms: Option<i64>,
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
    /// How the body is sent: signed JSON, a chat message or an e-mail.
    pub format: WebhookFormat,
    /// The e-mail address of an e-mail delivery.
    pub recipient: Option<String>,
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
            .field("format", &self.format)
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
    /// Package name (any case; `*` matches any run of characters), with an
    /// optional version comparison.
    pub software: Option<(String, Option<(VersionOp, String)>)>,
    /// Substring of the OS line (name, version, build or codename),
    /// lowercased.
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
    /// Whether retired hosts are listed (issue 21): left out by default.
    pub retired: RetiredHosts,
}

/// Which hosts a list shows, by whether they are retired (issue 21).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetiredHosts {
    /// The fleet: retired hosts left out.
    #[default]
    Excluded,
    /// Retired hosts only.
    Only,
    /// Every host.
    Included,
}

/// An installed package a `--software` filter matched on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareMatch {
    /// The host.
    pub host_id: String,
    /// The package ecosystem ("dpkg", "rpm", ...).
    pub ecosystem: String,
    /// The package name, as installed.
    pub name: String,
    /// The installed version.
    pub version: String,
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
    /// When it was retired (issue 21), if it was.
    pub retired_at_ms: Option<i64>,
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
    /// When and by whom the host was revoked, and why (issue 20).
    pub revoked: Option<HostRevocation>,
    /// When and by whom the host was retired, and why (issue 21).
    pub retired: Option<HostRevocation>,
    /// How far the host's clock is off, as last recorded (issue 20).
    pub clock: HostClock,
}

/// A host's clock as recorded by its sessions (`crate::clockskew`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostClock {
    /// The PC's clock minus the collector's, ms, and when it was measured;
    /// `None` until an agent that stamps its messages connects.
    pub offset: Option<(i64, i64)>,
    /// Reports whose time was replaced by the receive time.
    pub clamped_reports: u64,
    /// The time the last of those claimed.
    pub last_clamped_claim_ms: Option<i64>,
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
    /// An entry for an action no technician took (an admin command on the
    /// data dir, a test).
    pub fn system(action: &str, subject: &str, detail: &str) -> Self {
        Self {
            technician_id: None,
            token_id: None,
            action: action.to_owned(),
            subject: subject.to_owned(),
            detail: detail.to_owned(),
        }
    }

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

/// A host's revocation (issue 20) or retirement (issue 21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRevocation {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who: a technician name, or "local-admin".
    pub by: String,
    /// The reason given, possibly empty.
    pub reason: String,
}

/// What retiring a host did (issue 21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireOutcome {
    /// Retired now; the ids of the open tickets it closed.
    Retired(Vec<i64>),
    /// It was retired already, at this time.
    AlreadyRetired(i64),
    /// No such host.
    Unknown,
}

/// What checking an API token found (issue 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// A working token, and whom it names.
    Valid(Caller),
    /// No token hashes so.
    Unknown,
    /// An admin revoked it.
    Revoked,
    /// It expired at this time, ms since the Unix epoch.
    Expired(i64),
}

impl TokenCheck {
    /// The caller of a working token.
    pub fn caller(self) -> Option<Caller> {
        match self {
            TokenCheck::Valid(caller) => Some(caller),
            _ => None,
        }
    }
}

/// An API token as `deskpulse tokens` lists it; never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    /// The token id.
    pub id: String,
    /// Its technician's name.
    pub technician: String,
    /// Its technician's role.
    pub role: Role,
    /// When it was made, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// When it was last recorded as used (at most once a minute).
    pub last_used_at_ms: Option<i64>,
    /// When it stops working, if it has an expiry.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// An enrollment token as `deskpulse enroll-token list` shows it; never its
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenRow {
    /// The token id.
    pub id: String,
    /// Who made it.
    pub created_by: String,
    /// When it was made.
    pub created_at_ms: i64,
    /// When it stops working.
    pub expires_at_ms: i64,
    /// Enrollments it allowed.
    pub uses_allowed: i64,
    /// Enrollments left.
    pub uses_left: i64,
    /// The host a re-link token re-links, and its name if still stored.
    pub relink_host: Option<(String, Option<String>)>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// What a revocation did (issue 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked now, with its audit entry.
    Revoked,
    /// It was revoked already, at this time; nothing changed.
    AlreadyRevoked(i64),
    /// No such host or token.
    Unknown,
    /// The API token is the last working admin token: revoking it would
    /// leave nobody able to administer the fleet through the API.
    LastAdmin,
}

/// What was revoked lately, for the replicas' revocation poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// A host: its session ends.
    Host(String),
    /// An API token: its open streams end.
    ApiToken(String),
}

/// A local account to create (issue 22): a technician who signs in to the
/// web console with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLocalUser {
    /// The technician's name; created with `role` when new.
    pub name: String,
    /// The technician's role; an existing technician must have it.
    pub role: Role,
    /// The password as an Argon2id PHC string, never the password.
    pub password_hash: String,
}

/// One local account, as `user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUserRow {
    /// The technician's id.
    pub technician_id: String,
    /// The technician's name.
    pub name: String,
    /// The technician's role.
    pub role: Role,
    /// When the account was made.
    pub created_at_ms: i64,
    /// When its password was last set.
    pub password_set_at_ms: i64,
}

/// What signing in with a password checks: the account and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUserLogin {
    /// The technician's id.
    pub technician_id: String,
    /// The technician's name.
    pub name: String,
    /// The technician's role.
    pub role: Role,
    /// The Argon2id PHC string to verify against.
    pub password_hash: String,
}

/// How often a web session's last use is written at most: idle expiry is
/// counted in minutes, so finer writes would say nothing more.
pub const WEB_SESSION_TOUCH_EVERY_MS: i64 = 60_000;

/// A web console session to store (issue 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebSession {
    /// The session's id: public, named in the audit log.
    pub id: String,
    /// The SHA-256 of the cookie's secret; the secret itself is never
    /// stored.
    pub secret_sha256: String,
    /// Who signed in.
    pub technician_id: String,
    /// The API token signed in with; `None` for a password.
    pub api_token_id: Option<String>,
    /// The session's CSRF token, sent back with every form.
    pub csrf_token: String,
    /// When the session ends whatever its use.
    pub expires_at_ms: i64,
}

/// A stored web session, with what decides whether it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRow {
    /// The session's id.
    pub id: String,
    /// Who signed in: id, current name and current role.
    pub technician_id: String,
    /// The technician's name.
    pub name: String,
    /// The technician's role now (a changed role applies at once).
    pub role: Role,
    /// The API token signed in with, if any.
    pub api_token_id: Option<String>,
    /// The CSRF token.
    pub csrf_token: String,
    /// When it was made.
    pub created_at_ms: i64,
    /// When it was last used (written at most once a minute).
    pub last_seen_at_ms: i64,
    /// When it ends whatever its use.
    pub expires_at_ms: i64,
    /// Whether what it was signed in with still works: the API token not
    /// revoked or expired, or the local account still there.
    pub credential_valid: bool,
}

/// How a webhook's deliveries are written (issue 23): the signed generic
/// JSON, a Slack or Teams chat message, or an e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WebhookFormat {
    /// The signed JSON of `docs/webhooks.md`.
    #[default]
    Generic,
    /// A Slack incoming-webhook message (`text` and blocks), unsigned.
    Slack,
    /// A Teams incoming-webhook message (an Adaptive Card), unsigned.
    Teams,
    /// An e-mail through the collector's SMTP server.
    Email,
}

impl WebhookFormat {
    /// Every format, as `--format` lists them.
    pub const ALL: [WebhookFormat; 4] = [
        WebhookFormat::Generic,
        WebhookFormat::Slack,
        WebhookFormat::Teams,
        WebhookFormat::Email,
    ];

    /// The name stored and shown: generic, slack, teams, email.
    pub fn name(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Teams => "teams",
            WebhookFormat::Email => "email",
        }
    }
}

impl FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown format {s:?}: expected generic, slack, teams or email"))
    }
}

/// A webhook's format and the tickets whose events it gets beyond its
/// event list: only these priorities (none: all), only tickets assigned to
/// this technician (none: any ticket).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookRoute {
    /// How deliveries are written.
    pub format: WebhookFormat,
    /// "P1" … "P4"; empty for every priority.
    pub priorities: Vec<String>,
    /// Only tickets assigned to this technician.
    pub assignee: Option<String>,
}

impl WebhookRoute {
    /// Whether an event of a ticket with this priority and assignee is
    /// for this webhook.
    pub fn accepts(&self, priority: &str, assignee: Option<&str>) -> bool {
        (self.priorities.is_empty() || self.priorities.iter().any(|p| p == priority))
            && self
                .assignee
                .as_deref()
                .is_none_or(|wanted| assignee == Some(wanted))
    }
}
