//! Fleet-wide problems (issue 23), the same SQL on both backends: the
//! problem engine's transaction ([`ProblemTx`] for the ticket engine's
//! connection, so it runs inside the transaction that opens a ticket), and
//! [`ProblemQueries`], the store calls behind `deskpulse problems`,
//! `problem show` and `problem resolve`.
//!
//! Concurrency on PostgreSQL: `problems.gathering_key` is unique, so of
//! two transactions opening a problem for one key the second's insert
//! waits for the first and then does nothing (`ON CONFLICT DO NOTHING`);
//! it reads the first's problem and joins it. A change of a problem locks
//! its row (`FOR UPDATE`) before reading it. Lock order: host, ticket,
//! problem.

use std::future::Future;

use async_trait::async_trait;
use sqlx::{Pool, QueryBuilder, Transaction};

use super::tickets::{BackendSql, TicketConn};
use super::{Dialect, SendFuture, Value, push_in, push_values};
use crate::rules::priority::Priority;
use crate::rules::problems::{CommonChange, GroupKey, ProblemRefusal, ProblemRow, shared_enough};
use crate::store::engine::problems::{self as engine, ProblemTx, Settle, Tallies};
use crate::store::rows::{Columns, TICKET_COLUMNS, ticket_row};
use crate::store::shared::SqlBackend;
use crate::store::{AuditEntry, StoreResult, TicketRow, WorklogEntry};

/// The columns [`problem_row`] reads.
const PROBLEM_COLUMNS: &str = "id, kind, group_key, title, status, priority, hosts, tickets, \
     open_tickets, weight_quarters, best_ticket_priority, opened_at_ms, updated_at_ms, last_joined_at_ms, resolved_at_ms, resolved_by, \
     resolution";

/// A problem row, from [`PROBLEM_COLUMNS`].
fn problem_row(r: &(impl Columns + ?Sized)) -> StoreResult<ProblemRow> {
    Ok(ProblemRow {
        id: r.int("id")?,
        kind: r.text("kind")?,
        key: r.text("group_key")?,
        title: r.text("title")?,
        status: r.text("status")?,
        priority: r.text("priority")?,
        hosts: r.int("hosts")?,
        tickets: r.int("tickets")?,
        open_tickets: r.int("open_tickets")?,
        weight_quarters: r.int("weight_quarters")?,
        best_ticket_priority: r.text("best_ticket_priority")?,
        opened_at_ms: r.int("opened_at_ms")?,
        updated_at_ms: r.int("updated_at_ms")?,
        last_joined_at_ms: r.int("last_joined_at_ms")?,
        resolved_at_ms: r.opt_int("resolved_at_ms")?,
        resolved_by: r.opt_text("resolved_by")?,
        resolution: r.opt_text("resolution")?,
    })
}

/// The open statuses of a ticket, as SQL.
const OPEN: &str = "status NOT IN ('resolved', 'closed')";

/// How many tickets, how many of them open, and their best priority, of
/// the `problem_tickets` rows (`m`) the caller's condition picks after
/// `WHERE `.
fn ticket_counts<B: BackendSql>() -> QueryBuilder<B> {
    QueryBuilder::new(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS tickets, \
         CAST(COALESCE(SUM(CASE WHEN t.{OPEN} THEN 1 ELSE 0 END), 0) AS BIGINT) AS open, \
         MIN(m.priority) AS best FROM problem_tickets m JOIN tickets t ON t.id = m.ticket_id \
         WHERE "
    ))
}

/// Runs a [`ticket_counts`] query: (tickets, open, best priority).
async fn read_ticket_counts<B: BackendSql>(
    conn: &mut B::Connection,
    sql: QueryBuilder<B>,
) -> StoreResult<(i64, i64, Option<String>)> {
    Ok(B::optional_in(conn, sql, |r| {
        Ok((r.int("tickets")?, r.int("open")?, r.opt_text("best")?))
    })
    .await?
    .unwrap_or((0, 0, None)))
}

impl<B: BackendSql> ProblemTx for TicketConn<'_, B> {
    async fn insert_member(
        &mut self,
        ticket: i64,
        gathering: &str,
        host: &str,
        priority: Priority,
        opened_at_ms: i64,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO problem_tickets (ticket_id, gathering_key, host_id, priority, \
             opened_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Int(ticket),
                Value::Text(gathering),
                Value::Text(host),
                Value::Text(priority.name()),
                Value::Int(opened_at_ms),
            ],
        );
        sql.push(")");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn gathering_problem(&mut self, gathering: &str) -> StoreResult<Option<(i64, i64)>> {
        let mut sql =
            QueryBuilder::new("SELECT id, last_joined_at_ms FROM problems WHERE gathering_key = ");
        B::text(&mut sql, gathering);
        B::optional_in(self.0, sql, |r| {
            Ok((r.int("id")?, r.int("last_joined_at_ms")?))
        })
        .await
    }

    async fn unlinked_hosts(&mut self, gathering: &str, since_ms: i64) -> StoreResult<i64> {
        let mut sql = QueryBuilder::new(
            "SELECT COUNT(DISTINCT host_id) AS hosts FROM problem_tickets \
             WHERE problem_id IS NULL AND gathering_key = ",
        );
        B::text(&mut sql, gathering);
        sql.push(" AND opened_at_ms >= ");
        B::int(&mut sql, since_ms);
        Ok(B::optional_in(self.0, sql, |r| r.int("hosts"))
            .await?
            .unwrap_or(0))
    }

    async fn stop_gathering(&mut self, problem: i64) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("UPDATE problems SET gathering_key = NULL WHERE id = ");
        B::int(&mut sql, problem);
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn insert_problem(
        &mut self,
        key: &GroupKey,
        priority: Priority,
        now_ms: i64,
    ) -> StoreResult<Option<i64>> {
        let mut sql = QueryBuilder::new(
            "INSERT INTO problems (kind, group_key, gathering_key, title, status, priority, \
             opened_at_ms, updated_at_ms, last_joined_at_ms) VALUES (",
        );
        let gathering = key.gathering();
        let title = key.title();
        push_values(
            &mut sql,
            &[
                Value::Text(key.kind()),
                Value::Text(key.text()),
                Value::Text(&gathering),
                Value::Text(&title),
                Value::Text("open"),
                Value::Text(priority.name()),
                Value::Int(now_ms),
                Value::Int(now_ms),
                Value::Int(now_ms),
            ],
        );
        sql.push(") ON CONFLICT DO NOTHING RETURNING id");
        B::optional_in(self.0, sql, |r| r.int("id")).await
    }

    async fn link_unlinked(
        &mut self,
        gathering: &str,
        since_ms: i64,
        problem: i64,
    ) -> StoreResult<Vec<i64>> {
        let mut sql = QueryBuilder::new("UPDATE problem_tickets SET problem_id = ");
        B::int(&mut sql, problem);
        sql.push(" WHERE problem_id IS NULL AND gathering_key = ");
        B::text(&mut sql, gathering);
        sql.push(" AND opened_at_ms >= ");
        B::int(&mut sql, since_ms);
        sql.push(" RETURNING ticket_id");
        let mut linked = B::all_in(self.0, sql, |r| r.int("ticket_id")).await?;
        linked.sort_unstable();
        Ok(linked)
    }

    async fn tallies(&mut self, problem: i64) -> StoreResult<Tallies> {
        // One pass over the problem's rows (its index) and their tickets:
        // hosts weighed by criticality (high 16, low 1, else 4 quarters).
        let mut sql = QueryBuilder::new(
            "SELECT CAST(COUNT(*) AS BIGINT) AS hosts, CAST(COALESCE(SUM(w), 0) AS BIGINT) AS weight \
             FROM (SELECT m.host_id, MAX(CASE g.value WHEN 'high' THEN 16 WHEN 'low' THEN 1 \
             ELSE 4 END) AS w FROM problem_tickets m LEFT JOIN host_tags g \
             ON g.host_id = m.host_id AND g.key = 'criticality' WHERE m.problem_id = ",
        );
        B::int(&mut sql, problem);
        sql.push(" GROUP BY m.host_id) weighed");
        let (hosts, weight) =
            B::optional_in(self.0, sql, |r| Ok((r.int("hosts")?, r.int("weight")?)))
                .await?
                .unwrap_or((0, 0));
        let mut sql = ticket_counts::<B>();
        sql.push("m.problem_id = ");
        B::int(&mut sql, problem);
        let (tickets, open, best) = read_ticket_counts::<B>(self.0, sql).await?;
        Ok(Tallies {
            hosts,
            tickets,
            open_tickets: open,
            weight_quarters: weight,
            best_priority: best.and_then(|p| Priority::parse(&p).ok()),
        })
    }

    async fn joined_tallies(&mut self, problem: i64, joined: &[i64]) -> StoreResult<Tallies> {
        if joined.is_empty() {
            return Ok(Tallies {
                hosts: 0,
                tickets: 0,
                open_tickets: 0,
                weight_quarters: 0,
                best_priority: None,
            });
        }
        let ids = |sql: &mut QueryBuilder<B>| push_in(sql, joined.iter().map(|id| Value::Int(*id)));
        // The joined tickets' hosts that had no ticket in the problem yet,
        // through the (problem, host) index: what they add.
        let mut sql = QueryBuilder::new(
            "SELECT CAST(COUNT(*) AS BIGINT) AS hosts, CAST(COALESCE(SUM(w), 0) AS BIGINT) AS weight \
             FROM (SELECT m.host_id, MAX(CASE g.value WHEN 'high' THEN 16 WHEN 'low' THEN 1 \
             ELSE 4 END) AS w FROM problem_tickets m LEFT JOIN host_tags g \
             ON g.host_id = m.host_id AND g.key = 'criticality' WHERE m.ticket_id",
        );
        ids(&mut sql);
        sql.push(" AND NOT EXISTS (SELECT 1 FROM problem_tickets o WHERE o.problem_id = ");
        B::int(&mut sql, problem);
        sql.push(" AND o.host_id = m.host_id AND o.ticket_id NOT");
        ids(&mut sql);
        sql.push(") GROUP BY m.host_id) added");
        let (hosts, weight) =
            B::optional_in(self.0, sql, |r| Ok((r.int("hosts")?, r.int("weight")?)))
                .await?
                .unwrap_or((0, 0));
        let mut sql = ticket_counts::<B>();
        sql.push("m.ticket_id");
        ids(&mut sql);
        let (tickets, open, best) = read_ticket_counts::<B>(self.0, sql).await?;
        Ok(Tallies {
            hosts,
            tickets,
            open_tickets: open,
            weight_quarters: weight,
            best_priority: best.and_then(|p| Priority::parse(&p).ok()),
        })
    }

    async fn write_tallies(
        &mut self,
        problem: i64,
        tallies: &Tallies,
        priority: Priority,
        joined_at_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut sql = QueryBuilder::new("UPDATE problems SET hosts = ");
        B::int(&mut sql, tallies.hosts);
        sql.push(", tickets = ");
        B::int(&mut sql, tallies.tickets);
        sql.push(", open_tickets = ");
        B::int(&mut sql, tallies.open_tickets);
        sql.push(", weight_quarters = ");
        B::int(&mut sql, tallies.weight_quarters);
        sql.push(", best_ticket_priority = ");
        B::text(
            &mut sql,
            tallies.best_priority.unwrap_or(Priority::P4).name(),
        );
        sql.push(", priority = ");
        B::text(&mut sql, priority.name());
        sql.push(", updated_at_ms = ");
        B::int(&mut sql, now_ms);
        if let Some(at) = joined_at_ms {
            sql.push(", last_joined_at_ms = ");
            B::int(&mut sql, at);
        }
        sql.push(" WHERE id = ");
        B::int(&mut sql, problem);
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn problem_for_change(&mut self, problem: i64) -> StoreResult<Option<ProblemRow>> {
        let mut sql = QueryBuilder::new(format!(
            "SELECT {PROBLEM_COLUMNS} FROM problems WHERE id = "
        ));
        B::int(&mut sql, problem);
        sql.push(B::LOCK_ROWS);
        B::optional_in(self.0, sql, |r| problem_row(r)).await
    }

    async fn problem_of(&mut self, ticket: i64) -> StoreResult<Option<i64>> {
        let mut sql =
            QueryBuilder::new("SELECT problem_id FROM problem_tickets WHERE ticket_id = ");
        B::int(&mut sql, ticket);
        Ok(B::optional_in(self.0, sql, |r| r.opt_int("problem_id"))
            .await?
            .flatten())
    }

    async fn settle_problem(
        &mut self,
        problem: i64,
        settle: Settle<'_>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let resolved = settle.status == "resolved";
        let mut sql = QueryBuilder::new("UPDATE problems SET status = ");
        B::text(&mut sql, settle.status);
        sql.push(", resolution = ");
        B::value(&mut sql, Value::MaybeText(settle.resolution));
        sql.push(", resolved_by = ");
        B::value(&mut sql, Value::MaybeText(settle.resolved_by));
        sql.push(", resolved_at_ms = ");
        B::value(&mut sql, Value::MaybeInt(resolved.then_some(now_ms)));
        sql.push(", updated_at_ms = ");
        B::int(&mut sql, now_ms);
        if resolved {
            // A resolved problem gathers no more tickets; the next outbreak
            // of its key opens a new one.
            sql.push(", gathering_key = NULL");
        }
        sql.push(" WHERE id = ");
        B::int(&mut sql, problem);
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn problem_log(
        &mut self,
        problem: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()> {
        let mut sql =
            QueryBuilder::new("INSERT INTO problem_log (problem_id, at_ms, author, note) VALUES (");
        push_values(
            &mut sql,
            &[
                Value::Int(problem),
                Value::Int(at_ms),
                Value::Text(author),
                Value::Text(note),
            ],
        );
        sql.push(")");
        B::execute_in(self.0, sql).await?;
        Ok(())
    }

    async fn open_members(&mut self, problem: i64) -> StoreResult<Vec<i64>> {
        let mut sql = QueryBuilder::new(format!(
            "SELECT m.ticket_id FROM problem_tickets m JOIN tickets t ON t.id = m.ticket_id \
             WHERE t.{OPEN} AND m.problem_id = "
        ));
        B::int(&mut sql, problem);
        sql.push(" ORDER BY m.ticket_id");
        sql.push(B::LOCK_ROWS);
        B::all_in(self.0, sql, |r| r.int("ticket_id")).await
    }
}

/// A problem as `problem show` shows it.
#[derive(Debug, Clone)]
pub struct ProblemDetail {
    /// The problem.
    pub problem: ProblemRow,
    /// Its tickets, oldest first.
    pub tickets: Vec<TicketRow>,
    /// The changes its hosts share, most shared first.
    pub common_changes: Vec<CommonChange>,
    /// Its timeline, oldest first.
    pub log: Vec<WorklogEntry>,
}

/// A problem in a list, with the change its hosts share most.
#[derive(Debug, Clone)]
pub struct ProblemSummary {
    /// The problem.
    pub problem: ProblemRow,
    /// The change most of its hosts share, if one is shared enough.
    pub common_change: Option<CommonChange>,
}

/// The most common changes named for one problem.
const COMMON_CHANGES_SHOWN: i64 = 5;

/// The changes `problem`'s hosts share: each ticket's host's change log in
/// the `window_ms` before it opened, read through the change log's
/// (host, time) index once per ticket, grouped by what changed and to what.
async fn common_changes<B: Dialect>(
    conn: &mut B::Connection,
    problem: &ProblemRow,
    window_ms: i64,
    limit: i64,
) -> StoreResult<Vec<CommonChange>> {
    if problem.hosts < 2 {
        return Ok(Vec::new());
    }
    let mut sql = QueryBuilder::new(
        "SELECT c.section, c.item, c.new_value, \
         CAST(COUNT(DISTINCT c.host_id) AS BIGINT) AS hosts, \
         CAST(SUM(CASE WHEN c.old_value IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS had_old \
         FROM problem_tickets m JOIN host_changes c ON c.host_id = m.host_id \
         AND c.observed_at_ms <= m.opened_at_ms AND c.observed_at_ms >= m.opened_at_ms - ",
    );
    B::int(&mut sql, window_ms);
    sql.push(" WHERE c.item <> 'baseline' AND m.problem_id = ");
    B::int(&mut sql, problem.id);
    sql.push(
        " GROUP BY c.section, c.item, c.new_value \
         ORDER BY hosts DESC, c.section, c.item LIMIT ",
    );
    B::int(&mut sql, limit);
    let rows = B::all_in(conn, sql, |r| {
        Ok(CommonChange {
            section: r.text("section")?,
            item: r.text("item")?,
            new: r.opt_text("new_value")?,
            added: r.int("had_old")? == 0,
            hosts: r.int("hosts")?,
            of_hosts: 0,
            window_ms: 0,
        })
    })
    .await?;
    Ok(rows
        .into_iter()
        .map(|c| CommonChange {
            of_hosts: problem.hosts,
            window_ms,
            ..c
        })
        .filter(|c| shared_enough(c.hosts, c.of_hosts))
        .collect())
}

/// Problems, open first, newest first; `status` `open` or `resolved`
/// filters.
fn list<'a, B: Dialect>(
    pool: &'a Pool<B>,
    status: Option<&'a str>,
    limit: u32,
    window_ms: i64,
) -> SendFuture<'a, Vec<ProblemSummary>> {
    Box::pin(async move {
        let mut tx = pool.begin().await?;
        let mut sql = QueryBuilder::new(format!("SELECT {PROBLEM_COLUMNS} FROM problems"));
        if let Some(status) = status {
            sql.push(" WHERE status = ");
            B::text(&mut sql, status);
        }
        sql.push(" ORDER BY CASE status WHEN 'open' THEN 0 ELSE 1 END, id DESC LIMIT ");
        B::int(&mut sql, i64::from(limit));
        let problems = B::all_in(&mut tx, sql, |r| problem_row(r)).await?;
        let mut out = Vec::with_capacity(problems.len());
        for problem in problems {
            let common_change = common_changes::<B>(&mut tx, &problem, window_ms, 1)
                .await?
                .into_iter()
                .next();
            out.push(ProblemSummary {
                problem,
                common_change,
            });
        }
        tx.commit().await?;
        Ok(out)
    })
}

/// One problem with its tickets, common changes and timeline, read in one
/// transaction.
fn get<B: Dialect>(
    pool: &Pool<B>,
    id: i64,
    window_ms: i64,
) -> SendFuture<'_, Option<ProblemDetail>> {
    Box::pin(async move {
        let mut tx = pool.begin().await?;
        let mut sql = QueryBuilder::new(format!(
            "SELECT {PROBLEM_COLUMNS} FROM problems WHERE id = "
        ));
        B::int(&mut sql, id);
        let Some(problem) = B::optional_in(&mut tx, sql, |r| problem_row(r)).await? else {
            return Ok(None);
        };
        let mut sql = QueryBuilder::new(format!(
            "SELECT {TICKET_COLUMNS} FROM problem_tickets m JOIN tickets t ON t.id = m.ticket_id \
             JOIN hosts h ON h.id = t.host_id WHERE m.problem_id = "
        ));
        B::int(&mut sql, id);
        sql.push(" ORDER BY t.id");
        let tickets = B::all_in(&mut tx, sql, |r| ticket_row(r)).await?;
        let common_changes =
            common_changes::<B>(&mut tx, &problem, window_ms, COMMON_CHANGES_SHOWN).await?;
        let mut sql =
            QueryBuilder::new("SELECT at_ms, author, note FROM problem_log WHERE problem_id = ");
        B::int(&mut sql, id);
        sql.push(" ORDER BY at_ms, id");
        let log = B::all_in(&mut tx, sql, |r| {
            Ok(WorklogEntry {
                at_ms: r.int("at_ms")?,
                author: r.text("author")?,
                note: r.text("note")?,
                // A problem's timeline is the help desk's own.
                public: false,
            })
        })
        .await?;
        tx.commit().await?;
        Ok(Some(ProblemDetail {
            problem,
            tickets,
            common_changes,
            log,
        }))
    })
}

/// Resolves a problem and its open tickets ([`engine::resolve`]), audited.
/// The audit head is taken first, as a ticket change takes it.
fn resolve<'a, B: BackendSql>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    policy: &'a crate::rules::policy::Policy,
    id: i64,
    resolution: &'a str,
    author: &'a str,
    by: &'a AuditEntry,
    now_ms: i64,
) -> SendFuture<'a, Result<ProblemRow, ProblemRefusal>> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let conn = &mut TicketConn::<B>(&mut tx);
        let outcome = engine::resolve(conn, policy, id, resolution, author, by, now_ms).await?;
        if outcome.is_ok() {
            tx.commit().await?;
        }
        Ok(outcome)
    })
}

/// The problem a ticket joined.
fn problem_of_ticket<B: Dialect>(pool: &Pool<B>, ticket: i64) -> SendFuture<'_, Option<i64>> {
    Box::pin(async move {
        let mut sql =
            QueryBuilder::new("SELECT problem_id FROM problem_tickets WHERE ticket_id = ");
        B::int(&mut sql, ticket);
        Ok(B::optional(pool, sql, |r| r.opt_int("problem_id"))
            .await?
            .flatten())
    })
}

/// The store calls of fleet-wide problems, written once for both backends.
#[async_trait]
pub trait ProblemQueries: Send + Sync {
    /// Problems, open first then newest first, each with the change its
    /// hosts share most; `status` (`open`, `resolved`) filters.
    async fn list_problems(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ProblemSummary>>;
    /// A problem with its tickets, common changes and timeline.
    async fn problem(&self, id: i64) -> StoreResult<Option<ProblemDetail>>;
    /// Resolves a problem and, through the ticket engine, each of its open
    /// tickets with the same resolution, audited as `by`.
    async fn resolve_problem(
        &self,
        id: i64,
        resolution: &str,
        author: &str,
        by: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<Result<ProblemRow, ProblemRefusal>>;
    /// The problem a ticket joined, if any.
    async fn problem_of_ticket(&self, ticket: i64) -> StoreResult<Option<i64>>;
}

#[async_trait]
impl<T: SqlBackend> ProblemQueries for T {
    async fn list_problems(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ProblemSummary>> {
        let window = self.current_policy().policy.problems.changes_window_ms;
        list(self.reads(), status, limit, window).await
    }

    async fn problem(&self, id: i64) -> StoreResult<Option<ProblemDetail>> {
        let window = self.current_policy().policy.problems.changes_window_ms;
        get(self.reads(), id, window).await
    }

    async fn resolve_problem(
        &self,
        id: i64,
        resolution: &str,
        author: &str,
        by: &AuditEntry,
        now_ms: i64,
    ) -> StoreResult<Result<ProblemRow, ProblemRefusal>> {
        let policy = self.current_policy();
        let begin = self.begin();
        resolve(begin, &policy.policy, id, resolution, author, by, now_ms).await
    }

    async fn problem_of_ticket(&self, ticket: i64) -> StoreResult<Option<i64>> {
        problem_of_ticket(self.reads(), ticket).await
    }
}
