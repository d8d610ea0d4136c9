//! The host part of the technician API: `ListHosts` (paged by page
//! tokens), `GetHost`, `SetHostTag`, and the host helpers the other calls
//! share: resolving a host name or id, the host summary, the host's
//! context shown with a ticket ([`ticket_context`]) and a host as `GetHost`
//! answers it ([`host_response`]); the last two are read for the web
//! console too.

use deskpulse_proto::v1::{
    GetHostRequest, GetHostResponse, GetTicketResponse, HealthPoint, HealthSample, HostSummary,
    Inventory, ListHostsRequest, ListHostsResponse, Package, Presence, SetHostTagRequest,
    SetHostTagResponse, SpoolCounters,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::changes::change_message;
use super::tickets::ticket_message;
use super::{TechnicianApi, internal};
use crate::server::ServerContext;
use crate::store::{
    AuditEntry, ChangeQuery, ChangeRow, HostDetail, HostRow, Role, StoreError, TicketQuery,
    TicketRow,
};

/// Change-log entries shown with a host.
const RECENT_CHANGES: u32 = 20;
/// Earlier tickets shown with a ticket.
const RELATED_TICKETS: u32 = 10;

/// The most installed packages a software filter shows per host.
const MATCHED_SOFTWARE: usize = 20;

/// Default and largest page sizes of list calls (D19).
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// Page tokens are the hex of "hostname NUL id" of the last row returned.
fn encode_page_token(row: &HostRow) -> String {
    hex::encode(format!("{}\0{}", row.hostname, row.id))
}

fn decode_page_token(token: &str) -> Result<Option<(String, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument("page_token is not one this server issued");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (name, id) = text.split_once('\0').ok_or_else(bad)?;
    Ok(Some((name.to_owned(), id.to_owned())))
}

fn suggestion_message(s: &crate::suggest::Suggestion) -> deskpulse_proto::v1::Suggestion {
    deskpulse_proto::v1::Suggestion {
        ticket_id: s.ticket_id,
        title: s.title.clone(),
        hostname: s.hostname.clone(),
        rule: s.rule.clone(),
        resolution: s.resolution.clone(),
        resolved_at_unix_ms: s.resolved_at_ms.unwrap_or(0),
        score: s.score,
        reason: s.reason.clone(),
    }
}

fn health_point(p: crate::store::HealthPoint) -> HealthPoint {
    HealthPoint {
        at_unix_ms: p.at_ms,
        resolution_secs: p.resolution_s,
        samples: p.samples,
        cpu_percent: p.cpu_percent,
        cpu_max_percent: p.cpu_max_percent,
        memory_used_percent: p.memory_used_percent,
        disk_used_max_percent: p.disk_used_max_percent,
    }
}

/// What a ticket is shown with: its host, the host's changes of the last
/// week and health of the last day, related tickets (the host's others,
/// and resolved or closed ones of the same rule, with their resolutions),
/// the fixes suggested when it opened and the change correlation. Read once here for the API and the web console.
#[derive(Debug, Clone)]
pub(crate) struct TicketContext {
    /// The host with its latest inventory, unless it is gone.
    pub host: Option<HostDetail>,
    /// Its recent inventory changes, newest first.
    pub changes: Vec<ChangeRow>,
    /// Its health over the last day.
    pub health: Vec<crate::store::HealthPoint>,
    /// Related tickets, newest first.
    pub related: Vec<TicketRow>,
    /// The fixes suggested when it opened, best first (issue 23).
    pub suggestions: Vec<crate::suggest::Suggestion>,
    /// Its host's changes in the day before it opened, with the other
    /// hosts that made each and have its rule firing (issue 23).
    pub correlation: Vec<crate::suggest::CorrelatedChange>,
}

/// Reads the [`TicketContext`] of `ticket`.
pub(crate) async fn ticket_context(
    ctx: &ServerContext,
    ticket: &TicketRow,
) -> Result<TicketContext, StoreError> {
    let store = &ctx.store;
    let now = ctx.clock.now_ms();
    let host = store.host_detail(&ticket.host_id).await?;
    let changes = store
        .list_changes(&ChangeQuery {
            host_id: Some(ticket.host_id.clone()),
            since_ms: now - 7 * 86_400_000,
            sections: Vec::new(),
            limit: RECENT_CHANGES,
        })
        .await?;
    let health = store
        .health_history(&ticket.host_id, now - 86_400_000)
        .await?;
    let mut related = store
        .list_tickets(&TicketQuery {
            host_id: Some(ticket.host_id.clone()),
            limit: RELATED_TICKETS + 1,
            ..Default::default()
        })
        .await?;
    if !ticket.rule.is_empty() {
        for status in ["resolved", "closed"] {
            related.extend(
                store
                    .list_tickets(&TicketQuery {
                        rule: Some(ticket.rule.clone()),
                        status: Some(status.into()),
                        limit: RELATED_TICKETS,
                        ..Default::default()
                    })
                    .await?,
            );
        }
    }
    related.retain(|t| t.id != ticket.id);
    related.sort_by_key(|t| std::cmp::Reverse(t.opened_at_ms));
    related.dedup_by_key(|t| t.id);
    related.truncate(RELATED_TICKETS as usize);
    Ok(TicketContext {
        host,
        changes,
        health,
        related,
        suggestions: store.ticket_suggestions(ticket.id).await?,
        correlation: store.change_correlation(ticket).await?,
    })
}

/// Everything known of host `host_id`, as `GetHost` answers it: summary,
/// inventory, latest health, tags, its `changes` latest inventory changes,
/// certificate, clock, spool counters, revocation and retirement, and its
/// health history since `health_since_ms` (none when 0); `None` when the
/// host is gone. Read here for the API and the web console's host page.
pub(crate) async fn host_response(
    ctx: &ServerContext,
    host_id: &str,
    health_since_ms: i64,
    changes: u32,
) -> Result<Option<GetHostResponse>, Status> {
    let health_history = if health_since_ms > 0 {
        ctx.store
            .health_history(host_id, health_since_ms)
            .await
            .map_err(internal)?
            .into_iter()
            .map(health_point)
            .collect()
    } else {
        Vec::new()
    };
    let Some(detail) = ctx.store.host_detail(host_id).await.map_err(internal)? else {
        return Ok(None);
    };
    let inventory = match &detail.inventory {
        Some((bytes, _)) => Some(Inventory::decode(bytes.as_slice()).map_err(|e| {
            tracing::error!(error = %e, host = %host_id, "stored inventory does not decode");
            Status::internal("the stored inventory is corrupt")
        })?),
        None => None,
    };
    let last_health = match &detail.health {
        Some((bytes, _)) => Some(HealthSample::decode(bytes.as_slice()).map_err(|e| {
            tracing::error!(error = %e, host = %host_id, "stored health sample does not decode");
            Status::internal("the stored health sample is corrupt")
        })?),
        None => None,
    };
    Ok(Some(GetHostResponse {
        summary: Some(host_summary(ctx, &detail.row)),
        inventory,
        inventory_at_unix_ms: detail.inventory.as_ref().map_or(0, |(_, at)| *at),
        last_health,
        health_at_unix_ms: detail.health.as_ref().map_or(0, |(_, at)| *at),
        certificate_serial: detail.row.cert_serial.clone(),
        certificate_sha256: detail.row.cert_sha256.clone(),
        goodbye_reason: detail.row.goodbye_reason.clone().unwrap_or_default(),
        agent_version: detail.row.agent_version.clone(),
        tags: tag_strings(ctx, &detail.row.id).await?,
        recent_changes: ctx
            .store
            .list_changes(&ChangeQuery {
                host_id: Some(detail.row.id.clone()),
                since_ms: 0,
                sections: Vec::new(),
                limit: changes,
            })
            .await
            .map_err(internal)?
            .into_iter()
            .map(change_message)
            .collect(),
        spool: detail
            .spool_counters
            .as_ref()
            .and_then(|(bytes, _)| SpoolCounters::decode(bytes.as_slice()).ok()),
        spool_at_unix_ms: detail.spool_counters.as_ref().map_or(0, |(_, at)| *at),
        health_history,
        revoked_at_unix_ms: detail.revoked.as_ref().map_or(0, |r| r.at_ms),
        revoked_by: detail
            .revoked
            .as_ref()
            .map(|r| r.by.clone())
            .unwrap_or_default(),
        revoke_reason: detail
            .revoked
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
        clock: host_clock(ctx, &detail.clock).await?,
        retired_at_unix_ms: detail.retired.as_ref().map_or(0, |r| r.at_ms),
        retired_by: detail
            .retired
            .as_ref()
            .map(|r| r.by.clone())
            .unwrap_or_default(),
        retire_reason: detail
            .retired
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
    }))
}

impl TechnicianApi {
    /// The one host `query` names, or NOT_FOUND, or INVALID_ARGUMENT naming
    /// the candidates when several match (D4).
    pub(super) async fn resolve_host(&self, query: &str) -> Result<HostRow, Status> {
        let query = query.trim();
        if query.is_empty() {
            return Err(Status::invalid_argument(
                "HOST is empty: give a host name or id",
            ));
        }
        let mut rows = self.ctx.store.find_hosts(query).await.map_err(internal)?;
        // A name a retired host shares with one in the fleet (the same PC
        // enrolled again) means the one in the fleet; the retired one is
        // still reached by its id.
        if rows.len() > 1 && rows.iter().filter(|r| r.retired_at_ms.is_none()).count() == 1 {
            rows.retain(|r| r.retired_at_ms.is_none());
        }
        match rows.len() {
            0 => Err(Status::not_found(format!("no host matches {query:?}"))),
            1 => Ok(rows.remove(0)),
            n => {
                let candidates: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{} ({})", r.id, r.hostname))
                    .collect();
                Err(Status::invalid_argument(format!(
                    "{query:?} matches {n} hosts; use a host id: {}",
                    candidates.join(", ")
                )))
            }
        }
    }

    /// Adds the host's context to a ticket: summary, inventory without the
    /// long lists, recent changes and health, and related tickets.
    pub(super) async fn add_context(
        &self,
        response: &mut GetTicketResponse,
        ticket: &TicketRow,
    ) -> Result<(), Status> {
        let context = ticket_context(&self.ctx, ticket).await.map_err(internal)?;
        if let Some(detail) = context.host {
            response.host = Some(host_summary(&self.ctx, &detail.row));
            response.inventory_summary = detail
                .inventory
                .and_then(|(bytes, _)| Inventory::decode(bytes.as_slice()).ok())
                .map(|mut inventory| {
                    inventory.software = None;
                    inventory.services = None;
                    inventory
                });
        }
        response.recent_changes = context.changes.into_iter().map(change_message).collect();
        response.recent_health = context.health.into_iter().map(health_point).collect();
        response.related = context.related.into_iter().map(ticket_message).collect();
        response.suggestions = context.suggestions.iter().map(suggestion_message).collect();
        response.change_correlation = context
            .correlation
            .into_iter()
            .map(|c| deskpulse_proto::v1::CorrelatedChange {
                change: Some(change_message(c.change)),
                other_hosts: c.other_hosts,
            })
            .collect();
        Ok(())
    }

    pub(super) async fn list_hosts_impl(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing hosts")
            .await?;
        let request = request.into_inner();
        let size = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = decode_page_token(&request.page_token)?;
        let query =
            crate::query::from_filter(&request.filter.unwrap_or_default(), self.ctx.clock.now_ms())
                .map_err(Status::invalid_argument)?;
        let mut rows = self
            .ctx
            .store
            .list_hosts(
                &query,
                after.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
                size + 1,
            )
            .await
            .map_err(internal)?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => encode_page_token(last),
            _ => String::new(),
        };
        let mut hosts: Vec<HostSummary> = rows
            .iter()
            .map(|row| host_summary(&self.ctx, row))
            .collect();
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        let matched = self
            .ctx
            .store
            .matching_software(&ids, &query)
            .await
            .map_err(internal)?;
        let mut by_host: std::collections::HashMap<String, Vec<Package>> =
            std::collections::HashMap::new();
        for m in matched {
            let packages = by_host.entry(m.host_id).or_default();
            if packages.len() < MATCHED_SOFTWARE {
                packages.push(Package {
                    ecosystem: m.ecosystem,
                    name: m.name,
                    version: m.version,
                    ..Default::default()
                });
            }
        }
        for host in &mut hosts {
            host.matched_software = by_host.remove(&host.host_id).unwrap_or_default();
        }
        Ok(Response::new(ListHostsResponse {
            hosts,
            next_page_token,
        }))
    }

    pub(super) async fn get_host_impl(
        &self,
        request: Request<GetHostRequest>,
    ) -> Result<Response<GetHostResponse>, Status> {
        self.authorize(&request, Role::Viewer, "showing a host")
            .await?;
        let request = request.into_inner();
        let row = self.resolve_host(&request.host).await?;
        host_response(
            &self.ctx,
            &row.id,
            request.health_since_unix_ms,
            RECENT_CHANGES,
        )
        .await?
        .map(Response::new)
        .ok_or_else(|| Status::not_found(format!("host {} was removed", row.id)))
    }

    pub(super) async fn set_host_tag_impl(
        &self,
        request: Request<SetHostTagRequest>,
    ) -> Result<Response<SetHostTagResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "tagging a host")
            .await?;
        let request = request.into_inner();
        let (key, value) =
            crate::query::parse_tag(&format!("{}={}", request.key, request.value), true)
                .map_err(Status::invalid_argument)?;
        let row = self.resolve_host(&request.host).await?;
        let entry = AuditEntry::by(
            &caller,
            "host.tag",
            row.id.clone(),
            format!("{key}={value}"),
        );
        self.ctx
            .store
            .set_tag(&row.id, &key, &value, &entry, self.ctx.clock.now_ms())
            .await
            .map_err(internal)?;
        self.anchor_audit().await;
        Ok(Response::new(SetHostTagResponse {
            tags: tag_strings(&self.ctx, &row.id).await?,
            host_id: row.id,
        }))
    }
}

/// A host's tags as `key=value`.
async fn tag_strings(ctx: &ServerContext, host_id: &str) -> Result<Vec<String>, Status> {
    Ok(ctx
        .store
        .tags(host_id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect())
}

/// A host as the host lists show it.
fn host_summary(ctx: &ServerContext, row: &HostRow) -> HostSummary {
    HostSummary {
        host_id: row.id.clone(),
        hostname: row.hostname.clone(),
        os_name: row.os_name.clone(),
        os_version: row.os_version.clone(),
        last_seen_unix_ms: row.last_seen_at_ms.unwrap_or(0),
        presence: if row.is_online(ctx.clock.now_ms()) {
            Presence::Online
        } else {
            Presence::Offline
        } as i32,
        enrolled_at_unix_ms: row.enrolled_at_ms,
        matched_software: Vec::new(),
        retired_at_unix_ms: row.retired_at_ms.unwrap_or(0),
    }
}

/// A host's clock as recorded, judged by the policy's window in force;
/// `None` until one was measured or a report's time was replaced.
async fn host_clock(
    ctx: &ServerContext,
    clock: &crate::model::HostClock,
) -> Result<Option<deskpulse_proto::v1::HostClock>, Status> {
    if clock.offset.is_none() && clock.clamped_reports == 0 {
        return Ok(None);
    }
    let window = ctx.store.policy().await.map_err(internal)?.policy.clock;
    let (offset_ms, measured_at_unix_ms) = clock.offset.unwrap_or_default();
    Ok(Some(deskpulse_proto::v1::HostClock {
        offset_ms,
        measured_at_unix_ms,
        window_ms: window.window_ms,
        beyond_window: clock.offset.is_some() && window.beyond(offset_ms),
        clamped_reports: clock.clamped_reports,
        last_clamped_claim_unix_ms: clock.last_clamped_claim_ms.unwrap_or(0),
    }))
}
