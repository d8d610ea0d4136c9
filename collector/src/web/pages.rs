//! The console's read-only pages: knowledge-base search (past resolutions,
//! as `deskpulse kb` finds them), the audit log (admins only, paged, newest
//! first), and the rules and SLA targets in force (as `deskpulse rules`
//! lists them; changing them stays `rules apply`).

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use maud::html;
use serde::Deserialize;

use super::Console;
use super::auth::SignedIn;
use super::layout::{WebError, maybe_time, page, time};
use crate::server::technician::rules::rules_response;
use crate::store::{AuditQuery, Role};

/// Knowledge-base matches shown.
const KB_LIMIT: u32 = 50;
/// Audit entries per page.
const AUDIT_PAGE: u32 = 100;

/// The read-only pages' routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/kb", get(kb_page))
        .route("/audit", get(audit_page))
        .route("/rules", get(rules_page))
}

#[derive(Debug, Default, Deserialize)]
struct KbSearch {
    #[serde(default)]
    q: String,
    /// "on" to include tickets that only recovered by themselves.
    #[serde(default)]
    auto: String,
}

async fn kb_page(
    State(console): State<Console>,
    who: SignedIn,
    Query(search): Query<KbSearch>,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "searching the knowledge base")?;
    let terms = crate::store::search_terms(&search.q);
    let include_auto = search.auto == "on";
    let hits = if terms.is_empty() {
        Vec::new()
    } else {
        console
            .ctx
            .store
            .search_kb(&terms, KB_LIMIT, include_auto)
            .await
            .map_err(WebError::store)?
    };
    let body = html! {
        h1 { "Knowledge base" }
        form.filters method="get" action="/kb" role="search" {
            label { "Search past resolutions" input type="search" name="q" value=(search.q) autofocus; }
            label { "Include self-recovered" input type="checkbox" name="auto" checked[include_auto]; }
            button type="submit" { "Search" }
        }
        @if !search.q.trim().is_empty() && hits.is_empty() {
            p.muted { "Nothing matches." }
        }
        @if !hits.is_empty() {
            table {
                thead { tr { th { "Ticket" } th { "Host" } th { "Rule" } th { "Resolution" } th { "Resolved" } } }
                tbody {
                    @for hit in &hits {
                        tr {
                            td { a href={ "/tickets/" (hit.ticket_id) } { "#" (hit.ticket_id) " " (hit.title) } }
                            td { (hit.hostname) }
                            td { (hit.rule) }
                            td { (hit.resolution) }
                            td { (maybe_time(hit.resolved_at_ms)) }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        page(&who, "Knowledge base", "/kb", body).into_string(),
    ))
}

#[derive(Debug, Default, Deserialize)]
struct AuditFilters {
    #[serde(default)]
    technician: String,
    #[serde(default)]
    action: String,
    /// The page: entries older than this id.
    #[serde(default)]
    before: Option<i64>,
}

async fn audit_page(
    State(console): State<Console>,
    who: SignedIn,
    Query(filters): Query<AuditFilters>,
) -> Result<Html<String>, WebError> {
    who.require(Role::Admin, "reading the audit log in the console")?;
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut rows = console
        .ctx
        .store
        .list_audit(&AuditQuery {
            subject_contains: None,
            technician: text(&filters.technician),
            action_prefix: text(&filters.action),
            since_ms: 0,
            before_id: filters.before,
            limit: AUDIT_PAGE + 1,
        })
        .await
        .map_err(WebError::store)?;
    let more = rows.len() > AUDIT_PAGE as usize;
    rows.truncate(AUDIT_PAGE as usize);
    let older = rows.last().filter(|_| more).map(|last| {
        let query = serde_urlencoded::to_string([
            ("technician", filters.technician.as_str()),
            ("action", filters.action.as_str()),
            ("before", last.id.to_string().as_str()),
        ])
        .unwrap_or_default();
        format!("/audit?{query}")
    });
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/audit" {
            label { "Technician" input name="technician" value=(filters.technician); }
            label { "Action starts with" input name="action" value=(filters.action) placeholder="ticket."; }
            button type="submit" { "Filter" }
        }
        table {
            thead { tr { th { "#" } th { "When" } th { "Who" } th { "Action" } th { "Subject" } th { "Detail" } } }
            tbody {
                @for row in &rows {
                    tr {
                        td { (row.seq.unwrap_or(row.id)) }
                        td { (time(row.at_ms)) }
                        td { (row.technician_name.as_deref().unwrap_or("system")) }
                        td { (row.action) }
                        td { (row.subject) }
                        td { (row.detail) }
                    }
                }
            }
        }
        @if let Some(href) = older {
            p { a href=(href) { "Older entries" } }
        }
    };
    Ok(Html(page(&who, "Audit log", "/audit", body).into_string()))
}

async fn rules_page(
    State(console): State<Console>,
    who: SignedIn,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "listing rules")?;
    let record = console.ctx.store.policy().await.map_err(WebError::store)?;
    let rules = rules_response(&record);
    let duration = crate::units::duration_secs;
    let body = html! {
        h1 { "Rules and SLA targets" }
        p.muted {
            @if rules.version == 0 {
                "The built-in defaults."
            } @else {
                "Version " (rules.version) ", applied by " (rules.applied_by) " " (time(rules.applied_at_unix_ms)) "."
            }
            " Change them with " code { "deskpulse rules apply" } "."
        }
        section.card aria-label="SLA targets" {
            h2 { "SLA targets" }
            table {
                thead { tr { th { "Priority" } th { "Response within" } th { "Resolution within" } } }
                tbody {
                    @for sla in &rules.sla {
                        tr { td { (sla.priority) } td { (duration(sla.response_secs)) } td { (duration(sla.resolution_secs)) } }
                    }
                }
            }
            p { "Business hours: " (rules.business_hours) }
            p { "Quiet period " (duration(rules.quiet_secs)) "; reopen window " (duration(rules.reopen_window_secs)) "." }
        }
        section.card aria-label="Rules" {
            h2 { "Rules" }
            table {
                thead { tr { th { "Name" } th { "Kind" } th { "On" } th { "Condition" } th { "Severity" } th { "Scope" } th { "Source" } } }
                tbody {
                    @for rule in &rules.rules {
                        tr {
                            td { (rule.name) @if rule.disabled { " " span.muted { "(disabled)" } } }
                            td { (rule.kind) }
                            td { (rule.on) }
                            td {
                                @if rule.kind == "metric" {
                                    (rule.op) " " (rule.threshold) " for " (duration(rule.for_secs))
                                    ", recovers at " (rule.recover)
                                }
                            }
                            td { (rule.severity) }
                            td { (rule.scope.join(", ")) }
                            td { (rule.source) }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(page(&who, "Rules", "/rules", body).into_string()))
}
