//! Diagnostic jobs on SQLite: the SQL of the job state machine
//! (`engine::jobs`, which decides each step and audits it in the same
//! transaction), and the job reads.

use sqlx::{Sqlite, Transaction};

use crate::store::engine::{
    self,
    jobs::{Finish, JobTx},
};
use crate::store::rows::{JOB_COLUMNS, job_row};
use crate::store::{AuditEntry, JobResult, JobRow, NewJob, StoreResult};

async fn one<'e, E>(executor: E, id: &str) -> StoreResult<Option<JobRow>>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let sql =
        format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN hosts h ON h.id = j.host_id WHERE j.id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(job_row).transpose()
}

/// One SQLite write transaction as the job state machine sees it.
pub(super) struct Jobs<'a>(pub(super) &'a mut Transaction<'static, Sqlite>);

impl JobTx for Jobs<'_> {
    async fn job(&mut self, id: &str) -> StoreResult<Option<JobRow>> {
        one(&mut **self.0, id).await
    }

    async fn job_for_change(&mut self, id: &str) -> StoreResult<Option<JobRow>> {
        one(&mut **self.0, id).await
    }

    async fn insert_job(&mut self, job: &NewJob, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO jobs (id, host_id, diagnostic, params, params_text, risk, requested_by, \
             technician_id, token_id, ticket_id, state, created_at_ms, expires_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
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
            "UPDATE jobs SET state = 'sent', sent_at_ms = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?
        .rows_affected();
        Ok(sent == 1)
    }

    async fn resent(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET sent_at_ms = ? WHERE id = ? AND state = 'sent'")
            .bind(now_ms)
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn cancel_queued(&mut self, id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at_ms = ?, \
             reason = 'cancelled before it reached the agent' WHERE id = ?",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn request_cancel(&mut self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?")
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn expiring(&mut self, now_ms: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state IN ('queued', 'sent') AND expires_at_ms <= ?",
        )
        .bind(now_ms)
        .fetch_all(&mut **self.0)
        .await?)
    }

    async fn expire_job(&mut self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let expired = sqlx::query(
            "UPDATE jobs SET state = 'expired', finished_at_ms = ?1, \
             reason = 'the request expired before the agent ran it' \
             WHERE id = ?2 AND (state = 'queued' OR (state = 'sent' AND expires_at_ms + 3600000 <= ?1))",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?
        .rows_affected();
        Ok(expired == 1)
    }

    async fn finish_job(&mut self, finish: &Finish<'_>) -> StoreResult<bool> {
        let finished = sqlx::query(
            "UPDATE jobs SET state = ?, exit_code = ?, output = ?, truncated = ?, \
             started_at_ms = ?, finished_at_ms = ?, reason = NULLIF(?, '') \
             WHERE id = ? AND host_id = ? AND state IN ('queued', 'sent', 'expired')",
        )
        .bind(finish.outcome)
        .bind(finish.exit_code)
        .bind(finish.output)
        .bind(i64::from(finish.truncated))
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
             SELECT id, ?, 'system', ? FROM tickets WHERE id = ?",
        )
        .bind(at_ms)
        .bind(note)
        .bind(ticket)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        crate::store::sql::audit::append::<Sqlite>(self.0, entry, now_ms).await
    }
}

/// Records a job, queued, with its audit entry ([`engine::jobs::create`]).
pub async fn create(writer: &super::Writer, job: &NewJob, now_ms: i64) -> StoreResult<JobRow> {
    let mut tx = super::begin_write(writer).await?;
    let row = engine::jobs::create(&mut Jobs(&mut tx), job, now_ms).await?;
    tx.commit().await?;
    Ok(row)
}

/// Marks a job sent ([`engine::jobs::sent`]).
pub async fn sent(writer: &super::Writer, id: &str, now_ms: i64) -> StoreResult<()> {
    let mut tx = super::begin_write(writer).await?;
    engine::jobs::sent(&mut Jobs(&mut tx), id, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// Cancels a job ([`engine::jobs::cancel`]).
pub async fn cancel(writer: &super::Writer, id: &str, now_ms: i64) -> StoreResult<Option<JobRow>> {
    let mut tx = super::begin_write(writer).await?;
    let job = engine::jobs::cancel(&mut Jobs(&mut tx), id, now_ms).await?;
    tx.commit().await?;
    Ok(job)
}

/// Expires jobs past their TTL ([`engine::jobs::expire`]).
pub async fn expire(writer: &super::Writer, now_ms: i64) -> StoreResult<Vec<JobRow>> {
    let mut tx = super::begin_write(writer).await?;
    let expired = engine::jobs::expire(&mut Jobs(&mut tx), now_ms).await?;
    tx.commit().await?;
    Ok(expired)
}

/// Finishes a job with the agent's result, inside the transaction that
/// stores the report ([`engine::jobs::finish`]).
pub async fn finish(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    result: &JobResult,
    now_ms: i64,
) -> StoreResult<()> {
    engine::jobs::finish(&mut Jobs(tx), host, result, now_ms).await
}
