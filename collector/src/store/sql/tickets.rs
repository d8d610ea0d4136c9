//! Tickets, the same SQL on both backends: the SQL of the ticket engine
//! (`store::engine::tickets`, which decides what happens to rule states and
//! tickets), its transactions, and the ticket and change-log reads. What
//! differs is [`BackendSql`]'s: how a list of values is bound, how a timer
//! pass claims hosts, and how rule states are written back.
//!
//! SQLite serialises all writers. On PostgreSQL several replicas write at
//! once, so the locks are explicit (D21):
//! - a host's rule evaluation runs under the host's evaluation lock, which
//!   the ingest path takes for every host of a batch, in id order, before
//!   it calls [`evaluate`], [`evaluate_changes`] or [`store_event`];
//! - the timer passes claim hosts with [`BackendSql::claim_hosts`], the
//!   advisory-lock form of `FOR UPDATE SKIP LOCKED`: a host held elsewhere
//!   is passed over, and the states of the hosts it gets are read only
//!   then, so a due timer fires once, on whichever replica claims it;
//! - the SLA pass claims tickets with `FOR UPDATE SKIP LOCKED`: under the
//!   lock PostgreSQL rechecks the condition on the row's latest version, so
//!   a ticket another replica escalated a moment ago no longer matches;
//! - a technician's change locks its ticket row before reading it.
//!
//! Lock order: host, then ticket rows. The maintenance passes never wait
//! for a host or a ticket another transaction holds, so they cannot close
//! a cycle with the ingest path.

use std::collections::HashMap;
use std::future::Future;

use sqlx::{Pool, QueryBuilder, Transaction};

use super::{Dialect, SendFuture, Value, push_in, push_values};
use crate::rules::events::ChangeEvent;
use crate::rules::policy::Policy;
use crate::store::engine::tickets::{
    self as engine, Due, LoggedChange, NewManualTicket, NewTicket, OutboxEntry, Presence, Sample,
    SlaTarget, StateKey, StoredState, Tags, TicketTx, TicketWrite, TimerStarts, parse_state,
};
use crate::store::rows::{
    TICKET_COLUMNS, logged_change_row, presence_row, rule_state_row, ticket_row,
};
use crate::store::{
    ALWAYS_ON_CHASSIS, AuditEntry, ChangeQuery, ChangeRow, IncomingReport, ReportPayload,
    StoreResult, TicketChange, TicketEvent, TicketQuery, TicketRefusal, TicketRow, WorklogEntry,
};

/// Tickets, by priority then resolution due time.
pub(crate) fn list<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &TicketQuery,
) -> impl Future<Output = StoreResult<Vec<TicketRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN hosts h ON h.id = t.host_id WHERE 1 = 1"
    ));
    if query.open_only {
        sql.push(" AND t.status NOT IN ('resolved', 'closed')");
    }
    for (column, value) in [
        ("status", &query.status),
        ("host_id", &query.host_id),
        ("priority", &query.priority),
        ("assignee", &query.assignee),
        ("rule", &query.rule),
    ] {
        if let Some(value) = value {
            sql.push(format!(" AND t.{column} = "));
            B::text(&mut sql, value);
        }
    }
    sql.push(" ORDER BY t.priority, t.resolution_due_ms, t.id LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| ticket_row(r))
}

/// Change-log entries, newest first.
pub(crate) fn changes<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &ChangeQuery,
) -> impl Future<Output = StoreResult<Vec<ChangeRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT c.host_id, h.hostname, c.observed_at_ms, c.section, c.item, c.old_value, c.new_value \
         FROM host_changes c JOIN hosts h ON h.id = c.host_id WHERE c.observed_at_ms >= ",
    );
    B::int(&mut sql, query.since_ms);
    if let Some(host) = &query.host_id {
        sql.push(" AND c.host_id = ");
        B::text(&mut sql, host);
    }
    if !query.sections.is_empty() {
        sql.push(" AND c.section");
        push_in(&mut sql, query.sections.iter().map(|s| Value::Text(s)));
    }
    sql.push(" ORDER BY c.observed_at_ms DESC, c.id DESC LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| {
        Ok(ChangeRow {
            host_id: r.text("host_id")?,
            hostname: r.text("hostname")?,
            observed_at_ms: r.int("observed_at_ms")?,
            section: r.text("section")?,
            item: r.text("item")?,
            old_value: r.opt_text("old_value")?,
            new_value: r.opt_text("new_value")?,
        })
    })
}

/// The SQL that differs between the backends, which the shared ticket
/// transactions call; each backend implements it beside its other SQL.
pub(crate) trait BackendSql: super::suggestions::KbSql {
    /// Appends a test that the expression before it is one of `values`.
    fn push_in(query: &mut QueryBuilder<Self>, values: &[&str]) -> StoreResult<()>;
    /// The hosts of `hosts` this transaction claims for a timer pass: on
    /// PostgreSQL those whose evaluation lock it gets without waiting.
    fn claim_hosts(conn: &mut Self::Connection, hosts: Vec<String>) -> SendFuture<'_, Vec<String>>;
    /// Writes rule states back: `Ok` ones are deleted, the rest upserted.
    fn save_states<'a>(
        conn: &'a mut Self::Connection,
        states: &'a [(&'a StateKey, StoredState)],
    ) -> SendFuture<'a, ()>;
}

/// A rule state that fired and has not recovered.
const FIRING: &str = "state LIKE '{\"phase\":\"firing\"%'";

/// Appends a worklog entry, public (an employee may read it) or not.
pub(crate) async fn insert_worklog<B: BackendSql>(
    conn: &mut B::Connection,
    ticket: i64,
    at_ms: i64,
    author: &str,
    note: &str,
    public: bool,
) -> StoreResult<()> {
    let mut sql = QueryBuilder::new(
        "INSERT INTO ticket_worklog (ticket_id, at_ms, author, note, is_public) VALUES (",
    );
    push_values(
        &mut sql,
        &[
            Value::Int(ticket),
            Value::Int(at_ms),
            Value::Text(author),
            Value::Text(note),
            Value::Flag(public),
        ],
    );
    sql.push(")");
    B::execute_in(conn, sql).await?;
    Ok(())
}

/// One write transaction's connection as the ticket engine sees it.
pub(crate) struct TicketConn<'a, B: BackendSql>(pub(crate) &'a mut B::Connection);

impl<B: BackendSql> TicketConn<'_, B> {
    /// Runs `UPDATE tickets SET {set} WHERE id = {id}`.
    async fn update(&mut self, mut set: QueryBuilder<B>, id: i64) -> StoreResult<u64> {
        set.push(" WHERE id = ");
        B::int(&mut set, id);
        B::execute_in(self.0, set).await
    }

    /// `UPDATE tickets SET {set}` followed by `value`.
    fn set(set: &str, value: Value<'_>) -> QueryBuilder<B> {
        let mut sql = QueryBuilder::new(format!("UPDATE tickets SET {set}"));
        B::value(&mut sql, value);
        sql
    }
}

impl<B: BackendSql> TicketTx for TicketConn<'_, B> {
    async fn tags_of(&mut self, hosts: &[&str]) -> StoreResult<HashMap<String, Tags>> {
        let mut sql = QueryBuilder::new("SELECT host_id, key, value FROM host_tags WHERE host_id");
        B::push_in(&mut sql, hosts)?;
        let rows = B::all_in(self.0, sql, |r| {
            Ok((r.text("host_id")?, (r.text("key")?, r.text("value")?)))
        })
        .await?;
        let mut tags: HashMap<String, Tags> = HashMap::new();
        for (host, tag) in rows {
            tags.entry(host).or_default().push(tag);
        }
        Ok(tags)
    }

    async fn states_of(&mut self, hosts: &[&str]) -> StoreResult<HashMap<StateKey, StoredState>> {
        let mut sql = QueryBuilder::new(
            "SELECT host_id, rule, subject, state, ticket_id FROM rule_states WHERE host_id",
        );
        B::push_in(&mut sql, hosts)?;
        Ok(B::all_in(self.0, sql, |r| rule_state_row(r))
            .await?
            .into_iter()
            .collect())
    }

    async fn load_state(
        &mut self,
        host: &str,
        rule: &str,
        subject: &str,
    ) -> StoreResult<StoredState> {
        let mut sql =
            QueryBuilder::new("SELECT state, ticket_id FROM rule_states WHERE host_id = ");
        B::text(&mut sql, host);
        sql.push(" AND rule = ");
        B::text(&mut sql, rule);
        sql.push(" AND subject = ");
        B::text(&mut sql, subject);
        let row = B::optional_in(self.0, sql, |r| {
            Ok((r.text("state")?, r.opt_int("ticket_id")?))
        })
        .await?;
        let Some((state, ticket)) = row else {
            return Ok((crate::rules::RuleState::Ok, None));
        };
        Ok((parse_state(&state)?, ticket))
    }

    async fn save_states(&mut self, states: &[(&StateKey, StoredState)]) -> StoreResult<()> {
        B::save_states(self.0, states).await
    }

    async fn insert_ticket(
        &mut self,
        new: &NewTicket<'_>,
        due: Due,
        now_ms: i64,
    ) -> StoreResult<i64> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO tickets (host_id, rule, subject, title, priority, severity, \
             opened_at_ms, updated_at_ms, response_due_ms, resolution_due_ms, evidence, status) \
             VALUES (",
        );
        let evidence = new.evidence.to_string();
        push_values(
            &mut sql,
            &[
                Value::Text(new.host),
                Value::Text(new.rule),
                Value::Text(new.subject),
                Value::Text(new.title),
                Value::Text(new.priority.name()),
                Value::Text(new.severity.name()),
                Value::Int(now_ms),
                Value::Int(now_ms),
                Value::Int(due.response_ms),
                Value::Int(due.resolution_ms),
                Value::Text(&evidence),
            ],
        );
        sql.push(", 'new') RETURNING id");
        let id = B::optional_in(self.0, sql, |r| r.int("id")).await?;
        id.ok_or_else(|| crate::store::StoreError::Corrupt("INSERT returned no ticket id".into()))
    }

    async fn worklog(
        &mut self,
        ticket: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()> {
        insert_worklog::<B>(self.0, ticket, at_ms, author, note, false).await
    }

    async fn subscribers(
        &mut self,
        event: TicketEvent,
    ) -> StoreResult<Vec<crate::webhooks::route::Subscriber>> {
        let mut sql = QueryBuilder::new(
            "SELECT id, url, format, priorities, assignee FROM webhooks \
             WHERE enabled = TRUE AND (',' || events || ',') LIKE ",
        );
        B::text(&mut sql, &format!("%,{},%", event.name()));
        sql.push(" ORDER BY id");
        B::all_in(self.0, sql, |r| {
            Ok(crate::webhooks::route::Subscriber {
                id: r.int("id")?,
                url: r.text("url")?,
                route: super::webhooks::route_of(
                    &r.text("format")?,
                    &r.text("priorities")?,
                    r.opt_text("assignee")?,
                )?,
            })
        })
        .await
    }

    async fn insert_outbox(&mut self, entry: &OutboxEntry<'_>, now_ms: i64) -> StoreResult<()> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO webhook_outbox (webhook_id, delivery_id, event, ticket_id, body, \
             recipient, created_at_ms, next_attempt_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Int(entry.webhook_id),
                Value::Text(entry.delivery_id),
                Value::Text(entry.event.name()),
                Value::Int(entry.ticket_id),
                Value::Text(entry.body),
                Value::MaybeText(entry.recipient),
                Value::Int(now_ms),
                Value::Int(now_ms),
            ],
        );
        sql.push(")");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn open_user_reports(
        &mut self,
        host: &str,
        since_ms: i64,
    ) -> StoreResult<Vec<(i64, String)>> {
        let mut sql = QueryBuilder::new("SELECT id, evidence FROM tickets WHERE host_id = ");
        B::text(&mut sql, host);
        sql.push(" AND opened_at_ms >= ");
        B::int(&mut sql, since_ms);
        sql.push(" AND rule = ");
        B::text(&mut sql, crate::rules::USER_REPORT_RULE);
        sql.push(" AND status NOT IN ('resolved', 'closed') ORDER BY id DESC");
        let rows = B::all_in(self.0, sql, |r| Ok((r.int("id")?, r.text("evidence")?))).await?;
        rows.into_iter()
            .map(|(id, evidence)| {
                let evidence: serde_json::Value = serde_json::from_str(&evidence).map_err(|e| {
                    crate::store::StoreError::Corrupt(format!(
                        "ticket {id}'s evidence is not JSON: {e}"
                    ))
                })?;
                let text = evidence
                    .get("text")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Ok((id, text))
            })
            .collect()
    }

    async fn technician_role(&mut self, name: &str) -> StoreResult<Option<String>> {
        let mut sql = QueryBuilder::new("SELECT role FROM technicians WHERE name = ");
        B::text(&mut sql, name);
        B::optional_in(self.0, sql, |r| r.text("role")).await
    }

    async fn count_occurrence(&mut self, ticket: i64, now_ms: i64) -> StoreResult<()> {
        let set = Self::set(
            "occurrences = occurrences + 1, updated_at_ms = ",
            Value::Int(now_ms),
        );
        self.update(set, ticket).await?;
        Ok(())
    }

    async fn resolve_recovered(&mut self, ticket: i64, now_ms: i64) -> StoreResult<bool> {
        let mut sql = Self::set("status = 'resolved', resolved_at_ms = ", Value::Int(now_ms));
        sql.push(", updated_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", resolution = COALESCE(resolution, ");
        B::text(&mut sql, crate::store::AUTO_RESOLUTION);
        sql.push(") WHERE status NOT IN ('resolved', 'closed') AND id = ");
        B::int(&mut sql, ticket);
        Ok(B::execute_in(self.0, sql).await? == 1)
    }

    async fn reopen_fired(
        &mut self,
        ticket: i64,
        title: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut set = Self::set(
            "status = 'open', flaps = flaps + 1, occurrences = occurrences + 1, \
             resolved_at_ms = NULL, resolution = NULL, updated_at_ms = ",
            Value::Int(now_ms),
        );
        if let Some(title) = title {
            set.push(", title = ");
            B::text(&mut set, title);
        }
        self.update(set, ticket).await?;
        Ok(())
    }

    async fn ticket_status(&mut self, ticket: i64) -> StoreResult<Option<(String, Option<i64>)>> {
        let mut sql = QueryBuilder::new("SELECT status, resolved_at_ms FROM tickets WHERE id = ");
        B::int(&mut sql, ticket);
        B::optional_in(self.0, sql, |r| {
            Ok((r.text("status")?, r.opt_int("resolved_at_ms")?))
        })
        .await
    }

    async fn recent_changes(
        &mut self,
        host: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<LoggedChange>> {
        let mut sql = QueryBuilder::new(
            "SELECT observed_at_ms, section, item, old_value, new_value FROM host_changes \
             WHERE item <> 'baseline' AND host_id = ",
        );
        B::text(&mut sql, host);
        sql.push(" AND observed_at_ms >= ");
        B::int(&mut sql, since_ms);
        sql.push(" ORDER BY observed_at_ms DESC, id DESC LIMIT ");
        B::int(&mut sql, i64::from(limit));
        B::all_in(self.0, sql, |r| logged_change_row(r)).await
    }

    async fn offline_candidates(
        &mut self,
        rules: &[&str],
        sweep: Option<i64>,
    ) -> StoreResult<Vec<Presence>> {
        let mut sql = QueryBuilder::new("SELECT h.id FROM hosts h WHERE ");
        if let Some(silent_before_ms) = sweep {
            sql.push(
                "((h.session_replica IS NULL \
                 AND COALESCE(h.last_seen_at_ms, h.enrolled_at_ms) < ",
            );
            B::int(&mut sql, silent_before_ms);
            // Always-on (D18): a desktop or server chassis, or the always-on tag;
            // `always-on=no` opts a host out.
            sql.push(
                " AND NOT EXISTS (SELECT 1 FROM host_tags t WHERE t.host_id = h.id AND t.key = 'always-on' \
                 AND t.value IN ('no', 'false', '0')) \
                 AND (EXISTS (SELECT 1 FROM host_tags t WHERE t.host_id = h.id AND t.key = 'always-on') \
                 OR EXISTS (SELECT 1 FROM host_facts f WHERE f.host_id = h.id AND f.kind = 'chassis' AND f.value",
            );
            B::push_in(&mut sql, &ALWAYS_ON_CHASSIS)?;
            sql.push("))) OR h.id IN (SELECT host_id FROM rule_states WHERE rule");
            B::push_in(&mut sql, rules)?;
            // A retired host is gone for good: never offline (issue 21).
            sql.push(")) AND h.retired_at_ms IS NULL ORDER BY h.id");
        } else {
            sql.push(format!(
                "h.session_replica IS NOT NULL AND h.id IN (SELECT host_id FROM rule_states \
                 WHERE {FIRING} AND rule"
            ));
            B::push_in(&mut sql, rules)?;
            sql.push(") ORDER BY h.id");
        }
        let candidates = B::all_in(&mut *self.0, sql, |r| r.text("id")).await?;
        // Claimed, not just read: a host being evaluated, or claimed by
        // another replica's pass, is left to that one. Presence is read
        // under the claim, so a report stored meanwhile counts.
        let claimed = B::claim_hosts(&mut *self.0, candidates).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::new(
            "SELECT id, session_replica, goodbye_reason, last_seen_at_ms, enrolled_at_ms, \
             health_interval_secs FROM hosts WHERE id",
        );
        B::push_in(
            &mut sql,
            &claimed.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        sql.push(" ORDER BY id");
        B::all_in(self.0, sql, |r| presence_row(r.text("id")?, r)).await
    }

    async fn waiting_states(
        &mut self,
        recovering_since_ms: i64,
        resolved_before_ms: i64,
    ) -> StoreResult<Vec<(StateKey, StoredState)>> {
        // Hosts with a due timer, claimed (D21). A host held elsewhere is
        // being evaluated there, or another replica's pass has it: either
        // way its timers are not ours to move now, and the next pass sees
        // them again. The states are read only once the host is held, so
        // a timer another pass just fired is seen as fired.
        let due = |sql: &mut QueryBuilder<B>| {
            sql.push("(recovering_since_ms <= ");
            B::int(sql, recovering_since_ms);
            sql.push(" OR resolved_at_ms < ");
            B::int(sql, resolved_before_ms);
            sql.push(")");
        };
        let mut sql = QueryBuilder::new("SELECT DISTINCT host_id FROM rule_states WHERE ");
        due(&mut sql);
        sql.push(" ORDER BY host_id");
        let hosts = B::all_in(&mut *self.0, sql, |r| r.text("host_id")).await?;
        let claimed = B::claim_hosts(&mut *self.0, hosts).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::new(
            "SELECT host_id, rule, subject, state, ticket_id FROM rule_states WHERE ",
        );
        due(&mut sql);
        sql.push(" AND host_id");
        B::push_in(
            &mut sql,
            &claimed.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        sql.push(" ORDER BY host_id, rule, subject");
        B::all_in(self.0, sql, |r| rule_state_row(r)).await
    }

    async fn audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        super::audit::append::<B>(self.0, entry, now_ms).await
    }

    async fn ticket_for_change(&mut self, id: i64) -> StoreResult<Option<TicketRow>> {
        // Locked before it is read: the change is decided on the ticket as
        // it stands, not as it stood before another technician's or a
        // rule's change that commits meanwhile.
        let mut sql = QueryBuilder::new("SELECT id FROM tickets WHERE id = ");
        B::int(&mut sql, id);
        sql.push(B::LOCK_ROWS);
        B::optional_in(&mut *self.0, sql, |r| r.int("id")).await?;
        self.ticket(id).await
    }

    async fn ticket(&mut self, id: i64) -> StoreResult<Option<TicketRow>> {
        B::optional_in(self.0, select_one::<B>(id), |r| ticket_row(r)).await
    }

    async fn write_ticket(
        &mut self,
        id: i64,
        write: TicketWrite<'_>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let set = match write {
            TicketWrite::Assign(name) => {
                let mut set = Self::set("assignee = ", Value::Text(name));
                set.push(", status = CASE status WHEN 'new' THEN 'open' ELSE status END");
                set
            }
            TicketWrite::Status(status) => Self::set("status = ", Value::Text(status)),
            TicketWrite::Resolve(resolution) => {
                let mut set = Self::set(
                    "status = 'resolved', resolution = ",
                    Value::Text(resolution),
                );
                set.push(", resolved_at_ms = ");
                B::int(&mut set, now_ms);
                set
            }
            TicketWrite::Escalate => {
                QueryBuilder::new("UPDATE tickets SET escalation = escalation + 1")
            }
            // The resolution was the resolved ticket's; the worklog keeps it.
            TicketWrite::Reopen => QueryBuilder::new(
                "UPDATE tickets SET status = 'open', resolved_at_ms = NULL, resolution = NULL",
            ),
        };
        self.update(set, id).await?;
        Ok(())
    }

    async fn start_waiting(&mut self, id: i64, now_ms: i64) -> StoreResult<()> {
        self.update(Self::set("waiting_since_ms = ", Value::Int(now_ms)), id)
            .await?;
        Ok(())
    }

    async fn waiting_since(&mut self, id: i64) -> StoreResult<Option<i64>> {
        let mut sql = QueryBuilder::new("SELECT waiting_since_ms FROM tickets WHERE id = ");
        B::int(&mut sql, id);
        Ok(
            B::optional_in(self.0, sql, |r| r.opt_int("waiting_since_ms"))
                .await?
                .flatten(),
        )
    }

    async fn end_waiting(&mut self, id: i64, resolution_due_ms: i64) -> StoreResult<()> {
        let mut set = Self::set("resolution_due_ms = ", Value::Int(resolution_due_ms));
        set.push(", waiting_since_ms = NULL");
        self.update(set, id).await?;
        Ok(())
    }

    async fn mark_response(&mut self, id: i64, now_ms: i64) -> StoreResult<()> {
        let mut set = Self::set("updated_at_ms = ", Value::Int(now_ms));
        set.push(", responded_at_ms = COALESCE(responded_at_ms, ");
        B::int(&mut set, now_ms);
        set.push(")");
        self.update(set, id).await?;
        Ok(())
    }

    async fn missed(&mut self, target: SlaTarget, now_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        let missed = match target {
            SlaTarget::Response => {
                "NOT response_breached AND responded_at_ms IS NULL AND response_due_ms < "
            }
            SlaTarget::Resolution => "NOT resolution_breached AND resolution_due_ms < ",
        };
        let mut sql = QueryBuilder::new(format!(
            "SELECT id, escalation FROM tickets \
             WHERE status NOT IN ('resolved', 'closed', 'waiting') AND {missed}"
        ));
        B::int(&mut sql, now_ms);
        sql.push(" ORDER BY id");
        sql.push(B::CLAIM_ROWS);
        B::all_in(self.0, sql, |r| Ok((r.int("id")?, r.int("escalation")?))).await
    }

    async fn escalate_missed(
        &mut self,
        id: i64,
        target: SlaTarget,
        now_ms: i64,
    ) -> StoreResult<()> {
        let breached = match target {
            SlaTarget::Response => "response_breached",
            SlaTarget::Resolution => "resolution_breached",
        };
        let set = Self::set(
            &format!("{breached} = TRUE, escalation = escalation + 1, updated_at_ms = "),
            Value::Int(now_ms),
        );
        self.update(set, id).await?;
        Ok(())
    }

    async fn close_resolved(&mut self, resolved_before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let mut sql = Self::set("status = 'closed', updated_at_ms = ", Value::Int(now_ms));
        sql.push(
            " WHERE id IN (SELECT id FROM tickets WHERE status = 'resolved' AND resolved_at_ms < ",
        );
        B::int(&mut sql, resolved_before_ms);
        sql.push(B::CLAIM_ROWS);
        sql.push(")");
        B::execute_in(self.0, sql).await
    }
}

/// `SELECT` one ticket by id, with its host name.
fn select_one<B: Dialect>(id: i64) -> QueryBuilder<B> {
    let mut sql = QueryBuilder::new(format!(
        "SELECT {TICKET_COLUMNS} FROM tickets t JOIN hosts h ON h.id = t.host_id WHERE t.id = "
    ));
    B::int(&mut sql, id);
    sql
}

/// Evaluates health samples ([`engine::evaluate`]). On PostgreSQL the
/// caller holds the evaluation lock of each sample's host.
pub(crate) fn evaluate<'a, B: BackendSql>(
    conn: &'a mut B::Connection,
    policy: &'a Policy,
    samples: &'a [Sample<'a>],
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(
        async move { engine::evaluate(&mut TicketConn::<B>(conn), policy, samples, now_ms).await },
    )
}

/// Fires the change rules on one stored inventory's changes
/// ([`engine::evaluate_changes`]). On PostgreSQL the caller holds the
/// host's evaluation lock.
pub(crate) fn evaluate_changes<'a, B: BackendSql>(
    conn: &'a mut B::Connection,
    policy: &'a Policy,
    host: &'a str,
    events: &'a [ChangeEvent],
    observed_at_ms: i64,
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(async move {
        let tx = &mut TicketConn::<B>(conn);
        engine::evaluate_changes(tx, policy, host, events, observed_at_ms, now_ms).await
    })
}

/// Stores a report that is an event rather than state, in the storing
/// transaction on `conn`: a diagnostic result finishes its job
/// ([`super::jobs::finish`]); an employee's problem report opens a ticket
/// ([`engine::open_user_issue`]; on PostgreSQL the caller holds the host's
/// evaluation lock). Other reports are left alone.
pub(crate) fn store_event<'a, B: BackendSql>(
    conn: &'a mut B::Connection,
    policy: &'a Policy,
    report: &'a IncomingReport,
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(async move {
        match &report.payload {
            ReportPayload::DiagnosticResult(result) => {
                super::jobs::finish::<B>(conn, &report.host_id, result, now_ms).await
            }
            ReportPayload::UserIssue {
                text,
                os_user,
                report_key,
                health,
                reporter_email,
            } => {
                if let Some(key) = report_key
                    && !claim_user_report_key::<B>(conn, &report.host_id, key, now_ms).await?
                {
                    return Ok(());
                }
                let ticket = engine::open_user_issue(
                    &mut TicketConn::<B>(conn),
                    policy,
                    &report.host_id,
                    text,
                    os_user,
                    report_key.as_deref(),
                    health,
                    report.collected_at_ms,
                    now_ms,
                )
                .await?;
                let email = reporter_email.as_deref();
                let key = report_key.as_deref();
                super::employee::record_user_report::<B>(
                    conn,
                    &report.host_id,
                    key,
                    ticket,
                    os_user,
                    email,
                    now_ms,
                )
                .await
            }
            _ => Ok(()),
        }
    })
}

/// How long the collector remembers that a report key raised a ticket: a
/// year, longer than a VM snapshot is kept in practice.
pub(crate) const USER_REPORT_KEY_RETENTION_MS: i64 = 365 * 86_400_000;

/// Records that `key` raised a ticket for `host`; false when it already
/// had (a report sent again from a spool that was rolled back). The host's
/// keys past [`USER_REPORT_KEY_RETENTION_MS`] are forgotten first. On
/// PostgreSQL the caller holds the host's evaluation lock, so two replicas
/// never claim one key at once.
async fn claim_user_report_key<B: BackendSql>(
    conn: &mut B::Connection,
    host: &str,
    key: &str,
    now_ms: i64,
) -> StoreResult<bool> {
    let mut forget = QueryBuilder::<B>::new("DELETE FROM user_report_keys WHERE host_id = ");
    B::text(&mut forget, host);
    forget.push(" AND raised_at_ms < ");
    B::int(&mut forget, now_ms - USER_REPORT_KEY_RETENTION_MS);
    B::execute_in(conn, forget).await?;
    let mut claim = QueryBuilder::<B>::new(
        "INSERT INTO user_report_keys (host_id, report_key, raised_at_ms) VALUES (",
    );
    B::text(&mut claim, host);
    claim.push(", ");
    B::text(&mut claim, key);
    claim.push(", ");
    B::int(&mut claim, now_ms);
    claim.push(") ON CONFLICT (host_id, report_key) DO NOTHING");
    Ok(B::execute_in(conn, claim).await? == 1)
}

/// Advances the timers and the offline rules ([`engine::advance_timers`]),
/// on the hosts this transaction claims.
pub(crate) fn advance_timers<'a, B: BackendSql>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    policy: &'a Policy,
    now_ms: i64,
    sweep: bool,
) -> SendFuture<'a, u64> {
    Box::pin(async move {
        let mut tx = begin.await?;
        let tickets = &mut TicketConn::<B>(&mut tx);
        let actions = engine::advance_timers(tickets, policy, now_ms, sweep).await?;
        tx.commit().await?;
        Ok(actions)
    })
}

/// The earliest start of each kind of timer ([`engine::next_due`]), read
/// without a lock: one statement of indexed minimums, cheap enough for
/// the timer task to ask every second or two.
pub(crate) fn timer_starts<'a, B: BackendSql>(
    pool: &'a Pool<B>,
    offline_rules: &'a [&'a str],
) -> SendFuture<'a, TimerStarts> {
    Box::pin(async move {
        // Each minimum reads an index: the states' partial ones (hence the
        // IS NOT NULL), the open statuses named (NOT IN would read every
        // ticket ever opened), the jobs' by state, the states' by rule.
        let open = "status IN ('new', 'open', 'in_progress')";
        let mut sql = QueryBuilder::new(format!(
            "SELECT \
             (SELECT MIN(recovering_since_ms) FROM rule_states \
              WHERE recovering_since_ms IS NOT NULL) AS recovering, \
             (SELECT MIN(resolved_at_ms) FROM rule_states \
              WHERE resolved_at_ms IS NOT NULL) AS state_resolved, \
             (SELECT MIN(response_due_ms) FROM tickets WHERE {open} \
              AND NOT response_breached AND responded_at_ms IS NULL) AS response_due, \
             (SELECT MIN(resolution_due_ms) FROM tickets WHERE {open} \
              AND NOT resolution_breached) AS resolution_due, \
             (SELECT MIN(resolved_at_ms) FROM tickets WHERE status = 'resolved') AS ticket_resolved, \
             (SELECT MIN(expires_at_ms) FROM jobs WHERE state = 'queued') AS queued_expires, \
             (SELECT MIN(expires_at_ms) FROM jobs WHERE state = 'sent') AS sent_expires, \
             (SELECT COUNT(*) FROM (SELECT 1 FROM rule_states r JOIN hosts h ON h.id = r.host_id \
              WHERE h.session_replica IS NOT NULL AND r.{FIRING} AND r.rule"
        ));
        if offline_rules.is_empty() {
            sql.push(" IS NULL");
        } else {
            B::push_in(&mut sql, offline_rules)?;
        }
        sql.push(" LIMIT 1) back) AS offline_back");
        let starts = B::optional(pool, sql, |r| {
            Ok(TimerStarts {
                recovering_since_ms: r.opt_int("recovering")?,
                state_resolved_at_ms: r.opt_int("state_resolved")?,
                offline_host_back: r.int("offline_back")? > 0,
                response_due_ms: r.opt_int("response_due")?,
                resolution_due_ms: r.opt_int("resolution_due")?,
                ticket_resolved_at_ms: r.opt_int("ticket_resolved")?,
                queued_job_expires_ms: r.opt_int("queued_expires")?,
                sent_job_expires_ms: r.opt_int("sent_expires")?,
            })
        })
        .await?;
        Ok(starts.unwrap_or_default())
    })
}

/// A ticket and its worklog, read in one transaction.
pub(crate) fn get<B: Dialect>(
    pool: &Pool<B>,
    id: i64,
) -> SendFuture<'_, Option<(TicketRow, Vec<WorklogEntry>)>> {
    Box::pin(async move {
        let mut tx = pool.begin().await?;
        let Some(row) = B::optional_in(&mut tx, select_one::<B>(id), |r| ticket_row(r)).await?
        else {
            return Ok(None);
        };
        let mut sql = QueryBuilder::new(
            "SELECT at_ms, author, note, is_public FROM ticket_worklog WHERE ticket_id = ",
        );
        B::int(&mut sql, id);
        sql.push(" ORDER BY at_ms, id");
        let log = B::all_in(&mut tx, sql, |r| {
            Ok(WorklogEntry {
                at_ms: r.int("at_ms")?,
                author: r.text("author")?,
                note: r.text("note")?,
                public: r.flag("is_public")?,
            })
        })
        .await?;
        tx.commit().await?;
        Ok(Some((row, log)))
    })
}

/// Opens a manual ticket ([`engine::create`]), audited. The audit head
/// is taken first, as in [`update`].
pub(crate) fn create<'a, B: BackendSql>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    policy: &'a Policy,
    opened: &'a NewManualTicket<'a>,
    now_ms: i64,
) -> SendFuture<'a, TicketRow> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let tickets = &mut TicketConn::<B>(&mut tx);
        let row = engine::create(tickets, policy, opened, now_ms).await?;
        tx.commit().await?;
        Ok(row)
    })
}

/// Applies a technician's change ([`engine::update`]), audited as `by`.
/// The audit head is taken before the ticket row: a report batch that
/// finishes a job holds the head and then writes the job's ticket, so the
/// other order could deadlock with it on PostgreSQL.
pub(crate) fn update<'a, B: BackendSql>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    policy: &'a Policy,
    id: i64,
    change: &'a TicketChange,
    author: &'a str,
    by: &'a AuditEntry,
    now_ms: i64,
) -> SendFuture<'a, Result<TicketRow, TicketRefusal>> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let tickets = &mut TicketConn::<B>(&mut tx);
        let outcome = engine::update(tickets, policy, id, change, author, by, now_ms).await?;
        if outcome.is_ok() {
            tx.commit().await?;
        }
        Ok(outcome)
    })
}

/// Escalates missed SLA targets and closes old resolved tickets
/// ([`engine::advance_sla`]), on the tickets this transaction claims.
pub(crate) fn advance_sla<'a, B: BackendSql>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    policy: &'a Policy,
    now_ms: i64,
) -> SendFuture<'a, u64> {
    Box::pin(async move {
        let mut tx = begin.await?;
        let changed = engine::advance_sla(&mut TicketConn::<B>(&mut tx), policy, now_ms).await?;
        tx.commit().await?;
        Ok(changed)
    })
}
