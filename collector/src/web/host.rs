//! One host: every inventory section, its health now and as charts over
//! 24 hours and 7 days, the change timeline, its tickets and jobs, and the
//! form that runs a diagnostic from the catalog with its output live.
//!
//! What is shown is read by the same functions as the API's `GetHost` and
//! `ListDiagnostics` ([`crate::server::technician::hosts::host_response`],
//! [`crate::server::technician::jobs::diagnostics_for`]), and the
//! inventory is the CLI's text of each section. The charts are drawn by
//! `console.js` with uPlot from [`health_data`], the host's stored health
//! history as JSON (the CSP allows no inline script, so no data is written
//! into a script). The history holds CPU (average and peak), memory, the
//! fullest disk and the hottest sensor (absent where a PC reports none),
//! each hourly point keeping its hour's average or peak.
//!
//! A run goes through [`crate::server::technician::jobs::start_diagnostic`]
//! and [`crate::server::technician::jobs::follow_job`], as the API's
//! `RunDiagnostic`: the same role rules (a viewer is refused, a
//! state-changing diagnostic needs the role the policy says), the same
//! parameter checks, the same audit entries. `console.js` posts the form
//! asking for `application/x-ndjson` and reads the answer as it streams:
//! one JSON object a line (`job`, then `output` chunks, then `finished`
//! with the whole stored output, or `queued` or `error`), put into the page
//! as text. A form posted without script is queued and answered with a
//! redirect back to the host's jobs.

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use deskpulse_proto::v1::{DiagnosticInfo, GetHostResponse, Inventory, Presence};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::Console;
use super::auth::SignedIn;
use super::layout::{CSRF_FIELD, WebError, csrf_field, maybe_time, page, time};
use crate::server::technician::hosts::host_response;
use crate::server::technician::jobs::{
    Followed, RunAsked, RunRefused, Started, diagnostics_for, follow_job, start_diagnostic,
};
use crate::store::{HostRow, JobQuery, JobRow, Role, TicketQuery, TicketRow};

/// Inventory changes on the timeline.
const TIMELINE_CHANGES: u32 = 200;
/// The host's tickets shown, newest first.
const HOST_TICKETS: u32 = 50;
/// The host's jobs shown, newest first.
const HOST_JOBS: u32 = 50;
/// A day, in milliseconds.
const DAY_MS: i64 = 86_400_000;
/// The chart ranges: the query value, its span, its caption.
const RANGES: [(&str, i64, &str); 2] = [
    ("24h", DAY_MS, "Last 24 hours"),
    ("7d", 7 * DAY_MS, "Last 7 days"),
];
/// What `console.js` asks for to read a run as it streams.
pub const NDJSON: &str = "application/x-ndjson";
/// Lines of a streamed run waiting for a slow reader.
const STREAM_BUFFER: usize = 64;

/// The host routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/hosts/{id}", get(host_page))
        .route("/hosts/{id}/health", get(health_data))
        .route("/hosts/{id}/run", post(run_diagnostic))
}

/// The host `id` names, or 404.
async fn host_row(console: &Console, id: &str) -> Result<HostRow, WebError> {
    console
        .ctx
        .store
        .host_detail(id)
        .await
        .map_err(WebError::store)?
        .map(|detail| detail.row)
        .ok_or_else(|| WebError::NotFound(format!("no host {id}")))
}

/// A failure of a read shared with the API: logged there, a 500 here.
fn shared_read_failed(status: &tonic::Status) -> WebError {
    tracing::error!(error = %status.message(), "reading a host for the web console failed");
    WebError::Internal
}

/// How a catalog parameter is typed in the form, from its help text: a
/// range "A-B" makes it a whole number between them, "(required)" makes it
/// required; anything else is text, checked by the catalog on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FieldKind {
    range: Option<(u32, u32)>,
    required: bool,
}

fn field_kind(help: &str) -> FieldKind {
    let bytes = help.as_bytes();
    let mut range = None;
    let mut at = 0;
    while at < bytes.len() {
        if !bytes[at].is_ascii_digit() || (at > 0 && bytes[at - 1].is_ascii_alphanumeric()) {
            at += 1;
            continue;
        }
        let low_end = at
            + bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        if bytes.get(low_end) == Some(&b'-') {
            let high_start = low_end + 1;
            let high_end = high_start
                + bytes[high_start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            if let (Ok(low), Ok(high)) = (
                help[at..low_end].parse::<u32>(),
                help[high_start..high_end].parse::<u32>(),
            ) && low <= high
            {
                range = Some((low, high));
                break;
            }
        }
        at = low_end;
    }
    FieldKind {
        range,
        required: help.contains("(required)"),
    }
}

/// The typed fields of one diagnostic's parameters.
fn param_fields(diagnostic: &DiagnosticInfo) -> Markup {
    html! {
        @if diagnostic.params.is_empty() {
            p.muted { (diagnostic.id) " takes no parameters." }
        }
        @for param in &diagnostic.params {
            @let kind = field_kind(&param.help);
            label {
                (param.name)
                @if let Some((low, high)) = kind.range {
                    input type="number" name=(param.name) min=(low) max=(high) step="1"
                        required[kind.required] inputmode="numeric";
                } @else {
                    input type="text" name=(param.name) required[kind.required]
                        autocomplete="off" spellcheck="false";
                }
                small.muted { (param.help) }
            }
        }
    }
}

/// The run form, for a technician or admin; a viewer is told why there is
/// none (and refused if they post one anyway).
fn run_form(who: &SignedIn, host_id: &str, catalog: &[DiagnosticInfo]) -> Markup {
    if who.caller.role < Role::Technician {
        return html! {
            p.muted { "Running a diagnostic needs the technician role; you have the "
                (who.caller.role) " role." }
        };
    }
    let first = catalog.first();
    html! {
        form #run-diagnostic method="post" action={ "/hosts/" (host_id) "/run" } {
            (csrf_field(who))
            label {
                "Diagnostic"
                select name="diagnostic" {
                    @for (index, d) in catalog.iter().enumerate() {
                        option value=(d.id) selected[index == 0] {
                            (d.id) " — " (d.description)
                            @if d.risk != "read-only" { " (changes the PC)" }
                            @if d.role != "viewer" && d.role != "technician" { " · needs " (d.role) }
                            @if !d.unavailable_on_host.is_empty() { " · unavailable here" }
                        }
                    }
                }
            }
            // The selected diagnostic's fields; console.js swaps in another
            // diagnostic's from its template when the selection changes.
            div #diagnostic-fields .fields {
                @if let Some(first) = first { (param_fields(first)) }
            }
            @for d in catalog {
                template data-diagnostic=(d.id) { (param_fields(d)) }
            }
            button type="submit" { "Run" }
        }
        p #run-error .error role="alert" {}
    }
}

/// The facts at the top: presence, OS, agent, times, certificate, clock,
/// tags, and revocation or retirement.
fn facts(host: &GetHostResponse) -> Markup {
    let summary = host.summary.clone().unwrap_or_default();
    let online = summary.presence == Presence::Online as i32;
    html! {
        dl.facts.host-facts {
            dt { "Host id" } dd { (summary.host_id) }
            dt { "Presence" } dd {
                @if online { span.online { "online" } } @else { span.offline { "offline" } }
            }
            dt { "OS" } dd { (summary.os_name) " " (summary.os_version) }
            dt { "Agent" } dd { (host.agent_version) }
            dt { "Last seen" } dd { (maybe_time(Some(summary.last_seen_unix_ms))) }
            dt { "Enrolled" } dd { (maybe_time(Some(summary.enrolled_at_unix_ms))) }
            dt { "Inventory from" } dd { (maybe_time(Some(host.inventory_at_unix_ms))) }
            dt { "Health from" } dd { (maybe_time(Some(host.health_at_unix_ms))) }
            dt { "Tags" } dd {
                @if host.tags.is_empty() { span.muted { "none" } }
                @for tag in &host.tags { span.tag { (tag) } " " }
            }
            dt { "Certificate" } dd { "serial " (host.certificate_serial) br; span.muted { "SHA-256 " (host.certificate_sha256) } }
            @if let Some(clock) = &host.clock {
                dt { "Clock" } dd {
                    (clock.offset_ms) " ms off"
                    @if clock.beyond_window { " " span.overdue { "beyond the allowed window" } }
                    @if clock.clamped_reports > 0 { " · " (clock.clamped_reports) " reports' times replaced" }
                }
            }
            @if let Some(spool) = &host.spool {
                dt { "Agent spool" } dd {
                    "as of " (time(host.spool_at_unix_ms)) ": " (spool.waiting) " reports waiting to be sent · "
                    (spool.health_thinned) " health samples thinned, "
                    (spool.health_dropped) " dropped · " (spool.inventory_superseded) " inventories superseded · "
                    (spool.results_refused) " results refused · " (spool.unwritable) " unwritable"
                }
            }
            @if !host.goodbye_reason.is_empty() {
                dt { "Said goodbye" } dd { (host.goodbye_reason) }
            }
            @if host.revoked_at_unix_ms > 0 {
                dt { "Revoked" } dd.error { (time(host.revoked_at_unix_ms)) " by " (host.revoked_by) ": " (host.revoke_reason) }
            }
            @if host.retired_at_unix_ms > 0 {
                dt { "Retired" } dd { (time(host.retired_at_unix_ms)) " by " (host.retired_by) ": " (host.retire_reason) }
            }
        }
    }
}

/// Every inventory section as the CLI writes it, one disclosure each; the
/// long lists (software, services) start closed.
fn inventory_sections(inventory: Option<&Inventory>) -> Markup {
    let Some(inventory) = inventory else {
        return html! { p.muted { "No inventory reported yet." } };
    };
    html! {
        @for section in deskpulse_proto::sections::ALL {
            @let text = deskpulse_proto::render::render_sections(inventory, &[section]);
            @let name = deskpulse_proto::sections::name(section);
            @let long = matches!(name, "software" | "services");
            details.section open[!long] data-section=(name) {
                summary { (name) }
                @if text.trim().is_empty() {
                    p.muted { "Nothing reported." }
                } @else {
                    pre { (text) }
                }
            }
        }
    }
}

fn tickets_table(tickets: &[TicketRow]) -> Markup {
    html! {
        @if tickets.is_empty() {
            p.muted { "No tickets." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Ticket" } th scope="col" { "Priority" } th scope="col" { "Status" }
                    th scope="col" { "Opened" } th scope="col" { "Resolution" }
                } }
                tbody {
                    @for t in tickets {
                        tr {
                            td { a href={ "/tickets/" (t.id) } { "#" (t.id) " " (t.title) } }
                            td { span class={ "prio prio-" (t.priority) } { (t.priority) } }
                            td { (t.status) }
                            td { (time(t.opened_at_ms)) }
                            td { (t.resolution.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

fn jobs_table(jobs: &[JobRow]) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.muted { "No diagnostic runs." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Asked" } th scope="col" { "Diagnostic" } th scope="col" { "By" }
                    th scope="col" { "State" } th scope="col" { "Output" }
                } }
                tbody {
                    @for job in jobs {
                        tr data-job=(job.id) {
                            td { (time(job.created_at_ms)) br; span.muted { (job.id) } }
                            td { (job.diagnostic) " " span.muted { (job.params_text) } }
                            td { (job.requested_by) }
                            td {
                                (job.state)
                                @if let Some(code) = job.exit_code { ", exit " (code) }
                                @if let Some(reason) = &job.reason { br; span.muted { (reason) } }
                            }
                            td {
                                @if !job.output.is_empty() {
                                    details {
                                        summary { "Output" @if job.truncated { " (cut at its cap)" } }
                                        pre { (String::from_utf8_lossy(&job.output)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn host_page(
    State(console): State<Console>,
    who: SignedIn,
    Path(id): Path<String>,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "showing a host")?;
    let ctx = &console.ctx;
    let row = host_row(&console, &id).await?;
    let host = host_response(ctx, &row.id, 0, TIMELINE_CHANGES)
        .await
        .map_err(|status| shared_read_failed(&status))?
        .ok_or_else(|| WebError::NotFound(format!("no host {id}")))?;
    let tickets = ctx
        .store
        .list_tickets(&TicketQuery {
            host_id: Some(row.id.clone()),
            limit: HOST_TICKETS,
            ..Default::default()
        })
        .await
        .map_err(WebError::store)?;
    let jobs = ctx
        .store
        .list_jobs(&JobQuery {
            host_id: Some(row.id.clone()),
            state: None,
            limit: HOST_JOBS,
        })
        .await
        .map_err(WebError::store)?;
    let catalog = diagnostics_for(ctx, Some(row.clone()))
        .await
        .map_err(WebError::store)?
        .diagnostics;
    let health_now = host
        .last_health
        .as_ref()
        .map(deskpulse_proto::render::render_health);
    let body = html! {
        h1 { (row.hostname) }
        p { a href={ "/?status=any&host=" (row.id) } { "Its tickets in the queue" } }
        div.grid {
            section.card aria-label="Host" {
                h2 { "Host" }
                (facts(&host))
            }
            section.card aria-label="Health now" {
                h2 { "Health now" }
                @match &health_now {
                    Some(text) => { pre { (text) } }
                    None => { p.muted { "No health sample reported yet." } }
                }
            }
        }
        section.card aria-label="Health history" {
            h2 { "Health history" }
            p.muted { "CPU (average and peak), memory and the fullest disk in percent, and the "
                "hottest sensor in °C (right axis; a gap where the PC reports none), from the "
                "stored health history: every sample for the last day, hourly peaks and "
                "averages before." }
            div.charts {
                @for (range, _, caption) in RANGES {
                    figure {
                        figcaption { (caption) }
                        div.chart data-health={ "/hosts/" (row.id) "/health?range=" (range) }
                            role="img" aria-label={ "Health, " (caption) } {}
                    }
                }
            }
        }
        section.card #run aria-label="Run a diagnostic" {
            h2 { "Run a diagnostic" }
            (run_form(&who, &row.id, &catalog))
            p #run-status .muted aria-live="polite" {}
            div #live-output aria-label="Output" { pre.output {} }
        }
        section.card #jobs aria-label="Diagnostic runs" {
            h2 { "Diagnostic runs" }
            (jobs_table(&jobs))
        }
        section.card aria-label="Tickets" {
            h2 { "Tickets" }
            (tickets_table(&tickets))
        }
        section.card aria-label="Changes" {
            h2 { "Change timeline" }
            @if host.recent_changes.is_empty() {
                p.muted { "No inventory changes recorded." }
            } @else {
                ol.timeline {
                    @for change in &host.recent_changes {
                        li {
                            (time(change.observed_at_unix_ms)) " "
                            strong { (change.section) } " " (change.item) ": "
                            @if change.old_value.is_empty() { span.muted { "(new)" } } @else { (change.old_value) }
                            " → "
                            @if change.new_value.is_empty() { span.muted { "(gone)" } } @else { (change.new_value) }
                        }
                    }
                }
            }
        }
        section.card aria-label="Inventory" {
            h2 { "Inventory" }
            (inventory_sections(host.inventory.as_ref()))
        }
        // uPlot for the charts: loaded here, as only this page needs it.
        link rel="stylesheet" href="/assets/uPlot.min.css";
        script src="/assets/uPlot.iife.min.js" defer {}
    };
    Ok(Html(
        page(&who, &format!("Host {}", row.hostname), "/fleet", body).into_string(),
    ))
}

/// The range a chart asks for.
#[derive(Debug, Deserialize)]
struct RangeQuery {
    #[serde(default)]
    range: String,
}

/// One point of the health history as the charts read it.
#[derive(Debug, Serialize)]
struct ChartPoint {
    at_ms: i64,
    resolution_secs: u32,
    samples: u32,
    cpu_percent: f32,
    cpu_max_percent: f32,
    memory_used_percent: f32,
    disk_used_max_percent: f32,
    /// `null` when the PC reported no sensor, so the chart leaves a gap.
    temperature_max_celsius: Option<f32>,
}

/// The health history over a range, as the charts read it.
#[derive(Debug, Serialize)]
struct ChartData {
    range: &'static str,
    from_ms: i64,
    to_ms: i64,
    points: Vec<ChartPoint>,
}

/// The host's stored health history over `?range=24h` (the default) or
/// `7d`, as JSON.
async fn health_data(
    State(console): State<Console>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, WebError> {
    who.require(Role::Viewer, "showing a host")?;
    let asked = if query.range.is_empty() {
        "24h"
    } else {
        query.range.as_str()
    };
    let Some((range, span, _)) = RANGES.iter().find(|(name, _, _)| *name == asked) else {
        return Err(WebError::BadRequest(format!(
            "unknown range {:?}; expected 24h or 7d",
            query.range.chars().take(20).collect::<String>()
        )));
    };
    let row = host_row(&console, &id).await?;
    let now = console.ctx.clock.now_ms();
    let from = now.saturating_sub(*span);
    let points = console
        .ctx
        .store
        .health_history(&row.id, from)
        .await
        .map_err(WebError::store)?
        .into_iter()
        .map(|p| ChartPoint {
            at_ms: p.at_ms,
            resolution_secs: p.resolution_s,
            samples: p.samples,
            cpu_percent: p.cpu_percent,
            cpu_max_percent: p.cpu_max_percent,
            memory_used_percent: p.memory_used_percent,
            disk_used_max_percent: p.disk_used_max_percent,
            temperature_max_celsius: p.temperature_max_celsius,
        })
        .collect();
    let data = ChartData {
        range,
        from_ms: from,
        to_ms: now,
        points,
    };
    let json = serde_json::to_string(&data).map_err(|error| {
        tracing::error!(%error, "writing health history as JSON failed");
        WebError::Internal
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

/// One line of a streamed run.
fn ndjson_line(value: &serde_json::Value) -> Bytes {
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What a follower heard, as a line of a streamed run.
fn followed_line(followed: Followed) -> serde_json::Value {
    match followed {
        Followed::Output(chunk) => {
            serde_json::json!({ "output": String::from_utf8_lossy(&chunk) })
        }
        Followed::Finished(job) => serde_json::json!({ "finished": {
            "id": job.id,
            "state": job.state,
            "exit_code": job.exit_code,
            "reason": job.reason,
            "truncated": job.truncated,
            "output": String::from_utf8_lossy(&job.output),
        }}),
        Followed::Cut(line) => serde_json::json!({ "error": line }),
        Followed::StoreFailed => {
            serde_json::json!({ "error": "the collector's store failed; retry later" })
        }
    }
}

/// A refused run: for `console.js` its status and the line as JSON, for a
/// plain form a page.
fn refusal_response(refusal: RunRefused, streaming: bool) -> Response {
    let status = match refusal {
        RunRefused::Invalid(_) => StatusCode::BAD_REQUEST,
        RunRefused::Denied(_) => StatusCode::FORBIDDEN,
        RunRefused::Unavailable(_) => StatusCode::CONFLICT,
        RunRefused::NotFound(_) => StatusCode::NOT_FOUND,
    };
    if streaming {
        let line = ndjson_line(&serde_json::json!({ "error": refusal.line() }));
        return (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
            line,
        )
            .into_response();
    }
    let line = refusal.line().to_owned();
    match status {
        StatusCode::FORBIDDEN => WebError::Forbidden(line),
        StatusCode::CONFLICT => WebError::Conflict(line),
        StatusCode::NOT_FOUND => WebError::NotFound(line),
        _ => WebError::BadRequest(line),
    }
    .into_response()
}

/// Runs a diagnostic from the form: `diagnostic` and its parameters (a
/// blank field is a parameter not given, as a CLI run without that
/// `--param`).
async fn run_diagnostic(
    State(console): State<Console>,
    who: SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let caller = who.require(Role::Viewer, "running a diagnostic")?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains(NDJSON));
    let row = host_row(&console, &id).await?;
    let mut asked = RunAsked::default();
    for (name, value) in fields {
        match name.as_str() {
            CSRF_FIELD => {}
            "diagnostic" => asked.diagnostic = value,
            _ if value.trim().is_empty() => {}
            _ => asked.params.push((name, value)),
        }
    }
    let ctx = &console.ctx;
    let started = match start_diagnostic(ctx, caller, &row, asked)
        .await
        .map_err(WebError::store)?
    {
        Ok(started) => started,
        Err(refusal) => return Ok(refusal_response(refusal, streaming)),
    };
    let Started { job, live, online } = started;
    // Followed only by a script that reads the stream, and only when the
    // host can run it now.
    let live = if streaming && online {
        Some(live)
    } else {
        drop(live);
        ctx.dispatch.unwatch(&job.id);
        None
    };
    if !streaming {
        return Ok(Redirect::to(&format!("/hosts/{}#jobs", row.id)).into_response());
    }
    let first = ndjson_line(&serde_json::json!({ "job": {
        "id": job.id,
        "diagnostic": job.diagnostic,
        "params": job.params_text,
        "state": job.state,
    }}));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_BUFFER);
    // The first line is sent before anything else can be: the channel is
    // new and has room.
    let _ = tx.try_send(first);
    if let Some(live) = live {
        let mut followed = follow_job(ctx.clone(), caller, job.id.clone(), live);
        // Ends when the follower does, or as soon as the browser goes away
        // (the follower then ends too), not only at the job's next word.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    heard = followed.recv() => match heard {
                        Some(heard) => {
                            if tx.send(ndjson_line(&followed_line(heard))).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        });
    } else {
        let _ = tx.try_send(ndjson_line(&serde_json::json!({
            "queued": format!(
                "{} is offline: the job is queued and runs when its agent connects",
                row.hostname
            )
        })));
    }
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::{FieldKind, field_kind};

    #[test]
    fn a_parameters_type_comes_from_its_help() {
        assert_eq!(
            field_kind("1-65535 (required)"),
            FieldKind {
                range: Some((1, 65535)),
                required: true
            }
        );
        assert_eq!(
            field_kind("echo requests, 1-10 (default 4)"),
            FieldKind {
                range: Some((1, 10)),
                required: false
            }
        );
        assert_eq!(
            field_kind("host name or IP address (required)"),
            FieldKind {
                range: None,
                required: true
            }
        );
        for text in ["e.g. eth0", "", "9-", "-9", "x1-2", "5-3"] {
            assert_eq!(field_kind(text).range, None, "{text:?}");
        }
    }
}
