//! Fleet-wide problems (issue 23), decided once for both backends: when
//! the same rule fires on many hosts within the policy's window, or
//! employees report the same words from many PCs, their tickets are linked
//! under one problem.
//!
//! - Linking happens in the transaction that opens the ticket
//!   ([`link`], called by `tickets::open_ticket`): the ticket is recorded
//!   with its group key, then one indexed read finds the problem still
//!   gathering that key, and, when there is none, one indexed count of
//!   the key's unlinked tickets in the window says whether a problem forms.
//! - Two replicas must not each open a problem for one key: the gathering
//!   key is unique, a new problem is inserted with `ON CONFLICT DO
//!   NOTHING`, and the loser of the race reads and joins the winner's. A
//!   ticket that opened beside the winner's transaction, unseen by it, is
//!   swept in by the next ticket that joins.
//! - A ticket's later life reaches its problem through the webhook
//!   `enqueue` every ticket change makes ([`ticket_event`]): the last open
//!   ticket resolving resolves the problem, one reopening reopens it.
//! - [`resolve`] resolves the problem and then each open ticket through
//!   the ticket engine's own path (`tickets::update`), so SLA, worklog,
//!   audit and webhook events happen per ticket; the tickets carry the
//!   problem's resolution into the knowledge base.

use crate::rules::policy::Policy;
use crate::rules::priority::Priority;
use crate::rules::problems::{GroupKey, ProblemRefusal, ProblemRow, problem_priority};
use crate::store::engine::tickets::{NewTicket, OutboxEntry, TicketTx, update};
use crate::store::{AuditEntry, StoreError, StoreResult, TicketChange, TicketEvent};

/// What a problem's tickets add up to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tallies {
    /// Distinct hosts.
    pub hosts: i64,
    /// Tickets.
    pub tickets: i64,
    /// Tickets neither resolved nor closed.
    pub open_tickets: i64,
    /// The hosts' weight in quarters (`rules::problems::weight_quarters`).
    pub weight_quarters: i64,
    /// The best priority among its tickets.
    pub best_priority: Option<Priority>,
}

/// A problem's status and resolution, as a write sets them.
#[derive(Debug, Clone, Copy)]
pub struct Settle<'a> {
    /// `open` or `resolved`.
    pub status: &'a str,
    /// The resolution, when resolved.
    pub resolution: Option<&'a str>,
    /// Who resolved it.
    pub resolved_by: Option<&'a str>,
}

/// One open write transaction as the problem engine uses it: each method
/// is one SQL statement, and decides nothing.
pub trait ProblemTx: Send {
    /// Records that `ticket` may join a problem of `gathering`.
    async fn insert_member(
        &mut self,
        ticket: i64,
        gathering: &str,
        host: &str,
        priority: Priority,
        opened_at_ms: i64,
    ) -> StoreResult<()>;
    /// The problem gathering `gathering`, with when its latest ticket joined.
    async fn gathering_problem(&mut self, gathering: &str) -> StoreResult<Option<(i64, i64)>>;
    /// How many hosts opened unlinked tickets of `gathering` since `since_ms`.
    async fn unlinked_hosts(&mut self, gathering: &str, since_ms: i64) -> StoreResult<i64>;
    /// Ends `problem`'s gathering, so a new problem may gather its key.
    async fn stop_gathering(&mut self, problem: i64) -> StoreResult<()>;
    /// Inserts a gathering problem; `None` when one gathers the key already.
    async fn insert_problem(
        &mut self,
        key: &GroupKey,
        priority: Priority,
        now_ms: i64,
    ) -> StoreResult<Option<i64>>;
    /// Links the unlinked tickets of `gathering` opened since `since_ms` to
    /// `problem`; the tickets it linked.
    async fn link_unlinked(
        &mut self,
        gathering: &str,
        since_ms: i64,
        problem: i64,
    ) -> StoreResult<Vec<i64>>;
    /// What `problem`'s tickets add up to.
    async fn tallies(&mut self, problem: i64) -> StoreResult<Tallies>;
    /// What `joined`, tickets just linked to `problem`, add to its tallies:
    /// their hosts that had no ticket in it yet, read through indexes, so
    /// a join costs the same at the thousandth ticket as at the tenth.
    async fn joined_tallies(&mut self, problem: i64, joined: &[i64]) -> StoreResult<Tallies>;
    /// Writes the tallies and priority; `joined_at_ms` moves its latest join.
    async fn write_tallies(
        &mut self,
        problem: i64,
        tallies: &Tallies,
        priority: Priority,
        joined_at_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// A problem, locked for this transaction's change where locks exist.
    async fn problem_for_change(&mut self, problem: i64) -> StoreResult<Option<ProblemRow>>;
    /// The problem a ticket joined, if any.
    async fn problem_of(&mut self, ticket: i64) -> StoreResult<Option<i64>>;
    /// Sets status and resolution (and ends the gathering when resolved).
    async fn settle_problem(
        &mut self,
        problem: i64,
        settle: Settle<'_>,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Appends a line to the problem's timeline.
    async fn problem_log(
        &mut self,
        problem: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()>;
    /// The problem's tickets that are neither resolved nor closed, locked
    /// for this transaction's change where locks exist.
    async fn open_members(&mut self, problem: i64) -> StoreResult<Vec<i64>>;
}

/// Queues a problem event (`problem.opened` …) to every enabled webhook
/// that subscribes to it, through the tickets' outbox. The outbox orders
/// deliveries per `ticket_id`; a problem's go under minus its id, so they
/// keep their own order and never wait behind a ticket's.
async fn enqueue_problem(
    tx: &mut impl TicketTx,
    event: TicketEvent,
    problem: i64,
    now_ms: i64,
) -> StoreResult<()> {
    let hooks = tx.subscribers(event).await?;
    if hooks.is_empty() {
        return Ok(());
    }
    let Some(row) = tx.problem_for_change(problem).await? else {
        return Err(StoreError::Corrupt(format!("problem {problem} vanished")));
    };
    let shown = crate::webhooks::problems::ProblemPayload::of(&row);
    // Routed by the problem's priority, decided now, as a ticket's is.
    let routed = hooks.iter().filter_map(|hook| {
        Some((
            hook,
            crate::webhooks::route::problem_recipient(hook, &row.priority)?,
        ))
    });
    for (hook, recipient) in routed {
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let body = crate::webhooks::problems::payload(event, &delivery_id, now_ms, &shown);
        // Chat and e-mail texts are rendered at delivery from the stored
        // body; a problem has no one PC's evidence to summarise.
        let body = match hook.route.format {
            crate::model::WebhookFormat::Generic => body,
            _ => crate::webhooks::render::stored_body(&body, ""),
        };
        let entry = OutboxEntry {
            webhook_id: hook.id,
            delivery_id: &delivery_id,
            event,
            ticket_id: -problem,
            body: &body,
            recipient: recipient.as_deref(),
        };
        tx.insert_outbox(&entry, now_ms).await?;
    }
    Ok(())
}

/// Links a ticket just opened to the problem of its group key, opening
/// the problem when enough hosts opened tickets of the key in the window.
/// In the common case (no problem gathering the key) this is one insert
/// and two indexed reads.
pub async fn link(
    tx: &mut impl TicketTx,
    policy: &Policy,
    ticket: i64,
    new: &NewTicket<'_>,
    now_ms: i64,
) -> StoreResult<()> {
    if !policy.problems.enabled {
        return Ok(());
    }
    let report_text = new.evidence.get("text").and_then(serde_json::Value::as_str);
    let Some(key) = GroupKey::of(new.rule, report_text) else {
        return Ok(());
    };
    let rules = policy.problems;
    let gathering = key.gathering();
    tx.insert_member(ticket, &gathering, new.host, new.priority, now_ms)
        .await?;
    let since = now_ms.saturating_sub(rules.window_ms);
    let current = tx.gathering_problem(&gathering).await?;
    if let Some((problem, last_joined)) = current
        && last_joined >= since
    {
        let joined = tx.link_unlinked(&gathering, since, problem).await?;
        return after_join(tx, problem, &joined, false, now_ms).await;
    }
    if tx.unlinked_hosts(&gathering, since).await? < i64::from(rules.hosts) {
        return Ok(());
    }
    if let Some((stale, _)) = current {
        // Quiet for a whole window: this outbreak is a problem of its own.
        tx.stop_gathering(stale).await?;
        let note = format!(
            "no ticket joined for {}: a new outbreak gathers its own problem",
            crate::units::duration_ms(rules.window_ms)
        );
        tx.problem_log(stale, now_ms, "system", &note).await?;
    }
    let (problem, created) = match tx.insert_problem(&key, new.priority, now_ms).await? {
        Some(id) => (id, true),
        // Another replica opened it a moment ago: join it.
        None => {
            let (id, _) = tx
                .gathering_problem(&gathering)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("problem of {gathering:?} vanished")))?;
            (id, false)
        }
    };
    let joined = tx.link_unlinked(&gathering, since, problem).await?;
    after_join(tx, problem, &joined, created, now_ms).await
}

/// Notes the join on each ticket, refreshes the problem's tallies and
/// priority, and logs and announces an opening or a raised priority.
async fn after_join(
    tx: &mut impl TicketTx,
    problem: i64,
    joined: &[i64],
    created: bool,
    now_ms: i64,
) -> StoreResult<()> {
    let Some(before) = tx.problem_for_change(problem).await? else {
        return Err(StoreError::Corrupt(format!("problem {problem} vanished")));
    };
    for ticket in joined {
        let note = format!("linked to problem {problem}: {}", before.title);
        tx.worklog(*ticket, now_ms, "system", &note).await?;
    }
    let tallies = if created {
        tx.tallies(problem).await?
    } else {
        let added = tx.joined_tallies(problem, joined).await?;
        let best = Priority::parse(&before.best_ticket_priority).ok();
        Tallies {
            hosts: before.hosts + added.hosts,
            tickets: before.tickets + added.tickets,
            open_tickets: before.open_tickets + added.open_tickets,
            weight_quarters: before.weight_quarters + added.weight_quarters,
            best_priority: best.into_iter().chain(added.best_priority).min(),
        }
    };
    let priority = priority_of(&tallies);
    tx.write_tallies(problem, &tallies, priority, Some(now_ms), now_ms)
        .await?;
    if created {
        let note = format!(
            "opened: {} hosts, {} tickets; priority {}",
            tallies.hosts,
            tallies.tickets,
            priority.name()
        );
        tx.problem_log(problem, now_ms, "system", &note).await?;
        enqueue_problem(tx, TicketEvent::ProblemOpened, problem, now_ms).await?;
    } else if priority.name() < before.priority.as_str() {
        let note = format!(
            "priority {} -> {}: {} hosts",
            before.priority,
            priority.name(),
            tallies.hosts
        );
        tx.problem_log(problem, now_ms, "system", &note).await?;
        enqueue_problem(tx, TicketEvent::ProblemUpdated, problem, now_ms).await?;
    }
    Ok(())
}

/// The priority tallies give: the best ticket priority raised by weight.
fn priority_of(tallies: &Tallies) -> Priority {
    problem_priority(
        tallies.best_priority.unwrap_or(Priority::P4),
        tallies.weight_quarters,
    )
}

/// Keeps a ticket's problem in step with the ticket: called for every
/// ticket event. A resolved ticket that was the problem's last open one
/// resolves the problem; a reopened ticket reopens a resolved problem.
/// Other events, and tickets in no problem, cost one indexed read at most.
pub async fn ticket_event(
    tx: &mut impl TicketTx,
    event: TicketEvent,
    ticket: i64,
    now_ms: i64,
) -> StoreResult<()> {
    if !matches!(
        event,
        TicketEvent::Resolved | TicketEvent::Opened | TicketEvent::Updated
    ) {
        return Ok(());
    }
    let Some(problem) = tx.problem_of(ticket).await? else {
        return Ok(());
    };
    // An update matters only when it closed the ticket (a retired host's
    // tickets are closed by a status change); the problem row is not
    // locked for the occurrences counted on the ingest path.
    let closed = match event {
        TicketEvent::Updated => {
            let status = tx.ticket_status(ticket).await?.map(|(status, _)| status);
            if status.as_deref() != Some("closed") {
                return Ok(());
            }
            true
        }
        _ => false,
    };
    let Some(row) = tx.problem_for_change(problem).await? else {
        return Ok(());
    };
    let settled = matches!(event, TicketEvent::Resolved) || closed;
    match (settled, event, row.status.as_str()) {
        (true, _, "open") => {
            let tallies = tx.tallies(problem).await?;
            let priority = priority_of(&tallies);
            tx.write_tallies(problem, &tallies, priority, None, now_ms)
                .await?;
            if tallies.open_tickets == 0 {
                let resolution = "all its tickets resolved";
                let settle = Settle {
                    status: "resolved",
                    resolution: Some(resolution),
                    resolved_by: Some("system"),
                };
                tx.settle_problem(problem, settle, now_ms).await?;
                let note = format!("resolved: {resolution} (the last, ticket {ticket})");
                tx.problem_log(problem, now_ms, "system", &note).await?;
                enqueue_problem(tx, TicketEvent::ProblemResolved, problem, now_ms).await?;
            }
        }
        (false, TicketEvent::Opened, "resolved") => {
            let settle = Settle {
                status: "open",
                resolution: None,
                resolved_by: None,
            };
            tx.settle_problem(problem, settle, now_ms).await?;
            let tallies = tx.tallies(problem).await?;
            let priority = priority_of(&tallies);
            tx.write_tallies(problem, &tallies, priority, None, now_ms)
                .await?;
            let note = format!("reopened: ticket {ticket} reopened");
            tx.problem_log(problem, now_ms, "system", &note).await?;
            enqueue_problem(tx, TicketEvent::ProblemUpdated, problem, now_ms).await?;
        }
        // A reopened ticket of an open problem counts as open again (a new
        // one was counted when it joined).
        (false, TicketEvent::Opened, "open") => {
            let reopened = tx
                .ticket(ticket)
                .await?
                .is_some_and(|t| t.opened_at_ms < now_ms);
            if !reopened {
                return Ok(());
            }
            let tallies = tx.tallies(problem).await?;
            if tallies.open_tickets != row.open_tickets {
                let priority = priority_of(&tallies);
                tx.write_tallies(problem, &tallies, priority, None, now_ms)
                    .await?;
            }
        }
        // The problem's own resolution cascading to its tickets: the
        // cascade writes the tallies once at its end.
        _ => {}
    }
    Ok(())
}

/// Resolves a problem and then each of its open tickets through the
/// ticket engine's resolve (`tickets::update`), audited as `by`; every
/// ticket gets the same resolution, which is how the problem enters the
/// knowledge base.
pub async fn resolve(
    tx: &mut impl TicketTx,
    policy: &Policy,
    problem: i64,
    resolution: &str,
    author: &str,
    by: &AuditEntry,
    now_ms: i64,
) -> StoreResult<Result<ProblemRow, ProblemRefusal>> {
    let resolution = resolution.trim();
    if resolution.is_empty() {
        return Ok(Err(ProblemRefusal::Invalid(
            "a problem is resolved with a resolution text saying what fixed it".into(),
        )));
    }
    // Its open tickets are locked before the problem, in the order of a
    // ticket change (ticket, then its problem).
    let tickets = tx.open_members(problem).await?;
    let Some(before) = tx.problem_for_change(problem).await? else {
        return Ok(Err(ProblemRefusal::NotFound));
    };
    if before.status != "open" {
        return Ok(Err(ProblemRefusal::Invalid(format!(
            "problem {problem} is already {}",
            before.status
        ))));
    }
    let settle = Settle {
        status: "resolved",
        resolution: Some(resolution),
        resolved_by: Some(author),
    };
    tx.settle_problem(problem, settle, now_ms).await?;
    let note = format!(
        "resolved by {author}: {resolution} ({} open tickets resolved with it)",
        tickets.len()
    );
    tx.problem_log(problem, now_ms, author, &note).await?;
    let entry = AuditEntry {
        action: "problem.resolve".into(),
        subject: format!("problem {problem}"),
        detail: note,
        ..by.clone()
    };
    tx.audit(&entry, now_ms).await?;
    let change = TicketChange::Resolve(resolution.to_owned());
    for ticket in tickets {
        if let Err(refusal) = update(tx, policy, ticket, &change, author, by, now_ms).await? {
            // Only a ticket resolved meanwhile is refused; it keeps its own.
            tracing::debug!(ticket, ?refusal, "problem resolve passed a ticket over");
        }
    }
    let tallies = tx.tallies(problem).await?;
    tx.write_tallies(problem, &tallies, priority_of(&tallies), None, now_ms)
        .await?;
    enqueue_problem(tx, TicketEvent::ProblemResolved, problem, now_ms).await?;
    tx.problem_for_change(problem)
        .await?
        .map(Ok)
        .ok_or_else(|| StoreError::Corrupt(format!("problem {problem} vanished")))
}
