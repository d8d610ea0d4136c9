//! What the CLI prints: aligned tables for people, and stable JSON shapes
//! for scripts. The JSON shapes are documented in `docs/cli-json.md`;
//! change them only by adding fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deskpulse_proto::v1::{
    GetHostResponse, GetTicketResponse, HealthPoint, HostSummary, InventoryChange,
    InventorySection, ListChangesResponse, ListRulesResponse, Presence, Role, Ticket,
    WhoAmIResponse,
};
use deskpulse_proto::v1::{KbMatch, Webhook};
use serde::Serialize;

use super::terminal::inert;
use crate::exit::{CommandResult, Failure};

/// An RFC 3339 time for milliseconds since the epoch; "never" for 0.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    // RFC 3339 ends at 9999 (humantime's formatter fails past it, which
    // `to_string` turns into a panic); a lying clock can claim any time.
    if ms >= LAST_RFC3339_MS {
        return format!("after 9999 ({ms} ms since 1970)");
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The first millisecond of the year 10000.
const LAST_RFC3339_MS: i64 = 253_402_300_800_000;

/// "5m ago" style age of a time; "never" for 0.
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
    match SystemTime::now().duration_since(at) {
        Ok(age) => format!(
            "{} ago",
            crate::units::span(age.max(Duration::from_secs(1)))
        ),
        Err(_) => "just now".into(),
    }
}

pub(super) fn iso(ms: i64) -> Option<String> {
    (ms > 0).then(|| time(ms))
}

/// Prints rows as columns padded to the widest cell. Cells are made
/// inert ([`super::terminal::inert`]): one cell is one line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| inert(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(super) fn print_json<T: Serialize>(value: &T) -> CommandResult {
    let text = serde_json::to_string_pretty(value).map_err(Failure::runtime)?;
    super::terminal::json(&text);
    Ok(())
}

fn presence(p: i32) -> &'static str {
    match Presence::try_from(p) {
        Ok(Presence::Online) => "online",
        Ok(Presence::Offline) => "offline",
        _ => "unknown",
    }
}

/// One host in `hosts --json`.
#[derive(Debug, Serialize)]
pub struct HostJson<'a> {
    /// The host id.
    pub host_id: &'a str,
    /// The host name.
    pub hostname: &'a str,
    /// OS name.
    pub os_name: &'a str,
    /// OS version.
    pub os_version: &'a str,
    /// "online" or "offline".
    pub presence: &'static str,
    /// When last seen, RFC 3339, or null.
    pub last_seen: Option<String>,
    /// When enrolled, RFC 3339.
    pub enrolled_at: Option<String>,
    /// When retired (issue 21), RFC 3339, or null.
    pub retired_at: Option<String>,
}

impl<'a> From<&'a HostSummary> for HostJson<'a> {
    fn from(h: &'a HostSummary) -> Self {
        Self {
            host_id: &h.host_id,
            hostname: &h.hostname,
            os_name: &h.os_name,
            os_version: &h.os_version,
            presence: presence(h.presence),
            last_seen: iso(h.last_seen_unix_ms),
            enrolled_at: iso(h.enrolled_at_unix_ms),
            retired_at: iso(h.retired_at_unix_ms),
        }
    }
}

/// An installed package a `--software` filter matched, in `hosts --json`.
#[derive(Debug, Serialize)]
struct SoftwareJson<'a> {
    name: &'a str,
    version: &'a str,
    ecosystem: &'a str,
}

/// One host in `hosts --software … --json`: the host and what matched.
#[derive(Debug, Serialize)]
struct MatchedHostJson<'a> {
    #[serde(flatten)]
    host: HostJson<'a>,
    software: Vec<SoftwareJson<'a>>,
}

/// The packages a software filter matched on a host, for its table cell.
fn matched_cell(h: &HostSummary) -> String {
    h.matched_software
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `deskpulse hosts`; with a software filter, the versions it matched too.
pub fn hosts(hosts: &[HostSummary], software_filter: bool, json: bool) -> CommandResult {
    if json {
        if software_filter {
            let rows: Vec<MatchedHostJson<'_>> = hosts
                .iter()
                .map(|h| MatchedHostJson {
                    host: HostJson::from(h),
                    software: h
                        .matched_software
                        .iter()
                        .map(|p| SoftwareJson {
                            name: &p.name,
                            version: &p.version,
                            ecosystem: &p.ecosystem,
                        })
                        .collect(),
                })
                .collect();
            return print_json(&rows);
        }
        let rows: Vec<HostJson<'_>> = hosts.iter().map(HostJson::from).collect();
        return print_json(&rows);
    }
    if hosts.is_empty() {
        errln!("no hosts match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let mut row = vec![
                h.hostname.clone(),
                format!("{} {}", h.os_name, h.os_version).trim().to_owned(),
            ];
            if software_filter {
                row.push(matched_cell(h));
            }
            row.extend([
                ago(h.last_seen_unix_ms),
                if h.retired_at_unix_ms > 0 {
                    "retired".to_owned()
                } else {
                    presence(h.presence).to_owned()
                },
                h.host_id.clone(),
            ]);
            row
        })
        .collect();
    let headers: &[&str] = if software_filter {
        &[
            "HOSTNAME",
            "OS",
            "INSTALLED",
            "LAST SEEN",
            "STATUS",
            "HOST ID",
        ]
    } else {
        &["HOSTNAME", "OS", "LAST SEEN", "STATUS", "HOST ID"]
    };
    out!("{}", table(headers, &rows));
    Ok(())
}

/// `deskpulse host show --json`.
#[derive(Debug, Serialize)]
struct HostDetailJson<'a> {
    #[serde(flatten)]
    host: HostJson<'a>,
    agent_version: &'a str,
    tags: &'a [String],
    goodbye_reason: Option<&'a str>,
    certificate_serial: &'a str,
    certificate_sha256: &'a str,
    inventory_at: Option<String>,
    inventory: Option<&'a deskpulse_proto::v1::Inventory>,
    health_at: Option<String>,
    health: Option<&'a deskpulse_proto::v1::HealthSample>,
    spool: Option<&'a deskpulse_proto::v1::SpoolCounters>,
    spool_at: Option<String>,
    recent_changes: Vec<ChangeJson<'a>>,
    health_history: Vec<HealthPointJson>,
    revoked_at: Option<String>,
    revoked_by: Option<&'a str>,
    revoke_reason: Option<&'a str>,
    retired_by: Option<&'a str>,
    retire_reason: Option<&'a str>,
    clock: Option<ClockJson>,
}

/// A host's clock in `--json` output (issue 20).
#[derive(Debug, Serialize)]
struct ClockJson {
    /// The PC's clock minus the collector's, ms; null until measured.
    offset_ms: Option<i64>,
    /// The same in words, e.g. "3h 2m behind".
    offset: Option<String>,
    measured_at: Option<String>,
    window_ms: i64,
    beyond_window: bool,
    clamped_reports: u64,
    last_clamped_claim: Option<String>,
    /// The claimed time in ms, kept exactly: it may be past any date the
    /// ISO form can show.
    last_clamped_claim_unix_ms: Option<i64>,
}

fn clock_json(clock: &deskpulse_proto::v1::HostClock) -> ClockJson {
    let measured = clock.measured_at_unix_ms > 0;
    let claimed = clock.clamped_reports > 0;
    ClockJson {
        offset_ms: measured.then_some(clock.offset_ms),
        offset: measured.then(|| crate::clockskew::describe(clock.offset_ms)),
        measured_at: iso(clock.measured_at_unix_ms),
        window_ms: clock.window_ms,
        beyond_window: clock.beyond_window,
        clamped_reports: clock.clamped_reports,
        last_clamped_claim: claimed
            .then(|| iso(clock.last_clamped_claim_unix_ms))
            .flatten(),
        last_clamped_claim_unix_ms: claimed.then_some(clock.last_clamped_claim_unix_ms),
    }
}

/// The `clock` line of `deskpulse host show`.
fn clock_line(clock: &deskpulse_proto::v1::HostClock) -> String {
    let mut line = if clock.measured_at_unix_ms > 0 {
        let words = crate::clockskew::describe(clock.offset_ms);
        let window = crate::units::duration_ms(clock.window_ms);
        if clock.beyond_window {
            format!(
                "{words} (measured {}), OFF: beyond the {window} window; report times past it are replaced by the time received",
                ago(clock.measured_at_unix_ms)
            )
        } else {
            format!("{words} (measured {})", ago(clock.measured_at_unix_ms))
        }
    } else {
        "not measured (the agent does not send its clock)".to_owned()
    };
    if clock.clamped_reports > 0 {
        let claim = iso(clock.last_clamped_claim_unix_ms)
            .unwrap_or_else(|| format!("{} ms since 1970", clock.last_clamped_claim_unix_ms));
        let (count, plural) = match clock.clamped_reports {
            1 => ("1 report".to_owned(), "was"),
            n => (format!("{n} reports"), "were"),
        };
        line.push_str(&format!(
            "; {count} dated outside the window {plural} stored at the time received (the last claimed {claim})"
        ));
    }
    line
}

/// One health-history point in `--json` output.
#[derive(Debug, Serialize)]
struct HealthPointJson {
    at: Option<String>,
    resolution_secs: u32,
    samples: u32,
    cpu_percent: f32,
    cpu_max_percent: f32,
    memory_used_percent: f32,
    disk_used_max_percent: f32,
}

/// The health trend as rows of up to 24 equal time buckets: average and
/// peak CPU, average memory, fullest disk, and a bar of the CPU average.
fn health_trend(points: &[HealthPoint]) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "no health samples in that window\n".into();
    };
    let span = (last.at_unix_ms - first.at_unix_ms).max(1);
    let buckets = 24i64.min(points.len() as i64).max(1);
    let width = (span + buckets) / buckets;
    let mut rows = Vec::new();
    for b in 0..buckets {
        let start = first.at_unix_ms + b * width;
        let inside: Vec<&HealthPoint> = points
            .iter()
            .filter(|p| p.at_unix_ms >= start && (p.at_unix_ms < start + width || b == buckets - 1))
            .collect();
        let samples: u32 = inside.iter().map(|p| p.samples.max(1)).sum();
        if samples == 0 {
            continue;
        }
        let weighted = |f: fn(&HealthPoint) -> f32| {
            inside
                .iter()
                .map(|p| f(p) * p.samples.max(1) as f32)
                .sum::<f32>()
                / samples as f32
        };
        let cpu = weighted(|p| p.cpu_percent);
        let peak = inside.iter().map(|p| p.cpu_max_percent).fold(0.0, f32::max);
        let disk = inside
            .iter()
            .map(|p| p.disk_used_max_percent)
            .fold(0.0, f32::max);
        rows.push(vec![
            time(start),
            samples.to_string(),
            format!("{cpu:.0}%"),
            format!("{peak:.0}%"),
            format!("{:.0}%", weighted(|p| p.memory_used_percent)),
            format!("{disk:.0}%"),
            "#".repeat((cpu / 5.0).round() as usize),
        ]);
    }
    table(
        &[
            "from",
            "samples",
            "cpu",
            "cpu peak",
            "memory",
            "disk",
            "cpu trend",
        ],
        &rows,
    )
}

/// One change-log entry in `--json` output.
#[derive(Debug, Serialize)]
struct ChangeJson<'a> {
    host_id: &'a str,
    hostname: &'a str,
    observed_at: Option<String>,
    section: &'a str,
    item: &'a str,
    kind: &'a str,
    old: Option<&'a str>,
    new: Option<&'a str>,
}

impl<'a> From<&'a InventoryChange> for ChangeJson<'a> {
    fn from(c: &'a InventoryChange) -> Self {
        let present = |v: &'a str, absent: bool| (!absent).then_some(v);
        Self {
            host_id: &c.host_id,
            hostname: &c.hostname,
            observed_at: iso(c.observed_at_unix_ms),
            section: &c.section,
            item: &c.item,
            kind: &c.kind,
            old: present(&c.old_value, c.kind == "added" || c.kind == "baseline"),
            new: present(&c.new_value, c.kind == "removed"),
        }
    }
}

/// The old → new text of a change.
fn change_text(c: &InventoryChange) -> String {
    match c.kind.as_str() {
        "added" => format!("added: {}", c.new_value),
        "removed" => format!("removed (was {})", c.old_value),
        "baseline" => format!("first inventory, {}", c.new_value),
        _ => format!("{} -> {}", c.old_value, c.new_value),
    }
}

/// One ticket as JSON: the wire fields with times in RFC 3339 and the
/// evidence parsed.
pub(super) fn ticket_json(t: &Ticket) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "host_id": t.host_id,
        "hostname": t.hostname,
        "rule": t.rule,
        "subject": t.subject,
        "title": t.title,
        "status": t.status,
        "priority": t.priority,
        "severity": t.severity,
        "assignee": (!t.assignee.is_empty()).then_some(&t.assignee),
        "escalation": t.escalation,
        "occurrences": t.occurrences,
        "flaps": t.flaps,
        "opened_at": iso(t.opened_at_unix_ms),
        "updated_at": iso(t.updated_at_unix_ms),
        "resolved_at": iso(t.resolved_at_unix_ms),
        "responded_at": iso(t.responded_at_unix_ms),
        "response_due": iso(t.response_due_unix_ms),
        "resolution_due": iso(t.resolution_due_unix_ms),
        "resolution": (!t.resolution.is_empty()).then_some(&t.resolution),
        "evidence": serde_json::from_str::<serde_json::Value>(&t.evidence_json).ok(),
        "problem_id": (t.problem_id > 0).then_some(t.problem_id),
    })
}

fn health_point_json(p: &HealthPoint) -> HealthPointJson {
    HealthPointJson {
        at: iso(p.at_unix_ms),
        resolution_secs: p.resolution_secs,
        samples: p.samples,
        cpu_percent: p.cpu_percent,
        cpu_max_percent: p.cpu_max_percent,
        memory_used_percent: p.memory_used_percent,
        disk_used_max_percent: p.disk_used_max_percent,
    }
}

/// The evidence of a ticket, one line per fact, for people.
fn evidence_lines(t: &Ticket) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&t.evidence_json) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(metric) = map.get("metric") {
        // The evidence keeps the exact reading; people read it rounded to
        // its unit, as the ticket's title shows it.
        let metric_name = text(metric);
        let value = match (
            crate::rules::model::Metric::named(&metric_name),
            map.get("value").and_then(serde_json::Value::as_f64),
        ) {
            (Some(m), Some(v)) => m.format(v),
            _ => map.get("value").map(text).unwrap_or_default(),
        };
        let held = map
            .get("for_ms")
            .and_then(serde_json::Value::as_i64)
            .filter(|ms| *ms > 0)
            .map(|ms| format!(" for {}", crate::units::duration_ms(ms)))
            .unwrap_or_default();
        lines.push(format!(
            "{metric_name} {} {}{held}{}: value {value} at {}",
            map.get("op").map(text).unwrap_or_default(),
            map.get("threshold").map(text).unwrap_or_default(),
            map.get("subject")
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| format!(" on {s}"))
                .unwrap_or_default(),
            time(
                map.get("sample_at_ms")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0)
            ),
        ));
    }
    if let Some(detail) = map.get("detail") {
        lines.push(format!(
            "change {}: {}",
            map.get("change").map(text).unwrap_or_default(),
            text(detail)
        ));
    }
    if let Some(who) = map.get("reported_by") {
        lines.push(format!(
            "reported by {} at {}: {}",
            text(who),
            time(
                map.get("reported_at_ms")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0)
            ),
            map.get("text").map(text).unwrap_or_default()
        ));
        if let Some(h) = map.get("health").filter(|h| !h.is_null()) {
            let percent = |key: &str| {
                h.get(key)
                    .and_then(serde_json::Value::as_f64)
                    .map_or_else(|| "?".to_owned(), crate::units::percent)
            };
            lines.push(format!(
                "health then: cpu {}, memory {}, swap {}",
                percent("cpu_percent"),
                percent("memory_used_percent"),
                percent("swap_used_percent"),
            ));
        }
        if let Some(changes) = map
            .get("recent_changes")
            .and_then(serde_json::Value::as_array)
        {
            lines.push(format!(
                "{} recent changes copied with the report",
                changes.len()
            ));
        }
    }
    lines
}

/// `deskpulse ticket show ID` (and the reply of every ticket change): the
/// ticket, its evidence and worklog, and the host's context.
pub fn ticket(detail: &GetTicketResponse, json: bool) -> CommandResult {
    let t = detail.ticket.clone().unwrap_or_default();
    if json {
        return print_json(&serde_json::json!({
            "ticket": ticket_json(&t),
            "worklog": detail.worklog.iter().map(|w| serde_json::json!({
                "at": iso(w.at_unix_ms),
                "author": w.author,
                "note": w.note,
                "public": w.public,
            })).collect::<Vec<_>>(),
            "host": detail.host.as_ref().map(HostJson::from),
            "inventory_summary": detail.inventory_summary.as_ref(),
            "recent_changes": detail.recent_changes.iter().map(ChangeJson::from).collect::<Vec<_>>(),
            "recent_health": detail.recent_health.iter().map(health_point_json).collect::<Vec<_>>(),
            "related": detail.related.iter().map(ticket_json).collect::<Vec<_>>(),
            "suggestions": super::suggestions::suggestions_json(detail),
            "change_correlation": super::suggestions::correlation_json(detail),
        }));
    }
    let mut out = String::new();
    let mut field =
        |name: &str, value: String| out.push_str(&format!("{name:<15}{}\n", inert(&value)));
    field("ticket", format!("#{} {}", t.id, t.title));
    field(
        "status",
        format!(
            "{} {}{}",
            t.priority,
            t.status,
            if t.escalation > 0 {
                format!(", escalated to level {}", t.escalation)
            } else {
                String::new()
            }
        ),
    );
    field("host", format!("{} ({})", t.hostname, t.host_id));
    if t.problem_id > 0 {
        field(
            "problem",
            format!(
                "#{} (`deskpulse problem show {}`)",
                t.problem_id, t.problem_id
            ),
        );
    }
    if !t.rule.is_empty() {
        field(
            "rule",
            format!(
                "{} ({}){}",
                t.rule,
                t.severity,
                if t.subject.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", t.subject)
                }
            ),
        );
    }
    field(
        "assignee",
        if t.assignee.is_empty() {
            "nobody".into()
        } else {
            t.assignee.clone()
        },
    );
    field(
        "seen",
        format!("{} time(s), reopened {} time(s)", t.occurrences, t.flaps),
    );
    field("opened", time(t.opened_at_unix_ms));
    field(
        "response due",
        if t.responded_at_unix_ms > 0 {
            format!(
                "{} (met {})",
                time(t.response_due_unix_ms),
                time(t.responded_at_unix_ms)
            )
        } else {
            time(t.response_due_unix_ms)
        },
    );
    field("resolve by", time(t.resolution_due_unix_ms));
    if !t.resolution.is_empty() {
        field(
            "resolved",
            format!("{}: {}", time(t.resolved_at_unix_ms), t.resolution),
        );
    }
    for line in evidence_lines(&t) {
        field("evidence", line);
    }
    if let Some(host) = &detail.host {
        field(
            "host status",
            format!(
                "{}, last seen {}",
                presence(host.presence),
                ago(host.last_seen_unix_ms)
            ),
        );
    }
    if let Some(inv) = &detail.inventory_summary {
        let os = inv.os.clone().unwrap_or_default();
        let cpu = inv.cpu.clone().unwrap_or_default();
        let memory = inv.memory.as_ref().map_or(0, |m| m.total_bytes);
        field(
            "inventory",
            format!(
                "{} {}, {} ({} cores), {} memory",
                os.name,
                os.version,
                cpu.model,
                cpu.logical_cores,
                gib(memory)
            ),
        );
    }
    if let Some(last) = detail.recent_health.last() {
        field(
            "health",
            format!(
                "{} samples in 24h; latest cpu {:.0}%, memory {:.0}%, fullest disk {:.0}%",
                detail.recent_health.len(),
                last.cpu_percent,
                last.memory_used_percent,
                last.disk_used_max_percent
            ),
        );
    }
    for c in &detail.recent_changes {
        field(
            "change",
            format!(
                "{} {} {}: {}",
                time(c.observed_at_unix_ms),
                c.section,
                c.item,
                change_text(c)
            ),
        );
    }
    for line in super::suggestions::suggestion_lines(detail) {
        field("suggestion", line);
    }
    for line in super::suggestions::correlation_lines(detail) {
        field("correlation", line);
    }
    for r in &detail.related {
        field(
            "earlier",
            format!(
                "#{} {} {}{}",
                r.id,
                r.status,
                r.title,
                if r.resolution.is_empty() {
                    String::new()
                } else {
                    format!(" -- {}", r.resolution)
                }
            ),
        );
    }
    out.push_str("worklog\n");
    for w in &detail.worklog {
        // An attached run's output spans lines: indented under its entry,
        // so the next entry stands out.
        out.push_str(&format!(
            "  {} {}{}: {}\n",
            time(w.at_unix_ms),
            w.author,
            if w.public { " (public)" } else { "" },
            w.note.trim_end().replace('\n', "\n      ")
        ));
    }
    out!("{out}");
    Ok(())
}

/// `deskpulse rules export`: the policy in force as TOML, or
/// `{"version", "toml"}`.
pub fn rules_export(policy: &ListRulesResponse, json: bool) -> CommandResult {
    if json {
        return print_json(&serde_json::json!({
            "version": policy.version,
            "toml": policy.toml,
        }));
    }
    out!("{}", policy.toml);
    Ok(())
}

/// `deskpulse rules apply FILE [--dry-run]`: what the file changed, or
/// would change, then the policy as in `rules`.
pub fn rules_applied(policy: &ListRulesResponse, dry_run: bool, json: bool) -> CommandResult {
    if json {
        let mut shape = rules_json(policy);
        shape["changes"] = serde_json::json!(policy.changes);
        shape["dry_run"] = serde_json::json!(dry_run);
        return print_json(&shape);
    }
    let verb = if dry_run { "would change" } else { "changed" };
    if policy.changes.is_empty() {
        outln!("the file {verb} nothing in force");
    } else {
        outln!("the file {verb}:");
        for line in &policy.changes {
            outln!("  {line}");
        }
    }
    if dry_run {
        outln!(
            "dry run: nothing was applied; policy version {} stays in force",
            policy.version
        );
        return Ok(());
    }
    outln!();
    rules(policy, false)
}

fn rules_json(policy: &ListRulesResponse) -> serde_json::Value {
    serde_json::json!({
        "version": policy.version,
        "applied_by": (!policy.applied_by.is_empty()).then_some(&policy.applied_by),
        "applied_at": iso(policy.applied_at_unix_ms),
        "business_hours": policy.business_hours,
        "quiet_secs": policy.quiet_secs,
        "reopen_window_secs": policy.reopen_window_secs,
        "sla": policy.sla.iter().map(|t| serde_json::json!({
            "priority": t.priority,
            "response_secs": t.response_secs,
            "resolution_secs": t.resolution_secs,
        })).collect::<Vec<_>>(),
        "rules": policy.rules.iter().map(|r| if r.kind == "metric" {
            serde_json::json!({
                "name": r.name, "kind": r.kind, "metric": r.on, "op": r.op,
                "threshold": r.threshold, "recover": r.recover, "for_secs": r.for_secs,
                "severity": r.severity, "scope": r.scope, "source": r.source,
                "enabled": !r.disabled, "triage": r.triage,
            })
        } else {
            serde_json::json!({
                "name": r.name, "kind": r.kind, "change": r.on,
                "severity": r.severity, "scope": r.scope, "source": r.source,
                "enabled": !r.disabled, "triage": r.triage,
            })
        }).collect::<Vec<_>>(),
    })
}

/// `deskpulse rules`: the policy in force.
pub fn rules(policy: &ListRulesResponse, json: bool) -> CommandResult {
    if json {
        return print_json(&rules_json(policy));
    }
    let span = crate::units::duration_secs;
    if policy.version == 0 {
        outln!("policy: the built-in defaults");
    } else {
        outln!(
            "policy: version {} applied by {} at {}",
            policy.version,
            policy.applied_by,
            time(policy.applied_at_unix_ms)
        );
    }
    outln!(
        "business hours: {}; auto-resolve after {} quiet; reopen within {}",
        policy.business_hours,
        span(policy.quiet_secs),
        span(policy.reopen_window_secs)
    );
    let sla: Vec<String> = policy
        .sla
        .iter()
        .map(|t| {
            format!(
                "{} respond {} resolve {}",
                t.priority,
                span(t.response_secs),
                span(t.resolution_secs)
            )
        })
        .collect();
    outln!("sla: {}\n", sla.join("; "));
    let rows: Vec<Vec<String>> = policy
        .rules
        .iter()
        .map(|r| {
            let condition = if r.kind == "metric" {
                let mut c = format!("{} {} {}", r.on, r.op, r.threshold);
                if r.recover != r.threshold {
                    c.push_str(&format!(" (clears at {})", r.recover));
                }
                if r.for_secs > 0 {
                    c.push_str(&format!(" for {}", span(r.for_secs)));
                }
                c
            } else {
                format!("inventory change: {}", r.on)
            };
            vec![
                r.name.clone(),
                r.severity.clone(),
                condition,
                r.scope.join(" "),
                r.triage.join("; "),
                if r.disabled {
                    format!("{} (disabled)", r.source)
                } else {
                    r.source.clone()
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["rule", "severity", "condition", "scope", "triage", "source"],
            &rows
        )
    );
    Ok(())
}

/// `deskpulse tickets`: a table, or [`ticket_json`] for each.
pub fn tickets(list: &[Ticket], json: bool) -> CommandResult {
    if json {
        let items: Vec<serde_json::Value> = list.iter().map(ticket_json).collect();
        return print_json(&items);
    }
    if list.is_empty() {
        outln!("no tickets match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.priority.clone(),
                t.status.clone(),
                t.hostname.clone(),
                t.title.clone(),
                if t.assignee.is_empty() {
                    "-".into()
                } else {
                    t.assignee.clone()
                },
                t.escalation.to_string(),
                if t.occurrences > 1 {
                    format!("x{}", t.occurrences)
                } else {
                    String::new()
                },
                time(t.resolution_due_unix_ms),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "id",
                "pri",
                "status",
                "host",
                "title",
                "assignee",
                "esc",
                "seen",
                "resolve by"
            ],
            &rows
        )
    );
    Ok(())
}

/// `deskpulse changes`: a table, or `{"changes": [...], "truncated"}`.
pub fn changes(list: &ListChangesResponse, json: bool) -> CommandResult {
    if json {
        return print_json(&serde_json::json!({
            "changes": list.changes.iter().map(ChangeJson::from).collect::<Vec<_>>(),
            "truncated": list.truncated,
        }));
    }
    if list.changes.is_empty() {
        outln!("no changes match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .changes
        .iter()
        .map(|c| {
            vec![
                time(c.observed_at_unix_ms),
                c.hostname.clone(),
                c.section.clone(),
                c.item.clone(),
                change_text(c),
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["observed", "host", "section", "item", "change"], &rows)
    );
    if list.truncated {
        errln!("more changes match; narrow with --since or --section, or raise --limit");
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `deskpulse host show`.
pub fn host(detail: &GetHostResponse, health_asked: bool, json: bool) -> CommandResult {
    let summary = detail.summary.clone().unwrap_or_default();
    if json {
        return print_json(&HostDetailJson {
            host: HostJson::from(&summary),
            agent_version: &detail.agent_version,
            tags: &detail.tags,
            goodbye_reason: (!detail.goodbye_reason.is_empty())
                .then_some(detail.goodbye_reason.as_str()),
            certificate_serial: &detail.certificate_serial,
            certificate_sha256: &detail.certificate_sha256,
            inventory_at: iso(detail.inventory_at_unix_ms),
            inventory: detail.inventory.as_ref(),
            health_at: iso(detail.health_at_unix_ms),
            health: detail.last_health.as_ref(),
            spool: detail.spool.as_ref(),
            spool_at: iso(detail.spool_at_unix_ms),
            recent_changes: detail.recent_changes.iter().map(ChangeJson::from).collect(),
            health_history: detail
                .health_history
                .iter()
                .map(health_point_json)
                .collect(),
            revoked_at: iso(detail.revoked_at_unix_ms),
            revoked_by: (detail.revoked_at_unix_ms > 0).then_some(detail.revoked_by.as_str()),
            revoke_reason: (detail.revoked_at_unix_ms > 0).then_some(detail.revoke_reason.as_str()),
            retired_by: (detail.retired_at_unix_ms > 0).then_some(detail.retired_by.as_str()),
            retire_reason: (detail.retired_at_unix_ms > 0).then_some(detail.retire_reason.as_str()),
            clock: detail.clock.as_ref().map(clock_json),
        });
    }
    let mut out = String::new();
    let mut field =
        |name: &str, value: String| out.push_str(&format!("{name:<15}{}\n", inert(&value)));
    field(
        "host",
        format!("{} ({})", summary.hostname, summary.host_id),
    );
    field(
        "status",
        format!(
            "{}, last seen {}",
            presence(summary.presence),
            ago(summary.last_seen_unix_ms)
        ),
    );
    if detail.retired_at_unix_ms > 0 {
        let reason = if detail.retire_reason.is_empty() {
            String::new()
        } else {
            format!(": {}", detail.retire_reason)
        };
        field(
            "RETIRED",
            format!(
                "at {} by {}{reason}; out of the fleet, its history kept",
                time(detail.retired_at_unix_ms),
                detail.retired_by
            ),
        );
    }
    if detail.revoked_at_unix_ms > 0 {
        let reason = if detail.revoke_reason.is_empty() {
            String::new()
        } else {
            format!(": {}", detail.revoke_reason)
        };
        field(
            "REVOKED",
            format!(
                "at {} by {}{reason}; its certificate is refused",
                time(detail.revoked_at_unix_ms),
                detail.revoked_by
            ),
        );
    }
    if !detail.goodbye_reason.is_empty() {
        field("said goodbye", detail.goodbye_reason.clone());
    }
    field("enrolled", time(summary.enrolled_at_unix_ms));
    if !detail.tags.is_empty() {
        field("tags", detail.tags.join(" "));
    }
    field("agent", detail.agent_version.clone());
    if let Some(clock) = &detail.clock {
        field("clock", clock_line(clock));
    }
    field(
        "certificate",
        format!("serial {}", detail.certificate_serial),
    );
    if let Some(inv) = &detail.inventory {
        let os = inv.os.clone().unwrap_or_default();
        field(
            "os",
            format!(
                "{} {} (kernel {}, {})",
                os.name, os.version, os.kernel_version, os.arch
            ),
        );
        if let Some(system) = &inv.system {
            if !system.vendor.is_empty() || !system.model.is_empty() {
                field(
                    "model",
                    format!("{} {}", system.vendor, system.model)
                        .trim()
                        .to_owned(),
                );
            }
            if !system.serial.is_empty() {
                field("serial", system.serial.clone());
            }
        }
        if let Some(cpu) = &inv.cpu {
            field(
                "cpu",
                format!("{} ({} logical cores)", cpu.model, cpu.logical_cores),
            );
        }
        if let Some(mem) = &inv.memory {
            field(
                "memory",
                format!(
                    "{} total, {} available",
                    gib(mem.total_bytes),
                    gib(mem.available_bytes)
                ),
            );
        }
        for fs in inv.storage.iter().flat_map(|s| &s.filesystems) {
            field(
                "filesystem",
                format!(
                    "{} {} {} free of {}",
                    fs.mount_point,
                    fs.fs_type,
                    gib(fs.available_bytes),
                    gib(fs.total_bytes)
                ),
            );
        }
        for nic in inv.network.iter().flat_map(|n| &n.interfaces) {
            let addrs: Vec<&str> = nic
                .ipv4
                .iter()
                .chain(&nic.ipv6)
                .map(String::as_str)
                .collect();
            field(
                "interface",
                format!("{} {} {}", nic.name, nic.mac, addrs.join(" "))
                    .trim()
                    .to_owned(),
            );
        }
        let packages = inv.software.as_ref().map_or(0, |s| s.packages.len());
        field("packages", packages.to_string());
        // The agent cut its inventory to the collector's limits (issue 20):
        // the host is shown with what fits, and says that more exists.
        for cut in inv
            .unavailable
            .iter()
            .filter(|u| u.reason == deskpulse_proto::v1::UnavailableReason::Truncated as i32)
        {
            field(
                "truncated",
                format!("inventory truncated: {}: {}", cut.field, cut.detail),
            );
        }
        field("inventory at", time(detail.inventory_at_unix_ms));
    } else {
        field("inventory", "none received yet".into());
    }
    if let Some(h) = &detail.last_health {
        let fs: Vec<String> = h
            .filesystems
            .iter()
            .map(|f| format!("{} {:.0}%", f.mount_point, f.used_percent))
            .collect();
        field(
            "health",
            format!(
                "cpu {:.0}%, memory {:.0}%, disk {} at {}",
                h.cpu_percent,
                h.memory_used_percent,
                fs.join(", "),
                time(detail.health_at_unix_ms)
            ),
        );
    }
    if let Some(spool) = &detail.spool {
        let lost = spool.health_dropped + spool.unwritable + spool.results_refused;
        field(
            "agent spool",
            format!(
                "as of {}: {} reports waiting to be sent; {} health samples thinned, {} dropped, {} unwritable, {} results refused{}",
                time(detail.spool_at_unix_ms),
                spool.waiting,
                spool.health_thinned,
                spool.health_dropped,
                spool.unwritable,
                spool.results_refused,
                if lost > 0 { " (data was lost)" } else { "" }
            ),
        );
    }
    let trend = health_asked.then(|| health_trend(&detail.health_history));
    for c in &detail.recent_changes {
        field(
            "change",
            format!(
                "{} {} {}: {}",
                time(c.observed_at_unix_ms),
                c.section,
                c.item,
                change_text(c)
            ),
        );
    }
    out!("{out}");
    if let Some(trend) = trend {
        out!("\nhealth trend\n{trend}");
    }
    Ok(())
}

/// `deskpulse inventory HOST [--section S]`: text per section, or JSON
/// `{"host_id", "hostname", "inventory_at", "sections": {NAME: {...}}}` with
/// the wire field names, plus the `unavailable` entries of those sections.
pub fn inventory(
    detail: &GetHostResponse,
    sections: &[InventorySection],
    json: bool,
) -> CommandResult {
    let summary = detail.summary.clone().unwrap_or_default();
    let Some(inv) = &detail.inventory else {
        return Err(Failure::runtime(format!(
            "{} has not sent an inventory yet",
            summary.hostname
        )));
    };
    if !json {
        outln!(
            "{} ({}) inventory at {}",
            summary.hostname,
            summary.host_id,
            time(detail.inventory_at_unix_ms)
        );
        out!(
            "{}",
            deskpulse_proto::render::render_sections(inv, sections)
        );
        return Ok(());
    }
    let whole = serde_json::to_value(inv).map_err(Failure::runtime)?;
    let mut picked = serde_json::Map::new();
    for s in sections {
        let name = deskpulse_proto::sections::name(*s);
        picked.insert(
            name.to_owned(),
            whole.get(name).cloned().unwrap_or(serde_json::Value::Null),
        );
    }
    let names: Vec<&str> = sections
        .iter()
        .map(|s| deskpulse_proto::sections::name(*s))
        .collect();
    let unavailable: Vec<&deskpulse_proto::v1::Unavailable> = inv
        .unavailable
        .iter()
        .filter(|u| names.contains(&u.field.split('.').next().unwrap_or("")))
        .collect();
    print_json(&serde_json::json!({
        "host_id": summary.host_id,
        "hostname": summary.hostname,
        "inventory_at": iso(detail.inventory_at_unix_ms),
        "sections": picked,
        "unavailable": unavailable,
    }))
}

/// `deskpulse whoami`.
pub fn whoami(me: &WhoAmIResponse, json: bool) -> CommandResult {
    let role = match Role::try_from(me.role) {
        Ok(Role::Admin) => "admin",
        Ok(Role::Technician) => "technician",
        Ok(Role::Viewer) => "viewer",
        _ => "unknown",
    };
    if json {
        #[derive(Serialize)]
        struct Me<'a> {
            technician_id: &'a str,
            name: &'a str,
            role: &'a str,
            token_id: &'a str,
        }
        return print_json(&Me {
            technician_id: &me.technician_id,
            name: &me.name,
            role,
            token_id: &me.token_id,
        });
    }
    outln!("{} ({role}), token {}", me.name, me.token_id);
    Ok(())
}

#[derive(Serialize)]
struct WebhookJson<'a> {
    id: i64,
    url: &'a str,
    events: &'a [String],
    enabled: bool,
    created_at: Option<String>,
    created_by: &'a str,
    pending: u64,
    delivered: u64,
    failed: u64,
    last_attempt: Option<String>,
    last_error: Option<&'a str>,
    format: &'a str,
    priorities: &'a [String],
    assignee: Option<&'a str>,
    last_attempts: u32,
    next_attempt: Option<String>,
}

impl<'a> From<&'a Webhook> for WebhookJson<'a> {
    fn from(w: &'a Webhook) -> Self {
        Self {
            id: w.id,
            url: &w.url,
            events: &w.events,
            enabled: w.enabled,
            created_at: iso(w.created_at_unix_ms),
            created_by: &w.created_by,
            pending: w.pending,
            delivered: w.delivered,
            failed: w.failed,
            last_attempt: iso(w.last_attempt_unix_ms),
            last_error: (!w.last_error.is_empty()).then_some(w.last_error.as_str()),
            format: &w.format,
            priorities: &w.priorities,
            assignee: (!w.assignee.is_empty()).then_some(w.assignee.as_str()),
            last_attempts: w.last_attempts,
            next_attempt: iso(w.next_attempt_unix_ms),
        }
    }
}

fn events_text(events: &[String]) -> String {
    if events.len() == crate::model::TicketEvent::ALL.len() {
        "all".into()
    } else {
        events
            .iter()
            .map(|e| e.trim_start_matches("ticket."))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Which tickets a webhook gets: "all", or its priorities and assignee.
fn webhook_filter(w: &Webhook) -> String {
    let mut parts = Vec::new();
    if !w.priorities.is_empty() {
        parts.push(w.priorities.join(","));
    }
    if !w.assignee.is_empty() {
        parts.push(format!("assigned to {}", w.assignee));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

/// `deskpulse webhooks`: a table with delivery counts, or an array of
/// webhook objects. No secret is ever shown: the API does not return one.
pub fn webhooks(list: &[Webhook], json: bool) -> CommandResult {
    if json {
        return print_json(&list.iter().map(WebhookJson::from).collect::<Vec<_>>());
    }
    if list.is_empty() {
        outln!(
            "no webhooks; an admin adds one with `deskpulse webhooks add URL --secret-file FILE`"
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                w.url.clone(),
                if w.format.is_empty() {
                    "generic".into()
                } else {
                    w.format.clone()
                },
                if w.enabled {
                    events_text(&w.events)
                } else {
                    format!("{} (paused)", events_text(&w.events))
                },
                webhook_filter(w),
                w.pending.to_string(),
                w.delivered.to_string(),
                w.failed.to_string(),
                ago(w.last_attempt_unix_ms),
                w.last_attempts.to_string(),
                if w.next_attempt_unix_ms > 0 {
                    time(w.next_attempt_unix_ms)
                } else {
                    "-".into()
                },
                if w.last_error.is_empty() {
                    "-".into()
                } else {
                    w.last_error.clone()
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "id",
                "url",
                "format",
                "events",
                "tickets",
                "pending",
                "delivered",
                "failed",
                "last attempt",
                "attempts",
                "next try",
                "last error"
            ],
            &rows
        )
    );
    Ok(())
}

/// `deskpulse webhooks add`, `enable`, `disable`: the webhook as it now is.
pub fn webhook_added(w: &Webhook, json: bool) -> CommandResult {
    if json {
        return print_json(&WebhookJson::from(w));
    }
    outln!(
        "webhook {} added: {} ({}, {}; tickets: {})",
        w.id,
        w.url,
        if w.format.is_empty() {
            "generic"
        } else {
            &w.format
        },
        events_text(&w.events),
        webhook_filter(w)
    );
    Ok(())
}

/// `deskpulse kb search`: one block per past resolution, best first, or an
/// array of matches.
pub fn kb(matches: &[KbMatch], json: bool) -> CommandResult {
    if json {
        let items: Vec<serde_json::Value> = matches
            .iter()
            .map(|m| {
                serde_json::json!({
                    "ticket_id": m.ticket_id,
                    "host_id": m.host_id,
                    "hostname": m.hostname,
                    "title": m.title,
                    "rule": m.rule,
                    "resolution": (!m.resolution.is_empty()).then_some(&m.resolution),
                    "resolved_at": iso(m.resolved_at_unix_ms),
                    "rank": m.rank,
                })
            })
            .collect();
        return print_json(&items);
    }
    if matches.is_empty() {
        outln!("no past resolution matches");
        return Ok(());
    }
    for (i, m) in matches.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        let rule = if m.rule.is_empty() { "manual" } else { &m.rule };
        outln!(
            "#{}  {}  resolved {}  rule {rule}",
            m.ticket_id,
            m.hostname,
            time(m.resolved_at_unix_ms)
        );
        outln!("  {}", m.title);
        if m.resolution.is_empty() {
            outln!("  (no resolution written)");
        } else {
            for line in m.resolution.lines() {
                outln!("  > {line}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let out = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "".into()],
            ],
        );
        assert_eq!(out, "A          LONGER\nwide cell  x\nb\n");
    }

    #[test]
    fn zero_times_read_never() {
        assert_eq!(time(0), "never");
        assert_eq!(ago(0), "never");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
