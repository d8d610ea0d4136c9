//! The console's fleet-wide problems (issue 23): `/problems`, open first
//! then newest first, as `deskpulse problems` lists them, and
//! `/problems/{id}` with its tickets, the changes its hosts share and its
//! timeline, read through the same store calls as `GetProblem`.
//! Resolving stays `deskpulse problem resolve`.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Html;
use axum::routing::get;
use maud::html;

use super::Console;
use super::auth::SignedIn;
use super::layout::{WebError, maybe_time, page, time};
use crate::rules::problems::CommonChange;
use crate::store::Role;

/// Problems listed.
const LIST_LIMIT: u32 = 100;

/// The problem pages' routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/problems", get(list_page))
        .route("/problems/{id}", get(problem_page))
}

async fn list_page(
    State(console): State<Console>,
    who: SignedIn,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "listing problems")?;
    let listed = console
        .ctx
        .store
        .list_problems(None, LIST_LIMIT)
        .await
        .map_err(WebError::store)?;
    let body = html! {
        h1 { "Problems" }
        @if listed.is_empty() {
            p.muted { "No fleet-wide problems." }
        } @else {
            table {
                thead { tr { th { "Problem" } th { "Hosts" } th { "Priority" } th { "Status" } th { "Opened" } th { "Common change" } } }
                tbody {
                    @for p in &listed {
                        tr {
                            td { a href={ "/problems/" (p.problem.id) } { "#" (p.problem.id) " " (p.problem.title) } }
                            td { (p.problem.hosts) }
                            td { (p.problem.priority) }
                            td { (p.problem.status) " (" (p.problem.open_tickets) " open)" }
                            td { (time(p.problem.opened_at_ms)) }
                            td { (p.common_change.as_ref().map(CommonChange::describe).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        page(&who, "Problems", "/problems", body).into_string(),
    ))
}

async fn problem_page(
    State(console): State<Console>,
    who: SignedIn,
    Path(id): Path<i64>,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "showing a problem")?;
    let detail = console
        .ctx
        .store
        .problem(id)
        .await
        .map_err(WebError::store)?
        .ok_or_else(|| WebError::NotFound(format!("no problem {id}")))?;
    let p = &detail.problem;
    let body = html! {
        h1 { "Problem #" (p.id) " " (p.title) }
        p { (p.priority) " " (p.status) ", " (p.hosts) " hosts, " (p.open_tickets) " of " (p.tickets) " tickets open; opened " (time(p.opened_at_ms)) }
        @if let Some(resolution) = &p.resolution {
            p { "Resolved " (maybe_time(p.resolved_at_ms)) " by " (p.resolved_by.clone().unwrap_or_default()) ": " (resolution) }
        }
        h2 { "In common" }
        @if detail.common_changes.is_empty() {
            p.muted { "No change shared by a third of its hosts." }
        }
        ul { @for change in &detail.common_changes { li { (change.describe()) } } }
        h2 { "Tickets" }
        table {
            thead { tr { th { "Ticket" } th { "Host" } th { "Priority" } th { "Status" } th { "Opened" } } }
            tbody {
                @for t in &detail.tickets {
                    tr {
                        td { a href={ "/tickets/" (t.id) } { "#" (t.id) " " (t.title) } }
                        td { a href={ "/hosts/" (t.host_id) } { (t.hostname) } }
                        td { (t.priority) }
                        td { (t.status) }
                        td { (time(t.opened_at_ms)) }
                    }
                }
            }
        }
        h2 { "Timeline" }
        ul { @for entry in &detail.log { li { (time(entry.at_ms)) " " (entry.author) ": " (entry.note) } } }
    };
    Ok(Html(
        page(&who, &format!("Problem #{id}"), "/problems", body).into_string(),
    ))
}
