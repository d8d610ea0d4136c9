//! The PostgreSQL backend, for large fleets and several collector replicas
//! sharing one database (D2, D21). SKELETON: methods that return
//! `pending(..)` are still to be ported from `sqlite/mod.rs`.
#![allow(unused)]

mod audit;
mod jobs;
mod kb;
mod tickets;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::{
    AuditEntry, CaRecord, Caller, ChangeQuery, ChangeRow, EnrollOutcome, EnrollRequest,
    HealthPoint, HostDetail, HostDiagnostics, HostQuery, HostRow, IncomingReport, IssueCert,
    JobQuery, JobRow, NewApiToken, NewEnrollmentToken, NewJob, PolicyRecord, ReportOutcome,
    SessionOpen, Store, StoreError, StoreGauges, StoreResult, TicketChange, TicketQuery,
    TicketRefusal, TicketRow, WorklogEntry,
};
use super::{AuditHead, AuditQuery, AuditRecord};
use super::{Delivery, DeliveryOutcome, KbHit, NewWebhook, WebhookStatus};
use crate::rules::priority::Priority;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to and migrates the database at `url` (`postgres://…`).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    fn current_policy(&self) -> Arc<PolicyRecord> {
        Arc::new(PolicyRecord {
            version: 0,
            text: String::new(),
            applied_by: String::new(),
            applied_at_ms: 0,
            policy: crate::rules::policy::Policy::default(),
        })
    }
}

/// The error of a method not ported yet. SKELETON only.
fn pending(what: &str) -> StoreError {
    StoreError::Url(format!("postgres backend: {what} is not implemented yet"))
}

#[async_trait]
impl Store for PostgresStore {
    async fn record_fleet_ca(&self, fingerprint: &str) -> StoreResult<CaRecord> {
        Err(pending("record_fleet_ca"))
    }

    async fn has_technicians(&self) -> StoreResult<bool> {
        Err(pending("has_technicians"))
    }

    async fn create_api_token(&self, token: &NewApiToken, now_ms: i64) -> StoreResult<String> {
        Err(pending("create_api_token"))
    }

    async fn authenticate(&self, token_sha256: &str) -> StoreResult<Option<Caller>> {
        Err(pending("authenticate"))
    }

    async fn create_enrollment_token(
        &self,
        token: &NewEnrollmentToken,
        now_ms: i64,
    ) -> StoreResult<()> {
        Err(pending("create_enrollment_token"))
    }

    async fn enroll(
        &self,
        request: &EnrollRequest,
        now_ms: i64,
        issue: IssueCert<'_>,
    ) -> StoreResult<EnrollOutcome> {
        Err(pending("enroll"))
    }

    async fn host_cert_sha256(&self, host_id: &str) -> StoreResult<Option<String>> {
        Err(pending("host_cert_sha256"))
    }

    async fn session_opened(&self, session: &SessionOpen, now_ms: i64) -> StoreResult<()> {
        Err(pending("session_opened"))
    }

    async fn session_closed(
        &self,
        host_id: &str,
        replica: &str,
        goodbye: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()> {
        Err(pending("session_closed"))
    }

    async fn clear_replica_sessions(&self, replica: &str) -> StoreResult<()> {
        Err(pending("clear_replica_sessions"))
    }

    async fn store_reports(
        &self,
        reports: &[IncomingReport],
        now_ms: i64,
    ) -> StoreResult<Vec<ReportOutcome>> {
        Err(pending("store_reports"))
    }

    async fn record_spool_counters(
        &self,
        host_id: &str,
        encoded: &[u8],
        now_ms: i64,
    ) -> StoreResult<()> {
        Err(pending("record_spool_counters"))
    }

    async fn list_changes(&self, query: &ChangeQuery) -> StoreResult<Vec<ChangeRow>> {
        Err(pending("list_changes"))
    }

    async fn advance_rule_timers(&self, now_ms: i64) -> StoreResult<u64> {
        tickets::advance_timers(&self.pool, &self.current_policy().policy, now_ms).await
    }

    async fn policy(&self) -> StoreResult<Arc<PolicyRecord>> {
        Err(pending("policy"))
    }

    async fn apply_policy(
        &self,
        text: &str,
        applied_by: &str,
        now_ms: i64,
    ) -> StoreResult<Result<Arc<PolicyRecord>, String>> {
        Err(pending("apply_policy"))
    }

    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Vec<TicketRow>> {
        tickets::list(&self.pool, query).await
    }

    async fn create_ticket(
        &self,
        host_id: &str,
        title: &str,
        priority: Option<Priority>,
        author: &str,
        now_ms: i64,
    ) -> StoreResult<TicketRow> {
        let policy = self.current_policy();
        tickets::create(
            &self.pool,
            &policy.policy,
            host_id,
            title,
            priority,
            author,
            now_ms,
        )
        .await
    }

    async fn ticket(&self, id: i64) -> StoreResult<Option<(TicketRow, Vec<WorklogEntry>)>> {
        tickets::get(&self.pool, id).await
    }

    async fn update_ticket(
        &self,
        id: i64,
        change: &TicketChange,
        author: &str,
        now_ms: i64,
    ) -> StoreResult<Result<TicketRow, TicketRefusal>> {
        let policy = self.current_policy();
        tickets::update(&self.pool, &policy.policy, id, change, author, now_ms).await
    }

    async fn advance_sla(&self, now_ms: i64) -> StoreResult<u64> {
        tickets::advance_sla(&self.pool, &self.current_policy().policy, now_ms).await
    }

    async fn health_history(&self, host_id: &str, since_ms: i64) -> StoreResult<Vec<HealthPoint>> {
        Err(pending("health_history"))
    }

    async fn downsample_health(
        &self,
        raw_before_ms: i64,
        keep_after_ms: i64,
    ) -> StoreResult<(u64, u64)> {
        Err(pending("downsample_health"))
    }

    async fn purge_changes(&self, before_ms: i64) -> StoreResult<u64> {
        Err(pending("purge_changes"))
    }

    async fn list_hosts(
        &self,
        query: &HostQuery,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<HostRow>> {
        Err(pending("list_hosts"))
    }

    async fn set_tag(&self, host_id: &str, key: &str, value: &str) -> StoreResult<()> {
        Err(pending("set_tag"))
    }

    async fn tags(&self, host_id: &str) -> StoreResult<Vec<(String, String)>> {
        Err(pending("tags"))
    }

    async fn find_hosts(&self, query: &str) -> StoreResult<Vec<HostRow>> {
        Err(pending("find_hosts"))
    }

    async fn host_detail(&self, host_id: &str) -> StoreResult<Option<HostDetail>> {
        Err(pending("host_detail"))
    }

    async fn append_audit(&self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        Err(pending("append_audit"))
    }

    async fn create_job(&self, job: &NewJob, now_ms: i64) -> StoreResult<JobRow> {
        jobs::create(&self.pool, job, now_ms).await
    }

    async fn job(&self, id: &str) -> StoreResult<Option<JobRow>> {
        jobs::get(&self.pool, id).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRow>> {
        jobs::list(&self.pool, query).await
    }

    async fn deliverable_jobs(&self, host_id: &str, now_ms: i64) -> StoreResult<Vec<JobRow>> {
        jobs::deliverable(&self.pool, host_id, now_ms).await
    }

    async fn job_sent(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        jobs::sent(&self.pool, id, now_ms).await
    }

    async fn cancel_job(&self, id: &str, now_ms: i64) -> StoreResult<Option<JobRow>> {
        jobs::cancel(&self.pool, id, now_ms).await
    }

    async fn expire_jobs(&self, now_ms: i64) -> StoreResult<Vec<JobRow>> {
        jobs::expire(&self.pool, now_ms).await
    }

    async fn host_diagnostics(&self, host_id: &str) -> StoreResult<HostDiagnostics> {
        jobs::host_diagnostics(&self.pool, host_id).await
    }

    async fn ping(&self) -> StoreResult<()> {
        Err(pending("ping"))
    }

    async fn gauges(&self) -> StoreResult<StoreGauges> {
        Err(pending("gauges"))
    }

    async fn add_webhook(&self, hook: &NewWebhook, now_ms: i64) -> StoreResult<i64> {
        webhooks::add(&self.pool, hook, now_ms).await
    }

    async fn remove_webhook(&self, id: i64) -> StoreResult<bool> {
        webhooks::remove(&self.pool, id).await
    }

    async fn set_webhook_enabled(&self, id: i64, enabled: bool) -> StoreResult<bool> {
        webhooks::set_enabled(&self.pool, id, enabled).await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookStatus>> {
        webhooks::list(&self.pool).await
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        webhooks::claim(&self.pool, now_ms, lease_ms, limit).await
    }

    async fn record_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        now_ms: i64,
    ) -> StoreResult<()> {
        webhooks::record(&self.pool, id, outcome, now_ms).await
    }

    async fn purge_deliveries(&self, before_ms: i64) -> StoreResult<u64> {
        webhooks::purge(&self.pool, before_ms).await
    }

    async fn search_kb(&self, terms: &[String], limit: u32) -> StoreResult<Vec<KbHit>> {
        kb::search(&self.pool, terms, limit).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        audit::list(&self.pool, query).await
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        audit::chain_page(&self.pool, after_seq, limit).await
    }

    async fn audit_head(&self) -> StoreResult<AuditHead> {
        audit::head(&self.pool).await
    }

    async fn first_unchained_audit(&self) -> StoreResult<Option<i64>> {
        audit::first_unchained(&self.pool).await
    }
}
