//! The diagnostic job state machine (queued -> sent -> completed, failed,
//! timed_out or refused; cancelled or expired), written once against
//! [`JobTx`], a transaction of either backend: what each step changes,
//! what it audits, and what a finished job writes into its ticket's
//! worklog. A job is finished only by a result from the host it was for,
//! and only once.

use crate::store::{AuditEntry, JobRequester, JobResult, JobRow, NewJob, StoreError, StoreResult};

/// The most output kept of a job whose diagnostic this collector's catalog
/// does not know (an older job after a catalog change); a known one keeps
/// at most its own catalog cap.
const MAX_OUTPUT: usize = 256 * 1024;
/// How much longer than its catalog timeout a run may honestly last: the
/// agent's grace to gather a killed job's output (2 s), with slack.
const RUN_SLACK_MS: i64 = 10_000;

/// A job's row change on a result from its host.
#[derive(Debug)]
pub struct Finish<'a> {
    /// The job.
    pub job_id: &'a str,
    /// The host the result came from.
    pub host: &'a str,
    /// completed, failed, timed_out or refused.
    pub outcome: &'a str,
    /// The exit code.
    pub exit_code: i32,
    /// The output kept, at most [`MAX_OUTPUT`] bytes.
    pub output: &'a [u8],
    /// Whether output was cut, by the agent or here.
    pub truncated: bool,
    /// When it started on the agent.
    pub started_at_ms: i64,
    /// When it finished on the agent.
    pub finished_at_ms: i64,
    /// Why it failed or was refused, or empty.
    pub reason: &'a str,
}

/// One open write transaction of a backend, as the job state machine uses
/// it: each method is SQL and decides nothing.
pub trait JobTx: Send {
    /// A job as it stands in this transaction.
    async fn job(&mut self, id: &str) -> StoreResult<Option<JobRow>>;
    /// A job, locked for this transaction's change where locks exist.
    async fn job_for_change(&mut self, id: &str) -> StoreResult<Option<JobRow>>;
    /// Inserts a queued job.
    async fn insert_job(&mut self, job: &NewJob, now_ms: i64) -> StoreResult<()>;
    /// Marks a queued job sent; whether it was queued.
    async fn mark_sent(&mut self, id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Notes that a sent job was sent again.
    async fn resent(&mut self, id: &str, now_ms: i64) -> StoreResult<()>;
    /// Cancels a job that never reached the agent.
    async fn cancel_queued(&mut self, id: &str, now_ms: i64) -> StoreResult<()>;
    /// Asks the agent to cancel a job it has.
    async fn request_cancel(&mut self, id: &str) -> StoreResult<()>;
    /// Jobs past their TTL (a sent one past a grace hour more), by id; on
    /// PostgreSQL claimed, skipping rows another transaction holds.
    async fn expiring(&mut self, now_ms: i64) -> StoreResult<Vec<String>>;
    /// Expires one of [`JobTx::expiring`]'s jobs if it still may expire;
    /// whether it did.
    async fn expire_job(&mut self, id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Finishes an open job of `finish.host`; whether there was one.
    async fn finish_job(&mut self, finish: &Finish<'_>) -> StoreResult<bool>;
    /// Appends a system worklog entry to a ticket, if the ticket exists.
    async fn ticket_note(&mut self, ticket: i64, at_ms: i64, note: &str) -> StoreResult<()>;
    /// Appends an audit entry (`engine::audit::append`).
    async fn audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()>;
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
pub async fn create(tx: &mut impl JobTx, job: &NewJob, now_ms: i64) -> StoreResult<JobRow> {
    tx.insert_job(job, now_ms).await?;
    tx.audit(&request_entry(job), now_ms).await?;
    tx.job(&job.id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {} vanished", job.id)))
}

/// The audit entry of a job's request: who asked (a technician, or a
/// rule's triage with no technician), what, and for which ticket.
pub fn request_entry(job: &NewJob) -> AuditEntry {
    let (technician, token) = job.requester.ids();
    AuditEntry {
        technician_id: technician.map(str::to_owned),
        token_id: token.map(str::to_owned),
        action: "diagnostic.request".into(),
        subject: format!("job {} on host {}", job.id, job.host_id),
        detail: format!(
            "{} {} ({}){}{}",
            job.diagnostic,
            job.params_text,
            job.risk,
            job.ticket_id
                .map(|t| format!(" for ticket {t}"))
                .unwrap_or_default(),
            match &job.requester {
                JobRequester::Triage { rule } => format!(", triage of rule {rule}"),
                JobRequester::Technician(_) => String::new(),
            }
        ),
    }
}

/// Marks a job sent; the first send is audited as its start.
pub async fn sent(tx: &mut impl JobTx, id: &str, now_ms: i64) -> StoreResult<()> {
    if tx.mark_sent(id, now_ms).await?
        && let Some(job) = tx.job(id).await?
    {
        let entry = system("diagnostic.start", &job, "delivered to the agent".into());
        tx.audit(&entry, now_ms).await
    } else {
        tx.resent(id, now_ms).await
    }
}

/// Cancels a job: one still queued is cancelled here, one the agent has is
/// asked to stop, a finished one stays as it is.
pub async fn cancel(tx: &mut impl JobTx, id: &str, now_ms: i64) -> StoreResult<Option<JobRow>> {
    let Some(job) = tx.job_for_change(id).await? else {
        return Ok(None);
    };
    match job.state.as_str() {
        "queued" => tx.cancel_queued(id, now_ms).await?,
        "sent" => tx.request_cancel(id).await?,
        _ => {}
    }
    let after = tx
        .job(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))?;
    Ok(Some(after))
}

/// Expires jobs whose request passed its TTL before the agent took it. A
/// sent job keeps running on the agent and reports its own result; only
/// one never delivered, or delivered and never answered within a grace
/// hour, expires here.
pub async fn expire(tx: &mut impl JobTx, now_ms: i64) -> StoreResult<Vec<JobRow>> {
    let mut expired = Vec::new();
    for id in tx.expiring(now_ms).await? {
        if tx.expire_job(&id, now_ms).await?
            && let Some(job) = tx.job(&id).await?
        {
            tx.audit(&system("diagnostic.expire", &job, "expired".into()), now_ms)
                .await?;
            expired.push(job);
        }
    }
    Ok(expired)
}

/// Finishes a job with the agent's result, inside the transaction that
/// stores the report. Only the host the job was for can finish it; a
/// result for a finished or unknown job changes nothing.
///
/// The agent is not trusted with what it reports either: its output is cut
/// at the diagnostic's own catalog cap and its times are clamped to what
/// is possible ([`Kept::of`]), and the job's reason says so.
pub async fn finish(
    tx: &mut impl JobTx,
    host: &str,
    result: &JobResult,
    now_ms: i64,
) -> StoreResult<()> {
    let Some(job) = tx.job(&result.job_id).await? else {
        tracing::warn!(host, job = %result.job_id, "a diagnostic result for no known job; ignored");
        return Ok(());
    };
    let kept = Kept::of(&job, result, now_ms);
    if !kept.note.is_empty() {
        tracing::warn!(host, job = %result.job_id, note = %kept.note, "a diagnostic result was capped or clamped");
    }
    let reason = match (result.reason.is_empty(), kept.note.is_empty()) {
        (_, true) => result.reason.clone(),
        (true, false) => kept.note.clone(),
        (false, false) => format!("{}; {}", result.reason, kept.note),
    };
    let output = &result.output[..kept.output_len];
    let finish = Finish {
        job_id: &result.job_id,
        host,
        outcome: &result.outcome,
        exit_code: result.exit_code,
        output,
        truncated: kept.truncated,
        started_at_ms: kept.started_at_ms,
        finished_at_ms: kept.finished_at_ms,
        reason: &reason,
    };
    if !tx.finish_job(&finish).await? {
        tracing::warn!(host, job = %result.job_id, "a diagnostic result for no open job of this host; ignored");
        return Ok(());
    }

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
        if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        }
    );
    tx.audit(&system(verb, &job, detail.clone()), now_ms)
        .await?;
    if let Some(ticket) = job.ticket_id {
        // The result is attached to the ticket: the worklog names the job
        // and carries the start of the output.
        let text = String::from_utf8_lossy(output);
        let mut excerpt: String = text.chars().take(4000).collect();
        if excerpt.len() < text.len() {
            excerpt.push_str("\n[... the rest is in deskpulse job show]");
        }
        let note = format!("diagnostic job {}: {detail}\n{excerpt}", job.id);
        tx.ticket_note(ticket, now_ms, &note).await?;
    }
    Ok(())
}

/// What the collector keeps of an agent's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Output bytes kept: at most the diagnostic's catalog cap.
    pub output_len: usize,
    /// Whether the output was cut, by the agent or here.
    pub truncated: bool,
    /// The start, clamped.
    pub started_at_ms: i64,
    /// The finish, clamped.
    pub finished_at_ms: i64,
    /// What was cut or clamped, for the job's reason; empty when nothing.
    pub note: String,
}

impl Kept {
    /// Caps and clamps `result` for `job`: the output to the catalog cap of
    /// the job's diagnostic; the finish into [job created, now]; the start
    /// into [job created, finish], and no earlier than the timeout (plus
    /// [`RUN_SLACK_MS`]) before the finish. An impossible time (negative
    /// duration, in the future, before the job existed, longer than the
    /// timeout) is never stored as sent.
    pub fn of(job: &JobRow, result: &JobResult, now_ms: i64) -> Self {
        let spec = deskpulse_proto::catalog::spec(&job.diagnostic);
        let cap = spec.map_or(MAX_OUTPUT, |s| s.output_cap);
        let mut notes = Vec::new();
        let output_len = result.output.len().min(cap);
        if output_len < result.output.len() {
            notes.push(format!(
                "the agent sent {} bytes of output; kept the catalog cap of {cap}",
                result.output.len()
            ));
        }
        let earliest = job.created_at_ms.min(now_ms);
        let finished_at_ms = result.finished_at_ms.clamp(earliest, now_ms);
        let longest = spec.map_or(i64::MAX, |s| {
            i64::try_from(s.timeout.as_millis())
                .unwrap_or(i64::MAX)
                .saturating_add(RUN_SLACK_MS)
        });
        let started_at_ms = result
            .started_at_ms
            .clamp(earliest, finished_at_ms)
            .max(finished_at_ms.saturating_sub(longest));
        if (result.started_at_ms, result.finished_at_ms) != (started_at_ms, finished_at_ms) {
            notes.push(format!(
                "the agent's times (started {}, finished {}) were impossible; clamped to this job's life and timeout",
                result.started_at_ms, result.finished_at_ms
            ));
        }
        Self {
            output_len,
            truncated: result.truncated || output_len < result.output.len(),
            started_at_ms,
            finished_at_ms,
            note: if notes.is_empty() {
                String::new()
            } else {
                format!("collector: {}", notes.join("; "))
            },
        }
    }
}
