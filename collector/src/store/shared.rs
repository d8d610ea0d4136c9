//! The part of the store's interface whose SQL is the same on both
//! backends, written once: [`SharedQueries`], implemented for every
//! [`SqlBackend`] over sqlx's `QueryBuilder` and [`Dialect`]. A backend
//! says only what differs: its pools, how it opens a write transaction,
//! how it holds and announces the policy in force, and two fragments of
//! SQL. [`Store`], whose supertrait this is, keeps the calls whose SQL or
//! locking differs (replica liveness, ingest, KB search).
//!
//! [`Store`]: crate::store::Store

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Database, Pool, QueryBuilder, Transaction};

use crate::rules::policy::parse_policy;
use crate::rules::priority::Priority;
use crate::store::rows::{HEALTH_POINT_COLUMNS, HOST_COLUMNS, health_point_row, host_row};
use crate::store::sql::tickets::BackendSql;
use crate::store::sql::{self, Dialect, SendFuture, Value, push_values};
use crate::store::{
    ApiTokenRow, EnrollmentTokenRow, HostRevocation, LocalUserLogin, LocalUserRow, NewLocalUser,
    NewWebSession, RetireOutcome, RevokeOutcome, Revoked, TokenCheck, WebSessionRow,
};
use crate::store::{
    AuditEntry, AuditHead, AuditQuery, AuditRecord, CaRecord, CertStanding, ChangeQuery, ChangeRow,
    Delivery, DeliveryOutcome, EnrollOutcome, EnrollRequest, HealthPoint, HostCert, HostDetail,
    HostDiagnostics, HostQuery, HostRow, IssueCert, JobQuery, JobRow, NewApiToken,
    NewEnrollmentToken, NewJob, NewWebhook, PolicyRecord, ReissueCert, RelinkDecision,
    RelinkRefusal, RelinkRequest, SessionOpen, SoftwareMatch, StoreError, StoreGauges, StoreResult,
    TicketChange, TicketQuery, TicketRefusal, TicketRow, WebhookStatus, WorklogEntry,
};

/// Makes an audited change's entry from what the change produced (a new
/// id, the stored record), inside the change's transaction: the entry
/// commits with the change, or neither does (issue 20).
pub type AuditOf<'a, T> = &'a (dyn Fn(&T) -> AuditEntry + Send + Sync);

/// Runs one audited statement and appends its entry, in one transaction
/// (the audit head taken first, as every appending transaction does);
/// returns the rows the statement touched. A statement that touched no
/// row changed nothing: it is rolled back and nothing is audited.
async fn audited<B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send,
    statement: QueryBuilder<B>,
    audit: &AuditEntry,
    now_ms: i64,
) -> StoreResult<u64> {
    let mut tx = begin.await?;
    sql::audit::hold_head::<B>(&mut tx).await?;
    let touched = B::execute_in(&mut tx, statement).await?;
    if touched == 0 {
        return Ok(0);
    }
    sql::audit::append::<B>(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(touched)
}

/// The fleet_meta key of the fleet CA's fingerprint (D2).
const CA_FINGERPRINT_KEY: &str = "ca_sha256";
/// The fleet_meta key the write probe rewrites (see
/// [`SharedQueries::probe_write`]).
const WRITE_PROBE_KEY: &str = "write_probe_ms";

/// A backend as the shared queries see it.
pub(crate) trait SqlBackend: Send + Sync + 'static {
    /// Its database.
    type Db: BackendSql;
    /// Where installed software is found: the software catalog `c` joined
    /// to the hosts that have each entry (SQLite shares package lists
    /// between hosts through `host_keys`).
    const SOFTWARE: sql::hosts::SoftwareTables;
    /// What a host's detail is selected from: `hosts`, joined with where
    /// the backend keeps the latest inventory (`inventory`,
    /// `inventory_at_ms`).
    const HOST_DETAIL_FROM: &'static str;
    /// The pool reads go to (SQLite's WAL readers).
    fn reads(&self) -> &Pool<Self::Db>;
    /// The pool single-statement writes go to (SQLite's one writer, so
    /// that they queue with every other write).
    fn writes(&self) -> &Pool<Self::Db>;
    /// Opens a write transaction (on SQLite, holding the write lock from
    /// its start).
    fn begin(&self) -> SendFuture<'_, Transaction<'static, Self::Db>>;
    /// The policy in force, as this process last read it.
    fn current_policy(&self) -> Arc<PolicyRecord>;
    /// Makes `record`, just applied, the policy in force in this process.
    fn adopt_policy(&self, record: Arc<PolicyRecord>);
    /// Tells the other replicas, once `conn`'s transaction commits, that
    /// policy `version` was applied.
    fn announce_policy(
        conn: &mut <Self::Db as Database>::Connection,
        version: i64,
    ) -> SendFuture<'_, ()>;
}

/// The store calls whose SQL is the same on both backends.
#[async_trait]
pub trait SharedQueries: Send + Sync {
    /// In one transaction: checks and consumes the token, takes the host a
    /// re-link token names or makes a new id (raising a duplicate-identity
    /// ticket on hosts whose hardware the request claims), has `issue` sign
    /// a certificate for it, and records the certificate.
    async fn enroll(
        &self,
        request: &EnrollRequest,
        now_ms: i64,
        issue: IssueCert<'_>,
    ) -> StoreResult<EnrollOutcome>;

    /// Records `next` as the host's renewed certificate, with its audit
    /// entry, if `presented_sha256` is still the host's current
    /// certificate (false otherwise). The current one keeps working until
    /// the agent presents `next` ([`SharedQueries::present_host_cert`]).
    async fn record_cert_renewal(
        &self,
        host_id: &str,
        presented_sha256: &str,
        next: &HostCert,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Where the certificate `sha256` stands for the host; a renewed
    /// certificate presented for the first time becomes current.
    async fn present_host_cert(&self, host_id: &str, sha256: &str) -> StoreResult<CertStanding>;

    /// The re-link requests: the pending ones, oldest first, or with `all`
    /// every one, newest first.
    async fn relink_requests(&self, all: bool) -> StoreResult<Vec<RelinkRequest>>;

    /// Approves or denies a pending re-link request, with its audit entry,
    /// in one transaction (`sql/relink.rs` says what each does); `reissue`
    /// signs the claimed host's certificate from the request's CSR.
    async fn decide_relink(
        &self,
        decision: &RelinkDecision,
        reissue: ReissueCert<'_>,
        now_ms: i64,
    ) -> StoreResult<Result<RelinkRequest, RelinkRefusal>>;

    /// Why enrolling with this token would be refused now, or `None` when
    /// it is usable; a plain read, without the write lock, so an
    /// unauthenticated caller costs no more than a lookup.
    async fn enrollment_token_refusal(
        &self,
        token_sha256: &str,
        now_ms: i64,
    ) -> StoreResult<Option<EnrollOutcome>>;

    /// Checks and applies a policy file (D7); the previous one is kept as
    /// history. `Ok(Err(line))` is a policy the checks refused, or, with
    /// `based_on`, one whose caller compared it with a version that is no
    /// longer in force (another admin applied in between). Audited in the
    /// same transaction.
    async fn apply_policy(
        &self,
        text: &str,
        applied_by: &str,
        based_on: Option<i64>,
        audit: AuditOf<'_, PolicyRecord>,
        now_ms: i64,
    ) -> StoreResult<Result<std::sync::Arc<PolicyRecord>, String>>;

    /// Folds raw health samples older than `raw_before_ms` into hourly
    /// points and deletes points older than `keep_after_ms`. Returns (raw
    /// samples folded, points deleted).
    async fn downsample_health(
        &self,
        raw_before_ms: i64,
        keep_after_ms: i64,
    ) -> StoreResult<(u64, u64)>;

    /// A host with its latest inventory and health.
    async fn host_detail(&self, host_id: &str) -> StoreResult<Option<HostDetail>>;

    /// Records the fleet CA on first use, or compares it with the recorded
    /// one (D2).
    async fn record_fleet_ca(&self, fingerprint: &str) -> StoreResult<CaRecord>;

    /// Stores an API token, creating its technician if new. Returns the
    /// technician id. A technician that exists with another role is a
    /// [`StoreError::Conflict`]. Audited in the same transaction (`audit`
    /// gets the technician id).
    async fn create_api_token(
        &self,
        token: &NewApiToken,
        audit: AuditOf<'_, String>,
        now_ms: i64,
    ) -> StoreResult<String>;

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

    /// Records what a session measured of its host's clock: the offset
    /// (kept when `None`), and reports whose time was replaced, with the
    /// last time claimed (issue 20, `crate::clockskew`).
    async fn record_clock(
        &self,
        host_id: &str,
        reading: &crate::clockskew::ClockReading,
    ) -> StoreResult<()>;

    /// Keeps an agent's latest encoded `SpoolCounters`.
    async fn record_spool_counters(
        &self,
        host_id: &str,
        encoded: &[u8],
        now_ms: i64,
    ) -> StoreResult<()>;

    /// True when at least one technician exists.
    async fn has_technicians(&self) -> StoreResult<bool>;

    /// What the API token hashing to `token_sha256` is at `now_ms`: a
    /// working token and its caller, or why it does not work.
    async fn authenticate(&self, token_sha256: &str, now_ms: i64) -> StoreResult<TokenCheck>;

    /// Records an API token's use at `now_ms`, at most once a minute per
    /// token (a write only when the last one is older); true if written.
    async fn touch_api_token(&self, token_id: &str, now_ms: i64) -> StoreResult<bool>;

    /// Every API token, oldest first; never the secrets.
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiTokenRow>>;

    /// The newest `limit` enrollment tokens, newest first; never the
    /// secrets.
    async fn list_enrollment_tokens(&self, limit: u32) -> StoreResult<Vec<EnrollmentTokenRow>>;

    /// Revokes the host `host_id` (its current and any renewed certificate)
    /// by `by` for `reason`, with `audit`, in one transaction (issue 20).
    async fn revoke_host(
        &self,
        host_id: &str,
        by: &str,
        reason: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RevokeOutcome>;

    /// Retires the host `host_id` by `by` for `reason`, with `audit` (its
    /// action and subject; the tickets closed are added to its detail), in
    /// one transaction (issue 21): it leaves the fleet lists, its
    /// certificates are revoked, its rule states go, and its open tickets
    /// are closed with the reason, each change audited as `audit`'s actor.
    async fn retire_host(
        &self,
        host_id: &str,
        by: &str,
        reason: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RetireOutcome>;

    /// Revokes the API token `token_id` by `by`, with `audit`, unless it is
    /// the last working admin token ([`RevokeOutcome::LastAdmin`]).
    async fn revoke_api_token(
        &self,
        token_id: &str,
        by: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RevokeOutcome>;

    /// Revokes the enrollment token `token_id` by `by`, with `audit`.
    async fn revoke_enrollment_token(
        &self,
        token_id: &str,
        by: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RevokeOutcome>;

    /// The hosts and API tokens revoked at or after `since_ms`.
    async fn revoked_since(&self, since_ms: i64) -> StoreResult<Vec<Revoked>>;

    /// Stores an enrollment token, with its audit entry.
    async fn create_enrollment_token(
        &self,
        token: &NewEnrollmentToken,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// The SHA-256 of the host's current certificate, if the host exists.
    async fn host_cert_sha256(&self, host_id: &str) -> StoreResult<Option<String>>;

    /// Change-log entries, newest first.
    async fn list_changes(&self, query: &ChangeQuery) -> StoreResult<Vec<ChangeRow>>;

    /// Deletes change-log entries observed before `before_ms`; returns how
    /// many.
    async fn purge_changes(&self, before_ms: i64) -> StoreResult<u64>;

    /// Tickets, by priority then resolution due time.
    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Vec<TicketRow>>;

    /// Advances rule timers (quiet periods, reopen windows) and evaluates
    /// the offline rules (D18) on every host at `now_ms`; returns how many
    /// ticket actions that took.
    async fn advance_rule_timers(&self, now_ms: i64) -> StoreResult<u64>;

    /// Advances the rule timers due at `now_ms`, and the offline rules only
    /// of hosts whose offline ticket is open and that stream again: the
    /// pass the timer task runs whenever [`SharedQueries::next_timer_due`]
    /// says so; returns how many ticket actions that took.
    async fn advance_due_rule_timers(&self, now_ms: i64) -> StoreResult<u64>;

    /// When the next timer (a quiet period, a reopen window, an SLA
    /// target, a job's expiry, a host back from offline) falls due, by the
    /// policy in force; `None` when nothing waits. Reads indexed minimums,
    /// takes no lock.
    async fn next_timer_due(&self, now_ms: i64) -> StoreResult<Option<i64>>;

    /// The fleet policy in force.
    async fn policy(&self) -> StoreResult<Arc<PolicyRecord>>;

    /// Opens a manual ticket on a host; priority from the host's impact
    /// and medium urgency unless given. Audited in the same transaction
    /// as `by` (`ticket.create`, the title as detail).
    async fn create_ticket(
        &self,
        host_id: &str,
        title: &str,
        priority: Option<Priority>,
        author: &str,
        by: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<TicketRow>;

    /// A ticket and its worklog, oldest first.
    async fn ticket(&self, id: i64) -> StoreResult<Option<(TicketRow, Vec<WorklogEntry>)>>;

    /// Applies a technician's change, with a worklog entry, audited in
    /// the same transaction as `by` (who acted; the action is the change's,
    /// `ticket.assign` … `ticket.reopen`, and the detail the worklog
    /// entry's text). The first action meets the response target (D22).
    async fn update_ticket(
        &self,
        id: i64,
        change: &TicketChange,
        author: &str,
        by: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<Result<TicketRow, TicketRefusal>>;

    /// Escalates tickets whose SLA targets passed, and closes resolved
    /// tickets past the reopen window. Returns how many it changed.
    async fn advance_sla(&self, now_ms: i64) -> StoreResult<u64>;

    /// A host's health history since `since_ms`, oldest first.
    async fn health_history(&self, host_id: &str, since_ms: i64) -> StoreResult<Vec<HealthPoint>>;

    /// Hosts matching `query`, ordered by (hostname, id), after the given
    /// key, at most `limit`.
    async fn list_hosts(
        &self,
        query: &HostQuery,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<HostRow>>;

    /// Sets (or with an empty value, removes) a tag on a host, with its
    /// audit entry.
    async fn set_tag(
        &self,
        host_id: &str,
        key: &str,
        value: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// A host's tags, ordered by key.
    async fn tags(&self, host_id: &str) -> StoreResult<Vec<(String, String)>>;

    /// The installed packages of `hosts` that `query`'s software filter
    /// matches, by host, name and version; none without that filter.
    async fn matching_software(
        &self,
        hosts: &[&str],
        query: &HostQuery,
    ) -> StoreResult<Vec<SoftwareMatch>>;

    /// The current host name of each of `host_ids` that is a host.
    async fn hostnames(&self, host_ids: &[&str]) -> StoreResult<HashMap<String, String>>;

    /// The host whose id is `query`, alone; else every host whose id
    /// starts with `query` or whose host name equals it
    /// (case-insensitively).
    async fn find_hosts(&self, query: &str) -> StoreResult<Vec<HostRow>>;

    /// A job by id.
    async fn job(&self, id: &str) -> StoreResult<Option<JobRow>>;

    /// The ids of the jobs whose id starts with `prefix` (lowercase hex and
    /// dashes, as job ids are written), in id order, at most `limit`.
    async fn job_ids_with_prefix(&self, prefix: &str, limit: u32) -> StoreResult<Vec<String>>;

    /// Jobs, newest first.
    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRow>>;

    /// Triage jobs (issue 23) still queued, made at or after `since_ms`,
    /// oldest first, at most `limit`.
    async fn queued_triage_jobs(&self, since_ms: i64, limit: u32) -> StoreResult<Vec<JobRow>>;

    /// Records a diagnostic job, queued.
    async fn create_job(&self, job: &NewJob, now_ms: i64) -> StoreResult<JobRow>;

    /// Marks a job as sent to its agent.
    async fn job_sent(&self, id: &str, now_ms: i64) -> StoreResult<()>;

    /// Cancels a job: a queued one is finished as cancelled at once; a sent
    /// one is marked, and finishes when the agent reports. `Ok(None)` when
    /// there is no such job. Audited (`audit` gets the job as it is after)
    /// in the same transaction.
    async fn cancel_job(
        &self,
        id: &str,
        audit: AuditOf<'_, JobRow>,
        now_ms: i64,
    ) -> StoreResult<Option<JobRow>>;

    /// Finishes queued or sent jobs whose request expired before the
    /// agent started them; returns them.
    async fn expire_jobs(&self, now_ms: i64) -> StoreResult<Vec<JobRow>>;

    /// The host's jobs still to deliver: queued or sent, not expired, not
    /// cancelled, oldest first.
    async fn deliverable_jobs(&self, host_id: &str, now_ms: i64) -> StoreResult<Vec<JobRow>>;

    /// What a host's agent said about diagnostics when it last connected.
    async fn host_diagnostics(&self, host_id: &str) -> StoreResult<HostDiagnostics>;

    /// Answers when the store can serve requests (gRPC health, D31 issue 8).
    async fn ping(&self) -> StoreResult<()>;

    /// Counts for the metrics endpoint.
    async fn gauges(&self) -> StoreResult<StoreGauges>;

    /// Removes a webhook and its queued deliveries; false if there was none
    /// (and nothing is audited). Audited in the same transaction.
    async fn remove_webhook(&self, id: i64, audit: &AuditEntry, now_ms: i64) -> StoreResult<bool>;

    /// Pauses or resumes a webhook; false if there is none. A paused
    /// webhook gets no new events and its queued deliveries wait. Audited
    /// in the same transaction.
    async fn set_webhook_enabled(
        &self,
        id: i64,
        enabled: bool,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Every webhook with its delivery counts, by id; secrets left out.
    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookStatus>>;

    /// Stores a webhook (D7 policy); returns its id. Audited (`audit` gets
    /// the id) in the same transaction.
    async fn add_webhook(
        &self,
        hook: &NewWebhook,
        audit: AuditOf<'_, i64>,
        now_ms: i64,
    ) -> StoreResult<i64>;

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

    /// Appends to the audit log.
    async fn append_audit(&self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()>;

    /// Audit entries matching `query`, newest first (by id).
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;

    /// Up to `limit` chained audit entries with seq greater than
    /// `after_seq`, in chain order, for verification.
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    /// The audit chain's head row.
    async fn audit_head(&self) -> StoreResult<AuditHead>;

    /// The smallest id of an audit row outside the chain (no seq or hash).
    async fn first_unchained_audit(&self) -> StoreResult<Option<i64>>;

    /// Rewrites one small row in a write transaction: a write that changes
    /// pages, so it fails while the disk is full and succeeds once there is
    /// room. The health watch uses it to learn that writes work again when
    /// no report arrives to show it (every agent backing off).
    async fn probe_write(&self, now_ms: i64) -> StoreResult<()>;

    /// Every CA the fleet has had, oldest first, with how many hosts hold a
    /// current certificate from each (docs/ca-rotation.md).
    async fn fleet_cas(&self) -> StoreResult<Vec<crate::model::FleetCa>>;

    /// Records `first` as the active CA when the store knows none yet.
    async fn record_first_fleet_ca(&self, first: &crate::model::FleetCa) -> StoreResult<bool>;

    /// Makes `new` the active CA and `expected_active` the old one, in one
    /// audited transaction; a conflict while a rotation is in progress.
    async fn rotate_fleet_ca(
        &self,
        expected_active: &str,
        new: &crate::model::FleetCa,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Retires the old CA (audited as `actor`'s) unless hosts still hold
    /// its certificates and `force` is false; a conflict when there is none.
    async fn retire_fleet_ca(
        &self,
        force: bool,
        actor: &str,
        now_ms: i64,
    ) -> StoreResult<crate::model::CaRetirement>;

    /// Makes a local account for the web console (issue 22), creating its
    /// technician if new; the technician's id. A technician with another
    /// role, or one that has an account already, is a
    /// [`StoreError::Conflict`]. Audited in the same transaction (`audit`
    /// gets the technician id).
    async fn create_local_user(
        &self,
        user: &NewLocalUser,
        audit: AuditOf<'_, String>,
        now_ms: i64,
    ) -> StoreResult<String>;

    /// Sets a new password hash on `name`'s local account and ends its
    /// password sessions, audited; false when `name` has no account.
    async fn set_local_password(
        &self,
        name: &str,
        password_hash: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Deletes `name`'s local account and its password sessions, audited;
    /// false when it has none. The technician and its tokens stay.
    async fn delete_local_user(
        &self,
        name: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// The latest health sample of each of `host_ids` that has one: its
    /// encoding and when it was collected. One statement for a page of
    /// hosts (the web console's fleet list), without their inventories.
    async fn latest_health(
        &self,
        host_ids: &[&str],
    ) -> StoreResult<HashMap<String, (Vec<u8>, i64)>>;

    /// The fleet (retired hosts left out) by OS name: how many hosts, and
    /// how many of them are online at `now_ms` as [`HostRow::is_online`]
    /// decides it (D18), counted in one statement for the web console's
    /// overview.
    async fn presence_by_os(&self, now_ms: i64) -> StoreResult<Vec<(String, u64, u64)>>;

    /// Every local account, by name; never the hashes.
    async fn list_local_users(&self) -> StoreResult<Vec<LocalUserRow>>;

    /// The local account named `name` with its password hash, to check a
    /// sign-in.
    async fn local_user_login(&self, name: &str) -> StoreResult<Option<LocalUserLogin>>;

    /// Stores a new web session with its sign-in's audit entry; sessions
    /// past their absolute expiry are deleted on the way.
    async fn create_web_session(
        &self,
        session: &NewWebSession,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// The web session whose cookie secret hashes to `secret_sha256`.
    async fn web_session(
        &self,
        secret_sha256: &str,
        now_ms: i64,
    ) -> StoreResult<Option<WebSessionRow>>;

    /// Records a session's use, at most once a minute; true if written.
    async fn touch_web_session(&self, id: &str, now_ms: i64) -> StoreResult<bool>;

    /// Deletes a web session; true if there was one.
    async fn delete_web_session(&self, id: &str) -> StoreResult<bool>;
}

/// The rows of `sql`, a count `n` of each `what`.
fn counts<'a, B: Dialect>(
    pool: &'a Pool<B>,
    sql: &'static str,
) -> impl Future<Output = StoreResult<Vec<(String, u64)>>> + Send + 'a {
    B::all(pool, QueryBuilder::new(sql), |r| {
        Ok((r.text("what")?, u64::try_from(r.int("n")?).unwrap_or(0)))
    })
}

#[async_trait]
impl<T: SqlBackend> SharedQueries for T {
    async fn probe_write(&self, now_ms: i64) -> StoreResult<()> {
        let now = now_ms.to_string();
        let mut sql = QueryBuilder::new("INSERT INTO fleet_meta (key, value) VALUES (");
        push_values(&mut sql, &[Value::Text(WRITE_PROBE_KEY), Value::Text(&now)]);
        sql.push(") ON CONFLICT (key) DO UPDATE SET value = excluded.value");
        T::Db::execute(self.writes(), sql).await?;
        Ok(())
    }

    async fn record_fleet_ca(&self, fingerprint: &str) -> StoreResult<CaRecord> {
        let mut sql = QueryBuilder::new("INSERT INTO fleet_meta (key, value) VALUES (");
        push_values(
            &mut sql,
            &[Value::Text(CA_FINGERPRINT_KEY), Value::Text(fingerprint)],
        );
        sql.push(") ON CONFLICT (key) DO NOTHING");
        if T::Db::execute(self.writes(), sql).await? == 1 {
            return Ok(CaRecord::Recorded);
        }
        let mut sql = QueryBuilder::new("SELECT value FROM fleet_meta WHERE key = ");
        T::Db::text(&mut sql, CA_FINGERPRINT_KEY);
        let stored = T::Db::optional(self.reads(), sql, |r| r.text("value")).await?;
        Ok(match stored {
            Some(stored) if stored == fingerprint => CaRecord::Matches,
            Some(stored) => CaRecord::Mismatch(stored),
            None => {
                return Err(StoreError::Corrupt(
                    "the fleet CA fingerprint is neither stored nor storable".into(),
                ));
            }
        })
    }

    async fn create_api_token(
        &self,
        token: &NewApiToken,
        audit: AuditOf<'_, String>,
        now_ms: i64,
    ) -> StoreResult<String> {
        sql::access::create_api_token(self.begin(), token, audit, now_ms).await
    }

    async fn session_opened(&self, session: &SessionOpen, now_ms: i64) -> StoreResult<()> {
        let diagnostics = session.enabled_diagnostics.join(",");
        // One "id<TAB>reason" line each; the session left no tab or newline
        // in a reason.
        let unavailable: String = session
            .unavailable_diagnostics
            .iter()
            .map(|(id, reason)| format!("{id}\t{reason}\n"))
            .collect();
        let mut sql = QueryBuilder::new("UPDATE hosts SET goodbye_reason = NULL");
        for (column, value) in [
            ("session_replica", Value::Text(&session.replica)),
            ("last_seen_at_ms", Value::Int(now_ms)),
            ("agent_version", Value::Text(&session.agent_version)),
            (
                "health_interval_secs",
                Value::Int(i64::from(session.health_interval_secs)),
            ),
            (
                "catalog_version",
                Value::Int(i64::from(session.catalog_version)),
            ),
            ("enabled_diagnostics", Value::Text(&diagnostics)),
            ("unavailable_diagnostics", Value::Text(&unavailable)),
        ] {
            sql.push(format!(", {column} = "));
            T::Db::value(&mut sql, value);
        }
        sql.push(" WHERE id = ");
        T::Db::text(&mut sql, &session.host_id);
        T::Db::execute(self.writes(), sql).await?;
        Ok(())
    }

    async fn session_closed(
        &self,
        host_id: &str,
        replica: &str,
        goodbye: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()> {
        // Only the replica that holds the stream clears it: the agent may
        // already have reconnected elsewhere.
        let mut sql =
            QueryBuilder::new("UPDATE hosts SET session_replica = NULL, goodbye_reason = ");
        T::Db::value(&mut sql, Value::MaybeText(goodbye));
        sql.push(", last_seen_at_ms = ");
        T::Db::int(&mut sql, now_ms);
        sql.push(" WHERE id = ");
        T::Db::text(&mut sql, host_id);
        sql.push(" AND session_replica = ");
        T::Db::text(&mut sql, replica);
        T::Db::execute(self.writes(), sql).await?;
        Ok(())
    }

    async fn clear_replica_sessions(&self, replica: &str) -> StoreResult<()> {
        let mut sql =
            QueryBuilder::new("UPDATE hosts SET session_replica = NULL WHERE session_replica = ");
        T::Db::text(&mut sql, replica);
        T::Db::execute(self.writes(), sql).await?;
        Ok(())
    }

    async fn record_clock(
        &self,
        host_id: &str,
        reading: &crate::clockskew::ClockReading,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("UPDATE hosts SET clock_clamped = clock_clamped + ");
        T::Db::int(&mut sql, i64::try_from(reading.clamped).unwrap_or(i64::MAX));
        if let Some(offset) = reading.offset_ms {
            sql.push(", clock_offset_ms = ");
            T::Db::int(&mut sql, offset);
            sql.push(", clock_measured_at_ms = ");
            T::Db::int(&mut sql, reading.measured_at_ms);
        }
        if let Some(claim) = reading.last_claim_ms {
            sql.push(", clock_claimed_at_ms = ");
            T::Db::int(&mut sql, claim);
        }
        sql.push(" WHERE id = ");
        T::Db::text(&mut sql, host_id);
        T::Db::execute(self.writes(), sql).await?;
        Ok(())
    }

    async fn record_spool_counters(
        &self,
        host_id: &str,
        encoded: &[u8],
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("UPDATE hosts SET spool_counters = ");
        T::Db::bytes(&mut sql, encoded);
        sql.push(", spool_counters_at_ms = ");
        T::Db::int(&mut sql, now_ms);
        sql.push(" WHERE id = ");
        T::Db::text(&mut sql, host_id);
        T::Db::execute(self.writes(), sql).await?;
        Ok(())
    }

    async fn enroll(
        &self,
        request: &EnrollRequest,
        now_ms: i64,
        issue: IssueCert<'_>,
    ) -> StoreResult<EnrollOutcome> {
        let mut tx = self.begin().await?;
        // One enrollment at a time, fleet-wide: two enrollments racing for
        // the last use of a token cannot both spend it, and the same
        // hardware enrolling through two replicas at once finds one host.
        // Enrollments are rare and short, so the queue is too.
        if let Some(lock) = T::Db::one_at_a_time("enroll") {
            T::Db::execute_in(&mut tx, lock).await?;
        }
        let policy = self.current_policy();
        let outcome =
            sql::enroll::enroll_in_tx::<T::Db>(&mut tx, &policy.policy, request, now_ms, issue)
                .await?;
        if matches!(outcome, EnrollOutcome::Enrolled { .. }) {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn record_cert_renewal(
        &self,
        host_id: &str,
        presented_sha256: &str,
        next: &HostCert,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let recorded =
            sql::renewal::record::<T::Db>(&mut tx, host_id, presented_sha256, next, now_ms).await?;
        if recorded {
            tx.commit().await?;
        }
        Ok(recorded)
    }

    async fn present_host_cert(&self, host_id: &str, sha256: &str) -> StoreResult<CertStanding> {
        // The common case, a read: every session opens here, and a write
        // transaction each would queue a reconnecting fleet behind
        // SQLite's one writer. A revoked host stops here too.
        let mut sql = QueryBuilder::new("SELECT cert_sha256, revoked_at_ms FROM hosts WHERE id = ");
        T::Db::text(&mut sql, host_id);
        let current = T::Db::optional(self.reads(), sql, |r| {
            Ok((r.text("cert_sha256")?, r.opt_int("revoked_at_ms")?))
        })
        .await?;
        let standing = sql::renewal::standing(current, sha256);
        // An unknown host goes on: its enrollment may have been merged into
        // the host it claimed by an approved re-link request.
        if matches!(
            standing,
            CertStanding::Current | CertStanding::Revoked { .. }
        ) {
            return Ok(standing);
        }
        let mut tx = self.begin().await?;
        let standing = sql::renewal::present::<T::Db>(&mut tx, host_id, sha256).await?;
        if standing == CertStanding::Renewed {
            tx.commit().await?;
        }
        Ok(standing)
    }

    async fn enrollment_token_refusal(
        &self,
        token_sha256: &str,
        now_ms: i64,
    ) -> StoreResult<Option<EnrollOutcome>> {
        sql::enroll::token_refusal(self.reads(), token_sha256, now_ms).await
    }

    async fn relink_requests(&self, all: bool) -> StoreResult<Vec<RelinkRequest>> {
        sql::relink::list(self.reads(), all).await
    }

    async fn decide_relink(
        &self,
        decision: &RelinkDecision,
        reissue: ReissueCert<'_>,
        now_ms: i64,
    ) -> StoreResult<Result<RelinkRequest, RelinkRefusal>> {
        let mut tx = self.begin().await?;
        // Queued with enrollments, which record requests and raise tickets
        // on the hosts a decision merges.
        if let Some(lock) = T::Db::one_at_a_time("enroll") {
            T::Db::execute_in(&mut tx, lock).await?;
        }
        let policy = self.current_policy();
        let decided =
            sql::relink::decide::<T::Db>(&mut tx, &policy.policy, decision, reissue, now_ms)
                .await?;
        if decided.is_ok() {
            tx.commit().await?;
        }
        Ok(decided)
    }

    async fn apply_policy(
        &self,
        text: &str,
        applied_by: &str,
        based_on: Option<i64>,
        audit: AuditOf<'_, PolicyRecord>,
        now_ms: i64,
    ) -> StoreResult<Result<Arc<PolicyRecord>, String>> {
        let policy = match parse_policy(text) {
            Ok(policy) => policy,
            Err(line) => return Ok(Err(line)),
        };
        let mut tx = self.begin().await?;
        // The audit head serialises every audited write, so no other apply
        // can come between this check and the insert.
        sql::audit::hold_head::<T::Db>(&mut tx).await?;
        if let Some(based_on) = based_on {
            let in_force = T::Db::optional_in(
                &mut tx,
                QueryBuilder::new("SELECT COALESCE(MAX(version), 0) AS version FROM fleet_policy"),
                |r| r.int("version"),
            )
            .await?
            .unwrap_or(0);
            if in_force != based_on {
                return Ok(Err(format!(
                    "policy version {in_force} was applied while this file was checked against version {based_on}; run the command again"
                )));
            }
        }
        let mut sql = QueryBuilder::new(
            "INSERT INTO fleet_policy (text, applied_by, applied_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(text),
                Value::Text(applied_by),
                Value::Int(now_ms),
            ],
        );
        sql.push(") RETURNING version");
        let version = T::Db::optional_in(&mut tx, sql, |r| r.int("version"))
            .await?
            .ok_or_else(|| StoreError::Corrupt("INSERT returned no policy version".into()))?;
        let record = Arc::new(PolicyRecord {
            version,
            text: text.to_owned(),
            applied_by: applied_by.to_owned(),
            applied_at_ms: now_ms,
            policy,
        });
        sql::audit::append::<T::Db>(&mut tx, &audit(&record), now_ms).await?;
        T::announce_policy(&mut tx, version).await?;
        tx.commit().await?;
        self.adopt_policy(record.clone());
        Ok(Ok(record))
    }

    async fn downsample_health(
        &self,
        raw_before_ms: i64,
        keep_after_ms: i64,
    ) -> StoreResult<(u64, u64)> {
        sql::health::downsample(self.begin(), raw_before_ms, keep_after_ms).await
    }

    async fn host_detail(&self, host_id: &str) -> StoreResult<Option<HostDetail>> {
        let mut sql = QueryBuilder::new(format!(
            "SELECT {HOST_COLUMNS}, inventory, inventory_at_ms, last_health, health_at_ms, \
             spool_counters, spool_counters_at_ms, revoked_at_ms, revoked_by, revoked_reason, \
             retired_by, retired_reason, \
             clock_offset_ms, clock_measured_at_ms, clock_clamped, clock_claimed_at_ms \
             FROM {} WHERE hosts.id = ",
            T::HOST_DETAIL_FROM
        ));
        T::Db::text(&mut sql, host_id);
        T::Db::optional(self.reads(), sql, |r| {
            Ok(HostDetail {
                row: host_row(r)?,
                inventory: r.opt_bytes("inventory")?.zip(r.opt_int("inventory_at_ms")?),
                health: r.opt_bytes("last_health")?.zip(r.opt_int("health_at_ms")?),
                spool_counters: r
                    .opt_bytes("spool_counters")?
                    .zip(r.opt_int("spool_counters_at_ms")?),
                revoked: match r.opt_int("revoked_at_ms")? {
                    Some(at_ms) => Some(HostRevocation {
                        at_ms,
                        by: r.opt_text("revoked_by")?.unwrap_or_default(),
                        reason: r.opt_text("revoked_reason")?.unwrap_or_default(),
                    }),
                    None => None,
                },
                retired: match r.opt_int("retired_at_ms")? {
                    Some(at_ms) => Some(HostRevocation {
                        at_ms,
                        by: r.opt_text("retired_by")?.unwrap_or_default(),
                        reason: r.opt_text("retired_reason")?.unwrap_or_default(),
                    }),
                    None => None,
                },
                clock: crate::model::HostClock {
                    offset: r
                        .opt_int("clock_offset_ms")?
                        .zip(r.opt_int("clock_measured_at_ms")?),
                    clamped_reports: u64::try_from(r.int("clock_clamped")?).unwrap_or(0),
                    last_clamped_claim_ms: r.opt_int("clock_claimed_at_ms")?,
                },
            })
        })
        .await
    }

    async fn has_technicians(&self) -> StoreResult<bool> {
        let sql = QueryBuilder::new("SELECT COUNT(*) AS n FROM technicians");
        let count = T::Db::optional(self.reads(), sql, |r| r.int("n")).await?;
        Ok(count > Some(0))
    }

    async fn authenticate(&self, token_sha256: &str, now_ms: i64) -> StoreResult<TokenCheck> {
        sql::revocation::check_token(self.reads(), token_sha256, now_ms).await
    }

    async fn touch_api_token(&self, token_id: &str, now_ms: i64) -> StoreResult<bool> {
        Ok(sql::revocation::touch_token(self.writes(), token_id, now_ms).await? > 0)
    }

    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiTokenRow>> {
        sql::revocation::api_tokens(self.reads()).await
    }

    async fn list_enrollment_tokens(&self, limit: u32) -> StoreResult<Vec<EnrollmentTokenRow>> {
        sql::revocation::enrollment_tokens(self.reads(), limit).await
    }

    async fn revoke_host(
        &self,
        host_id: &str,
        by: &str,
        reason: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RevokeOutcome> {
        let revocation = sql::revocation::Revocation {
            id: host_id,
            by,
            reason,
            audit,
        };
        sql::revocation::revoke_host(self.begin(), revocation, now_ms).await
    }

    async fn retire_host(
        &self,
        host_id: &str,
        by: &str,
        reason: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RetireOutcome> {
        let policy = self.current_policy();
        let retirement = sql::revocation::Revocation {
            id: host_id,
            by,
            reason,
            audit,
        };
        sql::revocation::retire_host(self.begin(), &policy.policy, retirement, now_ms).await
    }

    async fn revoke_api_token(
        &self,
        token_id: &str,
        by: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RevokeOutcome> {
        let revocation = sql::revocation::Revocation {
            id: token_id,
            by,
            reason: "",
            audit,
        };
        sql::revocation::revoke_api_token(self.begin(), revocation, now_ms).await
    }

    async fn revoke_enrollment_token(
        &self,
        token_id: &str,
        by: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<RevokeOutcome> {
        let revocation = sql::revocation::Revocation {
            id: token_id,
            by,
            reason: "",
            audit,
        };
        sql::revocation::revoke_enrollment_token(self.begin(), revocation, now_ms).await
    }

    async fn revoked_since(&self, since_ms: i64) -> StoreResult<Vec<Revoked>> {
        sql::revocation::revoked_since(self.reads(), since_ms).await
    }

    async fn create_enrollment_token(
        &self,
        token: &NewEnrollmentToken,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO enrollment_tokens \
             (id, token_sha256, created_at_ms, expires_at_ms, uses_allowed, uses_left, created_by, \
             relink_host_id) VALUES (",
        );
        T::Db::text(&mut sql, &token.id);
        sql.push(", ");
        T::Db::text(&mut sql, &token.token_sha256);
        let uses = i64::from(token.uses);
        for value in [now_ms, token.expires_at_ms, uses, uses] {
            sql.push(", ");
            T::Db::int(&mut sql, value);
        }
        sql.push(", ");
        T::Db::text(&mut sql, &token.created_by);
        sql.push(", ");
        T::Db::value(&mut sql, Value::MaybeText(token.relink_host.as_deref()));
        sql.push(")");
        audited(self.begin(), sql, audit, now_ms).await?;
        Ok(())
    }

    async fn host_cert_sha256(&self, host_id: &str) -> StoreResult<Option<String>> {
        sql::access::host_cert_sha256(self.reads(), host_id).await
    }

    async fn list_changes(&self, query: &ChangeQuery) -> StoreResult<Vec<ChangeRow>> {
        sql::tickets::changes(self.reads(), query).await
    }

    async fn purge_changes(&self, before_ms: i64) -> StoreResult<u64> {
        let mut sql = QueryBuilder::new("DELETE FROM host_changes WHERE observed_at_ms < ");
        T::Db::int(&mut sql, before_ms);
        T::Db::execute(self.writes(), sql).await
    }

    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Vec<TicketRow>> {
        sql::tickets::list(self.reads(), query).await
    }

    async fn advance_rule_timers(&self, now_ms: i64) -> StoreResult<u64> {
        let policy = self.current_policy();
        sql::tickets::advance_timers(self.begin(), &policy.policy, now_ms, true).await
    }

    async fn advance_due_rule_timers(&self, now_ms: i64) -> StoreResult<u64> {
        let policy = self.current_policy();
        sql::tickets::advance_timers(self.begin(), &policy.policy, now_ms, false).await
    }

    async fn next_timer_due(&self, now_ms: i64) -> StoreResult<Option<i64>> {
        let policy = self.current_policy();
        let offline_rules: Vec<&str> = policy
            .policy
            .rules
            .iter()
            .filter(|r| r.metric == crate::rules::model::Metric::OfflineMinutes)
            .map(|r| r.name.as_str())
            .collect();
        let starts = sql::tickets::timer_starts(self.reads(), &offline_rules).await?;
        Ok(crate::store::engine::tickets::next_due(
            &starts,
            &policy.policy,
            now_ms,
        ))
    }

    async fn policy(&self) -> StoreResult<Arc<PolicyRecord>> {
        Ok(self.current_policy())
    }

    async fn create_ticket(
        &self,
        host_id: &str,
        title: &str,
        priority: Option<Priority>,
        author: &str,
        by: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<TicketRow> {
        let policy = self.current_policy();
        let begin = self.begin();
        let opened = crate::store::engine::tickets::NewManualTicket {
            host: host_id,
            title,
            priority,
            author,
            by,
        };
        sql::tickets::create(begin, &policy.policy, &opened, now_ms).await
    }

    async fn ticket(&self, id: i64) -> StoreResult<Option<(TicketRow, Vec<WorklogEntry>)>> {
        sql::tickets::get(self.reads(), id).await
    }

    async fn update_ticket(
        &self,
        id: i64,
        change: &TicketChange,
        author: &str,
        by: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<Result<TicketRow, TicketRefusal>> {
        let policy = self.current_policy();
        let begin = self.begin();
        sql::tickets::update(begin, &policy.policy, id, change, author, by, now_ms).await
    }

    async fn advance_sla(&self, now_ms: i64) -> StoreResult<u64> {
        let policy = self.current_policy();
        sql::tickets::advance_sla(self.begin(), &policy.policy, now_ms).await
    }

    async fn health_history(&self, host_id: &str, since_ms: i64) -> StoreResult<Vec<HealthPoint>> {
        let mut sql = QueryBuilder::new(format!(
            "SELECT {HEALTH_POINT_COLUMNS} FROM health_samples \
             WHERE resolution_s IN (0, 3600) AND host_id = "
        ));
        T::Db::text(&mut sql, host_id);
        sql.push(" AND at_ms >= ");
        T::Db::int(&mut sql, since_ms);
        sql.push(" ORDER BY at_ms");
        T::Db::all(self.reads(), sql, |r| health_point_row(r)).await
    }

    async fn list_hosts(
        &self,
        query: &HostQuery,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<HostRow>> {
        let (name, id) = after.unwrap_or(("", ""));
        let order = format!("hostname{0}, id{0}", T::Db::BYTE_ORDER);
        let mut sql = QueryBuilder::new(format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE ({order}) > ("
        ));
        T::Db::text(&mut sql, name);
        sql.push(", ");
        T::Db::text(&mut sql, id);
        sql.push(")");
        sql::hosts::push_conditions::<T::Db>(&mut sql, &T::SOFTWARE, query);
        sql.push(format!(" ORDER BY {order} LIMIT "));
        T::Db::int(&mut sql, i64::from(limit));
        T::Db::all(self.reads(), sql, |r| host_row(r)).await
    }

    async fn set_tag(
        &self,
        host_id: &str,
        key: &str,
        value: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("");
        if value.is_empty() {
            sql.push("DELETE FROM host_tags WHERE host_id = ");
            T::Db::text(&mut sql, host_id);
            sql.push(" AND key = ");
            T::Db::text(&mut sql, key);
        } else {
            sql.push("INSERT INTO host_tags (host_id, key, value) VALUES (");
            T::Db::text(&mut sql, host_id);
            sql.push(", ");
            T::Db::text(&mut sql, key);
            sql.push(", ");
            T::Db::text(&mut sql, value);
            sql.push(") ON CONFLICT (host_id, key) DO UPDATE SET value = excluded.value");
        }
        audited(self.begin(), sql, audit, now_ms).await?;
        Ok(())
    }

    async fn hostnames(&self, host_ids: &[&str]) -> StoreResult<HashMap<String, String>> {
        if host_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = QueryBuilder::new("SELECT id, hostname FROM hosts WHERE id");
        T::Db::push_in(&mut sql, host_ids)?;
        let rows = T::Db::all(self.reads(), sql, |r| {
            Ok((r.text("id")?, r.text("hostname")?))
        })
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn tags(&self, host_id: &str) -> StoreResult<Vec<(String, String)>> {
        let mut sql = QueryBuilder::new("SELECT key, value FROM host_tags WHERE host_id = ");
        T::Db::text(&mut sql, host_id);
        sql.push(format!(" ORDER BY key{}", T::Db::BYTE_ORDER));
        T::Db::all(self.reads(), sql, |r| {
            Ok((r.text("key")?, r.text("value")?))
        })
        .await
    }

    async fn matching_software(
        &self,
        hosts: &[&str],
        query: &HostQuery,
    ) -> StoreResult<Vec<SoftwareMatch>> {
        let Some((name, compare)) = &query.software else {
            return Ok(Vec::new());
        };
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let sql =
            sql::hosts::matching_software::<T::Db>(&T::SOFTWARE, hosts, name, compare.as_ref())?;
        T::Db::all(self.reads(), sql, |r| {
            Ok(SoftwareMatch {
                host_id: r.text("host_id")?,
                ecosystem: r.text("ecosystem")?,
                name: r.text("name")?,
                version: r.text("version")?,
            })
        })
        .await
    }

    async fn find_hosts(&self, query: &str) -> StoreResult<Vec<HostRow>> {
        // An exact id is looked up alone, before names and prefixes: no
        // host name, whatever an agent reports, can shadow it (issue 20).
        let mut sql = QueryBuilder::new(format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = "));
        T::Db::text(&mut sql, &query.to_ascii_lowercase());
        if let Some(row) = T::Db::optional(self.reads(), sql, |r| host_row(r)).await? {
            return Ok(vec![row]);
        }
        let prefix = format!("{}%", query.to_ascii_lowercase().replace(['%', '_'], ""));
        // lower() on both sides: the ASCII case folding of SQLite's
        // COLLATE NOCASE, on both databases.
        let mut sql = QueryBuilder::new(format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id LIKE "));
        T::Db::text(&mut sql, &prefix);
        sql.push(T::Db::LIKE_LITERAL);
        sql.push(" OR lower(hostname) = lower(");
        T::Db::text(&mut sql, query);
        sql.push(format!(
            ") ORDER BY hostname{0}, id{0} LIMIT 50",
            T::Db::BYTE_ORDER
        ));
        // A host name that is also the start of some id is ambiguous, not
        // the name's: an agent choosing its host name must not capture the
        // id prefix a technician types.
        T::Db::all(self.reads(), sql, |r| host_row(r)).await
    }

    async fn job(&self, id: &str) -> StoreResult<Option<JobRow>> {
        sql::jobs::get(self.reads(), id).await
    }

    async fn job_ids_with_prefix(&self, prefix: &str, limit: u32) -> StoreResult<Vec<String>> {
        sql::jobs::ids_with_prefix(self.reads(), prefix, limit).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRow>> {
        sql::jobs::list(self.reads(), query).await
    }

    async fn queued_triage_jobs(&self, since_ms: i64, limit: u32) -> StoreResult<Vec<JobRow>> {
        sql::jobs::queued_triage(self.reads(), since_ms, limit).await
    }

    async fn deliverable_jobs(&self, host_id: &str, now_ms: i64) -> StoreResult<Vec<JobRow>> {
        sql::jobs::deliverable(self.reads(), host_id, now_ms).await
    }

    async fn create_job(&self, job: &NewJob, now_ms: i64) -> StoreResult<JobRow> {
        sql::jobs::create(self.begin(), job, now_ms).await
    }

    async fn job_sent(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        sql::jobs::sent(self.reads(), self.begin(), id, now_ms).await
    }

    async fn cancel_job(
        &self,
        id: &str,
        audit: AuditOf<'_, JobRow>,
        now_ms: i64,
    ) -> StoreResult<Option<JobRow>> {
        sql::jobs::cancel(self.begin(), id, audit, now_ms).await
    }

    async fn expire_jobs(&self, now_ms: i64) -> StoreResult<Vec<JobRow>> {
        sql::jobs::expire(self.reads(), self.begin(), now_ms).await
    }

    async fn host_diagnostics(&self, host_id: &str) -> StoreResult<HostDiagnostics> {
        Ok(sql::jobs::host_diagnostics(self.reads(), host_id)
            .await?
            .unwrap_or_default())
    }

    async fn ping(&self) -> StoreResult<()> {
        T::Db::execute(self.reads(), QueryBuilder::new("SELECT 1")).await?;
        Ok(())
    }

    async fn gauges(&self) -> StoreResult<StoreGauges> {
        let pool = self.reads();
        let outbox =
            QueryBuilder::new("SELECT COUNT(*) AS n FROM webhook_outbox WHERE state = 'pending'");
        let outbox = T::Db::optional(pool, outbox, |r| r.int("n")).await?;
        Ok(StoreGauges {
            open_tickets: counts(
                pool,
                "SELECT priority AS what, COUNT(*) AS n FROM tickets \
                 WHERE status NOT IN ('resolved', 'closed') GROUP BY priority",
            )
            .await?,
            jobs: counts(
                pool,
                "SELECT state AS what, COUNT(*) AS n FROM jobs GROUP BY state",
            )
            .await?,
            outbox_pending: outbox.map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        })
    }

    async fn remove_webhook(&self, id: i64, audit: &AuditEntry, now_ms: i64) -> StoreResult<bool> {
        // Its outbox rows go with it (ON DELETE CASCADE).
        let mut sql = QueryBuilder::new("DELETE FROM webhooks WHERE id = ");
        T::Db::int(&mut sql, id);
        Ok(audited(self.begin(), sql, audit, now_ms).await? == 1)
    }

    async fn set_webhook_enabled(
        &self,
        id: i64,
        enabled: bool,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut sql = QueryBuilder::new("UPDATE webhooks SET enabled = ");
        T::Db::flag(&mut sql, enabled);
        sql.push(" WHERE id = ");
        T::Db::int(&mut sql, id);
        Ok(audited(self.begin(), sql, audit, now_ms).await? == 1)
    }

    async fn add_webhook(
        &self,
        hook: &NewWebhook,
        audit: AuditOf<'_, i64>,
        now_ms: i64,
    ) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        sql::audit::hold_head::<T::Db>(&mut tx).await?;
        let id = sql::webhooks::add::<T::Db>(&mut tx, hook, now_ms).await?;
        sql::audit::append::<T::Db>(&mut tx, &audit(&id), now_ms).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        sql::webhooks::claim(self.begin(), now_ms, lease_ms, limit).await
    }

    async fn record_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        now_ms: i64,
    ) -> StoreResult<()> {
        sql::webhooks::record(self.writes(), id, outcome, now_ms).await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookStatus>> {
        sql::webhooks::list(self.reads()).await
    }

    async fn purge_deliveries(&self, before_ms: i64) -> StoreResult<u64> {
        let mut sql = QueryBuilder::new(
            "DELETE FROM webhook_outbox WHERE state IN ('delivered', 'failed') \
             AND created_at_ms < ",
        );
        T::Db::int(&mut sql, before_ms);
        T::Db::execute(self.writes(), sql).await
    }

    async fn append_audit(&self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sql::audit::append::<T::Db>(&mut tx, entry, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        sql::audit::list(self.reads(), query).await
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        sql::audit::chain_page(self.reads(), after_seq, limit).await
    }

    async fn audit_head(&self) -> StoreResult<AuditHead> {
        sql::audit::head(self.reads())
            .await?
            .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))
    }

    async fn first_unchained_audit(&self) -> StoreResult<Option<i64>> {
        Ok(sql::audit::first_unchained(self.reads()).await?.flatten())
    }

    async fn fleet_cas(&self) -> StoreResult<Vec<crate::model::FleetCa>> {
        sql::fleet_ca::list(self.reads()).await
    }

    async fn record_first_fleet_ca(&self, first: &crate::model::FleetCa) -> StoreResult<bool> {
        sql::fleet_ca::record_first(self.writes(), first).await
    }

    async fn rotate_fleet_ca(
        &self,
        expected_active: &str,
        new: &crate::model::FleetCa,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sql::fleet_ca::rotate::<T::Db>(&mut tx, expected_active, new, audit, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retire_fleet_ca(
        &self,
        force: bool,
        actor: &str,
        now_ms: i64,
    ) -> StoreResult<crate::model::CaRetirement> {
        let mut tx = self.begin().await?;
        let retired = sql::fleet_ca::retire::<T::Db>(&mut tx, force, actor, now_ms).await?;
        if matches!(retired, crate::model::CaRetirement::Done { .. }) {
            tx.commit().await?;
        }
        Ok(retired)
    }

    async fn create_local_user(
        &self,
        user: &NewLocalUser,
        audit: AuditOf<'_, String>,
        now_ms: i64,
    ) -> StoreResult<String> {
        sql::web::create_local_user(self.begin(), user, audit, now_ms).await
    }

    async fn set_local_password(
        &self,
        name: &str,
        password_hash: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<bool> {
        sql::web::set_local_password(self.begin(), name, password_hash, audit, now_ms).await
    }

    async fn delete_local_user(
        &self,
        name: &str,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<bool> {
        sql::web::delete_local_user(self.begin(), name, audit, now_ms).await
    }

    async fn latest_health(
        &self,
        host_ids: &[&str],
    ) -> StoreResult<HashMap<String, (Vec<u8>, i64)>> {
        if host_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = QueryBuilder::new(
            "SELECT id, last_health, health_at_ms FROM hosts \
             WHERE last_health IS NOT NULL AND health_at_ms IS NOT NULL AND id",
        );
        T::Db::push_in(&mut sql, host_ids)?;
        let rows = T::Db::all(self.reads(), sql, |r| {
            Ok((
                r.text("id")?,
                r.opt_bytes("last_health")?.unwrap_or_default(),
                r.opt_int("health_at_ms")?.unwrap_or(0),
            ))
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, sample, at_ms)| (id, (sample, at_ms)))
            .collect())
    }

    async fn presence_by_os(&self, now_ms: i64) -> StoreResult<Vec<(String, u64, u64)>> {
        // The same three cases as `HostRow::is_online`, in its order: a
        // stream, else a goodbye, else seen within its offline window.
        let mut sql = QueryBuilder::new(format!(
            "SELECT os_name, COUNT(*) AS n, SUM(CASE \
             WHEN session_replica IS NOT NULL THEN 1 \
             WHEN goodbye_reason IS NOT NULL THEN 0 \
             WHEN last_seen_at_ms IS NOT NULL AND last_seen_at_ms >= 0 - \
             {} * health_interval_secs * 1000 + ",
            crate::model::OFFLINE_AFTER_INTERVALS
        ));
        T::Db::int(&mut sql, now_ms);
        sql.push(format!(
            " THEN 1 ELSE 0 END) AS online FROM hosts WHERE retired_at_ms IS NULL \
             GROUP BY os_name ORDER BY os_name{}",
            T::Db::BYTE_ORDER
        ));
        T::Db::all(self.reads(), sql, |r| {
            let count = |name: &str| -> StoreResult<u64> {
                Ok(u64::try_from(r.opt_int(name)?.unwrap_or(0)).unwrap_or(0))
            };
            Ok((r.text("os_name")?, count("n")?, count("online")?))
        })
        .await
    }

    async fn list_local_users(&self) -> StoreResult<Vec<LocalUserRow>> {
        sql::web::local_users(self.reads()).await
    }

    async fn local_user_login(&self, name: &str) -> StoreResult<Option<LocalUserLogin>> {
        sql::web::local_user_login(self.reads(), name).await
    }

    async fn create_web_session(
        &self,
        session: &NewWebSession,
        audit: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<()> {
        sql::web::create_web_session(self.begin(), session, audit, now_ms).await
    }

    async fn web_session(
        &self,
        secret_sha256: &str,
        now_ms: i64,
    ) -> StoreResult<Option<WebSessionRow>> {
        sql::web::web_session(self.reads(), secret_sha256, now_ms).await
    }

    async fn touch_web_session(&self, id: &str, now_ms: i64) -> StoreResult<bool> {
        Ok(sql::web::touch_web_session(self.writes(), id, now_ms).await? > 0)
    }

    async fn delete_web_session(&self, id: &str) -> StoreResult<bool> {
        Ok(sql::web::delete_web_session(self.writes(), id).await? > 0)
    }
}
