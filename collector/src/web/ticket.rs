//! One ticket: what fired it (rule, evidence with its samples), the
//! worklog, the host's context (inventory summary, the changes before the
//! ticket, past tickets with their resolutions), matching knowledge-base
//! entries, the diagnostic runs attached to it with their output, and the
//! actions: assign, note, status, escalate, resolve, reopen.
//!
//! The context is read by the same function as the API's `GetTicket`
//! ([`crate::server::technician::hosts::ticket_context`]); an action is
//! checked and made by the same functions as its `UpdateTicket`
//! ([`crate::server::technician::tickets`]), so its role check, worklog
//! line and audit entry are the API's. Actions are plain forms (each with
//! the session's CSRF token) answered with a redirect back to the ticket.

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use deskpulse_proto::v1::Inventory;
use maud::{Markup, html};
use prost::Message;
use serde::Deserialize;

use super::Console;
use super::auth::SignedIn;
use super::layout::{WebError, csrf_field, due, maybe_time, page, time};
use crate::server::technician::hosts::ticket_context;
use crate::server::technician::tickets::{ChangeAsked, change_ticket, check_change};
use crate::store::{JobQuery, JobRow, Role, TICKET_STATUSES, TicketRefusal, TicketRow};

/// Knowledge-base entries shown with a ticket.
const KB_MATCHES: u32 = 5;
/// The host's jobs searched for those attached to the ticket.
const HOST_JOBS: u32 = 200;

/// The ticket routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/tickets/{id}", get(ticket_page))
        .route("/tickets/{id}/{action}", post(ticket_action))
}

/// A ticket's evidence (D23): each field of its JSON object on a line, a
/// time (a key ending `_ms`) as a time, a nested value (the samples) as
/// indented JSON; anything else as the text it is.
fn evidence(text: &str) -> Markup {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(text) else {
        return html! { pre { (text) } };
    };
    if fields.is_empty() {
        return html! { p.muted { "Nothing: the ticket was opened by hand." } };
    }
    html! {
        dl.facts {
            @for (key, value) in &fields {
                dt { (key) }
                dd {
                    @match value {
                        serde_json::Value::String(text) => { (text) }
                        serde_json::Value::Number(n) if key.ends_with("_ms") && n.as_i64().is_some() => {
                            (time(n.as_i64().unwrap_or_default()))
                        }
                        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                            pre { (serde_json::to_string_pretty(value).unwrap_or_default()) }
                        }
                        other => { (other.to_string()) }
                    }
                }
            }
        }
    }
}

async fn ticket_page(
    State(console): State<Console>,
    who: SignedIn,
    Path(id): Path<i64>,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "showing a ticket")?;
    let store = &console.ctx.store;
    let (ticket, worklog) = store
        .ticket(id)
        .await
        .map_err(WebError::store)?
        .ok_or_else(|| WebError::NotFound(format!("no ticket {id}")))?;
    let context = ticket_context(&console.ctx, &ticket)
        .await
        .map_err(WebError::store)?;
    let kb = store
        .search_kb(
            &crate::store::search_terms(&ticket.title),
            KB_MATCHES,
            false,
        )
        .await
        .map_err(WebError::store)?;
    let jobs: Vec<JobRow> = store
        .list_jobs(&JobQuery {
            host_id: Some(ticket.host_id.clone()),
            state: None,
            limit: HOST_JOBS,
        })
        .await
        .map_err(WebError::store)?
        .into_iter()
        .filter(|job| job.ticket_id == Some(id))
        .collect();
    let problem = store.problem_of_ticket(id).await.map_err(WebError::store)?;
    let now = console.ctx.clock.now_ms();
    let inventory = context.host.as_ref().and_then(|detail| {
        let (bytes, _) = detail.inventory.as_ref()?;
        let mut inventory = Inventory::decode(bytes.as_slice()).ok()?;
        // The summary: the long lists are the host page's.
        inventory.software = None;
        inventory.services = None;
        Some(deskpulse_proto::render::render_inventory(&inventory))
    });
    let body = html! {
        h1 { "#" (ticket.id) " " (ticket.title) }
        div.grid {
            section.card aria-label="Ticket" {
                dl.facts {
                    dt { "Status" } dd { (ticket.status) }
                    dt { "Priority" } dd { span class={ "prio prio-" (ticket.priority) } { (ticket.priority) } " (" (ticket.severity) ")" }
                    dt { "Host" } dd { a href={ "/hosts/" (ticket.host_id) } { (ticket.hostname) } " " span.muted { (ticket.host_id) } }
                    dt { "Rule" } dd { @if ticket.rule.is_empty() { "manual" } @else { (ticket.rule) } " " (ticket.subject) }
                    @if let Some(problem) = problem { dt { "Problem" } dd { a href={ "/problems/" (problem) } { "#" (problem) } } }
                    dt { "Assignee" } dd { (ticket.assignee.as_deref().unwrap_or("—")) }
                    dt { "Opened" } dd { (time(ticket.opened_at_ms)) }
                    dt { "Response due" } dd {
                        @if let Some(at) = ticket.responded_at_ms { "answered " (time(at)) } @else { (due(ticket.response_due_ms)) }
                    }
                    dt { "Resolution due" } dd {
                        @if let Some(at) = ticket.resolved_at_ms { "resolved " (time(at)) } @else { (due(ticket.resolution_due_ms)) }
                    }
                    dt { "Escalation" } dd { (ticket.escalation) }
                    dt { "Occurrences" } dd { (ticket.occurrences) " (reopened " (ticket.flaps) ")" }
                    @if let Some(resolution) = &ticket.resolution {
                        dt { "Resolution" } dd { (resolution) }
                    }
                }
            }
            (actions(&who, &ticket))
        }
        section.card aria-label="Evidence" {
            h2 { "What fired it" }
            (evidence(&ticket.evidence))
        }
        section.card aria-label="Worklog" {
            h2 { "Worklog" }
            table {
                thead { tr { th { "When" } th { "Who" } th { "Note" } } }
                tbody {
                    @for entry in &worklog {
                        tr { td { (time(entry.at_ms)) } td { (entry.author) } td { @if entry.public { strong { "Public: " } } (entry.note) } }
                    }
                }
            }
        }
        @if !jobs.is_empty() {
            section.card aria-label="Diagnostics" {
                h2 { "Diagnostic runs" }
                @for job in &jobs {
                    h3 { (job.diagnostic) " " span.muted { (job.params_text) } }
                    p {
                        (job.state) " · asked by " (job.requested_by) " " (time(job.created_at_ms))
                        @if let Some(code) = job.exit_code { " · exit " (code) }
                        @if let Some(reason) = &job.reason { " · " (reason) }
                        @if job.truncated { " · output cut at its cap" }
                    }
                    pre { (String::from_utf8_lossy(&job.output)) }
                }
            }
        }
        div.grid {
            section.card aria-label="Host" {
                h2 { "Host" }
                @match &context.host {
                    Some(detail) => {
                        dl.facts {
                            dt { "Name" } dd { a href={ "/hosts/" (detail.row.id) } { (detail.row.hostname) } }
                            dt { "Presence" } dd {
                                @if detail.row.is_online(now) { span.online { "online" } } @else { span.offline { "offline" } }
                            }
                            dt { "Last seen" } dd { (maybe_time(detail.row.last_seen_at_ms)) }
                            dt { "Agent" } dd { (detail.row.agent_version) }
                        }
                        @if let Some(text) = &inventory {
                            details { summary { "Inventory summary" } pre { (text) } }
                        }
                    }
                    None => { p.muted { "The host is gone." } }
                }
            }
            section.card aria-label="Changes" {
                h2 { "Changes in the week before" }
                @let before: Vec<_> = context.changes.iter().filter(|c| c.observed_at_ms <= ticket.opened_at_ms).collect();
                @if before.is_empty() {
                    p.muted { "None recorded." }
                } @else {
                    table {
                        tbody {
                            @for change in before {
                                tr {
                                    td { (time(change.observed_at_ms)) }
                                    td { (change.section) " " (change.item) }
                                    td { (change.old_value.as_deref().unwrap_or("(new)")) " → " (change.new_value.as_deref().unwrap_or("(gone)")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.grid {
            section.card aria-label="Related tickets" {
                h2 { "Past tickets" }
                @if context.related.is_empty() { p.muted { "None." } }
                ul {
                    @for t in &context.related {
                        li {
                            a href={ "/tickets/" (t.id) } { "#" (t.id) " " (t.title) }
                            " · " (t.hostname) " · " (t.status)
                            @if let Some(resolution) = &t.resolution { " · " em { (resolution) } }
                        }
                    }
                }
            }
            (suggested_fixes(&context.suggestions, &kb))
        }
        (change_correlation(&context.correlation, &ticket))
    };
    Ok(Html(
        page(&who, &format!("Ticket {}", ticket.id), "/", body).into_string(),
    ))
}

/// The fixes suggested when the ticket opened (issue 23), each with its
/// score and reason; for a ticket opened before suggestions were stored,
/// or one that got none, the knowledge-base entries its title matches now.
fn suggested_fixes(
    suggestions: &[crate::suggest::Suggestion],
    kb: &[crate::store::KbHit],
) -> Markup {
    html! {
        section.card aria-label="Suggested fixes" {
            h2 { "Suggested fixes" }
            @if !suggestions.is_empty() {
                ol {
                    @for s in suggestions {
                        li {
                            strong { (s.resolution) }
                            " · " a href={ "/tickets/" (s.ticket_id) } { "#" (s.ticket_id) " " (s.title) }
                            " · " (s.hostname)
                            br;
                            span.muted { (format!("{:.2}", s.score)) " · " (s.reason) }
                        }
                    }
                }
            } @else if kb.is_empty() {
                p.muted { "No past resolution matches." }
            } @else {
                p.muted { "None were found when it opened; the knowledge base matches its title:" }
                ul {
                    @for hit in kb {
                        li {
                            a href={ "/tickets/" (hit.ticket_id) } { "#" (hit.ticket_id) " " (hit.title) }
                            " · " (hit.hostname) " · " em { (hit.resolution) }
                        }
                    }
                }
            }
        }
    }
}

/// The host's changes in the day before the ticket opened, each with how
/// many other hosts with the same change have the same rule firing
/// (issue 23).
fn change_correlation(
    correlation: &[crate::suggest::CorrelatedChange],
    ticket: &TicketRow,
) -> Markup {
    html! {
        section.card aria-label="Change correlation" {
            h2 { "Changes in the day before it fired" }
            @if correlation.is_empty() {
                p.muted { "None recorded." }
            } @else {
                ul {
                    @for c in correlation {
                        li { (crate::suggest::correlation_line(c, &ticket.rule, ticket.opened_at_ms)) }
                    }
                }
            }
        }
    }
}

/// The action forms, for a caller who may change tickets; a viewer sees
/// none (and is refused if they post one anyway).
fn actions(who: &SignedIn, ticket: &TicketRow) -> Markup {
    if who.caller.role < Role::Technician {
        return html! {};
    }
    let base = format!("/tickets/{}", ticket.id);
    let done = matches!(ticket.status.as_str(), "resolved" | "closed");
    html! {
        section.card aria-label="Actions" {
            h2 { "Actions" }
            form.inline method="post" action={ (base) "/assign" } {
                (csrf_field(who))
                label { "Assign to" input name="value" value="me" required; }
                button type="submit" { "Assign" }
            }
            form.inline method="post" action={ (base) "/status" } {
                (csrf_field(who))
                label { "Status"
                    select name="value" {
                        @for status in TICKET_STATUSES.iter().filter(|s| !matches!(**s, "resolved" | "closed")) {
                            option value=(status) selected[ticket.status == *status] { (status) }
                        }
                    }
                }
                button type="submit" { "Set" }
            }
            form.inline method="post" action={ (base) "/note" } {
                (csrf_field(who))
                label { "Note" textarea name="value" required {} }
                label { input type="checkbox" name="public" value="on"; " Public: the reporter reads it" }
                button type="submit" { "Add note" }
            }
            @if done {
                form.inline method="post" action={ (base) "/reopen" } {
                    (csrf_field(who))
                    button type="submit" { "Reopen" }
                }
            } @else {
                form.inline method="post" action={ (base) "/resolve" } {
                    (csrf_field(who))
                    label { "Resolution" textarea name="value" required {} }
                    button type="submit" { "Resolve" }
                }
                form.inline method="post" action={ (base) "/escalate" } {
                    (csrf_field(who))
                    button.secondary type="submit" { "Escalate" }
                }
            }
        }
    }
}

/// What an action form posts: its one value (the assignee, note, status
/// or resolution), none for escalate and reopen.
#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    value: String,
    /// The note form's checkbox: present ("on") when the note is public.
    #[serde(default)]
    public: Option<String>,
}

async fn ticket_action(
    State(console): State<Console>,
    who: SignedIn,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    let caller = who.require(Role::Technician, "changing a ticket")?;
    let asked = match action.as_str() {
        "assign" => ChangeAsked::Assign(&form.value),
        "note" if form.public.is_some() => ChangeAsked::PublicNote(&form.value),
        "note" => ChangeAsked::Note(&form.value),
        "status" => ChangeAsked::Status(&form.value),
        "resolve" => ChangeAsked::Resolve(&form.value),
        "escalate" => ChangeAsked::Escalate,
        "reopen" => ChangeAsked::Reopen,
        other => {
            return Err(WebError::NotFound(format!(
                "there is no ticket action {other:?}"
            )));
        }
    };
    let change = check_change(caller, asked).map_err(WebError::BadRequest)?;
    match change_ticket(&console.ctx, caller, id, &change)
        .await
        .map_err(WebError::store)?
    {
        Ok(()) => Ok(Redirect::to(&format!("/tickets/{id}")).into_response()),
        Err(TicketRefusal::NotFound) => Err(WebError::NotFound(format!("no ticket {id}"))),
        Err(TicketRefusal::Invalid(why)) => Err(WebError::Conflict(why)),
    }
}
