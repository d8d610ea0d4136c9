//! The store: everything the collector keeps, behind one interface that each
//! backend implements. SQL dialect quirks stay inside the backend.
//!
//! # Layout
//! - [`Store`]: the interface the server and admin commands use.
//! - [`sqlite`]: the embedded default (bundled SQLite, WAL mode).
//! - [`postgres`]: PostgreSQL, for large fleets and several replicas
//!   sharing one database.
//! - [`SharedQueries`] (`shared.rs`): the calls whose SQL is the same on
//!   both backends, written once over `sql`.
//! - [`SuggestionQueries`] (`suggestions.rs`): a ticket's suggested fixes
//!   and change correlation (issue 23), written once like `shared.rs`.
//! - [`backend`]: opens a store by its URL; the only module that knows
//!   every backend, so that this one depends on none.
//! - `engine`: the ticket, job and audit logic written once, over the narrow
//!   per-transaction interfaces each backend implements in SQL.
//! - [`versions`]: per-ecosystem version ordering as sortable keys.
//! - The domain types that cross the interface live in [`crate::model`]
//!   and are re-exported here; the store's own are the reports it is handed
//!   ([`IncomingReport`]) and the policy as applied ([`PolicyRecord`]).

pub mod backend;
pub(crate) mod engine;
pub mod postgres;
mod rows;
mod shared;
pub(crate) mod sql;
pub mod sqlite;
pub mod suggestions;
pub mod versions;

// The domain types cross the interface; they live in `crate::model`, free
// of the store, and are named here too for the store's users.
pub use crate::model::*;
pub use crate::rules::model::Reading;
pub(crate) use shared::SqlBackend;
pub use shared::{AuditOf, SharedQueries};
pub use sql::employee::{
    EmployeeQueries, MAX_EMPLOYEE_TEXT, MAX_PUBLIC_NOTES, MAX_REPORTER_TICKETS, ReporterTicket,
    ReporterTickets,
};
pub use sql::problems::{ProblemDetail, ProblemQueries, ProblemSummary};
pub use suggestions::SuggestionQueries;

use std::collections::HashMap;
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

impl StoreError {
    /// True when the database could not write at all (out of space, an
    /// I/O error, read-only, the connection lost), as opposed to refusing
    /// what one write held: the health service reports the first kind
    /// (issue 20), and a hostile agent's bad report must not look like it.
    pub fn is_storage_failure(&self) -> bool {
        let StoreError::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Database(db) => backend::cannot_write(db.as_ref()),
            sqlx::Error::RowNotFound
            | sqlx::Error::InvalidArgument(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Encode(_)
            | sqlx::Error::Decode(_) => false,
            _ => true,
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Reads the inventory blob stored for `host`: a blob that cannot be
/// decoded is an error that names the host, never an empty inventory, which
/// would log every item as removed.
pub(crate) fn decode_stored_inventory(
    host: &str,
    blob: &[u8],
) -> StoreResult<deskpulse_proto::v1::Inventory> {
    use prost::Message;
    deskpulse_proto::v1::Inventory::decode(blob).map_err(|error| {
        StoreError::Corrupt(format!(
            "the stored inventory of host {host} cannot be decoded: {error}"
        ))
    })
}

/// Why the inventory a delta made is not kept: it is over the policy's
/// inventory limits. Each delta is checked at the door, but deltas each
/// within the limits could add up past them; the agent is asked for a full
/// inventory instead, which it cuts to the limits.
pub(crate) fn delta_over_limits(
    inventory: &deskpulse_proto::v1::Inventory,
    limits: &deskpulse_proto::limits::Limits,
) -> Option<String> {
    limits
        .refusal(&deskpulse_proto::limits::count_inventory(inventory))
        .map(|reason| format!("after this delta, {reason}"))
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

/// What a report carries, plus the fields the store indexes. An inventory
/// or a delta arrives decoded and checked in the session, once: the store
/// encodes what it keeps, and decodes only what it stored.
#[derive(Debug, Clone)]
pub enum ReportPayload {
    /// A full inventory.
    Inventory {
        /// The inventory.
        inventory: Box<deskpulse_proto::v1::Inventory>,
        /// Its host name.
        hostname: String,
        /// Its OS name.
        os_name: String,
        /// Its OS version.
        os_version: String,
        /// What fleet queries search.
        facts: Box<InventoryFacts>,
    },
    /// An inventory delta, which the store applies to the stored
    /// inventory.
    InventoryDelta {
        /// The delta.
        delta: Box<deskpulse_proto::v1::InventoryDelta>,
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
        /// Its idempotency key, a UUID (issue 20): a key this host's
        /// reports already raised a ticket for raises none again. `None`
        /// from older agents.
        report_key: Option<String>,
        /// The attached health sample, as evidence JSON.
        health: serde_json::Value,
        /// The reporter's e-mail address, checked at the session; kept in
        /// the ticket's evidence as `reporter_email` (issue 23).
        reporter_email: Option<String>,
    },
}

/// Every [`ReportPayload::kind`], for the metrics registered at start.
pub const REPORT_KINDS: [&str; 5] = [
    "inventory",
    "inventory_delta",
    "health",
    "diagnostic_result",
    "user_issue",
];

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

/// The store interface: these calls, whose SQL or locking differs between
/// the backends (replica liveness, ingest, KB search), and those of
/// [`SharedQueries`], written once.
#[async_trait]
pub trait Store:
    SharedQueries + SuggestionQueries + ProblemQueries + EmployeeQueries + Send + Sync + 'static
{
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

    /// Resolved and closed tickets matching `terms` (any of them), best
    /// first by bm25, at most `limit`. Terms are plain words; the backend
    /// quotes them, so no query syntax reaches the index. A ticket whose
    /// resolution is [`AUTO_RESOLUTION`] is left out unless `include_auto`.
    async fn search_kb(
        &self,
        terms: &[String],
        limit: u32,
        include_auto: bool,
    ) -> StoreResult<Vec<KbHit>>;

    /// Writes a consistent copy of the whole database to `path` (which
    /// must not exist) while the store stays in use: `deskpulse-collector
    /// backup`. Only the embedded SQLite database can; PostgreSQL is backed
    /// up with its own `pg_dump`.
    async fn backup_to(&self, path: &std::path::Path) -> StoreResult<()> {
        let _ = path;
        Err(StoreError::Conflict(
            "the store is PostgreSQL: back it up with pg_dump (README, \"Backup and restore\")"
                .into(),
        ))
    }
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
pub(crate) const URL_FORMS: &str = "sqlite://PATH or postgres://USER@HOST:PORT/DATABASE";

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

#[cfg(test)]
mod tests;
