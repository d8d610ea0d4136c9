//! Diagnostic jobs on PostgreSQL: the SQL of the job state machine
//! (`engine::jobs`, which decides each step and audits it in the same
//! transaction), and the job reads. A cancel decides on the job under its
//! row lock, and expiry claims due jobs with `FOR UPDATE SKIP LOCKED`, so
//! replicas running the same maintenance pass expire (and audit) each job
//! once; the first send and expiry take the audit head before any job row.

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::engine::{
    self,
    jobs::{Finish, JobTx},
};
use crate::store::rows::{JOB_COLUMNS, job_row};
use crate::store::{AuditEntry, JobResult, JobRow, NewJob, StoreResult};

async fn one<'e, E>(executor: E, id: &str) -> StoreResult<Option<JobRow>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN hosts h ON h.id = j.host_id WHERE j.id = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(job_row).transpose()
}

/// One PostgreSQL write transaction as the job state machine sees it.
pub(super) struct Jobs<'a>(pub(super) &'a mut Transaction<'static, Postgres>);

impl JobTx for Jobs<'_> {
    async fn job(&mut self, id: &str) -> StoreResult<Option<JobRow>> {
        one(&mut **self.0, id).await
    }

    async fn job_for_change(&mut self, id: &str) -> StoreResult<Option<JobRow>> {
        // Decided on the job's state under its lock: a result or a delivery
        // committing meanwhile is waited for, not overwritten.
        sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        one(&mut **self.0, id).await
    }

    async fn insert_job(&mut self, job: &NewJob, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO jobs (id, host_id, diagnostic, params, params_text, risk, requested_by, \
             technician_id, token_id, ticket_id, state, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12)",
        )
        .bind(&job.id)
        .bind(&job.host_id)
        .bind(&job.diagnostic)
        .bind(&job.params)
        .bind(&job.params_text)
        .bind(&job.risk)
        .bind(&job.caller.name)
        .bind(&job.caller.technician_id)
        .bind(&job.caller.token_id)
        .bind(job.ticket_id)
        .bind(now_ms)
        .bind(job.expires_at_ms)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn mark_sent(&mut self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let sent = sqlx::query(
            "UPDATE jobs SET state = 'sent', sent_at_ms = $1 WHERE id = $2 AND state = 'queued'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?
        .rows_affected();
        Ok(sent == 1)
    }

    async fn resent(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET sent_at_ms = $1 WHERE id = $2 AND state = 'sent'")
            .bind(now_ms)
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn cancel_queued(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', cancel_requested = TRUE, finished_at_ms = $1, \
             reason = 'cancelled before it reached the agent' WHERE id = $2",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn request_cancel(&mut self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET cancel_requested = TRUE WHERE id = $1")
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn expiring(&mut self, now_ms: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM jobs WHERE {EXPIRY_DUE} ORDER BY id FOR UPDATE SKIP LOCKED"
        )))
        .bind(now_ms)
        .fetch_all(&mut **self.0)
        .await?)
    }

    async fn expire_job(&mut self, id: &str, now_ms: i64) -> StoreResult<bool> {
        // Claimed by `expiring` under its lock: it may expire.
        sqlx::query(
            "UPDATE jobs SET state = 'expired', finished_at_ms = $1, \
             reason = 'the request expired before the agent ran it' WHERE id = $2",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?;
        Ok(true)
    }

    async fn finish_job(&mut self, finish: &Finish<'_>) -> StoreResult<bool> {
        let finished = sqlx::query(
            "UPDATE jobs SET state = $1, exit_code = $2, output = $3, truncated = $4, \
             started_at_ms = $5, finished_at_ms = $6, reason = NULLIF($7, '') \
             WHERE id = $8 AND host_id = $9 AND state IN ('queued', 'sent', 'expired')",
        )
        .bind(finish.outcome)
        .bind(finish.exit_code)
        .bind(finish.output)
        .bind(finish.truncated)
        .bind(finish.started_at_ms)
        .bind(finish.finished_at_ms)
        .bind(finish.reason)
        .bind(finish.job_id)
        .bind(finish.host)
        .execute(&mut **self.0)
        .await?
        .rows_affected();
        Ok(finished == 1)
    }

    async fn ticket_note(&mut self, ticket: i64, at_ms: i64, note: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ticket_worklog (ticket_id, at_ms, author, note) \
             SELECT id, $1, 'system', $2 FROM tickets WHERE id = $3",
        )
        .bind(at_ms)
        .bind(note)
        .bind(ticket)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        crate::store::sql::audit::append::<Postgres>(self.0, entry, now_ms).await
    }
}

/// Records a job, queued, with its audit entry ([`engine::jobs::create`]).
pub async fn create(pool: &PgPool, job: &NewJob, now_ms: i64) -> StoreResult<JobRow> {
    let mut tx = pool.begin().await?;
    let row = engine::jobs::create(&mut Jobs(&mut tx), job, now_ms).await?;
    tx.commit().await?;
    Ok(row)
}

/// Marks a job sent ([`engine::jobs::sent`]).
pub async fn sent(pool: &PgPool, id: &str, now_ms: i64) -> StoreResult<()> {
    let queued: Option<bool> =
        sqlx::query_scalar("SELECT state = 'queued' FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let mut tx = pool.begin().await?;
    if queued == Some(true) {
        // The first send is audited: the audit head is taken before the
        // job's row, in the order expiry takes them (see `expire`).
        crate::store::sql::audit::hold_head::<Postgres>(&mut tx).await?;
    }
    engine::jobs::sent(&mut Jobs(&mut tx), id, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// Cancels a job ([`engine::jobs::cancel`]), deciding on the job under its
/// row lock.
pub async fn cancel(pool: &PgPool, id: &str, now_ms: i64) -> StoreResult<Option<JobRow>> {
    let mut tx = pool.begin().await?;
    let job = engine::jobs::cancel(&mut Jobs(&mut tx), id, now_ms).await?;
    tx.commit().await?;
    Ok(job)
}

/// Which jobs may expire at `$1`: queued past their TTL, or sent and past
/// it by a grace hour.
const EXPIRY_DUE: &str = "(state = 'queued' AND expires_at_ms <= $1) \
     OR (state = 'sent' AND expires_at_ms + 3600000 <= $1)";

/// Expires jobs past their TTL ([`engine::jobs::expire`]), claiming them
/// with `FOR UPDATE SKIP LOCKED` so replicas expire (and audit) each once.
pub async fn expire(pool: &PgPool, now_ms: i64) -> StoreResult<Vec<JobRow>> {
    // Most passes have nothing to do: answered without any lock.
    let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE {EXPIRY_DUE})"
    )))
    .bind(now_ms)
    .fetch_one(pool)
    .await?;
    if !any {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    // The audit head is taken before any job, while this transaction holds
    // nothing: a report transaction finishing two jobs holds the head from
    // the first while it waits for the second's row, and taking the jobs
    // first here could close that cycle.
    crate::store::sql::audit::hold_head::<Postgres>(&mut tx).await?;
    let expired = engine::jobs::expire(&mut Jobs(&mut tx), now_ms).await?;
    tx.commit().await?;
    Ok(expired)
}

/// Finishes a job with the agent's result, inside the transaction that
/// stores the report ([`engine::jobs::finish`]).
pub async fn finish(
    tx: &mut Transaction<'static, Postgres>,
    host: &str,
    result: &JobResult,
    now_ms: i64,
) -> StoreResult<()> {
    engine::jobs::finish(&mut Jobs(tx), host, result, now_ms).await
}
