//! Rows read the same way on both backends: typed column reads over any
//! sqlx row ([`Columns`]), and the row mappings written once with them,
//! with the column lists their queries select.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::store::engine::audit::UnchainedRow;
use crate::store::engine::tickets::{LoggedChange, Presence, StateKey, StoredState, parse_state};
use crate::store::{
    AuditRecord, HealthPoint, HostRow, JobRow, KbHit, StoreError, StoreResult, TicketRow,
};

/// The columns [`host_row`] reads.
pub(crate) const HOST_COLUMNS: &str = "id, hostname, os_name, os_version, enrolled_at_ms, \
     last_seen_at_ms, session_replica, goodbye_reason, health_interval_secs, agent_version, \
     cert_serial, cert_sha256, retired_at_ms";

/// The columns [`ticket_row`] reads (`t` the ticket, `h` its host).
pub(crate) const TICKET_COLUMNS: &str = "t.id, t.host_id, h.hostname, t.rule, t.subject, t.title, \
     t.status, t.priority, t.severity, t.assignee, t.escalation, t.occurrences, t.flaps, \
     t.opened_at_ms, t.updated_at_ms, t.resolved_at_ms, t.response_due_ms, t.resolution_due_ms, \
     t.evidence, t.responded_at_ms, t.resolution";

/// The columns [`job_row`] reads (`j` the job, `h` its host).
pub(crate) const JOB_COLUMNS: &str = "j.id, j.host_id, h.hostname, j.diagnostic, j.params, \
     j.params_text, j.risk, j.requested_by, j.ticket_id, j.state, j.created_at_ms, \
     j.expires_at_ms, j.sent_at_ms, j.started_at_ms, j.finished_at_ms, j.exit_code, j.reason, \
     j.output, j.truncated, j.cancel_requested";

/// Typed reads of a row's columns by name, alike on SQLite and PostgreSQL.
pub(crate) trait Columns {
    /// An integer column.
    fn int(&self, name: &str) -> StoreResult<i64>;
    /// A nullable integer column.
    fn opt_int(&self, name: &str) -> StoreResult<Option<i64>>;
    /// A text column.
    fn text(&self, name: &str) -> StoreResult<String>;
    /// A nullable text column.
    fn opt_text(&self, name: &str) -> StoreResult<Option<String>>;
    /// A blob column.
    fn bytes(&self, name: &str) -> StoreResult<Vec<u8>>;
    /// A nullable blob column.
    fn opt_bytes(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
    /// A yes/no column: BOOLEAN on PostgreSQL, 0 or 1 on SQLite.
    fn flag(&self, name: &str) -> StoreResult<bool>;
    /// A REAL column.
    fn real(&self, name: &str) -> StoreResult<f32>;
    /// A nullable REAL column.
    fn opt_real(&self, name: &str) -> StoreResult<Option<f32>>;
    /// A double-precision column.
    fn double(&self, name: &str) -> StoreResult<f64>;

    /// An integer column that holds a count.
    fn count(&self, name: &str) -> StoreResult<u32> {
        let v = self.int(name)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{name} {v}")))
    }
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, name: &str) -> StoreResult<i64> {
        Ok(self.try_get(name)?)
    }

    fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(name)?)
    }

    fn text(&self, name: &str) -> StoreResult<String> {
        Ok(self.try_get(name)?)
    }

    fn opt_text(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(name)?)
    }

    fn bytes(&self, name: &str) -> StoreResult<Vec<u8>> {
        Ok(self.try_get(name)?)
    }

    fn opt_bytes(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.try_get(name)?)
    }

    fn flag(&self, name: &str) -> StoreResult<bool> {
        match self.try_get::<bool, _>(name) {
            Ok(flag) => Ok(flag),
            // SQLite keeps a flag as an integer.
            Err(_) => Ok(self.try_get::<i64, _>(name)? != 0),
        }
    }

    fn real(&self, name: &str) -> StoreResult<f32> {
        Ok(self.try_get(name)?)
    }

    fn opt_real(&self, name: &str) -> StoreResult<Option<f32>> {
        Ok(self.try_get(name)?)
    }

    fn double(&self, name: &str) -> StoreResult<f64> {
        Ok(self.try_get(name)?)
    }
}

/// A host row, from [`HOST_COLUMNS`].
pub(crate) fn host_row(row: &(impl Columns + ?Sized)) -> StoreResult<HostRow> {
    let interval = row.int("health_interval_secs")?;
    Ok(HostRow {
        id: row.text("id")?,
        hostname: row.text("hostname")?,
        os_name: row.text("os_name")?,
        os_version: row.text("os_version")?,
        enrolled_at_ms: row.int("enrolled_at_ms")?,
        last_seen_at_ms: row.opt_int("last_seen_at_ms")?,
        session_replica: row.opt_text("session_replica")?,
        goodbye_reason: row.opt_text("goodbye_reason")?,
        health_interval_secs: u32::try_from(interval).unwrap_or(60),
        agent_version: row.text("agent_version")?,
        cert_serial: row.text("cert_serial")?,
        cert_sha256: row.text("cert_sha256")?,
        retired_at_ms: row.opt_int("retired_at_ms")?,
    })
}

/// A ticket row, from [`TICKET_COLUMNS`].
pub(crate) fn ticket_row(r: &(impl Columns + ?Sized)) -> StoreResult<TicketRow> {
    Ok(TicketRow {
        id: r.int("id")?,
        host_id: r.text("host_id")?,
        hostname: r.text("hostname")?,
        rule: r.text("rule")?,
        subject: r.text("subject")?,
        title: r.text("title")?,
        status: r.text("status")?,
        priority: r.text("priority")?,
        severity: r.text("severity")?,
        assignee: r.opt_text("assignee")?,
        escalation: r.count("escalation")?,
        occurrences: r.count("occurrences")?,
        flaps: r.count("flaps")?,
        opened_at_ms: r.int("opened_at_ms")?,
        updated_at_ms: r.int("updated_at_ms")?,
        resolved_at_ms: r.opt_int("resolved_at_ms")?,
        response_due_ms: r.int("response_due_ms")?,
        resolution_due_ms: r.int("resolution_due_ms")?,
        evidence: r.text("evidence")?,
        responded_at_ms: r.opt_int("responded_at_ms")?,
        resolution: r.opt_text("resolution")?,
    })
}

/// A job row, from [`JOB_COLUMNS`].
pub(crate) fn job_row(r: &(impl Columns + ?Sized)) -> StoreResult<JobRow> {
    let exit = r.opt_int("exit_code")?;
    Ok(JobRow {
        id: r.text("id")?,
        host_id: r.text("host_id")?,
        hostname: r.text("hostname")?,
        diagnostic: r.text("diagnostic")?,
        params: r.bytes("params")?,
        params_text: r.text("params_text")?,
        risk: r.text("risk")?,
        requested_by: r.text("requested_by")?,
        ticket_id: r.opt_int("ticket_id")?,
        state: r.text("state")?,
        created_at_ms: r.int("created_at_ms")?,
        expires_at_ms: r.int("expires_at_ms")?,
        sent_at_ms: r.opt_int("sent_at_ms")?,
        started_at_ms: r.opt_int("started_at_ms")?,
        finished_at_ms: r.opt_int("finished_at_ms")?,
        exit_code: exit
            .map(|e| i32::try_from(e).map_err(|_| StoreError::Corrupt(format!("exit code {e}"))))
            .transpose()?,
        reason: r.opt_text("reason")?,
        output: r.opt_bytes("output")?.unwrap_or_default(),
        truncated: r.flag("truncated")?,
        cancel_requested: r.flag("cancel_requested")?,
    })
}

/// A rule state row: `host_id, rule, subject, state, ticket_id`.
pub(crate) fn rule_state_row(r: &(impl Columns + ?Sized)) -> StoreResult<(StateKey, StoredState)> {
    Ok((
        (r.text("host_id")?, r.text("rule")?, r.text("subject")?),
        (parse_state(&r.text("state")?)?, r.opt_int("ticket_id")?),
    ))
}

/// A change-log row: `observed_at_ms, section, item, old_value, new_value`.
pub(crate) fn logged_change_row(r: &(impl Columns + ?Sized)) -> StoreResult<LoggedChange> {
    Ok(LoggedChange {
        observed_at_ms: r.int("observed_at_ms")?,
        section: r.text("section")?,
        item: r.text("item")?,
        old: r.opt_text("old_value")?,
        new: r.opt_text("new_value")?,
    })
}

/// What the offline rule reads of `host`: `session_replica,
/// goodbye_reason, last_seen_at_ms, enrolled_at_ms, health_interval_secs`.
pub(crate) fn presence_row(host: String, r: &(impl Columns + ?Sized)) -> StoreResult<Presence> {
    Ok(Presence {
        host,
        streaming: r.opt_text("session_replica")?.is_some(),
        said_goodbye: r.opt_text("goodbye_reason")?.is_some(),
        last_seen_at_ms: r.opt_int("last_seen_at_ms")?,
        enrolled_at_ms: r.int("enrolled_at_ms")?,
        health_interval_secs: r.int("health_interval_secs")?,
    })
}

/// An audit row as listed: `id, seq, at_ms, actor_technician_id,
/// technician_name, actor_token_id, action, subject, detail, prev_hash,
/// hash`.
pub(crate) fn audit_record_row(r: &(impl Columns + ?Sized)) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: r.int("id")?,
        seq: r.opt_int("seq")?,
        at_ms: r.int("at_ms")?,
        technician_id: r.opt_text("actor_technician_id")?,
        technician_name: r.opt_text("technician_name")?,
        token_id: r.opt_text("actor_token_id")?,
        action: r.text("action")?,
        subject: r.text("subject")?,
        detail: r.text("detail")?,
        prev_hash: r.opt_text("prev_hash")?,
        hash: r.opt_text("hash")?,
    })
}

/// An audit row written before migration 0008, to chain.
pub(crate) fn unchained_row(r: &(impl Columns + ?Sized)) -> StoreResult<UnchainedRow> {
    Ok(UnchainedRow {
        id: r.int("id")?,
        at_ms: r.int("at_ms")?,
        technician_id: r.opt_text("actor_technician_id")?,
        token_id: r.opt_text("actor_token_id")?,
        action: r.text("action")?,
        subject: r.text("subject")?,
        detail: r.text("detail")?,
    })
}

/// Serialises statement rows for SQLite's `json_each` bind (one statement
/// for many rows).
pub(crate) fn json_rows<T: serde::Serialize>(rows: &T) -> StoreResult<String> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(format!("batch rows: {e}")))
}

/// The columns [`kb_hit_row`] reads besides `rank` (`t` the ticket, `h`
/// its host).
pub(crate) const KB_HIT_COLUMNS: &str = "t.id, t.host_id, h.hostname, t.title, t.rule, \
     COALESCE(t.resolution, '') AS resolution, t.resolved_at_ms";

/// A knowledge-base match, from [`KB_HIT_COLUMNS`] and `rank`.
pub(crate) fn kb_hit_row(r: &(impl Columns + ?Sized)) -> StoreResult<KbHit> {
    Ok(KbHit {
        ticket_id: r.int("id")?,
        host_id: r.text("host_id")?,
        hostname: r.text("hostname")?,
        title: r.text("title")?,
        rule: r.text("rule")?,
        resolution: r.text("resolution")?,
        resolved_at_ms: r.opt_int("resolved_at_ms")?,
        rank: r.double("rank")?,
    })
}

/// The columns [`health_point_row`] reads, from `health_samples`.
pub(crate) const HEALTH_POINT_COLUMNS: &str = "at_ms, resolution_s, samples, cpu_percent, \
     cpu_max_percent, memory_used_percent, disk_used_max_percent, temperature_max_celsius";

/// One point of a host's health history.
pub(crate) fn health_point_row(r: &(impl Columns + ?Sized)) -> StoreResult<HealthPoint> {
    Ok(HealthPoint {
        at_ms: r.int("at_ms")?,
        resolution_s: r.count("resolution_s")?,
        samples: r.count("samples")?,
        cpu_percent: r.real("cpu_percent")?,
        cpu_max_percent: r.real("cpu_max_percent")?,
        memory_used_percent: r.real("memory_used_percent")?,
        disk_used_max_percent: r.real("disk_used_max_percent")?,
        temperature_max_celsius: r.opt_real("temperature_max_celsius")?,
    })
}
