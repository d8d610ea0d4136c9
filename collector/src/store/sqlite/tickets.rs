//! Tickets on SQLite: the SQL of the ticket engine
//! (`super::super::engine::tickets`), which decides what happens to rule
//! states and tickets, and the ticket reads. SQLite has one writer, so
//! nothing here claims a host or a ticket.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use crate::rules::events::ChangeEvent;
use crate::rules::policy::Policy;
use crate::rules::priority::Priority;
use crate::store::engine::tickets::{
    self as engine, Due, LoggedChange, NewTicket, OutboxEntry, Presence, Sample, SlaTarget,
    StateKey, StoredState, Tags, TicketTx, TicketWrite, parse_state, state_text,
};
use crate::store::rows::json_rows;
use crate::store::rows::{
    TICKET_COLUMNS, logged_change_row, presence_row, rule_state_row, ticket_row,
};
use crate::store::{
    ALWAYS_ON_CHASSIS, StoreResult, TicketChange, TicketEvent, TicketRefusal, TicketRow,
    WorklogEntry,
};

type Tx = Transaction<'static, Sqlite>;

/// One SQLite write transaction as the ticket engine sees it.
pub(super) struct Tickets<'a>(pub(super) &'a mut Tx);

impl TicketTx for Tickets<'_> {
    async fn tags_of(&mut self, hosts: &[&str]) -> StoreResult<HashMap<String, Tags>> {
        let mut tags: HashMap<String, Tags> = HashMap::new();
        for r in sqlx::query(
            "SELECT host_id, key, value FROM host_tags \
             WHERE host_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_rows(&hosts)?)
        .fetch_all(&mut **self.0)
        .await?
        {
            tags.entry(r.try_get(0)?)
                .or_default()
                .push((r.try_get(1)?, r.try_get(2)?));
        }
        Ok(tags)
    }

    async fn states_of(&mut self, hosts: &[&str]) -> StoreResult<HashMap<StateKey, StoredState>> {
        let rows = sqlx::query(
            "SELECT host_id, rule, subject, state, ticket_id FROM rule_states \
             WHERE host_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_rows(&hosts)?)
        .fetch_all(&mut **self.0)
        .await?;
        rows.iter().map(rule_state_row).collect()
    }

    async fn load_state(
        &mut self,
        host: &str,
        rule: &str,
        subject: &str,
    ) -> StoreResult<StoredState> {
        let row = sqlx::query(
            "SELECT state, ticket_id FROM rule_states WHERE host_id = ? AND rule = ? AND subject = ?",
        )
        .bind(host)
        .bind(rule)
        .bind(subject)
        .fetch_optional(&mut **self.0)
        .await?;
        let Some(row) = row else {
            return Ok((crate::rules::RuleState::Ok, None));
        };
        let text: String = row.try_get("state")?;
        Ok((parse_state(&text)?, row.try_get("ticket_id")?))
    }

    async fn save_states(&mut self, states: &[(&StateKey, StoredState)]) -> StoreResult<()> {
        let mut gone = Vec::new();
        let mut kept = Vec::new();
        for ((host, rule, subject), (state, ticket)) in states {
            if *state == crate::rules::RuleState::Ok {
                gone.push((host, rule, subject));
            } else {
                kept.push((host, rule, subject, state_text(state)?, *ticket));
            }
        }
        if !gone.is_empty() {
            sqlx::query(
                "DELETE FROM rule_states WHERE (host_id, rule, subject) IN \
                 (SELECT value->>0, value->>1, value->>2 FROM json_each(?1))",
            )
            .bind(json_rows(&gone)?)
            .execute(&mut **self.0)
            .await?;
        }
        if !kept.is_empty() {
            // `WHERE true` lets SQLite parse the upsert after a SELECT.
            sqlx::query(
                "INSERT INTO rule_states (host_id, rule, subject, state, ticket_id) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?1) \
                 WHERE true ON CONFLICT (host_id, rule, subject) DO UPDATE SET \
                 state = excluded.state, ticket_id = excluded.ticket_id",
            )
            .bind(json_rows(&kept)?)
            .execute(&mut **self.0)
            .await?;
        }
        Ok(())
    }

    async fn insert_ticket(
        &mut self,
        new: &NewTicket<'_>,
        due: Due,
        now_ms: i64,
    ) -> StoreResult<i64> {
        Ok(sqlx::query(
            "INSERT INTO tickets (host_id, rule, subject, title, status, priority, severity, \
             opened_at_ms, updated_at_ms, response_due_ms, resolution_due_ms, evidence) \
             VALUES (?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(new.host)
        .bind(new.rule)
        .bind(new.subject)
        .bind(new.title)
        .bind(new.priority.name())
        .bind(new.severity.name())
        .bind(now_ms)
        .bind(now_ms)
        .bind(due.response_ms)
        .bind(due.resolution_ms)
        .bind(new.evidence.to_string())
        .fetch_one(&mut **self.0)
        .await?
        .try_get("id")?)
    }

    async fn worklog(
        &mut self,
        ticket: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ticket_worklog (ticket_id, at_ms, author, note) VALUES (?, ?, ?, ?)",
        )
        .bind(ticket)
        .bind(at_ms)
        .bind(author)
        .bind(note)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn subscribers(&mut self, event: TicketEvent) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE enabled = 1 AND (',' || events || ',') LIKE ? ORDER BY id",
        )
        .bind(format!("%,{},%", event.name()))
        .fetch_all(&mut **self.0)
        .await?)
    }

    async fn insert_outbox(&mut self, entry: &OutboxEntry<'_>, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_outbox (webhook_id, delivery_id, event, ticket_id, body, \
             created_at_ms, next_attempt_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.webhook_id)
        .bind(entry.delivery_id)
        .bind(entry.event.name())
        .bind(entry.ticket_id)
        .bind(entry.body)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn count_occurrence(&mut self, ticket: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE tickets SET occurrences = occurrences + 1, updated_at_ms = ? WHERE id = ?",
        )
        .bind(now_ms)
        .bind(ticket)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn resolve_recovered(&mut self, ticket: i64, now_ms: i64) -> StoreResult<bool> {
        let resolved = sqlx::query(
            "UPDATE tickets SET status = 'resolved', resolved_at_ms = ?1, updated_at_ms = ?1, \
             resolution = COALESCE(resolution, 'recovered by itself') \
             WHERE id = ?2 AND status NOT IN ('resolved', 'closed')",
        )
        .bind(now_ms)
        .bind(ticket)
        .execute(&mut **self.0)
        .await?
        .rows_affected();
        Ok(resolved == 1)
    }

    async fn reopen_fired(&mut self, ticket: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE tickets SET status = 'open', flaps = flaps + 1, occurrences = occurrences + 1, \
             resolved_at_ms = NULL, resolution = NULL, updated_at_ms = ? WHERE id = ?",
        )
        .bind(now_ms)
        .bind(ticket)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn ticket_status(&mut self, ticket: i64) -> StoreResult<Option<(String, Option<i64>)>> {
        let row = sqlx::query("SELECT status, resolved_at_ms FROM tickets WHERE id = ?")
            .bind(ticket)
            .fetch_optional(&mut **self.0)
            .await?;
        row.map(|r| Ok((r.try_get("status")?, r.try_get("resolved_at_ms")?)))
            .transpose()
    }

    async fn recent_changes(
        &mut self,
        host: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<LoggedChange>> {
        let rows = sqlx::query(
            "SELECT observed_at_ms, section, item, old_value, new_value FROM host_changes \
             WHERE host_id = ? AND observed_at_ms >= ? AND item <> 'baseline' \
             ORDER BY observed_at_ms DESC, id DESC LIMIT ?",
        )
        .bind(host)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut **self.0)
        .await?;
        rows.iter().map(logged_change_row).collect()
    }

    async fn offline_candidates(
        &mut self,
        rules: &[&str],
        silent_before_ms: i64,
    ) -> StoreResult<Vec<Presence>> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT h.id, h.session_replica, h.goodbye_reason, h.last_seen_at_ms, h.enrolled_at_ms, \
             h.health_interval_secs FROM hosts h WHERE ((h.session_replica IS NULL \
             AND COALESCE(h.last_seen_at_ms, h.enrolled_at_ms) < ",
        );
        sql.push_bind(silent_before_ms);
        // Always-on (D18): a desktop or server chassis, or the always-on tag;
        // `always-on=no` opts a host out.
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM host_tags t WHERE t.host_id = h.id AND t.key = 'always-on' \
             AND t.value IN ('no', 'false', '0')) \
             AND (EXISTS (SELECT 1 FROM host_tags t WHERE t.host_id = h.id AND t.key = 'always-on') \
             OR EXISTS (SELECT 1 FROM host_facts f WHERE f.host_id = h.id AND f.kind = 'chassis' AND f.value IN (",
        );
        let mut list = sql.separated(", ");
        for chassis in ALWAYS_ON_CHASSIS {
            list.push_bind(chassis);
        }
        sql.push(")))) OR h.id IN (SELECT host_id FROM rule_states WHERE rule IN (");
        let mut list = sql.separated(", ");
        for rule in rules {
            list.push_bind(*rule);
        }
        sql.push(")))");
        let rows = sql.build().fetch_all(&mut **self.0).await?;
        rows.iter()
            .map(|r| presence_row(r.try_get("id")?, r))
            .collect()
    }

    async fn waiting_states(&mut self) -> StoreResult<Vec<(StateKey, StoredState)>> {
        let rows = sqlx::query(
            "SELECT host_id, rule, subject, state, ticket_id FROM rule_states \
             WHERE state LIKE '{\"phase\":\"recovering\"%' OR state LIKE '{\"phase\":\"resolved\"%'",
        )
        .fetch_all(&mut **self.0)
        .await?;
        rows.iter().map(rule_state_row).collect()
    }

    async fn ticket_for_change(&mut self, id: i64) -> StoreResult<Option<TicketRow>> {
        one(self.0, id).await
    }

    async fn ticket(&mut self, id: i64) -> StoreResult<Option<TicketRow>> {
        one(self.0, id).await
    }

    async fn write_ticket(
        &mut self,
        id: i64,
        write: TicketWrite<'_>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let query = match write {
            TicketWrite::Assign(name) => sqlx::query(
                "UPDATE tickets SET assignee = ?, \
                 status = CASE status WHEN 'new' THEN 'open' ELSE status END WHERE id = ?",
            )
            .bind(name),
            TicketWrite::Status(status) => {
                sqlx::query("UPDATE tickets SET status = ? WHERE id = ?").bind(status)
            }
            TicketWrite::Resolve(resolution) => sqlx::query(
                "UPDATE tickets SET status = 'resolved', resolution = ?, resolved_at_ms = ? \
                 WHERE id = ?",
            )
            .bind(resolution)
            .bind(now_ms),
            TicketWrite::Escalate => {
                sqlx::query("UPDATE tickets SET escalation = escalation + 1 WHERE id = ?")
            }
            TicketWrite::Reopen => sqlx::query(
                "UPDATE tickets SET status = 'open', resolved_at_ms = NULL WHERE id = ?",
            ),
        };
        query.bind(id).execute(&mut **self.0).await?;
        Ok(())
    }

    async fn start_waiting(&mut self, id: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tickets SET waiting_since_ms = ? WHERE id = ?")
            .bind(now_ms)
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn waiting_since(&mut self, id: i64) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT waiting_since_ms FROM tickets WHERE id = ?")
                .bind(id)
                .fetch_one(&mut **self.0)
                .await?,
        )
    }

    async fn end_waiting(&mut self, id: i64, resolution_due_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE tickets SET resolution_due_ms = ?, waiting_since_ms = NULL WHERE id = ?",
        )
        .bind(resolution_due_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn mark_response(&mut self, id: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE tickets SET updated_at_ms = ?1, \
             responded_at_ms = COALESCE(responded_at_ms, ?1) WHERE id = ?2",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn missed(&mut self, target: SlaTarget, now_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let sql = match target {
            SlaTarget::Response => {
                "SELECT id, escalation FROM tickets WHERE status NOT IN ('resolved', 'closed', 'waiting') \
                 AND response_breached = 0 AND responded_at_ms IS NULL AND response_due_ms < ?"
            }
            SlaTarget::Resolution => {
                "SELECT id, escalation FROM tickets WHERE status NOT IN ('resolved', 'closed', 'waiting') \
                 AND resolution_breached = 0 AND resolution_due_ms < ?"
            }
        };
        let rows = sqlx::query(sql)
            .bind(now_ms)
            .fetch_all(&mut **self.0)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("escalation")?)))
            .collect()
    }

    async fn escalate_missed(
        &mut self,
        id: i64,
        target: SlaTarget,
        now_ms: i64,
    ) -> StoreResult<()> {
        let sql = match target {
            SlaTarget::Response => {
                "UPDATE tickets SET response_breached = 1, escalation = escalation + 1, \
                 updated_at_ms = ? WHERE id = ?"
            }
            SlaTarget::Resolution => {
                "UPDATE tickets SET resolution_breached = 1, escalation = escalation + 1, \
                 updated_at_ms = ? WHERE id = ?"
            }
        };
        sqlx::query(sql)
            .bind(now_ms)
            .bind(id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn close_resolved(&mut self, resolved_before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE tickets SET status = 'closed', updated_at_ms = ? \
             WHERE status = 'resolved' AND resolved_at_ms < ?",
        )
        .bind(now_ms)
        .bind(resolved_before_ms)
        .execute(&mut **self.0)
        .await?
        .rows_affected())
    }
}

/// Evaluates a batch's health samples ([`engine::evaluate`]).
pub async fn evaluate(
    tx: &mut Tx,
    policy: &Policy,
    samples: &[Sample<'_>],
    now_ms: i64,
) -> StoreResult<()> {
    engine::evaluate(&mut Tickets(tx), policy, samples, now_ms).await
}

/// Fires the change rules on one stored inventory's changes
/// ([`engine::evaluate_changes`]).
pub async fn evaluate_changes(
    tx: &mut Tx,
    policy: &Policy,
    host: &str,
    events: &[ChangeEvent],
    observed_at_ms: i64,
    now_ms: i64,
) -> StoreResult<()> {
    engine::evaluate_changes(
        &mut Tickets(tx),
        policy,
        host,
        events,
        observed_at_ms,
        now_ms,
    )
    .await
}

/// Opens the ticket of an employee's problem report
/// ([`engine::open_user_issue`]).
#[allow(clippy::too_many_arguments)] // the transaction, policy and the report's own fields; a struct would only rename them
pub async fn open_user_issue(
    tx: &mut Tx,
    policy: &Policy,
    host: &str,
    text: &str,
    os_user: &str,
    health: &serde_json::Value,
    reported_at_ms: i64,
    now_ms: i64,
) -> StoreResult<i64> {
    engine::open_user_issue(
        &mut Tickets(tx),
        policy,
        host,
        text,
        os_user,
        health,
        reported_at_ms,
        now_ms,
    )
    .await
}

/// Advances the timers and the offline rules ([`engine::advance_timers`]).
pub async fn advance_timers(
    writer: &super::Writer,
    policy: &Policy,
    now_ms: i64,
) -> StoreResult<u64> {
    let mut tx = super::begin_write(writer).await?;
    let actions = engine::advance_timers(&mut Tickets(&mut tx), policy, now_ms).await?;
    tx.commit().await?;
    Ok(actions)
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

/// Opens a manual ticket ([`engine::create`]).
pub async fn create(
    writer: &super::Writer,
    policy: &Policy,
    host: &str,
    title: &str,
    priority: Option<Priority>,
    author: &str,
    now_ms: i64,
) -> StoreResult<TicketRow> {
    let mut tx = super::begin_write(writer).await?;
    let row = engine::create(
        &mut Tickets(&mut tx),
        policy,
        host,
        title,
        priority,
        author,
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Applies a technician's change ([`engine::update`]).
pub async fn update(
    writer: &super::Writer,
    policy: &Policy,
    id: i64,
    change: &TicketChange,
    author: &str,
    now_ms: i64,
) -> StoreResult<Result<TicketRow, TicketRefusal>> {
    let mut tx = super::begin_write(writer).await?;
    let outcome = engine::update(&mut Tickets(&mut tx), policy, id, change, author, now_ms).await?;
    if outcome.is_ok() {
        tx.commit().await?;
    }
    Ok(outcome)
}

/// Escalates missed SLA targets and closes old resolved tickets
/// ([`engine::advance_sla`]).
pub async fn advance_sla(writer: &super::Writer, policy: &Policy, now_ms: i64) -> StoreResult<u64> {
    let mut tx = super::begin_write(writer).await?;
    let changed = engine::advance_sla(&mut Tickets(&mut tx), policy, now_ms).await?;
    tx.commit().await?;
    Ok(changed)
}
