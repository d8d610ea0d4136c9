//! Diagnostic jobs on PostgreSQL, the same state machine as on SQLite
//! (queued -> sent -> completed/failed/timed_out/refused, cancelled or
//! expired): recorded when a technician asks, marked sent when delivered,
//! finished by the agent's spooled result (in the transaction that stores
//! the report), by a cancel or by expiry. Every start and finish is audited
//! in the same transaction. A cancel decides on the job under its row lock,
//! and expiry claims due jobs with `FOR UPDATE SKIP LOCKED`, so replicas
//! running the same maintenance pass expire (and audit) each job once.

use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};

use crate::store::rows::{JOB_COLUMNS, job_row};
use crate::store::{
    AuditEntry, HostDiagnostics, JobQuery, JobResult, JobRow, NewJob, StoreError, StoreResult,
};

/// The most output kept of one job, whatever the agent sends: the largest
/// catalog cap with room to spare.
const MAX_OUTPUT: usize = 256 * 1024;

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

fn system(action: &str, job: &JobRow, detail: String) -> AuditEntry {
    AuditEntry {
        technician_id: None,
        token_id: None,
        action: action.into(),
        subject: format!("job {} on host {}", job.id, job.host_id),
        detail,
    }
}

/// Records a job, queued, with its audit entry.
pub async fn create(pool: &PgPool, job: &NewJob, now_ms: i64) -> StoreResult<JobRow> {
    let mut tx = pool.begin().await?;
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
    .execute(&mut *tx)
    .await?;
    super::append_audit_in(
        &mut tx,
        &AuditEntry {
            technician_id: Some(job.caller.technician_id.clone()),
            token_id: Some(job.caller.token_id.clone()),
            action: "diagnostic.request".into(),
            subject: format!("job {} on host {}", job.id, job.host_id),
            detail: format!(
                "{} {} ({}){}",
                job.diagnostic,
                job.params_text,
                job.risk,
                job.ticket_id
                    .map(|t| format!(" for ticket {t}"))
                    .unwrap_or_default()
            ),
        },
        now_ms,
    )
    .await?;
    let row = one(&mut *tx, &job.id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {} vanished", job.id)))?;
    tx.commit().await?;
    Ok(row)
}

/// A job by id.
pub async fn get(pool: &PgPool, id: &str) -> StoreResult<Option<JobRow>> {
    one(pool, id).await
}

/// Jobs, newest first.
pub async fn list(pool: &PgPool, query: &JobQuery) -> StoreResult<Vec<JobRow>> {
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN hosts h ON h.id = j.host_id WHERE 1 = 1"
    ));
    if let Some(host) = &query.host_id {
        sql.push(" AND j.host_id = ").push_bind(host.as_str());
    }
    if let Some(state) = &query.state {
        sql.push(" AND j.state = ").push_bind(state.as_str());
    }
    sql.push(" ORDER BY j.created_at_ms DESC, j.id LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(job_row).collect()
}

/// Jobs still to deliver to a host, oldest first.
pub async fn deliverable(pool: &PgPool, host: &str, now_ms: i64) -> StoreResult<Vec<JobRow>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j JOIN hosts h ON h.id = j.host_id \
         WHERE j.host_id = $1 AND j.state IN ('queued', 'sent') AND NOT j.cancel_requested \
         AND j.expires_at_ms > $2 ORDER BY j.created_at_ms, j.id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(host)
        .bind(now_ms)
        .fetch_all(pool)
        .await?;
    rows.iter().map(job_row).collect()
}

/// Marks a job sent; the first send is audited as its start.
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
        super::audit::lock_head(&mut tx).await?;
    }
    let first = sqlx::query(
        "UPDATE jobs SET state = 'sent', sent_at_ms = $1 WHERE id = $2 AND state = 'queued'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if first && let Some(job) = one(&mut *tx, id).await? {
        super::append_audit_in(
            &mut tx,
            &system("diagnostic.start", &job, "delivered to the agent".into()),
            now_ms,
        )
        .await?;
    } else {
        sqlx::query("UPDATE jobs SET sent_at_ms = $1 WHERE id = $2 AND state = 'sent'")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Cancels a job.
pub async fn cancel(pool: &PgPool, id: &str, now_ms: i64) -> StoreResult<Option<JobRow>> {
    let mut tx = pool.begin().await?;
    // Decided on the job's state under its lock: a result or a delivery
    // committing meanwhile is waited for, not overwritten.
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let Some(job) = one(&mut *tx, id).await? else {
        return Ok(None);
    };
    match job.state.as_str() {
        "queued" => {
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', cancel_requested = TRUE, finished_at_ms = $1, \
                 reason = 'cancelled before it reached the agent' WHERE id = $2",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        "sent" => {
            sqlx::query("UPDATE jobs SET cancel_requested = TRUE WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        _ => {}
    }
    let after = one(&mut *tx, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))?;
    tx.commit().await?;
    Ok(Some(after))
}

/// Expires jobs whose request passed its TTL before the agent took it.
/// A sent job keeps running on the agent and reports its own result; only
/// one never delivered, or delivered and never answered within a grace
/// hour, expires here.
pub async fn expire(pool: &PgPool, now_ms: i64) -> StoreResult<Vec<JobRow>> {
    const DUE: &str = "(state = 'queued' AND expires_at_ms <= $1) \
         OR (state = 'sent' AND expires_at_ms + 3600000 <= $1)";
    // Most passes have nothing to do: answered without any lock.
    let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE {DUE})"
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
    super::audit::lock_head(&mut tx).await?;
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM jobs WHERE {DUE} ORDER BY id FOR UPDATE SKIP LOCKED"
    )))
    .bind(now_ms)
    .fetch_all(&mut *tx)
    .await?;
    let mut expired = Vec::new();
    for id in ids {
        sqlx::query(
            "UPDATE jobs SET state = 'expired', finished_at_ms = $1, \
             reason = 'the request expired before the agent ran it' WHERE id = $2",
        )
        .bind(now_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        if let Some(job) = one(&mut *tx, &id).await? {
            super::append_audit_in(
                &mut tx,
                &system("diagnostic.expire", &job, "expired".into()),
                now_ms,
            )
            .await?;
            expired.push(job);
        }
    }
    tx.commit().await?;
    Ok(expired)
}

/// Finishes a job with the agent's result, inside the transaction that
/// stores the report. Only the host the job was for can finish it; a
/// result for a finished or unknown job changes nothing.
pub async fn finish(
    tx: &mut Transaction<'static, Postgres>,
    host: &str,
    result: &JobResult,
    now_ms: i64,
) -> StoreResult<()> {
    let mut output = result.output.clone();
    let truncated = result.truncated || output.len() > MAX_OUTPUT;
    output.truncate(MAX_OUTPUT);
    let finished = sqlx::query(
        "UPDATE jobs SET state = $1, exit_code = $2, output = $3, truncated = $4, started_at_ms = $5, \
         finished_at_ms = $6, reason = NULLIF($7, '') \
         WHERE id = $8 AND host_id = $9 AND state IN ('queued', 'sent', 'expired')",
    )
    .bind(&result.outcome)
    .bind(result.exit_code)
    .bind(&output)
    .bind(truncated)
    .bind(result.started_at_ms)
    .bind(result.finished_at_ms)
    .bind(&result.reason)
    .bind(&result.job_id)
    .bind(host)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !finished {
        tracing::warn!(host, job = %result.job_id, "a diagnostic result for no open job of this host; ignored");
        return Ok(());
    }
    let Some(job) = one(&mut **tx, &result.job_id).await? else {
        return Ok(());
    };
    let verb = if result.outcome == "refused" {
        "diagnostic.refuse"
    } else {
        "diagnostic.finish"
    };
    let detail = format!(
        "{} {}: {} exit {}{}",
        job.diagnostic,
        job.params_text,
        result.outcome,
        result.exit_code,
        if result.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", result.reason)
        }
    );
    super::append_audit_in(tx, &system(verb, &job, detail.clone()), now_ms).await?;
    if let Some(ticket) = job.ticket_id {
        // The result is attached to the ticket: the worklog names the job
        // and carries the start of the output.
        let text = String::from_utf8_lossy(&output);
        let mut excerpt: String = text.chars().take(4000).collect();
        if excerpt.len() < text.len() {
            excerpt.push_str("\n[... the rest is in deskpulse job show]");
        }
        sqlx::query(
            "INSERT INTO ticket_worklog (ticket_id, at_ms, author, note) \
             SELECT id, $1, 'system', $2 FROM tickets WHERE id = $3",
        )
        .bind(now_ms)
        .bind(format!("diagnostic job {}: {detail}\n{excerpt}", job.id))
        .bind(ticket)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// What a host's agent said about diagnostics.
pub async fn host_diagnostics(pool: &PgPool, host: &str) -> StoreResult<HostDiagnostics> {
    let row = sqlx::query("SELECT catalog_version, enabled_diagnostics FROM hosts WHERE id = $1")
        .bind(host)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(HostDiagnostics::default());
    };
    let version: i64 = row.try_get("catalog_version")?;
    let enabled: String = row.try_get("enabled_diagnostics")?;
    Ok(HostDiagnostics {
        catalog_version: u32::try_from(version).unwrap_or(0),
        enabled: enabled
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}
