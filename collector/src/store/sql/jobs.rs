//! Diagnostic jobs, the same SQL on both backends: the SQL of the job
//! state machine (`engine::jobs`, which decides each step and audits it in
//! the same transaction), its transactions, and the job reads. On
//! PostgreSQL a cancel decides on the job under its row lock, and expiry
//! claims due jobs with `FOR UPDATE SKIP LOCKED`, so replicas running the
//! same maintenance pass expire (and audit) each job once; the first send
//! and expiry take the audit head before any job row.

use std::future::Future;

use sqlx::{Pool, QueryBuilder, Transaction};

use super::{Dialect, SendFuture, Value, push_values};
use crate::store::engine::jobs::{self as engine, Finish, JobTx};
use crate::store::rows::{Columns, JOB_COLUMNS, job_row};
use crate::store::{
    AuditEntry, AuditOf, HostDiagnostics, JobQuery, JobResult, JobRow, NewJob, StoreResult,
    TRIAGE_REQUESTER,
};

fn select() -> String {
    format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN hosts h ON h.id = j.host_id WHERE ")
}

/// One job by id.
pub(crate) fn get<'a, B: Dialect>(
    pool: &'a Pool<B>,
    id: &str,
) -> impl Future<Output = StoreResult<Option<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    sql.push("j.id = ");
    B::text(&mut sql, id);
    B::optional(pool, sql, |r| job_row(r))
}

/// The ids of jobs that start with `prefix`, in id order, at most `limit`.
/// `substr`, not LIKE: whatever the prefix holds is text. The length is
/// cast: PostgreSQL has no substr(text, int, bigint).
pub(crate) fn ids_with_prefix<'a, B: Dialect>(
    pool: &'a Pool<B>,
    prefix: &str,
    limit: u32,
) -> impl Future<Output = StoreResult<Vec<String>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new("SELECT id FROM jobs WHERE substr(id, 1, CAST(");
    B::int(
        &mut sql,
        i64::from(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX)),
    );
    sql.push(" AS INTEGER)) = ");
    B::text(&mut sql, prefix);
    sql.push(format!(" ORDER BY id{} LIMIT ", B::BYTE_ORDER));
    B::int(&mut sql, i64::from(limit));
    B::all(pool, sql, |r| r.text("id"))
}

/// Jobs, newest first.
pub(crate) fn list<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &JobQuery,
) -> impl Future<Output = StoreResult<Vec<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    sql.push("1 = 1");
    if let Some(host) = &query.host_id {
        sql.push(" AND j.host_id = ");
        B::text(&mut sql, host);
    }
    if let Some(state) = &query.state {
        sql.push(" AND j.state = ");
        B::text(&mut sql, state);
    }
    sql.push(" ORDER BY j.created_at_ms DESC, j.id LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| job_row(r))
}

/// Triage jobs still queued, made at or after `since_ms`, oldest first.
pub(crate) fn queued_triage<'a, B: Dialect>(
    pool: &'a Pool<B>,
    since_ms: i64,
    limit: u32,
) -> impl Future<Output = StoreResult<Vec<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    // A technician may be named "triage" too; only triage has no technician.
    sql.push("j.state = 'queued' AND j.technician_id IS NULL AND j.requested_by = ");
    B::text(&mut sql, TRIAGE_REQUESTER);
    sql.push(" AND j.created_at_ms >= ");
    B::int(&mut sql, since_ms);
    sql.push(" ORDER BY j.created_at_ms, j.id LIMIT ");
    B::int(&mut sql, i64::from(limit));
    B::all(pool, sql, |r| job_row(r))
}

/// Jobs still to deliver to a host, oldest first.
pub(crate) fn deliverable<'a, B: Dialect>(
    pool: &'a Pool<B>,
    host: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<Vec<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    sql.push("j.host_id = ");
    B::text(&mut sql, host);
    sql.push(" AND j.state IN ('queued', 'sent') AND j.cancel_requested = ");
    B::flag(&mut sql, false);
    sql.push(" AND j.expires_at_ms > ");
    B::int(&mut sql, now_ms);
    sql.push(" ORDER BY j.created_at_ms, j.id");
    B::all(pool, sql, |r| job_row(r))
}

/// What a host's agent said about diagnostics; `None` for an unknown host.
pub(crate) fn host_diagnostics<'a, B: Dialect>(
    pool: &'a Pool<B>,
    host: &str,
) -> impl Future<Output = StoreResult<Option<HostDiagnostics>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(format!(
        "SELECT {HOST_DIAGNOSTICS_COLUMNS} FROM hosts WHERE id = "
    ));
    B::text(&mut sql, host);
    B::optional(pool, sql, |r| host_diagnostics_row(r))
}

/// The columns [`host_diagnostics_row`] reads, from `hosts`.
pub(crate) const HOST_DIAGNOSTICS_COLUMNS: &str =
    "catalog_version, enabled_diagnostics, unavailable_diagnostics";

/// What a host's agent said about diagnostics, from its `hosts` row.
pub(crate) fn host_diagnostics_row(r: &(impl Columns + ?Sized)) -> StoreResult<HostDiagnostics> {
    Ok(HostDiagnostics {
        catalog_version: u32::try_from(r.int("catalog_version")?).unwrap_or(0),
        enabled: r
            .text("enabled_diagnostics")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        unavailable: r
            .text("unavailable_diagnostics")?
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(id, reason)| (id.to_owned(), reason.to_owned()))
            .collect(),
    })
}

/// Which jobs may expire at `now_ms`: queued past their TTL, or sent and
/// past it by a grace hour.
fn push_expiry_due<B: Dialect>(sql: &mut QueryBuilder<B>, now_ms: i64) {
    sql.push("((state = 'queued' AND expires_at_ms <= ");
    B::int(sql, now_ms);
    sql.push(") OR (state = 'sent' AND expires_at_ms + 3600000 <= ");
    B::int(sql, now_ms);
    sql.push("))");
}

/// One write transaction's connection as the job state machine sees it.
pub(crate) struct JobConn<'a, B: Dialect>(pub(crate) &'a mut B::Connection);

impl<B: Dialect> JobConn<'_, B> {
    /// `UPDATE jobs SET {set}`, then the job's id, then `AND {and}`.
    async fn update(&mut self, set: QueryBuilder<B>, id: &str, and: &str) -> StoreResult<u64> {
        let mut sql = set;
        sql.push(" WHERE id = ");
        B::text(&mut sql, id);
        sql.push(and);
        B::execute_in(self.0, sql).await
    }

    /// `UPDATE jobs SET {set}` followed by `ms`.
    fn set_ms(set: &str, ms: i64) -> QueryBuilder<B> {
        let mut sql = QueryBuilder::new(format!("UPDATE jobs SET {set}"));
        B::int(&mut sql, ms);
        sql
    }
}

impl<B: Dialect> JobTx for JobConn<'_, B> {
    async fn job(&mut self, id: &str) -> StoreResult<Option<JobRow>> {
        let mut sql = QueryBuilder::new(select());
        sql.push("j.id = ");
        B::text(&mut sql, id);
        B::optional_in(self.0, sql, |r| job_row(r)).await
    }

    async fn job_for_change(&mut self, id: &str) -> StoreResult<Option<JobRow>> {
        // Decided on the job's state under its lock: a result or a delivery
        // committing meanwhile is waited for, not overwritten.
        let mut sql = QueryBuilder::new("SELECT id FROM jobs WHERE id = ");
        B::text(&mut sql, id);
        sql.push(B::LOCK_ROWS);
        B::optional_in(self.0, sql, |r| r.text("id")).await?;
        self.job(id).await
    }

    async fn insert_job(&mut self, job: &NewJob, now_ms: i64) -> StoreResult<()> {
        let (technician, token) = job.requester.ids();
        let mut sql = QueryBuilder::new(
            "INSERT INTO jobs (id, host_id, diagnostic, params, params_text, risk, requested_by, \
             technician_id, token_id, ticket_id, created_at_ms, expires_at_ms, state) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(&job.id),
                Value::Text(&job.host_id),
                Value::Text(&job.diagnostic),
                Value::Bytes(&job.params),
                Value::Text(&job.params_text),
                Value::Text(&job.risk),
                Value::Text(job.requester.name()),
                Value::MaybeText(technician),
                Value::MaybeText(token),
                Value::MaybeInt(job.ticket_id),
                Value::Int(now_ms),
                Value::Int(job.expires_at_ms),
            ],
        );
        sql.push(", 'queued')");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn mark_sent(&mut self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let set = Self::set_ms("state = 'sent', sent_at_ms = ", now_ms);
        Ok(self.update(set, id, " AND state = 'queued'").await? == 1)
    }

    async fn resent(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        let set = Self::set_ms("sent_at_ms = ", now_ms);
        self.update(set, id, " AND state = 'sent'").await?;
        Ok(())
    }

    async fn cancel_queued(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        let mut set = Self::set_ms(
            "state = 'cancelled', cancel_requested = TRUE, finished_at_ms = ",
            now_ms,
        );
        set.push(", reason = 'cancelled before it reached the agent'");
        self.update(set, id, "").await?;
        Ok(())
    }

    async fn request_cancel(&mut self, id: &str) -> StoreResult<()> {
        let set = QueryBuilder::new("UPDATE jobs SET cancel_requested = TRUE");
        self.update(set, id, "").await?;
        Ok(())
    }

    async fn expiring(&mut self, now_ms: i64) -> StoreResult<Vec<String>> {
        let mut sql = QueryBuilder::new("SELECT id FROM jobs WHERE ");
        push_expiry_due(&mut sql, now_ms);
        sql.push(" ORDER BY id");
        sql.push(B::CLAIM_ROWS);
        B::all_in(self.0, sql, |r| r.text("id")).await
    }

    async fn expire_job(&mut self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let mut sql = QueryBuilder::new("UPDATE jobs SET state = 'expired', finished_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", reason = 'the request expired before the agent ran it' WHERE id = ");
        B::text(&mut sql, id);
        sql.push(" AND ");
        push_expiry_due(&mut sql, now_ms);
        Ok(B::execute_in(self.0, sql).await? == 1)
    }

    async fn finish_job(&mut self, finish: &Finish<'_>) -> StoreResult<bool> {
        let mut sql = QueryBuilder::new("UPDATE jobs SET state = ");
        B::text(&mut sql, finish.outcome);
        for (column, value) in [
            ("exit_code", Value::Int(i64::from(finish.exit_code))),
            ("output", Value::Bytes(finish.output)),
            ("truncated", Value::Flag(finish.truncated)),
            ("started_at_ms", Value::Int(finish.started_at_ms)),
            ("finished_at_ms", Value::Int(finish.finished_at_ms)),
        ] {
            sql.push(format!(", {column} = "));
            B::value(&mut sql, value);
        }
        sql.push(", reason = NULLIF(");
        B::text(&mut sql, finish.reason);
        sql.push(", '') WHERE id = ");
        B::text(&mut sql, finish.job_id);
        sql.push(" AND host_id = ");
        B::text(&mut sql, finish.host);
        sql.push(" AND state IN ('queued', 'sent', 'expired')");
        Ok(B::execute_in(self.0, sql).await? == 1)
    }

    async fn ticket_note(&mut self, ticket: i64, at_ms: i64, note: &str) -> StoreResult<()> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO ticket_worklog (ticket_id, at_ms, author, note) SELECT id, ",
        );
        B::int(&mut sql, at_ms);
        sql.push(", 'system', ");
        B::text(&mut sql, note);
        sql.push(" FROM tickets WHERE id = ");
        B::int(&mut sql, ticket);
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        super::audit::append::<B>(self.0, entry, now_ms).await
    }
}

/// Records a job, queued, with its audit entry ([`engine::create`]), in
/// the transaction `begin` opens.
pub(crate) fn create<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    job: &'a NewJob,
    now_ms: i64,
) -> SendFuture<'a, JobRow> {
    Box::pin(async move {
        let mut tx = begin.await?;
        let row = engine::create(&mut JobConn::<B>(&mut tx), job, now_ms).await?;
        tx.commit().await?;
        Ok(row)
    })
}

/// Marks a job sent ([`engine::sent`]).
pub(crate) fn sent<'a, B: Dialect>(
    pool: &'a Pool<B>,
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    id: &'a str,
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(async move {
        let mut sql = QueryBuilder::new("SELECT state FROM jobs WHERE id = ");
        B::text(&mut sql, id);
        let state = B::optional(pool, sql, |r| r.text("state")).await?;
        let mut tx = begin.await?;
        if state.as_deref() == Some("queued") {
            // The first send is audited: the audit head is taken before
            // the job's row, in the order expiry takes them (see `expire`).
            super::audit::hold_head::<B>(&mut tx).await?;
        }
        engine::sent(&mut JobConn::<B>(&mut tx), id, now_ms).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// Cancels a job ([`engine::cancel`]), deciding on the job under its row
/// lock.
pub(crate) fn cancel<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    id: &'a str,
    audit: AuditOf<'a, JobRow>,
    now_ms: i64,
) -> SendFuture<'a, Option<JobRow>> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let job = engine::cancel(&mut JobConn::<B>(&mut tx), id, now_ms).await?;
        if let Some(job) = &job {
            super::audit::append::<B>(&mut tx, &audit(job), now_ms).await?;
        }
        tx.commit().await?;
        Ok(job)
    })
}

/// Expires jobs past their TTL ([`engine::expire`]), each once however
/// many replicas run the pass.
pub(crate) fn expire<'a, B: Dialect>(
    pool: &'a Pool<B>,
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    now_ms: i64,
) -> SendFuture<'a, Vec<JobRow>> {
    Box::pin(async move {
        // Most passes have nothing to do: answered without any lock.
        let mut sql = QueryBuilder::new("SELECT id FROM jobs WHERE ");
        push_expiry_due(&mut sql, now_ms);
        sql.push(" LIMIT 1");
        if B::optional(pool, sql, |r| r.text("id")).await?.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = begin.await?;
        // The audit head is taken before any job, while this transaction
        // holds nothing: a report transaction finishing two jobs holds the
        // head from the first while it waits for the second's row, and
        // taking the jobs first here could close that cycle.
        super::audit::hold_head::<B>(&mut tx).await?;
        let expired = engine::expire(&mut JobConn::<B>(&mut tx), now_ms).await?;
        tx.commit().await?;
        Ok(expired)
    })
}

/// Finishes a job with the agent's result, inside the transaction that
/// stores the report ([`engine::finish`]).
pub(crate) fn finish<'a, B: Dialect>(
    conn: &'a mut B::Connection,
    host: &'a str,
    result: &'a JobResult,
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(async move { engine::finish(&mut JobConn::<B>(conn), host, result, now_ms).await })
}
