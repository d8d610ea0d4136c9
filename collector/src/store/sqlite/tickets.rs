//! Health rules on SQLite: each health sample is evaluated in the
//! transaction that stores it, so rule state (D21) and the tickets it opens
//! commit with the sample, and a host's samples are evaluated in order.
//! Timers (quiet periods) advance from the maintenance task.

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::webhooks::{self, TicketEvent};

use crate::rules::model::{Metric, Rule, default_rules};
use crate::rules::priority::{Impact, Priority, default_sla};
use crate::rules::{Lifecycle, RuleState, TicketAction, step};
use crate::store::{
    StoreError, StoreResult, TicketChange, TicketQuery, TicketRefusal, TicketRow, WorklogEntry,
};

/// The columns `ticket_row` reads.
const TICKET_COLUMNS: &str = "t.id, t.host_id, h.hostname, t.rule, t.subject, t.title, t.status, \
     t.priority, t.severity, t.assignee, t.escalation, t.occurrences, t.flaps, t.opened_at_ms, \
     t.updated_at_ms, t.resolved_at_ms, t.response_due_ms, t.resolution_due_ms, t.evidence, \
     t.responded_at_ms, t.resolution";

/// One reading of a sample: metric, subject (mount point or empty), value.
pub type Reading = (Metric, String, f64);

async fn host_tags(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT key, value FROM host_tags WHERE host_id = ?")
        .bind(host)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
        .collect()
}

async fn load_state(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    rule: &str,
    subject: &str,
) -> StoreResult<(RuleState, Option<i64>)> {
    let row = sqlx::query(
        "SELECT state, ticket_id FROM rule_states WHERE host_id = ? AND rule = ? AND subject = ?",
    )
    .bind(host)
    .bind(rule)
    .bind(subject)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok((RuleState::Ok, None));
    };
    let text: String = row.try_get("state")?;
    let state = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("rule state {text:?}: {e}")))?;
    Ok((state, row.try_get("ticket_id")?))
}

async fn save_state(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    rule: &str,
    subject: &str,
    state: RuleState,
    ticket: Option<i64>,
) -> StoreResult<()> {
    if state == RuleState::Ok {
        sqlx::query("DELETE FROM rule_states WHERE host_id = ? AND rule = ? AND subject = ?")
            .bind(host)
            .bind(rule)
            .bind(subject)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    let json = serde_json::to_string(&state)
        .map_err(|e| StoreError::Corrupt(format!("rule state: {e}")))?;
    sqlx::query(
        "INSERT INTO rule_states (host_id, rule, subject, state, ticket_id) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (host_id, rule, subject) DO UPDATE SET state = excluded.state, \
         ticket_id = excluded.ticket_id",
    )
    .bind(host)
    .bind(rule)
    .bind(subject)
    .bind(json)
    .bind(ticket)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn title(rule: &Rule, subject: &str, value: f64) -> String {
    let what = match rule.metric {
        Metric::DiskUsedPercent => format!("{subject} is {value:.0}% full"),
        Metric::CpuPercent => format!("CPU at {value:.0}%"),
        Metric::MemoryUsedPercent => format!("memory {value:.0}% used"),
        Metric::OfflineMinutes => format!("offline for {value:.0} minutes"),
    };
    format!("{}: {what}", rule.name)
}

async fn worklog(
    tx: &mut Transaction<'static, Sqlite>,
    ticket: i64,
    at_ms: i64,
    note: &str,
) -> StoreResult<()> {
    worklog_by(tx, ticket, at_ms, "system", note).await
}

async fn worklog_by(
    tx: &mut Transaction<'static, Sqlite>,
    ticket: i64,
    at_ms: i64,
    author: &str,
    note: &str,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO ticket_worklog (ticket_id, at_ms, author, note) VALUES (?, ?, ?, ?)")
        .bind(ticket)
        .bind(at_ms)
        .bind(author)
        .bind(note)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What fired, for the ticket's evidence (D23).
struct Firing<'a> {
    rule: &'a Rule,
    subject: &'a str,
    value: Option<f64>,
    sample_at_ms: i64,
}

/// Carries out a ticket action; returns the ticket the state points to.
async fn act(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    tags: &[(String, String)],
    firing: &Firing<'_>,
    action: TicketAction,
    ticket: Option<i64>,
    now_ms: i64,
) -> StoreResult<Option<i64>> {
    let rule = firing.rule;
    let value = firing.value.unwrap_or(f64::NAN);
    match (action, ticket) {
        (TicketAction::Occurrence, Some(id)) => {
            sqlx::query(
                "UPDATE tickets SET occurrences = occurrences + 1, updated_at_ms = ? WHERE id = ?",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            webhooks::enqueue(tx, TicketEvent::Updated, id, now_ms).await?;
            Ok(Some(id))
        }
        (TicketAction::Resolve, Some(id)) => {
            sqlx::query(
                "UPDATE tickets SET status = 'resolved', resolved_at_ms = ?, updated_at_ms = ? \
                 WHERE id = ? AND status NOT IN ('resolved', 'closed')",
            )
            .bind(now_ms)
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            worklog(
                tx,
                id,
                now_ms,
                "auto-resolved: the condition recovered and stayed recovered for the quiet period",
            )
            .await?;
            webhooks::enqueue(tx, TicketEvent::Resolved, id, now_ms).await?;
            Ok(Some(id))
        }
        (TicketAction::Reopen, Some(id)) => {
            sqlx::query(
                "UPDATE tickets SET status = 'open', flaps = flaps + 1, occurrences = occurrences + 1, \
                 resolved_at_ms = NULL, updated_at_ms = ? WHERE id = ?",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            worklog(
                tx,
                id,
                now_ms,
                &format!("reopened: {} fired again ({value:.1})", rule.name),
            )
            .await?;
            webhooks::enqueue(tx, TicketEvent::Opened, id, now_ms).await?;
            Ok(Some(id))
        }
        // Open, or an action whose ticket is gone: a new ticket.
        _ => {
            let priority = Priority::of(Impact::of(tags), rule.severity);
            let sla = default_sla(priority);
            let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let evidence = serde_json::json!({
                "rule": rule.name,
                "metric": rule.metric.name(),
                "op": rule.op.symbol(),
                "threshold": rule.threshold,
                "for_ms": rule.duration_ms,
                "subject": firing.subject,
                "value": firing.value,
                "sample_at_ms": firing.sample_at_ms,
            });
            let id: i64 = sqlx::query(
                "INSERT INTO tickets (host_id, rule, subject, title, status, priority, severity, \
                 opened_at_ms, updated_at_ms, response_due_ms, resolution_due_ms, evidence) \
                 VALUES (?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(host)
            .bind(&rule.name)
            .bind(firing.subject)
            .bind(title(rule, firing.subject, value))
            .bind(priority.name())
            .bind(rule.severity.name())
            .bind(now_ms)
            .bind(now_ms)
            .bind(now_ms.saturating_add(ms(sla.response)))
            .bind(now_ms.saturating_add(ms(sla.resolution)))
            .bind(evidence.to_string())
            .fetch_one(&mut **tx)
            .await?
            .try_get("id")?;
            worklog(
                tx,
                id,
                now_ms,
                &format!(
                    "opened by rule {}: {} {} {} for {} min (value {value:.1})",
                    rule.name,
                    rule.metric.name(),
                    rule.op.symbol(),
                    rule.threshold,
                    rule.duration_ms / 60_000
                ),
            )
            .await?;
            webhooks::enqueue(tx, TicketEvent::Opened, id, now_ms).await?;
            Ok(Some(id))
        }
    }
}

/// Evaluates one host's sample against the rules in force.
pub async fn evaluate(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    readings: &[Reading],
    sample_at_ms: i64,
    now_ms: i64,
) -> StoreResult<()> {
    let tags = host_tags(tx, host).await?;
    for rule in default_rules().iter().filter(|r| r.in_scope(&tags)) {
        for (_, subject, value) in readings.iter().filter(|(m, _, _)| *m == rule.metric) {
            let (state, ticket) = load_state(tx, host, &rule.name, subject).await?;
            let (next, action) = step(
                rule,
                state,
                Some(*value),
                sample_at_ms,
                Lifecycle::default(),
            );
            let ticket = match action {
                Some(action) => {
                    let firing = Firing {
                        rule,
                        subject,
                        value: Some(*value),
                        sample_at_ms,
                    };
                    act(tx, host, &tags, &firing, action, ticket, now_ms).await?
                }
                None => ticket,
            };
            if next != state || action.is_some() {
                save_state(tx, host, &rule.name, subject, next, ticket).await?;
            }
        }
    }
    Ok(())
}

/// Advances every waiting timer (quiet periods, reopen windows) to
/// `now_ms`. Returns how many ticket actions it took.
pub async fn advance_timers(pool: &SqlitePool, now_ms: i64) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT host_id, rule, subject FROM rule_states \
         WHERE state LIKE '{\"phase\":\"recovering\"%' OR state LIKE '{\"phase\":\"resolved\"%'",
    )
    .fetch_all(&mut *tx)
    .await?;
    let rules = default_rules();
    let mut actions = 0;
    for row in rows {
        let host: String = row.try_get("host_id")?;
        let name: String = row.try_get("rule")?;
        let subject: String = row.try_get("subject")?;
        let Some(rule) = rules.iter().find(|r| r.name == name) else {
            continue;
        };
        let (state, ticket) = load_state(&mut tx, &host, &name, &subject).await?;
        let (next, action) = step(rule, state, None, now_ms, Lifecycle::default());
        let ticket = match action {
            Some(action) => {
                actions += 1;
                let tags = host_tags(&mut tx, &host).await?;
                let firing = Firing {
                    rule,
                    subject: &subject,
                    value: None,
                    sample_at_ms: now_ms,
                };
                act(&mut tx, &host, &tags, &firing, action, ticket, now_ms).await?
            }
            None => ticket,
        };
        if next != state {
            save_state(&mut tx, &host, &name, &subject, next, ticket).await?;
        }
    }
    tx.commit().await?;
    Ok(actions)
}

fn ticket_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<TicketRow> {
    let int = |name: &str| -> StoreResult<u32> {
        let v: i64 = r.try_get(name)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{name} {v}")))
    };
    Ok(TicketRow {
        id: r.try_get("id")?,
        host_id: r.try_get("host_id")?,
        hostname: r.try_get("hostname")?,
        rule: r.try_get("rule")?,
        subject: r.try_get("subject")?,
        title: r.try_get("title")?,
        status: r.try_get("status")?,
        priority: r.try_get("priority")?,
        severity: r.try_get("severity")?,
        assignee: r.try_get("assignee")?,
        escalation: int("escalation")?,
        occurrences: int("occurrences")?,
        flaps: int("flaps")?,
        opened_at_ms: r.try_get("opened_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        resolved_at_ms: r.try_get("resolved_at_ms")?,
        response_due_ms: r.try_get("response_due_ms")?,
        resolution_due_ms: r.try_get("resolution_due_ms")?,
        evidence: r.try_get("evidence")?,
        responded_at_ms: r.try_get("responded_at_ms")?,
        resolution: r.try_get("resolution")?,
    })
}

/// Tickets, by priority then resolution due time.
pub async fn list(pool: &SqlitePool, query: &TicketQuery) -> StoreResult<Vec<TicketRow>> {
    let mut sql = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN hosts h ON h.id = t.host_id WHERE 1 = 1"
    ));
    if query.open_only {
        sql.push(" AND t.status NOT IN ('resolved', 'closed')");
    }
    if let Some(status) = &query.status {
        sql.push(" AND t.status = ").push_bind(status.as_str());
    }
    if let Some(host) = &query.host_id {
        sql.push(" AND t.host_id = ").push_bind(host.as_str());
    }
    if let Some(priority) = &query.priority {
        sql.push(" AND t.priority = ").push_bind(priority.as_str());
    }
    sql.push(" ORDER BY t.priority, t.resolution_due_ms, t.id LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(ticket_row).collect()
}

async fn one(tx: &mut Transaction<'static, Sqlite>, id: i64) -> StoreResult<Option<TicketRow>> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN hosts h ON h.id = t.host_id WHERE t.id = ?"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(ticket_row).transpose()
}

/// Opens a manual ticket.
pub async fn create(
    pool: &SqlitePool,
    host: &str,
    title: &str,
    priority: Option<&str>,
    author: &str,
    now_ms: i64,
) -> StoreResult<TicketRow> {
    let mut tx = pool.begin().await?;
    let tags = host_tags(&mut tx, host).await?;
    let priority = match priority {
        Some("P1") => Priority::P1,
        Some("P2") => Priority::P2,
        Some("P4") => Priority::P4,
        Some(_) => Priority::P3,
        None => Priority::of(Impact::of(&tags), crate::rules::priority::Severity::Medium),
    };
    let sla = default_sla(priority);
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let id: i64 = sqlx::query(
        "INSERT INTO tickets (host_id, rule, subject, title, status, priority, severity, \
         opened_at_ms, updated_at_ms, response_due_ms, resolution_due_ms, evidence) \
         VALUES (?, '', '', ?, 'new', ?, 'medium', ?, ?, ?, ?, '{}') RETURNING id",
    )
    .bind(host)
    .bind(title)
    .bind(priority.name())
    .bind(now_ms)
    .bind(now_ms)
    .bind(now_ms.saturating_add(ms(sla.response)))
    .bind(now_ms.saturating_add(ms(sla.resolution)))
    .fetch_one(&mut *tx)
    .await?
    .try_get("id")?;
    worklog_by(&mut tx, id, now_ms, author, "opened by hand").await?;
    webhooks::enqueue(&mut tx, TicketEvent::Opened, id, now_ms).await?;
    let row = one(&mut tx, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} vanished")))?;
    tx.commit().await?;
    Ok(row)
}

/// A ticket and its worklog.
pub async fn get(
    pool: &SqlitePool,
    id: i64,
) -> StoreResult<Option<(TicketRow, Vec<WorklogEntry>)>> {
    let mut tx = pool.begin().await?;
    let Some(row) = one(&mut tx, id).await? else {
        return Ok(None);
    };
    let log = sqlx::query(
        "SELECT at_ms, author, note FROM ticket_worklog WHERE ticket_id = ? ORDER BY at_ms, id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| {
        Ok(WorklogEntry {
            at_ms: r.try_get("at_ms")?,
            author: r.try_get("author")?,
            note: r.try_get("note")?,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    tx.commit().await?;
    Ok(Some((row, log)))
}

/// The statuses a technician may set (D22).
const STATUSES: [&str; 6] = [
    "new",
    "open",
    "in_progress",
    "waiting",
    "resolved",
    "closed",
];

/// Applies a technician's change.
pub async fn update(
    pool: &SqlitePool,
    id: i64,
    change: &TicketChange,
    author: &str,
    now_ms: i64,
) -> StoreResult<Result<TicketRow, TicketRefusal>> {
    let mut tx = pool.begin().await?;
    let Some(before) = one(&mut tx, id).await? else {
        return Ok(Err(TicketRefusal::NotFound));
    };
    let closed = matches!(before.status.as_str(), "resolved" | "closed");
    let note = match change {
        TicketChange::Assign(name) => {
            sqlx::query(
                "UPDATE tickets SET assignee = ?, \
                 status = CASE status WHEN 'new' THEN 'open' ELSE status END WHERE id = ?",
            )
            .bind(name)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            format!("assigned to {name}")
        }
        TicketChange::Note(text) => text.clone(),
        TicketChange::Status(status) => {
            if !STATUSES.contains(&status.as_str()) {
                return Ok(Err(TicketRefusal::Invalid(format!(
                    "unknown status {status:?}; expected one of {}",
                    STATUSES.join(", ")
                ))));
            }
            if status == "resolved" {
                return Ok(Err(TicketRefusal::Invalid(
                    "resolve a ticket with `ticket resolve ID --resolution TEXT`".into(),
                )));
            }
            sqlx::query("UPDATE tickets SET status = ? WHERE id = ?")
                .bind(status)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            format!("status {} -> {status}", before.status)
        }
        TicketChange::Resolve(resolution) => {
            if closed {
                return Ok(Err(TicketRefusal::Invalid(format!(
                    "ticket {id} is already {}",
                    before.status
                ))));
            }
            sqlx::query(
                "UPDATE tickets SET status = 'resolved', resolution = ?, resolved_at_ms = ? WHERE id = ?",
            )
            .bind(resolution)
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            format!("resolved: {resolution}")
        }
        TicketChange::Escalate => {
            sqlx::query("UPDATE tickets SET escalation = escalation + 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            format!("escalated to level {}", before.escalation + 1)
        }
        TicketChange::Reopen => {
            if !closed {
                return Ok(Err(TicketRefusal::Invalid(format!(
                    "ticket {id} is {}, not resolved or closed",
                    before.status
                ))));
            }
            sqlx::query("UPDATE tickets SET status = 'open', resolved_at_ms = NULL WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            "reopened by hand".into()
        }
    };
    // The SLA clock pauses while waiting: the resolution target moves by
    // the time spent waiting (D22).
    let waiting_now = matches!(change, TicketChange::Status(s) if s == "waiting");
    if waiting_now && before.status != "waiting" {
        sqlx::query("UPDATE tickets SET waiting_since_ms = ? WHERE id = ?")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    } else if before.status == "waiting"
        && !waiting_now
        && !matches!(
            change,
            TicketChange::Note(_) | TicketChange::Assign(_) | TicketChange::Escalate
        )
    {
        sqlx::query(
            "UPDATE tickets SET resolution_due_ms = resolution_due_ms + (? - waiting_since_ms), \
             waiting_since_ms = NULL WHERE id = ? AND waiting_since_ms IS NOT NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    // The first technician action meets the response target.
    sqlx::query(
        "UPDATE tickets SET updated_at_ms = ?1, responded_at_ms = COALESCE(responded_at_ms, ?1) WHERE id = ?2",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    worklog_by(&mut tx, id, now_ms, author, &note).await?;
    webhooks::enqueue(&mut tx, webhooks::event_of(change), id, now_ms).await?;
    let after = one(&mut tx, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} vanished")))?;
    tx.commit().await?;
    Ok(Ok(after))
}

/// Escalates missed SLA targets once each, and closes resolved tickets past
/// the reopen window (D22).
pub async fn advance_sla(pool: &SqlitePool, now_ms: i64) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let mut changed = 0;
    for (flag, due, what) in [
        (
            "response_breached",
            "responded_at_ms IS NULL AND response_due_ms",
            "response",
        ),
        ("resolution_breached", "resolution_due_ms", "resolution"),
    ] {
        let sql = format!(
            "SELECT id, escalation FROM tickets WHERE status NOT IN ('resolved', 'closed', 'waiting') \
             AND {flag} = 0 AND {due} < ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let level: i64 = row.try_get("escalation")?;
            let update = format!(
                "UPDATE tickets SET {flag} = 1, escalation = escalation + 1, updated_at_ms = ? WHERE id = ?"
            );
            sqlx::query(sqlx::AssertSqlSafe(update))
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            worklog(
                &mut tx,
                id,
                now_ms,
                &format!("SLA {what} target missed: escalated to level {}", level + 1),
            )
            .await?;
            webhooks::enqueue(&mut tx, TicketEvent::Escalated, id, now_ms).await?;
            changed += 1;
        }
    }
    let closed = sqlx::query(
        "UPDATE tickets SET status = 'closed', updated_at_ms = ?1 \
         WHERE status = 'resolved' AND resolved_at_ms < ?1 - ?2",
    )
    .bind(now_ms)
    .bind(Lifecycle::default().reopen_window_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed + closed)
}
