//! The ticket engine. Each health sample is evaluated in the transaction
//! that stores it, and each inventory's changes in the transaction that
//! stores the inventory, so rule state (D21) and the tickets it opens
//! commit with the report, and a host's reports are evaluated in order.
//! Timers (quiet periods, reopen windows, offline hosts, SLA targets)
//! advance from the timer task, which runs a pass when [`next_due`] says
//! one is due and sweeps every offline host once a minute.
//!
//! Everything here runs against [`TicketTx`], one open transaction of a
//! backend: rule evaluation, the ticket actions (open, occurrence,
//! resolve, reopen), employee reports, manual tickets and a technician's
//! changes, the offline rule, timers and SLA escalation, with their
//! worklog text, evidence JSON and webhook events. Where PostgreSQL must
//! claim a host or a ticket against other replicas (D21), its
//! implementation of the trait does so; SQLite has one writer and claims
//! nothing.

use std::collections::{HashMap, HashSet};

use crate::rules::events::ChangeEvent;
use crate::rules::model::{Metric, Rule};
use crate::rules::policy::Policy;
use crate::rules::priority::{Impact, Priority, Severity};
use crate::rules::{DUPLICATE_IDENTITY_RULE, RuleState, TicketAction, USER_REPORT_RULE, step};
use crate::store::{
    AuditEntry, OFFLINE_AFTER_INTERVALS, Reading, StoreError, StoreResult, TICKET_STATUSES,
    TicketChange, TicketEvent, TicketRefusal, TicketRow, WebhookFormat,
};
use crate::webhooks::change::{Change, ChangeKind, SYSTEM};

/// A host's tags, (key, value).
pub type Tags = Vec<(String, String)>;

/// A rule state's row key: (host, rule, subject).
pub type StateKey = (String, String, String);

/// A rule state as stored, with the ticket it points to.
pub type StoredState = (RuleState, Option<i64>);

/// A ticket a technician opens by hand.
pub struct NewManualTicket<'a> {
    /// The host.
    pub host: &'a str,
    /// Its title.
    pub title: &'a str,
    /// Its priority; by the host's impact and medium urgency when `None`.
    pub priority: Option<Priority>,
    /// The worklog's author.
    pub author: &'a str,
    /// Who opened it, for the audit log.
    pub by: &'a AuditEntry,
}

/// A ticket to open.
pub struct NewTicket<'a> {
    /// The host.
    pub host: &'a str,
    /// The rule that opened it, empty for a manual ticket.
    pub rule: &'a str,
    /// What the rule fired on (a mount point, a package), or empty.
    pub subject: &'a str,
    /// Its title.
    pub title: &'a str,
    /// Its severity.
    pub severity: Severity,
    /// Its priority.
    pub priority: Priority,
    /// The evidence copied in (D23).
    pub evidence: &'a serde_json::Value,
    /// Who the opening worklog entry is by.
    pub author: &'a str,
    /// The opening worklog entry.
    pub note: &'a str,
}

/// A ticket row's SLA due times, from the policy's calendar.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    /// When the first response is due.
    pub response_ms: i64,
    /// When the resolution is due.
    pub resolution_ms: i64,
}

/// What the offline rule needs to know of a host's presence (D18).
#[derive(Debug, Clone)]
pub struct Presence {
    /// Its host id.
    pub host: String,
    /// Whether a replica holds its session now.
    pub streaming: bool,
    /// Whether it said goodbye when it last left.
    pub said_goodbye: bool,
    /// When a report of it was last stored.
    pub last_seen_at_ms: Option<i64>,
    /// When it enrolled.
    pub enrolled_at_ms: i64,
    /// Its health interval.
    pub health_interval_secs: i64,
}

impl Presence {
    /// The minutes it has been offline: 0 while it is online.
    fn offline_minutes(&self, now_ms: i64) -> f64 {
        let seen = self.last_seen_at_ms.unwrap_or(self.enrolled_at_ms);
        let silent = now_ms.saturating_sub(seen);
        let online = self.streaming
            || (!self.said_goodbye
                && silent <= OFFLINE_AFTER_INTERVALS * self.health_interval_secs * 1000);
        if online {
            0.0
        } else {
            (silent / 60_000) as f64
        }
    }
}

/// An SLA target a ticket can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaTarget {
    /// The first response.
    Response,
    /// The resolution.
    Resolution,
}

impl SlaTarget {
    /// As the worklog names it.
    fn name(self) -> &'static str {
        match self {
            SlaTarget::Response => "response",
            SlaTarget::Resolution => "resolution",
        }
    }
}

/// A ticket row change a technician makes, as SQL carries it out.
#[derive(Debug, Clone, Copy)]
pub enum TicketWrite<'a> {
    /// Assigns it; a new ticket becomes open.
    Assign(&'a str),
    /// Sets the status.
    Status(&'a str),
    /// Resolves it with a resolution text.
    Resolve(&'a str),
    /// Raises the escalation level by one.
    Escalate,
    /// Opens it again.
    Reopen,
}

/// One delivery of a ticket event to one webhook, as the outbox holds it.
#[derive(Debug)]
pub struct OutboxEntry<'a> {
    /// The webhook.
    pub webhook_id: i64,
    /// The delivery's id, sent with every attempt.
    pub delivery_id: &'a str,
    /// The event.
    pub event: TicketEvent,
    /// The ticket.
    pub ticket_id: i64,
    /// The body, built when the event happened.
    pub body: &'a str,
    /// The address of an e-mail delivery.
    pub recipient: Option<&'a str>,
}

/// A change-log entry, as an employee report's evidence copies it.
#[derive(Debug, Clone)]
pub struct LoggedChange {
    /// When the inventory that showed it was collected.
    pub observed_at_ms: i64,
    /// Its inventory section.
    pub section: String,
    /// The item that changed.
    pub item: String,
    /// The value before, if there was one.
    pub old: Option<String>,
    /// The value after, if there is one.
    pub new: Option<String>,
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

/// Reads a stored rule state.
pub fn parse_state(text: &str) -> StoreResult<RuleState> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("rule state {text:?}: {e}")))
}

/// A rule state as stored.
pub fn state_text(state: &RuleState) -> StoreResult<String> {
    serde_json::to_string(state).map_err(|e| StoreError::Corrupt(format!("rule state: {e}")))
}

/// When a stored state's timer started, as its `rule_states` columns
/// (`recovering_since_ms`, `resolved_at_ms`) hold it: the timer task finds
/// the earliest through their indexes instead of reading every state.
pub fn timer_columns(state: &RuleState) -> (Option<i64>, Option<i64>) {
    match *state {
        RuleState::Recovering { since_ms } => (Some(since_ms), None),
        RuleState::Resolved { resolved_at_ms } => (None, Some(resolved_at_ms)),
        RuleState::Ok | RuleState::Pending { .. } | RuleState::Firing { .. } => (None, None),
    }
}

/// The earliest start of each kind of timer, as the store reads them
/// (each `None` when no timer of that kind runs).
#[derive(Debug, Clone, Copy, Default)]
pub struct TimerStarts {
    /// The earliest `recovering_since_ms` of a rule state.
    pub recovering_since_ms: Option<i64>,
    /// The earliest `resolved_at_ms` of a rule state.
    pub state_resolved_at_ms: Option<i64>,
    /// Whether a host with a firing offline state streams again.
    pub offline_host_back: bool,
    /// The earliest response due time of an open ticket not yet answered
    /// nor escalated for it.
    pub response_due_ms: Option<i64>,
    /// The earliest resolution due time of an open ticket not yet
    /// escalated for it.
    pub resolution_due_ms: Option<i64>,
    /// The earliest `resolved_at_ms` of a resolved ticket.
    pub ticket_resolved_at_ms: Option<i64>,
    /// The earliest expiry of a queued job.
    pub queued_job_expires_ms: Option<i64>,
    /// The earliest expiry of a sent job.
    pub sent_job_expires_ms: Option<i64>,
}

/// How long a sent job may wait for its result past its expiry before it
/// expires (`push_expiry_due` in `store::sql::jobs`).
pub const SENT_JOB_GRACE_MS: i64 = 3_600_000;

/// When the next timer falls due (`now_ms` when a returning offline host
/// waits), by the rules of [`step`], [`advance_sla`] and job expiry: the
/// moment each one's comparison first holds. `None` when nothing waits.
pub fn next_due(starts: &TimerStarts, policy: &Policy, now_ms: i64) -> Option<i64> {
    let lifecycle = policy.lifecycle;
    [
        starts.offline_host_back.then_some(now_ms),
        starts
            .recovering_since_ms
            .map(|at| at.saturating_add(lifecycle.quiet_ms)),
        starts
            .state_resolved_at_ms
            .map(|at| at.saturating_add(lifecycle.reopen_window_ms + 1)),
        starts.response_due_ms.map(|at| at.saturating_add(1)),
        starts.resolution_due_ms.map(|at| at.saturating_add(1)),
        starts
            .ticket_resolved_at_ms
            .map(|at| at.saturating_add(lifecycle.reopen_window_ms + 1)),
        starts.queued_job_expires_ms,
        starts
            .sent_job_expires_ms
            .map(|at| at.saturating_add(SENT_JOB_GRACE_MS)),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// One open write transaction of a backend, as the ticket engine uses it:
/// each method is one or a few SQL statements, and decides nothing.
pub trait TicketTx:
    super::triage::TriageTx
    + super::suggestions::SuggestTx
    + super::problems::ProblemTx
    + super::employee::EmployeeTx
    + Send
{
    /// The tags of each of `hosts` that has any.
    async fn tags_of(&mut self, hosts: &[&str]) -> StoreResult<HashMap<String, Tags>>;
    /// Every rule state of `hosts`.
    async fn states_of(&mut self, hosts: &[&str]) -> StoreResult<HashMap<StateKey, StoredState>>;
    /// One rule state; `Ok` with no ticket when none is stored.
    async fn load_state(
        &mut self,
        host: &str,
        rule: &str,
        subject: &str,
    ) -> StoreResult<StoredState>;
    /// Writes rule states back: `Ok` ones are deleted, the rest upserted.
    async fn save_states(&mut self, states: &[(&StateKey, StoredState)]) -> StoreResult<()>;
    /// Inserts a new ticket row; its id.
    async fn insert_ticket(
        &mut self,
        new: &NewTicket<'_>,
        due: Due,
        now_ms: i64,
    ) -> StoreResult<i64>;
    /// Appends a worklog entry.
    async fn worklog(
        &mut self,
        ticket: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()>;
    /// The enabled webhooks that subscribe to `event`, by id, with their
    /// targets and filters.
    async fn subscribers(
        &mut self,
        event: TicketEvent,
    ) -> StoreResult<Vec<crate::webhooks::route::Subscriber>>;
    /// Puts one delivery into the webhook outbox, due now.
    async fn insert_outbox(&mut self, delivery: &OutboxEntry<'_>, now_ms: i64) -> StoreResult<()>;
    /// The host's employee-report tickets opened since `since_ms` that are
    /// neither resolved nor closed, with the text each was opened with.
    async fn open_user_reports(
        &mut self,
        host: &str,
        since_ms: i64,
    ) -> StoreResult<Vec<(i64, String)>>;
    /// The role of the technician named `name` ("viewer", "technician",
    /// "admin"), if there is one.
    async fn technician_role(&mut self, name: &str) -> StoreResult<Option<String>>;
    /// Counts one more occurrence.
    async fn count_occurrence(&mut self, ticket: i64, now_ms: i64) -> StoreResult<()>;
    /// Resolves a ticket whose condition recovered, unless it is resolved
    /// or closed already; whether it did.
    async fn resolve_recovered(&mut self, ticket: i64, now_ms: i64) -> StoreResult<bool>;
    /// Opens a resolved ticket again because its rule fired again: one
    /// more flap and occurrence, the resolution cleared, and the title
    /// the firing gives it now, when it gives one.
    async fn reopen_fired(
        &mut self,
        ticket: i64,
        title: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// A ticket's status and when it resolved.
    async fn ticket_status(&mut self, ticket: i64) -> StoreResult<Option<(String, Option<i64>)>>;
    /// The host's latest `limit` changes since `since_ms`, newest first,
    /// baselines left out.
    async fn recent_changes(
        &mut self,
        host: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<LoggedChange>>;
    /// Hosts the offline rules look at: on a sweep, always-on ones silent
    /// since before `silent_before_ms` and those with a state of one of
    /// `rules`; otherwise only those with a firing state of one of `rules`
    /// that stream again. On PostgreSQL only those this transaction could
    /// claim.
    async fn offline_candidates(
        &mut self,
        rules: &[&str],
        sweep: Option<i64>,
    ) -> StoreResult<Vec<Presence>>;
    /// Rule states whose timer is due (recovering since at most
    /// `recovering_since_ms`, resolved before `resolved_before_ms`), of the
    /// hosts this transaction holds or could claim.
    async fn waiting_states(
        &mut self,
        recovering_since_ms: i64,
        resolved_before_ms: i64,
    ) -> StoreResult<Vec<(StateKey, StoredState)>>;
    /// A ticket, locked for this transaction's change where locks exist.
    async fn ticket_for_change(&mut self, id: i64) -> StoreResult<Option<TicketRow>>;
    /// Appends an audit entry (`engine::audit::append`).
    async fn audit(&mut self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()>;
    /// A ticket as it stands now in this transaction.
    async fn ticket(&mut self, id: i64) -> StoreResult<Option<TicketRow>>;
    /// Carries out a technician's change of the ticket row.
    async fn write_ticket(
        &mut self,
        id: i64,
        write: TicketWrite<'_>,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Marks when waiting began.
    async fn start_waiting(&mut self, id: i64, now_ms: i64) -> StoreResult<()>;
    /// When waiting began, if it is marked.
    async fn waiting_since(&mut self, id: i64) -> StoreResult<Option<i64>>;
    /// Moves the resolution due time and clears the waiting mark.
    async fn end_waiting(&mut self, id: i64, resolution_due_ms: i64) -> StoreResult<()>;
    /// Marks a technician's action: updated now, and responded if not yet.
    async fn mark_response(&mut self, id: i64, now_ms: i64) -> StoreResult<()>;
    /// Open tickets past the `target` due time not yet escalated for it,
    /// with their escalation level; on PostgreSQL claimed, skipping rows
    /// another transaction holds.
    async fn missed(&mut self, target: SlaTarget, now_ms: i64) -> StoreResult<Vec<(i64, i64)>>;
    /// Marks the target missed and raises the escalation level.
    async fn escalate_missed(&mut self, id: i64, target: SlaTarget, now_ms: i64)
    -> StoreResult<()>;
    /// Closes tickets resolved before `resolved_before_ms`; how many.
    async fn close_resolved(&mut self, resolved_before_ms: i64, now_ms: i64) -> StoreResult<u64>;
}

/// Queues `event` for `ticket_id` to every enabled webhook that subscribes
/// to it, in the caller's transaction. The body is built now, so it shows
/// the ticket as this change left it, even if it is delivered hours later.
/// The body's `change` says what changed and who changed it (issue 23);
/// every ticket write of this engine has one to say.
pub async fn enqueue_change(
    tx: &mut impl TicketTx,
    event: TicketEvent,
    ticket_id: i64,
    now_ms: i64,
    change: &Change,
) -> StoreResult<()> {
    enqueue_with(tx, event, ticket_id, now_ms, Some(change)).await
}

async fn enqueue_with(
    tx: &mut impl TicketTx,
    event: TicketEvent,
    ticket_id: i64,
    now_ms: i64,
    change: Option<&Change>,
) -> StoreResult<()> {
    super::problems::ticket_event(tx, event, ticket_id, now_ms).await?;
    // The common case on the ingest path is no webhooks at all: one indexed
    // read and done.
    let hooks = tx.subscribers(event).await?;
    if hooks.is_empty() {
        return Ok(());
    }
    let Some(ticket) = tx.ticket(ticket_id).await? else {
        return Err(StoreError::Corrupt(format!(
            "ticket {ticket_id} vanished before its {} event",
            event.name()
        )));
    };
    // Which webhooks this ticket's event is for (priority, assignee) and
    // where each e-mail goes, decided now, in the ticket's transaction.
    let routed: Vec<_> = hooks
        .iter()
        .filter_map(|hook| Some((hook, crate::webhooks::route::recipient(hook, &ticket)?)))
        .collect();
    let evidence = ticket.evidence.clone();
    let mut ticket = ticket_payload(ticket);
    ticket.suggestions = super::suggestions::payloads(tx, ticket_id).await?;
    for (hook, recipient) in routed {
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let body = crate::webhooks::format::payload_with_change(
            event,
            &delivery_id,
            now_ms,
            &ticket,
            change,
        );
        let body = match hook.route.format {
            WebhookFormat::Generic => body,
            _ => crate::webhooks::render::stored_body(&body, &evidence),
        };
        let entry = OutboxEntry {
            webhook_id: hook.id,
            delivery_id: &delivery_id,
            event,
            ticket_id,
            body: &body,
            recipient: recipient.as_deref(),
        };
        tx.insert_outbox(&entry, now_ms).await?;
    }
    Ok(())
}

/// A ticket as a webhook's body shows it.
fn ticket_payload(t: TicketRow) -> crate::webhooks::format::TicketPayload {
    use crate::webhooks::format::rfc3339;
    crate::webhooks::format::TicketPayload {
        id: t.id,
        title: t.title,
        host_id: t.host_id,
        hostname: t.hostname,
        rule: t.rule,
        subject: t.subject,
        status: t.status,
        priority: t.priority,
        severity: t.severity,
        assignee: t.assignee,
        escalation: t.escalation,
        occurrences: t.occurrences,
        flaps: t.flaps,
        opened_at: rfc3339(t.opened_at_ms),
        updated_at: rfc3339(t.updated_at_ms),
        resolved_at: t.resolved_at_ms.map(rfc3339),
        response_due: rfc3339(t.response_due_ms),
        resolution_due: rfc3339(t.resolution_due_ms),
        resolution: t.resolution,
        suggestions: Vec::new(),
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn host_tags(tx: &mut impl TicketTx, host: &str) -> StoreResult<Tags> {
    Ok(tx.tags_of(&[host]).await?.remove(host).unwrap_or_default())
}

async fn save_state(
    tx: &mut impl TicketTx,
    key: StateKey,
    state: RuleState,
    ticket: Option<i64>,
) -> StoreResult<()> {
    tx.save_states(&[(&key, (state, ticket))]).await
}

/// Opens a ticket with its SLA due times on the policy's calendar; the one
/// way every kind of ticket (rule, change, employee, manual) is made.
async fn open_ticket(
    tx: &mut impl TicketTx,
    policy: &Policy,
    new: &NewTicket<'_>,
    now_ms: i64,
) -> StoreResult<i64> {
    let sla = policy.sla(new.priority);
    let due = Due {
        response_ms: policy.calendar.add(now_ms, ms(sla.response)),
        resolution_ms: policy.calendar.add(now_ms, ms(sla.resolution)),
    };
    let id = tx.insert_ticket(new, due, now_ms).await?;
    tx.worklog(id, now_ms, new.author, new.note).await?;
    super::triage::on_open(tx, policy, new.host, new.rule, new.subject, id, now_ms).await?;
    super::suggestions::attach(tx, new, id, now_ms).await?;
    let change = Change::system(ChangeKind::Opened, new.author).to("new");
    enqueue_change(tx, TicketEvent::Opened, id, now_ms, &change).await?;
    super::problems::link(tx, policy, id, new, now_ms).await?;
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
    tx: &mut impl TicketTx,
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
            tx.count_occurrence(id, now_ms).await?;
            let change = Change::system(ChangeKind::Occurrence, SYSTEM);
            enqueue_change(tx, TicketEvent::Updated, id, now_ms, &change).await?;
            Ok(Some(id))
        }
        (TicketAction::Resolve, Some(id)) => {
            // A technician may have resolved it by hand already.
            if tx.resolve_recovered(id, now_ms).await? {
                let note = format!(
                    "auto-resolved: the condition recovered and stayed recovered for {}",
                    crate::units::duration_ms(policy.lifecycle.quiet_ms)
                );
                tx.worklog(id, now_ms, "system", &note).await?;
                let change = Change::system(ChangeKind::Resolved, SYSTEM).to("resolved");
                enqueue_change(tx, TicketEvent::Resolved, id, now_ms, &change).await?;
            }
            Ok(Some(id))
        }
        (TicketAction::Reopen, Some(id)) => {
            // The title shows the value that fired it this time (a timer's
            // firing has no reading: the title stays).
            let title = firing
                .value
                .map(|value| rule.ticket_title(firing.subject, value));
            tx.reopen_fired(id, title.as_deref(), now_ms).await?;
            let note = format!(
                "reopened: {} fired again ({})",
                rule.name,
                rule.metric.format(value)
            );
            tx.worklog(id, now_ms, "system", &note).await?;
            super::triage::on_open(tx, policy, host, &rule.name, firing.subject, id, now_ms)
                .await?;
            let change = Change::system(ChangeKind::Reopened, SYSTEM).to("open");
            enqueue_change(tx, TicketEvent::Opened, id, now_ms, &change).await?;
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
                "opened by rule {}: {} {} {}{} (value {})",
                rule.name,
                rule.metric.name(),
                rule.op.symbol(),
                rule.threshold,
                held_for(rule.duration_ms),
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

/// " for 20s": how long a rule's condition must hold, as its file says;
/// nothing for a rule that fires at once.
fn held_for(duration_ms: i64) -> String {
    if duration_ms > 0 {
        format!(" for {}", crate::units::duration_ms(duration_ms))
    } else {
        String::new()
    }
}

/// Evaluates health samples against the rules in force, in order, so a
/// host's samples step its states in order. The hosts' tags and rule
/// states load once, steps run in memory, tickets act as they fire, and
/// only the states that changed are written back, together. On PostgreSQL
/// the caller holds the evaluation lock of every host (`lock_host`).
pub async fn evaluate(
    tx: &mut impl TicketTx,
    policy: &Policy,
    samples: &[Sample<'_>],
    now_ms: i64,
) -> StoreResult<()> {
    if samples.is_empty() || policy.rules.is_empty() {
        return Ok(());
    }
    let hosts: Vec<&str> = {
        let mut seen = HashSet::new();
        samples
            .iter()
            .map(|s| s.host)
            .filter(|h| seen.insert(*h))
            .collect()
    };
    let tags = tx.tags_of(&hosts).await?;
    let mut states = tx.states_of(&hosts).await?;
    let none = Vec::new();
    let mut changed: HashSet<StateKey> = HashSet::new();
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
    let writes: Vec<(&StateKey, StoredState)> = changed
        .iter()
        .filter_map(|key| states.get(key).map(|state| (key, *state)))
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    tx.save_states(&writes).await
}

/// Fires the change rules on one stored inventory's changes. A change
/// whose ticket is still open counts an occurrence; one whose ticket
/// resolved within the reopen window reopens it; otherwise a new ticket.
/// On PostgreSQL the caller holds the host's evaluation lock.
pub async fn evaluate_changes(
    tx: &mut impl TicketTx,
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
            let evidence = serde_json::json!({
                "rule": rule.name,
                "change": rule.change.name(),
                "subject": event.subject,
                "detail": event.detail,
                "observed_at_ms": observed_at_ms,
            });
            raise_event_ticket(
                tx,
                policy,
                &tags,
                &EventTicket {
                    host,
                    rule: &rule.name,
                    subject: &event.subject,
                    severity: rule.severity,
                    title: &format!("{}: {}", rule.name, event.detail),
                    detail: &event.detail,
                    opened_note: &format!("opened by change rule {}: {}", rule.name, event.detail),
                    evidence: &evidence,
                },
                observed_at_ms,
                now_ms,
            )
            .await?;
        }
    }
    Ok(())
}

/// A ticket raised by an event rather than a reading: a change rule's, or
/// the collector's own (a duplicate hardware identity).
struct EventTicket<'a> {
    host: &'a str,
    rule: &'a str,
    subject: &'a str,
    severity: Severity,
    title: &'a str,
    /// What happened, for the worklog of a repeat or a reopening.
    detail: &'a str,
    opened_note: &'a str,
    evidence: &'a serde_json::Value,
}

/// Raises an event's ticket, deduplicated per (host, rule, subject) like a
/// rule's: one still open counts an occurrence; one resolved within the
/// reopen window reopens; otherwise a new ticket. The rule state then
/// points at it. On PostgreSQL the caller holds the host's evaluation lock.
async fn raise_event_ticket(
    tx: &mut impl TicketTx,
    policy: &Policy,
    tags: &[(String, String)],
    event: &EventTicket<'_>,
    observed_at_ms: i64,
    now_ms: i64,
) -> StoreResult<i64> {
    let host = event.host;
    let (_, ticket) = tx.load_state(host, event.rule, event.subject).await?;
    let previous = match ticket {
        Some(id) => tx
            .ticket_status(id)
            .await?
            .map(|(status, resolved)| (id, status, resolved)),
        None => None,
    };
    let id = match previous {
        Some((id, status, _)) if !matches!(status.as_str(), "resolved" | "closed") => {
            tx.count_occurrence(id, now_ms).await?;
            let note = format!("happened again: {}", event.detail);
            tx.worklog(id, now_ms, "system", &note).await?;
            let change = Change::system(ChangeKind::Occurrence, SYSTEM);
            enqueue_change(tx, TicketEvent::Updated, id, now_ms, &change).await?;
            id
        }
        Some((id, status, Some(resolved)))
            if status == "resolved" && now_ms - resolved <= policy.lifecycle.reopen_window_ms =>
        {
            tx.reopen_fired(id, Some(event.title), now_ms).await?;
            let note = format!("reopened: {}", event.detail);
            tx.worklog(id, now_ms, "system", &note).await?;
            super::triage::on_open(tx, policy, host, event.rule, event.subject, id, now_ms).await?;
            let change = Change::system(ChangeKind::Reopened, SYSTEM).to("open");
            enqueue_change(tx, TicketEvent::Opened, id, now_ms, &change).await?;
            id
        }
        _ => {
            open_ticket(
                tx,
                policy,
                &NewTicket {
                    host,
                    rule: event.rule,
                    subject: event.subject,
                    title: event.title,
                    severity: event.severity,
                    priority: Priority::of(Impact::of(tags), event.severity),
                    evidence: event.evidence,
                    author: "system",
                    note: event.opened_note,
                },
                now_ms,
            )
            .await?
        }
    };
    let state = RuleState::Firing {
        fired_at_ms: observed_at_ms,
    };
    let key = (
        host.to_owned(),
        event.rule.to_owned(),
        event.subject.to_owned(),
    );
    save_state(tx, key, state, Some(id)).await?;
    Ok(id)
}

/// What an enrollment claimed that matched an existing host.
pub struct IdentityClaim<'a> {
    /// The host that had the identity first.
    pub host: &'a str,
    /// The new host the claiming enrollment got instead.
    pub claimed_by_host: &'a str,
    /// The host name the claiming agent stated.
    pub claimed_hostname: &'a str,
    /// The enrollment token it used.
    pub token_id: &'a str,
    /// The hardware UUID it claimed, or empty.
    pub hardware_uuid: &'a str,
    /// The hardware serial it claimed, or empty.
    pub hardware_serial: &'a str,
}

/// Raises the "duplicate hardware identity" ticket on the host an
/// enrollment claimed to be (issue 20): the claim got a new host id, and a
/// technician decides whether it was a reinstall (re-link it) or an
/// impostor. Deduplicated per (host, identity) like every event ticket. On
/// PostgreSQL the caller holds the host's evaluation lock.
pub async fn raise_duplicate_identity(
    tx: &mut impl TicketTx,
    policy: &Policy,
    claim: &IdentityClaim<'_>,
    now_ms: i64,
) -> StoreResult<i64> {
    let tags = host_tags(tx, claim.host).await?;
    let subject = if claim.hardware_serial.is_empty() {
        format!("uuid {}", claim.hardware_uuid)
    } else {
        format!("serial {}", claim.hardware_serial)
    };
    let detail = format!(
        "an enrollment as {:?} claimed {subject} and became host {}",
        claim.claimed_hostname, claim.claimed_by_host
    );
    let evidence = serde_json::json!({
        "rule": DUPLICATE_IDENTITY_RULE,
        "claimed_by_host": claim.claimed_by_host,
        "claimed_hostname": claim.claimed_hostname,
        "enrollment_token": claim.token_id,
        "hardware_uuid": claim.hardware_uuid,
        "hardware_serial": claim.hardware_serial,
        "claimed_at_ms": now_ms,
    });
    raise_event_ticket(
        tx,
        policy,
        &tags,
        &EventTicket {
            host: claim.host,
            rule: DUPLICATE_IDENTITY_RULE,
            subject: &subject,
            severity: Severity::High,
            title: &format!("duplicate hardware identity: {subject} enrolled again"),
            detail: &detail,
            opened_note: &format!(
                "{detail}; re-link it with a re-link token if this PC was reinstalled"
            ),
            evidence: &evidence,
        },
        now_ms,
        now_ms,
    )
    .await
}

/// How long an employee-report ticket, while open, takes in a report from
/// the same host with the same text instead of a new ticket opening.
pub const REPEATED_REPORT_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Opens the ticket of an employee's problem report (D12), with the health
/// sample they sent and the host's recent changes copied in (D23); the same
/// text again from the host, while its ticket is open and within
/// [`REPEATED_REPORT_WINDOW`], is counted and noted on that ticket instead.
/// On PostgreSQL the caller holds the host's evaluation lock.
#[allow(clippy::too_many_arguments)] // the transaction, policy and the event's own fields; a struct would only rename them
pub async fn open_user_issue(
    tx: &mut impl TicketTx,
    policy: &Policy,
    host: &str,
    text: &str,
    os_user: &str,
    report_key: Option<&str>,
    health: &serde_json::Value,
    reported_at_ms: i64,
    now_ms: i64,
) -> StoreResult<i64> {
    // The key's first block: the reference the agent shows the employee
    // (issue 20), so the help desk can find the ticket they mean.
    let reference = report_key.map(|key| key.split('-').next().unwrap_or(key));
    let said = reference.map_or_else(String::new, |r| format!(" (reference {r})"));
    // The same words from the same PC while its ticket is open are one
    // problem: the repeat is counted and noted on that ticket.
    let since = now_ms.saturating_sub(ms(REPEATED_REPORT_WINDOW));
    let same = tx
        .open_user_reports(host, since)
        .await?
        .into_iter()
        .find(|(_, opened_with)| opened_with == text);
    if let Some((ticket, _)) = same {
        tx.count_occurrence(ticket, now_ms).await?;
        tx.worklog(
            ticket,
            now_ms,
            os_user,
            &format!("reported again from the PC by {os_user}{said}"),
        )
        .await?;
        return Ok(ticket);
    }
    let tags = host_tags(tx, host).await?;
    let changes: Vec<serde_json::Value> = tx
        .recent_changes(host, reported_at_ms - 7 * 86_400_000, 20)
        .await?
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "observed_at_ms": c.observed_at_ms,
                "section": c.section,
                "item": c.item,
                "old": c.old,
                "new": c.new,
            })
        })
        .collect();
    let first_line = text.lines().next().unwrap_or(text);
    let mut title: String = first_line.chars().take(120).collect();
    if title.len() < first_line.len() {
        title.push('…');
    }
    let evidence = serde_json::json!({
        "rule": USER_REPORT_RULE,
        "reported_by": os_user,
        "reference": reference,
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
            note: &format!("reported from the PC by {os_user}{said}: {text}"),
        },
        now_ms,
    )
    .await
}

/// Evaluates the offline rules. A sweep looks at each always-on host that
/// has been silent past the smallest threshold, or has an offline rule
/// state to move on; otherwise only hosts whose offline ticket is open and
/// that stream again, so their quiet period starts when they came back.
async fn evaluate_offline(
    tx: &mut impl TicketTx,
    policy: &Policy,
    now_ms: i64,
    sweep: bool,
) -> StoreResult<u64> {
    let rules: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| r.metric == Metric::OfflineMinutes)
        .collect();
    let Some(min_threshold) = rules.iter().map(|r| r.threshold).reduce(f64::min) else {
        return Ok(0);
    };
    let silent_before = now_ms - (min_threshold.max(0.0) * 60_000.0) as i64;
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let hosts = tx
        .offline_candidates(&names, sweep.then_some(silent_before))
        .await?;
    let mut actions = 0;
    for presence in hosts {
        let host = presence.host.as_str();
        let minutes = presence.offline_minutes(now_ms);
        let tags = host_tags(tx, host).await?;
        for rule in rules.iter().filter(|r| r.in_scope(&tags)) {
            let (state, ticket) = tx.load_state(host, &rule.name, "").await?;
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
                    act(tx, policy, host, &tags, &firing, action, ticket, now_ms).await?
                }
                None => ticket,
            };
            if next != state || action.is_some() {
                let key = (host.to_owned(), rule.name.clone(), String::new());
                save_state(tx, key, next, ticket).await?;
            }
        }
    }
    Ok(actions)
}

/// Advances every due timer (quiet periods, reopen windows) and the
/// offline rules (all of them on a `sweep`, else only for hosts back
/// online) to `now_ms`. Returns how many ticket actions it took.
pub async fn advance_timers(
    tx: &mut impl TicketTx,
    policy: &Policy,
    now_ms: i64,
    sweep: bool,
) -> StoreResult<u64> {
    let mut actions = evaluate_offline(tx, policy, now_ms, sweep).await?;
    let lifecycle = policy.lifecycle;
    let due = tx
        .waiting_states(
            now_ms.saturating_sub(lifecycle.quiet_ms),
            now_ms.saturating_sub(lifecycle.reopen_window_ms),
        )
        .await?;
    for (key, (state, ticket)) in due {
        let (host, name, subject) = &key;
        let Some(rule) = policy.rule(name) else {
            // A rule no longer in force: its state has nothing to wait for.
            save_state(tx, key, RuleState::Ok, None).await?;
            continue;
        };
        let (next, action) = step(rule, state, None, now_ms, policy.lifecycle);
        let ticket = match action {
            Some(action) => {
                actions += 1;
                let tags = host_tags(tx, host).await?;
                let firing = Firing {
                    rule,
                    subject,
                    value: None,
                    sample_at_ms: now_ms,
                };
                act(tx, policy, host, &tags, &firing, action, ticket, now_ms).await?
            }
            None => ticket,
        };
        if next != state {
            save_state(tx, key.clone(), next, ticket).await?;
        }
    }
    Ok(actions)
}

/// Opens a manual ticket.
pub async fn create(
    tx: &mut impl TicketTx,
    policy: &Policy,
    opened: &NewManualTicket<'_>,
    now_ms: i64,
) -> StoreResult<TicketRow> {
    let host = opened.host;
    let tags = host_tags(tx, host).await?;
    let priority = opened
        .priority
        .unwrap_or_else(|| Priority::of(Impact::of(&tags), Severity::Medium));
    let id = open_ticket(
        tx,
        policy,
        &NewTicket {
            host,
            rule: "",
            subject: "",
            title: opened.title,
            severity: Severity::Medium,
            priority,
            evidence: &serde_json::json!({}),
            author: opened.author,
            note: "opened by hand",
        },
        now_ms,
    )
    .await?;
    let entry = AuditEntry {
        action: "ticket.create".into(),
        subject: format!("ticket {id} on host {host}"),
        detail: opened.title.to_owned(),
        ..opened.by.clone()
    };
    tx.audit(&entry, now_ms).await?;
    tx.ticket(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} vanished")))
}

/// Why a ticket cannot go to `name`, if it cannot: a technician is a name
/// an API token was made for, and a viewer cannot work tickets.
async fn unassignable(tx: &mut impl TicketTx, name: &str) -> StoreResult<Option<String>> {
    Ok(match tx.technician_role(name).await?.as_deref() {
        None => Some(format!(
            "no technician named {name:?}; assign the name of a technician with an API token \
             (`deskpulse tokens` lists them)"
        )),
        Some("viewer") => Some(format!(
            "{name:?} is a viewer and cannot work tickets; assign a technician or an admin"
        )),
        Some(_) => None,
    })
}

/// Applies a technician's change, audited as `by` (who acted; the action,
/// subject and detail are the change's) in the same transaction.
pub async fn update(
    tx: &mut impl TicketTx,
    policy: &Policy,
    id: i64,
    change: &TicketChange,
    author: &str,
    by: &AuditEntry,
    now_ms: i64,
) -> StoreResult<Result<TicketRow, TicketRefusal>> {
    let Some(before) = tx.ticket_for_change(id).await? else {
        return Ok(Err(TicketRefusal::NotFound));
    };
    let closed = matches!(before.status.as_str(), "resolved" | "closed");
    let note = match change {
        TicketChange::Assign(name) => {
            if let Some(why) = unassignable(tx, name).await? {
                return Ok(Err(TicketRefusal::Invalid(why)));
            }
            tx.write_ticket(id, TicketWrite::Assign(name), now_ms)
                .await?;
            format!("assigned to {name}")
        }
        TicketChange::Note(text) | TicketChange::PublicNote(text) => text.clone(),
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
            tx.write_ticket(id, TicketWrite::Status(status), now_ms)
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
            tx.write_ticket(id, TicketWrite::Resolve(resolution), now_ms)
                .await?;
            format!("resolved: {resolution}")
        }
        TicketChange::Escalate => {
            tx.write_ticket(id, TicketWrite::Escalate, now_ms).await?;
            format!("escalated to level {}", before.escalation + 1)
        }
        TicketChange::Reopen => {
            if !closed {
                return Ok(Err(TicketRefusal::Invalid(format!(
                    "ticket {id} is {}, not resolved or closed",
                    before.status
                ))));
            }
            tx.write_ticket(id, TicketWrite::Reopen, now_ms).await?;
            "reopened by hand".into()
        }
    };
    // The SLA clock pauses while waiting (D22): the business time that was
    // left when waiting began is counted again from now.
    let waiting_now = matches!(change, TicketChange::Status(s) if s == "waiting");
    if waiting_now && before.status != "waiting" {
        tx.start_waiting(id, now_ms).await?;
    } else if before.status == "waiting"
        && !waiting_now
        && !matches!(
            change,
            TicketChange::Note(_)
                | TicketChange::PublicNote(_)
                | TicketChange::Assign(_)
                | TicketChange::Escalate
        )
        && let Some(since) = tx.waiting_since(id).await?
    {
        let left = policy.calendar.between(since, before.resolution_due_ms);
        tx.end_waiting(id, policy.calendar.add(now_ms, left))
            .await?;
    }
    // The first technician action meets the response target.
    tx.mark_response(id, now_ms).await?;
    let public = matches!(change, TicketChange::PublicNote(_));
    if public {
        tx.public_worklog(id, now_ms, author, &note).await?;
    } else {
        tx.worklog(id, now_ms, author, &note).await?;
    }
    let entry = AuditEntry {
        action: audit_action(change).into(),
        subject: format!("ticket {id} on host {}", before.host_id),
        detail: if public {
            format!("(public) {note}")
        } else {
            note
        },
        ..by.clone()
    };
    tx.audit(&entry, now_ms).await?;
    let said = Change::of(change, &before, author);
    let event = crate::webhooks::format::event_of(change);
    enqueue_change(tx, event, id, now_ms, &said).await?;
    let after = tx
        .ticket(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("ticket {id} vanished")))?;
    Ok(Ok(after))
}

/// The audit action of a technician's change of a ticket.
fn audit_action(change: &TicketChange) -> &'static str {
    match change {
        TicketChange::Assign(_) => "ticket.assign",
        TicketChange::Note(_) | TicketChange::PublicNote(_) => "ticket.note",
        TicketChange::Status(_) => "ticket.status",
        TicketChange::Resolve(_) => "ticket.resolve",
        TicketChange::Escalate => "ticket.escalate",
        TicketChange::Reopen => "ticket.reopen",
    }
}

/// Escalates missed SLA targets once each, and closes resolved tickets past
/// the reopen window (D22).
pub async fn advance_sla(tx: &mut impl TicketTx, policy: &Policy, now_ms: i64) -> StoreResult<u64> {
    let mut changed = 0;
    for target in [SlaTarget::Response, SlaTarget::Resolution] {
        for (id, level) in tx.missed(target, now_ms).await? {
            tx.escalate_missed(id, target, now_ms).await?;
            let note = format!(
                "SLA {} target missed: escalated to level {}",
                target.name(),
                level + 1
            );
            tx.worklog(id, now_ms, "system", &note).await?;
            let change = Change::moved(
                ChangeKind::Escalated,
                SYSTEM,
                Some(level.to_string()),
                Some((level + 1).to_string()),
            );
            enqueue_change(tx, TicketEvent::Escalated, id, now_ms, &change).await?;
            changed += 1;
        }
    }
    let closed = tx
        .close_resolved(now_ms - policy.lifecycle.reopen_window_ms, now_ms)
        .await?;
    Ok(changed + closed)
}
