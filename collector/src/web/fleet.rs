//! The fleet: an overview (online and offline counts, the OS mix, open
//! tickets by priority) and the hosts, 100 a page by name, with presence,
//! OS, last seen and their latest health at a glance. The filters are the
//! CLI's `hosts` filters (software with a version rule, OS, user, IP, MAC,
//! serial, model, disk free, tag, offline), checked by the same
//! [`crate::query::from_filter`] as the API's `ListHosts`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use deskpulse_proto::v1::{HealthSample, HostFilter};
use maud::{Markup, html};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::Console;
use super::auth::SignedIn;
use super::layout::{WebError, maybe_time, page};
use crate::store::{HostQuery, HostRow, Role};

/// Hosts per page.
const PAGE: u32 = 100;

/// The fleet routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new().route("/fleet", get(fleet_page))
}

/// The filters as the query string carries them; empty means any.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct Filters {
    /// `NAME`, or `NAME` with `<`, `<=`, `=`, `>=`, `>` and a version.
    #[serde(default)]
    software: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    model: String,
    /// A filesystem with less free space than this percentage.
    #[serde(default)]
    disk_free_below: String,
    /// One tag, `key=value`.
    #[serde(default)]
    tag: String,
    /// "on": only offline hosts.
    #[serde(default)]
    offline: String,
    /// The page: hosts after this "hostname NUL id", hex.
    #[serde(default, skip_serializing)]
    after: String,
}

impl Filters {
    /// The store's query, checked as the API checks a `HostFilter`.
    fn query(&self, now_ms: i64) -> Result<HostQuery, String> {
        let (software_name, software_op, software_version) = match self.software.trim() {
            "" => (String::new(), String::new(), String::new()),
            spec => {
                let (name, compare) = crate::query::parse_software(spec)?;
                match compare {
                    None => (name, String::new(), String::new()),
                    Some((op, version)) => (name, crate::query::op_symbol(op).to_owned(), version),
                }
            }
        };
        let disk_free_below = match self.disk_free_below.trim() {
            "" => 0.0,
            text => text
                .parse::<f32>()
                .map_err(|_| format!("disk free below {text:?} is not a percentage"))?,
        };
        let filter = HostFilter {
            software_name,
            software_op,
            software_version,
            os: self.os.clone(),
            serial: self.serial.clone(),
            model: self.model.clone(),
            disk_free_below,
            offline: self.offline == "on",
            user: self.user.clone(),
            ip: self.ip.clone(),
            mac: self.mac.clone(),
            tags: Some(self.tag.trim().to_owned())
                .filter(|t| !t.is_empty())
                .into_iter()
                .collect(),
            retired: 0,
        };
        crate::query::from_filter(&filter, now_ms)
    }

    /// The page key `after` names, if any.
    fn after(&self) -> Result<Option<(String, String)>, String> {
        if self.after.is_empty() {
            return Ok(None);
        }
        let bad = || "the page link is not one this console made".to_owned();
        let text =
            String::from_utf8(hex::decode(&self.after).map_err(|_| bad())?).map_err(|_| bad())?;
        let (name, id) = text.split_once('\0').ok_or_else(bad)?;
        Ok(Some((name.to_owned(), id.to_owned())))
    }
}

/// A host's latest health at a glance: CPU, memory and the fullest disk,
/// percent.
fn glance(sample: Option<&(Vec<u8>, i64)>) -> Markup {
    let Some(sample) = sample.and_then(|(bytes, _)| HealthSample::decode(bytes.as_slice()).ok())
    else {
        return html! { span.muted { "—" } };
    };
    let disk = sample
        .filesystems
        .iter()
        .map(|f| f.used_percent)
        .fold(0.0_f32, f32::max);
    let percent = |v: f32| crate::units::percent(f64::from(v));
    html! {
        "CPU " (percent(sample.cpu_percent))
        " · memory " (percent(sample.memory_used_percent))
        " · disk "
        @if disk >= 90.0 { span.overdue { (percent(disk)) } } @else { (percent(disk)) }
    }
}

async fn fleet_page(
    State(console): State<Console>,
    who: SignedIn,
    Query(filters): Query<Filters>,
) -> Result<Html<String>, WebError> {
    who.require(Role::Viewer, "listing hosts")?;
    let store = &console.ctx.store;
    let now = console.ctx.clock.now_ms();
    let query = filters.query(now).map_err(WebError::BadRequest)?;
    let after = filters.after().map_err(WebError::BadRequest)?;

    let by_os = store.presence_by_os(now).await.map_err(WebError::store)?;
    let total: u64 = by_os.iter().map(|(_, n, _)| n).sum();
    let online: u64 = by_os.iter().map(|(_, _, up)| up).sum();
    let mut os_mix: BTreeMap<String, u64> = BTreeMap::new();
    for (os, count, _) in &by_os {
        let name = if os.is_empty() {
            "unknown"
        } else {
            os.as_str()
        };
        *os_mix.entry(name.to_owned()).or_default() += count;
    }
    let open_by_priority = store.gauges().await.map_err(WebError::store)?.open_tickets;

    let mut rows: Vec<HostRow> = store
        .list_hosts(
            &query,
            after.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
            PAGE + 1,
        )
        .await
        .map_err(WebError::store)?;
    let more = rows.len() > PAGE as usize;
    rows.truncate(PAGE as usize);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let latest = store.latest_health(&ids).await.map_err(WebError::store)?;
    let health: Vec<Option<&(Vec<u8>, i64)>> = rows.iter().map(|r| latest.get(&r.id)).collect();
    let next = rows.last().filter(|_| more).map(|last| {
        let mut next = filters.clone();
        next.after = hex::encode(format!("{}\0{}", last.hostname, last.id));
        let query = serde_urlencoded::to_string(&next).unwrap_or_default();
        format!("/fleet?{query}&after={}", next.after)
    });

    let body = html! {
        h1 { "Fleet" }
        div.grid {
            section.card aria-label="Presence" {
                h2 { "Presence" }
                p { span.online { (online) " online" } " · " span.offline { (total - online) " offline" } }
            }
            section.card aria-label="Operating systems" {
                h2 { "Operating systems" }
                ul { @for (os, count) in &os_mix { li { (os) ": " (count) } } }
            }
            section.card aria-label="Open tickets" {
                h2 { "Open tickets" }
                ul {
                    @for (priority, count) in &open_by_priority {
                        li { a href={ "/?priority=" (priority) } { (priority) } ": " (count) }
                    }
                }
            }
        }
        form.filters method="get" action="/fleet" aria-label="Filters" {
            label { "Software" input name="software" value=(filters.software) placeholder="openssl<3.0.13"; }
            label { "OS" input name="os" value=(filters.os); }
            label { "User" input name="user" value=(filters.user); }
            label { "IP" input name="ip" value=(filters.ip); }
            label { "MAC" input name="mac" value=(filters.mac); }
            label { "Serial" input name="serial" value=(filters.serial); }
            label { "Model" input name="model" value=(filters.model); }
            label { "Disk free below %" input name="disk_free_below" value=(filters.disk_free_below) inputmode="decimal"; }
            label { "Tag" input name="tag" value=(filters.tag) placeholder="site=berlin"; }
            label { "Offline only" input type="checkbox" name="offline" checked[filters.offline == "on"]; }
            button type="submit" { "Filter" }
            a href="/fleet" { "Clear" }
        }
        @if rows.is_empty() {
            p.muted { "No hosts match." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Host" } th scope="col" { "Presence" } th scope="col" { "OS" }
                    th scope="col" { "Last seen" } th scope="col" { "Health" } th scope="col" { "Agent" }
                } }
                tbody {
                    @for (row, sample) in rows.iter().zip(&health) {
                        tr {
                            td {
                                a href={ "/hosts/" (row.id) } { (row.hostname) }
                                br; span.muted { (row.id) }
                                " · " a.muted href={ "/?status=any&host=" (row.id) } { "tickets" }
                            }
                            td { @if row.is_online(now) { span.online { "online" } } @else { span.offline { "offline" } } }
                            td { (row.os_name) " " (row.os_version) }
                            td { (maybe_time(row.last_seen_at_ms)) }
                            td { (glance(*sample)) }
                            td { (row.agent_version) }
                        }
                    }
                }
            }
            @if let Some(href) = next { p { a href=(href) { "Next hosts" } } }
        }
    };
    Ok(Html(page(&who, "Fleet", "/fleet", body).into_string()))
}
