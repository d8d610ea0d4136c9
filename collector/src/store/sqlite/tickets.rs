//! Tickets on SQLite. Each health sample is evaluated in the transaction
//! that stores it, and each inventory's changes in the transaction that
//! stores the inventory, so rule state (D21) and the tickets it opens
//! commit with the report, and a host's reports are evaluated in order.
//! Timers (quiet periods, reopen windows, offline hosts, SLA targets)
//! advance from the one-minute maintenance task.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::webhooks::{self, TicketEvent};

use crate::rules::events::ChangeEvent;
use crate::rules::model::{Metric, Rule};
use crate::rules::policy::Policy;
use crate::rules::priority::{Impact, Priority, Severity};
use crate::rules::{RuleState, TicketAction, USER_REPORT_RULE, step};
use crate::store::{
    ALWAYS_ON_CHASSIS, OFFLINE_AFTER_INTERVALS, Reading, StoreError, StoreResult, TICKET_STATUSES,
    TicketChange, TicketQuery, TicketRefusal, TicketRow, WorklogEntry,
};

/// The columns `ticket_row` reads.
const TICKET_COLUMNS: &str = "t.id, t.host_id, h.hostname, t.rule, t.subject, t.title, t.status, \
     t.priority, t.severity, t.assignee, t.escalation, t.occurrences, t.flaps, t.opened_at_ms, \
     t.updated_at_ms, t.resolved_at_ms, t.response_due_ms, t.resolution_due_ms, t.evidence, \
     t.responded_at_ms, t.resolution";

type Tx = Transaction<'static, Sqlite>;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn host_tags(tx: &mut Tx, host: &str) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT key, value FROM host_tags WHERE host_id = ?")
        .bind(host)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
        .collect()
}

fn parse_state(text: &str) -> StoreResult<RuleState> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("rule state {text:?}: {e}")))
}

async fn load_state(
    tx: &mut Tx,
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
    Ok((parse_state(&text)?, row.try_get("ticket_id")?))
}

async fn save_state(
    tx: &mut Tx,
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

async fn worklog(tx: &mut Tx, ticket: i64, at_ms: i64, note: &str) -> StoreResult<()> {
    worklog_by(tx, ticket, at_ms, "system", note).await
}

async fn worklog_by(
    tx: &mut Tx,
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

/// A ticket to open.
struct NewTicket<'a> {
    host: &'a str,
    rule: &'a str,
    subject: &'a str,
    title: &'a str,
    severity: Severity,
    priority: Priority,
    evidence: &'a serde_json::Value,
    author: &'a str,
    note: &'a str,
}

/// Opens a ticket with its SLA due times on the policy's calendar; the one
/// way every kind of ticket (rule, change, employee, manual) is made.
async fn open_ticket(
    tx: &mut Tx,
    policy: &Policy,
    new: &NewTicket<'_>,
    now_ms: i64,
) -> StoreResult<i64> {
    let sla = policy.sla(new.priority);
    let id: i64 = sqlx::query(
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
    .bind(policy.calendar.add(now_ms, ms(sla.response)))
    .bind(policy.calendar.add(now_ms, ms(sla.resolution)))
    .bind(new.evidence.to_string())
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
    worklog_by(tx, id, now_ms, new.author, new.note).await?;
    webhooks::enqueue(tx, TicketEvent::Opened, id, now_ms).await?;
    Ok(id)
}

/// What fired, for the ticket's evidence (D23).
struct Firing<'a> {
    rule: &'a Rule,
    subject: &'a str,
    value: Option<f64>,
    sample_at_ms: i64,
}

/// Carries out a ticket action; returns the ticket the state points to.
#[allow(clippy::too_many_arguments)] // the transaction, policy and the event's own fields; a struct would only rename them
async fn act(
    tx: &mut Tx,
    policy: &Policy,
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
            // A technician may have resolved it by hand already.
            let resolved = sqlx::query(
                "UPDATE tickets SET status = 'resolved', resolved_at_ms = ?, updated_at_ms = ?, \
                 resolution = COALESCE(resolution, 'recovered by itself') \
                 WHERE id = ? AND status NOT IN ('resolved', 'closed')",
            )
            .bind(now_ms)
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if resolved == 1 {
                worklog(
                    tx,
                    id,
                    now_ms,
                    &format!(
                        "auto-resolved: the condition recovered and stayed recovered for {} min",
                        policy.lifecycle.quiet_ms / 60_000
                    ),
                )
                .await?;
                webhooks::enqueue(tx, TicketEvent::Resolved, id, now_ms).await?;
            }
            Ok(Some(id))
        }
        (TicketAction::Reopen, Some(id)) => {
            sqlx::query(
                "UPDATE tickets SET status = 'open', flaps = flaps + 1, occurrences = occurrences + 1, \
                 resolved_at_ms = NULL, resolution = NULL, updated_at_ms = ? WHERE id = ?",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            worklog(
                tx,
                id,
                now_ms,
                &format!(
                    "reopened: {} fired again ({})",
                    rule.name,
                    rule.metric.format(value)
                ),
            )
            .await?;
            webhooks::enqueue(tx, TicketEvent::Opened, id, now_ms).await?;
            Ok(Some(id))
        }
        // Open, or an action whose ticket is gone: a new ticket.
        _ => {
            let evidence = serde_json::json!({
                "rule": rule.name,
                "metric": rule.metric.name(),
                "op": rule.op.symbol(),
                "threshold": rule.threshold,
                "recover": rule.recover,
                "for_ms": rule.duration_ms,
                "subject": firing.subject,
                "value": firing.value,
                "sample_at_ms": firing.sample_at_ms,
            });
            let note = format!(
                "opened by rule {}: {} {} {} for {} min (value {})",
                rule.name,
                rule.metric.name(),
                rule.op.symbol(),
                rule.threshold,
                rule.duration_ms / 60_000,
                rule.metric.format(value)
            );
            let id = open_ticket(
                tx,
                policy,
                &NewTicket {
                    host,
                    rule: &rule.name,
                    subject: firing.subject,
                    title: &rule.ticket_title(firing.subject, value),
                    severity: rule.severity,
                    priority: Priority::of(Impact::of(tags), rule.severity),
                    evidence: &evidence,
                    author: "system",
                    note: &note,
                },
                now_ms,
            )
            .await?;
            Ok(Some(id))
        }
    }
}

/// One health sample's readings, for [`evaluate`].
#[derive(Debug)]
pub struct Sample<'a> {
    /// The host.
    pub host: &'a str,
    /// What the rules evaluate.
    pub readings: &'a [Reading],
    /// When the agent took the sample.
    pub at_ms: i64,
}

/// A rule state's row key: (host, rule, subject).
type StateKey = (String, String, String);

/// Evaluates a batch's health samples against the rules in force, in batch
/// order, so a host's samples step its states in order. The hosts' tags and
/// rule states load in one query each, steps run in memory, tickets act as
/// they fire, and only the states that changed are written back, in two
/// statements.
pub async fn evaluate(
    tx: &mut Tx,
    policy: &Policy,
    samples: &[Sample<'_>],
    now_ms: i64,
) -> StoreResult<()> {
    if samples.is_empty() || policy.rules.is_empty() {
        return Ok(());
    }
    let hosts: Vec<&str> = {
        let mut seen = std::collections::HashSet::new();
        samples
            .iter()
            .map(|s| s.host)
            .filter(|h| seen.insert(*h))
            .collect()
    };
    let hosts_json = super::batch::json_rows(&hosts)?;
    let mut tags: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in sqlx::query(
        "SELECT host_id, key, value FROM host_tags WHERE host_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&hosts_json)
    .fetch_all(&mut **tx)
    .await?
    {
        tags.entry(r.try_get(0)?)
            .or_default()
            .push((r.try_get(1)?, r.try_get(2)?));
    }
    let mut states: HashMap<StateKey, (RuleState, Option<i64>)> = HashMap::new();
    for r in sqlx::query(
        "SELECT host_id, rule, subject, state, ticket_id FROM rule_states \
         WHERE host_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&hosts_json)
    .fetch_all(&mut **tx)
    .await?
    {
        let text: String = r.try_get(3)?;
        states.insert(
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
            (parse_state(&text)?, r.try_get(4)?),
        );
    }
    let none = Vec::new();
    let mut changed: std::collections::HashSet<StateKey> = std::collections::HashSet::new();
    for sample in samples {
        let tags = tags.get(sample.host).unwrap_or(&none);
        for rule in policy.rules.iter().filter(|r| r.in_scope(tags)) {
            for (_, subject, value) in sample.readings.iter().filter(|(m, _, _)| *m == rule.metric)
            {
                let key = (sample.host.to_owned(), rule.name.clone(), subject.clone());
                let (state, ticket) = states.get(&key).copied().unwrap_or((RuleState::Ok, None));
                let (next, action) =
                    step(rule, state, Some(*value), sample.at_ms, policy.lifecycle);
                let ticket = match action {
                    Some(action) => {
                        let firing = Firing {
                            rule,
                            subject,
                            value: Some(*value),
                            sample_at_ms: sample.at_ms,
                        };
                        act(
                            tx,
                            policy,
                            sample.host,
                            tags,
                            &firing,
                            action,
                            ticket,
                            now_ms,
                        )
                        .await?
                    }
                    None => ticket,
                };
                if next != state || action.is_some() {
                    changed.insert(key.clone());
                    states.insert(key, (next, ticket));
                }
            }
        }
    }
    save_states(tx, changed.iter(), &states).await
}

/// Writes the given rule states back: Ok ones are deleted, the rest upserted.
async fn save_states(
    tx: &mut Tx,
    keys: impl Iterator<Item = &StateKey>,
    states: &HashMap<StateKey, (RuleState, Option<i64>)>,
) -> StoreResult<()> {
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    for key in keys {
        let Some((state, ticket)) = states.get(key) else {
            continue;
        };
        let (host, rule, subject) = key;
        if *state == RuleState::Ok {
            gone.push((host, rule, subject));
        } else {
            let json = serde_json::to_string(state)
                .map_err(|e| StoreError::Corrupt(format!("rule state: {e}")))?;
            kept.push((host, rule, subject, json, *ticket));
        }
    }
    if !gone.is_empty() {
        sqlx::query(
            "DELETE FROM rule_states WHERE (host_id, rule, subject) IN \
             (SELECT value->>0, value->>1, value->>2 FROM json_each(?1))",
        )
        .bind(super::batch::json_rows(&gone)?)
        .execute(&mut **tx)
        .await?;
    }
    if !kept.is_empty() {
        // `WHERE true` lets SQLite parse the upsert after a SELECT.
        sqlx::query(
            "INSERT INTO rule_states (host_id, rule, subject, state, ticket_id) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?1) WHERE true \
             ON CONFLICT (host_id, rule, subject) DO UPDATE SET state = excluded.state, \
             ticket_id = excluded.ticket_id",
        )
        .bind(super::batch::json_rows(&kept)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Fires the change rules on one stored inventory's changes. A change
/// whose ticket is still open counts an occurrence; one whose ticket
/// resolved within the reopen window reopens it; otherwise a new ticket.
pub async fn evaluate_changes(
    tx: &mut Tx,
    policy: &Policy,
    host: &str,
    events: &[ChangeEvent],
    observed_at_ms: i64,
    now_ms: i64,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let tags = host_tags(tx, host).await?;
    for event in events {
        for rule in policy
            .change_rules
            .iter()
            .filter(|r| r.change == event.kind && r.in_scope(&tags))
        {
            let (_, ticket) = load_state(tx, host, &rule.name, &event.subject).await?;
            let previous = match ticket {
                Some(id) => sqlx::query("SELECT status, resolved_at_ms FROM tickets WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| -> StoreResult<(i64, String, Option<i64>)> {
                        Ok((id, r.try_get("status")?, r.try_get("resolved_at_ms")?))
                    })
                    .transpose()?,
                None => None,
            };
            let id = match previous {
                Some((id, status, _)) if !matches!(status.as_str(), "resolved" | "closed") => {
                    sqlx::query(
                        "UPDATE tickets SET occurrences = occurrences + 1, updated_at_ms = ? WHERE id = ?",
                    )
                    .bind(now_ms)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                    worklog(tx, id, now_ms, &format!("happened again: {}", event.detail)).await?;
                    webhooks::enqueue(tx, TicketEvent::Updated, id, now_ms).await?;
                    id
                }
                Some((id, status, Some(resolved)))
                    if status == "resolved"
                        && now_ms - resolved <= policy.lifecycle.reopen_window_ms =>
                {
                    sqlx::query(
                        "UPDATE tickets SET status = 'open', flaps = flaps + 1, \
                         occurrences = occurrences + 1, resolved_at_ms = NULL, resolution = NULL, \
                         updated_at_ms = ? WHERE id = ?",
                    )
                    .bind(now_ms)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                    worklog(tx, id, now_ms, &format!("reopened: {}", event.detail)).await?;
                    webhooks::enqueue(tx, TicketEvent::Opened, id, now_ms).await?;
                    id
                }
                _ => {
                    let evidence = serde_json::json!({
                        "rule": rule.name,
                        "change": rule.change.name(),
                        "subject": event.subject,
                        "detail": event.detail,
                        "observed_at_ms": observed_at_ms,
                    });
                    open_ticket(
                        tx,
                        policy,
                        &NewTicket {
                            host,
                            rule: &rule.name,
                            subject: &event.subject,
                            title: &format!("{}: {}", rule.name, event.detail),
                            severity: rule.severity,
                            priority: Priority::of(Impact::of(&tags), rule.severity),
                            evidence: &evidence,
                            author: "system",
                            note: &format!("opened by change rule {}: {}", rule.name, event.detail),
                        },
                        now_ms,
                    )
                    .await?
                }
            };
            let state = RuleState::Firing {
                fired_at_ms: observed_at_ms,
            };
            save_state(tx, host, &rule.name, &event.subject, state, Some(id)).await?;
        }
    }
    Ok(())
}

/// Opens the ticket of an employee's problem report (D12), with the health
/// sample they sent and the host's recent changes copied in (D23).
#[allow(clippy::too_many_arguments)] // the transaction, policy and the event's own fields; a struct would only rename them
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
    let tags = host_tags(tx, host).await?;
    let changes = sqlx::query(
        "SELECT observed_at_ms, section, item, old_value, new_value FROM host_changes \
         WHERE host_id = ? AND observed_at_ms >= ? AND item <> 'baseline' \
         ORDER BY observed_at_ms DESC, id DESC LIMIT 20",
    )
    .bind(host)
    .bind(reported_at_ms - 7 * 86_400_000)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| -> StoreResult<serde_json::Value> {
        Ok(serde_json::json!({
            "observed_at_ms": r.try_get::<i64, _>("observed_at_ms")?,
            "section": r.try_get::<String, _>("section")?,
            "item": r.try_get::<String, _>("item")?,
            "old": r.try_get::<Option<String>, _>("old_value")?,
            "new": r.try_get::<Option<String>, _>("new_value")?,
        }))
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let first_line = text.lines().next().unwrap_or(text);
    let mut title: String = first_line.chars().take(120).collect();
    if title.len() < first_line.len() {
        title.push('…');
    }
    let evidence = serde_json::json!({
        "rule": USER_REPORT_RULE,
        "reported_by": os_user,
        "text": text,
        "reported_at_ms": reported_at_ms,
        "health": health,
        "recent_changes": changes,
    });
    open_ticket(
        tx,
        policy,
        &NewTicket {
            host,
            rule: USER_REPORT_RULE,
            subject: "",
            title: &format!("reported by {os_user}: {title}"),
            severity: Severity::Medium,
            priority: Priority::of(Impact::of(&tags), Severity::Medium),
            evidence: &evidence,
            author: os_user,
            note: &format!("reported from the PC by {os_user}: {text}"),
        },
        now_ms,
    )
    .await
}

/// The minutes a host has been offline (D18): 0 while it is online.
fn offline_minutes(row: &sqlx::sqlite::SqliteRow, now_ms: i64) -> StoreResult<f64> {
    let replica: Option<String> = row.try_get("session_replica")?;
    let goodbye: Option<String> = row.try_get("goodbye_reason")?;
    let seen: Option<i64> = row.try_get("last_seen_at_ms")?;
    let enrolled: i64 = row.try_get("enrolled_at_ms")?;
    let interval: i64 = row.try_get("health_interval_secs")?;
    let seen = seen.unwrap_or(enrolled);
    let silent = now_ms.saturating_sub(seen);
    let online = replica.is_some()
        || (goodbye.is_none() && silent <= OFFLINE_AFTER_INTERVALS * interval * 1000);
    Ok(if online {
        0.0
    } else {
        (silent / 60_000) as f64
    })
}

/// Evaluates the offline rules: each always-on host that has been silent
/// past the smallest threshold, or has an offline rule state to move on.
async fn evaluate_offline(tx: &mut Tx, policy: &Policy, now_ms: i64) -> StoreResult<u64> {
    let rules: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| r.metric == Metric::OfflineMinutes)
        .collect();
    let Some(min_threshold) = rules.iter().map(|r| r.threshold).reduce(f64::min) else {
        return Ok(0);
    };
    let silent_before = now_ms - (min_threshold.max(0.0) * 60_000.0) as i64;
    let mut sql = QueryBuilder::<Sqlite>::new(
        "SELECT h.id, h.session_replica, h.goodbye_reason, h.last_seen_at_ms, h.enrolled_at_ms, \
         h.health_interval_secs FROM hosts h WHERE ((h.session_replica IS NULL \
         AND COALESCE(h.last_seen_at_ms, h.enrolled_at_ms) < ",
    );
    sql.push_bind(silent_before);
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
    for rule in &rules {
        list.push_bind(rule.name.as_str());
    }
    sql.push(")))");
    let hosts = sql.build().fetch_all(&mut **tx).await?;
    let mut actions = 0;
    for row in hosts {
        let host: String = row.try_get("id")?;
        let minutes = offline_minutes(&row, now_ms)?;
        let tags = host_tags(tx, &host).await?;
        for rule in rules.iter().filter(|r| r.in_scope(&tags)) {
            let (state, ticket) = load_state(tx, &host, &rule.name, "").await?;
            let (next, action) = step(rule, state, Some(minutes), now_ms, policy.lifecycle);
            let ticket = match action {
                Some(action) => {
                    actions += 1;
                    let firing = Firing {
                        rule,
                        subject: "",
                        value: Some(minutes),
                        sample_at_ms: now_ms,
                    };
                    act(tx, policy, &host, &tags, &firing, action, ticket, now_ms).await?
                }
                None => ticket,
            };
            if next != state || action.is_some() {
                save_state(tx, &host, &rule.name, "", next, ticket).await?;
            }
        }
    }
    Ok(actions)
}

/// Advances every waiting timer (quiet periods, reopen windows) and the
/// offline rules to `now_ms`. Returns how many ticket actions it took.
pub async fn advance_timers(
    writer: &super::Writer,
    policy: &Policy,
    now_ms: i64,
) -> StoreResult<u64> {
    let mut tx = super::begin_write(writer).await?;
    let mut actions = evaluate_offline(&mut tx, policy, now_ms).await?;
    let rows = sqlx::query(
        "SELECT host_id, rule, subject, state, ticket_id FROM rule_states \
         WHERE state LIKE '{\"phase\":\"recovering\"%' OR state LIKE '{\"phase\":\"resolved\"%'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let host: String = row.try_get("host_id")?;
        let name: String = row.try_get("rule")?;
        let subject: String = row.try_get("subject")?;
        let text: String = row.try_get("state")?;
        let ticket: Option<i64> = row.try_get("ticket_id")?;
        let state = parse_state(&text)?;
        let Some(rule) = policy.rule(&name) else {
            // A rule no longer in force: its state has nothing to wait for.
            save_state(&mut tx, &host, &name, &subject, RuleState::Ok, None).await?;
            continue;
        };
        let (next, action) = step(rule, state, None, now_ms, policy.lifecycle);
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
                act(
                    &mut tx, policy, &host, &tags, &firing, action, ticket, now_ms,
                )
                .await?
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
    if let Some(assignee) = &query.assignee {
        sql.push(" AND t.assignee = ").push_bind(assignee.as_str());
    }
    if let Some(rule) = &query.rule {
        sql.push(" AND t.rule = ").push_bind(rule.as_str());
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
    writer: &super::Writer,
    policy: &Policy,
    host: &str,
    title: &str,
    priority: Option<Priority>,
    author: &str,
    now_ms: i64,
) -> StoreResult<TicketRow> {
    let mut tx = super::begin_write(writer).await?;
    let tags = host_tags(&mut tx, host).await?;
    let priority = priority.unwrap_or_else(|| Priority::of(Impact::of(&tags), Severity::Medium));
    let id = open_ticket(
        &mut tx,
        policy,
        &NewTicket {
            host,
            rule: "",
            subject: "",
            title,
            severity: Severity::Medium,
            priority,
            evidence: &serde_json::json!({}),
            author,
            note: "opened by hand",
        },
        now_ms,
    )
    .await?;
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

/// Applies a technician's change.
pub async fn update(
    writer: &super::Writer,
    policy: &Policy,
    id: i64,
    change: &TicketChange,
    author: &str,
    now_ms: i64,
) -> StoreResult<Result<TicketRow, TicketRefusal>> {
    let mut tx = super::begin_write(writer).await?;
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
            if !TICKET_STATUSES.contains(&status.as_str()) {
                return Ok(Err(TicketRefusal::Invalid(format!(
                    "unknown status {status:?}; expected one of {}",
                    TICKET_STATUSES.join(", ")
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
    // The SLA clock pauses while waiting (D22): the business time that was
    // left when waiting began is counted again from now.
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
        let since: Option<i64> =
            sqlx::query_scalar("SELECT waiting_since_ms FROM tickets WHERE id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(since) = since {
            let left = policy.calendar.between(since, before.resolution_due_ms);
            sqlx::query(
                "UPDATE tickets SET resolution_due_ms = ?, waiting_since_ms = NULL WHERE id = ?",
            )
            .bind(policy.calendar.add(now_ms, left))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
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
pub async fn advance_sla(writer: &super::Writer, policy: &Policy, now_ms: i64) -> StoreResult<u64> {
    let mut tx = super::begin_write(writer).await?;
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
    .bind(policy.lifecycle.reopen_window_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed + closed)
}
