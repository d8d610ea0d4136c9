//! The queue: tickets by priority, then by the SLA due time that matters
//! next (the response until a technician has acted, then the resolution),
//! with a countdown `console.js` keeps current. Filters for status,
//! assignee, tag, rule, host and priority travel in the query string, so a
//! filtered queue is a link; the rows refresh every 15 s through htmx
//! (`/queue/rows`, the same query) without a reload.

use std::collections::HashSet;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::Console;
use super::auth::SignedIn;
use super::layout::{WebError, due, page};
use crate::store::{HostQuery, Role, TICKET_STATUSES, TicketQuery, TicketRow};

/// The most tickets the queue shows.
const QUEUE_LIMIT: u32 = 500;
/// The most tickets read when the host or tag filter (applied here, not in
/// the store) narrows them after: enough that the queue's first
/// [`QUEUE_LIMIT`] are found among far more open tickets.
const FILTERED_READ_LIMIT: u32 = 5_000;
/// How often the rows refresh.
const REFRESH: &str = "every 15s";

/// The queue's routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(queue_page))
        .route("/queue/rows", get(queue_rows))
}

/// The queue's filters, as the query string carries them; empty means any.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct Filters {
    /// "open" (the default: not resolved or closed), "any", or one status.
    #[serde(default)]
    pub status: String,
    /// A technician's name, or "me".
    #[serde(default)]
    pub assignee: String,
    /// A host tag, `key=value`.
    #[serde(default)]
    pub tag: String,
    /// A rule's name.
    #[serde(default)]
    pub rule: String,
    /// Part of a host name, or the start of a host id.
    #[serde(default)]
    pub host: String,
    /// P1 to P4.
    #[serde(default)]
    pub priority: String,
}

impl Filters {
    fn query_string(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

/// The tickets `filters` select for `who`, in queue order.
async fn select(
    console: &Console,
    who: &SignedIn,
    filters: &Filters,
) -> Result<Vec<TicketRow>, WebError> {
    who.require(Role::Viewer, "listing tickets")?;
    let status = filters.status.trim().to_ascii_lowercase();
    let (open_only, status) = match status.as_str() {
        "" | "open" => (true, None),
        "any" => (false, None),
        known if TICKET_STATUSES.contains(&known) => (false, Some(status.clone())),
        other => {
            return Err(WebError::BadRequest(format!(
                "unknown status {other:?}; expected open, any or one of {}",
                TICKET_STATUSES.join(", ")
            )));
        }
    };
    let priority = filters.priority.trim().to_ascii_uppercase();
    if !priority.is_empty() && !["P1", "P2", "P3", "P4"].contains(&priority.as_str()) {
        return Err(WebError::BadRequest(format!(
            "unknown priority {priority:?}; expected P1, P2, P3 or P4"
        )));
    }
    let assignee = match filters.assignee.trim() {
        "" => None,
        "me" => Some(who.caller.name.clone()),
        name => Some(name.to_owned()),
    };
    let rule = Some(filters.rule.trim().to_owned()).filter(|r| !r.is_empty());
    let host = filters.host.trim().to_lowercase();
    let narrowed_here = !host.is_empty() || !filters.tag.trim().is_empty();
    let store = &console.ctx.store;
    let mut rows = store
        .list_tickets(&TicketQuery {
            open_only,
            status,
            host_id: None,
            priority: (!priority.is_empty()).then_some(priority),
            assignee,
            rule,
            limit: if narrowed_here {
                FILTERED_READ_LIMIT
            } else {
                QUEUE_LIMIT
            },
        })
        .await
        .map_err(WebError::store)?;
    if !host.is_empty() {
        rows.retain(|t| t.hostname.to_lowercase().contains(&host) || t.host_id.starts_with(&host));
    }
    if !filters.tag.trim().is_empty() {
        let tag =
            crate::query::parse_tag(filters.tag.trim(), false).map_err(WebError::BadRequest)?;
        let tagged: HashSet<String> = store
            .list_hosts(
                &HostQuery {
                    tags: vec![tag],
                    ..Default::default()
                },
                None,
                100_000,
            )
            .await
            .map_err(WebError::store)?
            .into_iter()
            .map(|h| h.id)
            .collect();
        rows.retain(|t| tagged.contains(&t.host_id));
    }
    rows.truncate(QUEUE_LIMIT as usize);
    rows.sort_by_key(|t| (t.priority.clone(), next_due(t).1, t.id));
    Ok(rows)
}

/// The SLA due time that matters next: the response's until a technician
/// has acted on the ticket, then the resolution's.
fn next_due(ticket: &TicketRow) -> (&'static str, i64) {
    if ticket.responded_at_ms.is_none() {
        ("response", ticket.response_due_ms)
    } else {
        ("resolution", ticket.resolution_due_ms)
    }
}

fn rows_table(rows: &[TicketRow]) -> Markup {
    let closed = |t: &TicketRow| matches!(t.status.as_str(), "resolved" | "closed");
    html! {
        @if rows.is_empty() {
            p.muted { "No tickets match." }
        } @else {
            @if rows.len() >= QUEUE_LIMIT as usize {
                p.muted { "The " (QUEUE_LIMIT) " most urgent shown; filter to see others." }
            }
            table {
                thead { tr {
                    th scope="col" { "Priority" } th scope="col" { "Ticket" }
                    th scope="col" { "Host" } th scope="col" { "Rule" }
                    th scope="col" { "Status" } th scope="col" { "Assignee" }
                    th scope="col" { "Due" }
                } }
                tbody {
                    @for t in rows {
                        tr {
                            td { span class={ "prio prio-" (t.priority) } { (t.priority) } }
                            td { a href={ "/tickets/" (t.id) } { "#" (t.id) " " (t.title) } }
                            td { a href={ "/hosts/" (t.host_id) } { (t.hostname) } }
                            td { @if t.rule.is_empty() { span.muted { "manual" } } @else { (t.rule) } }
                            td { (t.status) }
                            td { (t.assignee.as_deref().unwrap_or("—")) }
                            td {
                                @if closed(t) {
                                    span.muted { "—" }
                                } @else {
                                    @let (which, at) = next_due(t);
                                    span.muted { (which) " " } (due(at))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn queue_rows(
    State(console): State<Console>,
    who: SignedIn,
    Query(filters): Query<Filters>,
) -> Result<Html<String>, WebError> {
    let rows = select(&console, &who, &filters).await?;
    Ok(Html(rows_table(&rows).into_string()))
}

async fn queue_page(
    State(console): State<Console>,
    who: SignedIn,
    Query(filters): Query<Filters>,
) -> Result<Html<String>, WebError> {
    let rows = select(&console, &who, &filters).await?;
    // "open" is the queue's default and means not resolved or closed, as
    // the CLI's `--status open` does; the other statuses select exactly.
    let status_choices = [("open", "open (not resolved)"), ("any", "any")]
        .into_iter()
        .chain(
            TICKET_STATUSES
                .into_iter()
                .filter(|s| *s != "open")
                .map(|s| (s, s)),
        );
    let body = html! {
        h1 { "Queue" }
        form.filters method="get" action="/" aria-label="Filters" {
            label { "Status"
                select name="status" {
                    @for (choice, label) in status_choices {
                        option value=(choice) selected[filters.status == choice] { (label) }
                    }
                }
            }
            label { "Priority"
                select name="priority" {
                    option value="" { "any" }
                    @for p in ["P1", "P2", "P3", "P4"] {
                        option value=(p) selected[filters.priority.eq_ignore_ascii_case(p)] { (p) }
                    }
                }
            }
            label { "Assignee" input name="assignee" value=(filters.assignee) placeholder="me"; }
            label { "Tag" input name="tag" value=(filters.tag) placeholder="site=berlin"; }
            label { "Rule" input name="rule" value=(filters.rule); }
            label { "Host" input name="host" value=(filters.host); }
            button type="submit" { "Filter" }
            a href="/" { "Clear" }
        }
        div #queue hx-get={ "/queue/rows?" (filters.query_string()) } hx-trigger=(REFRESH) {
            (rows_table(&rows))
        }
    };
    Ok(Html(page(&who, "Queue", "/", body).into_string()))
}
