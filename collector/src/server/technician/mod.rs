//! The technician API. Every call authenticates its bearer API token and
//! checks the caller's role before doing anything else.
//!
//! # Layout
//! - this module: hosts, inventory, changes, tickets, rules, enrollment.
//! - [`jobs`]: diagnostics: run, jobs, cancel, the catalog.
//! - `audit`: the audit log: listing, verification, anchoring the head.

mod audit;
mod jobs;

use deskpulse_proto::v1::technician_server::Technician;
use deskpulse_proto::v1::{
    AddWebhookRequest, KbMatch, ListWebhooksRequest, ListWebhooksResponse, RemoveWebhookRequest,
    RemoveWebhookResponse, SearchKbRequest, SearchKbResponse, SetWebhookEnabledRequest, Webhook,
};
use deskpulse_proto::v1::{
    ApplyRulesRequest, CreateEnrollmentTokenRequest, CreateEnrollmentTokenResponse,
    CreateTicketRequest, GetHostRequest, GetHostResponse, GetTicketRequest, GetTicketResponse,
    HealthPoint, HealthSample, HostSummary, Inventory, InventoryChange, ListChangesRequest,
    ListChangesResponse, ListHostsRequest, ListHostsResponse, ListRulesRequest, ListRulesResponse,
    ListTicketsRequest, ListTicketsResponse, Presence, RuleInfo, SetHostTagRequest,
    SetHostTagResponse, SlaTargetInfo, SpoolCounters, Ticket, UpdateTicketRequest, WhoAmIRequest,
    WhoAmIResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::info;

use super::ServerContext;
use crate::rules::priority::Priority;
use crate::secrets::{self, token_hash};
use crate::store::{
    AuditEntry, Caller, ChangeQuery, ChangeRow, HostRow, NewEnrollmentToken, PolicyRecord, Role,
    StoreError, TICKET_STATUSES, TicketChange, TicketQuery, TicketRefusal, TicketRow, WorklogEntry,
};
use crate::store::{NewWebhook, WebhookStatus};
use deskpulse_proto::v1::update_ticket_request::Change;

fn ticket_response(row: TicketRow, worklog: Vec<WorklogEntry>) -> GetTicketResponse {
    GetTicketResponse {
        ticket: Some(ticket_message(row)),
        worklog: worklog
            .into_iter()
            .map(|e| deskpulse_proto::v1::WorklogEntry {
                at_unix_ms: e.at_ms,
                author: e.author,
                note: e.note,
            })
            .collect(),
        ..Default::default()
    }
}

/// The longest note or resolution kept.
const MAX_NOTE: usize = 10_000;

fn text_arg(what: &str, text: &str, max: usize) -> Result<String, Status> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1-{max} characters"
        )));
    }
    Ok(text.to_owned())
}

fn ticket_message(row: TicketRow) -> Ticket {
    Ticket {
        id: row.id,
        host_id: row.host_id,
        hostname: row.hostname,
        rule: row.rule,
        subject: row.subject,
        title: row.title,
        status: row.status,
        priority: row.priority,
        severity: row.severity,
        assignee: row.assignee.unwrap_or_default(),
        escalation: row.escalation,
        occurrences: row.occurrences,
        flaps: row.flaps,
        opened_at_unix_ms: row.opened_at_ms,
        updated_at_unix_ms: row.updated_at_ms,
        resolved_at_unix_ms: row.resolved_at_ms.unwrap_or(0),
        response_due_unix_ms: row.response_due_ms,
        resolution_due_unix_ms: row.resolution_due_ms,
        evidence_json: row.evidence,
        resolution: row.resolution.unwrap_or_default(),
        responded_at_unix_ms: row.responded_at_ms.unwrap_or(0),
    }
}

/// Change-log entries shown with a host.
const RECENT_CHANGES: u32 = 20;
/// Earlier tickets shown with a ticket.
const RELATED_TICKETS: u32 = 10;
/// The default and the largest page of change-log entries and tickets.
const DEFAULT_CHANGES: u32 = 500;
const MAX_CHANGES: u32 = 5000;

fn change_message(row: ChangeRow) -> InventoryChange {
    let kind = match (&row.old_value, &row.new_value) {
        _ if row.section == "inventory" => "baseline",
        (None, _) => "added",
        (_, None) => "removed",
        _ => "changed",
    };
    InventoryChange {
        host_id: row.host_id,
        hostname: row.hostname,
        observed_at_unix_ms: row.observed_at_ms,
        section: row.section,
        item: row.item,
        old_value: row.old_value.unwrap_or_default(),
        new_value: row.new_value.unwrap_or_default(),
        kind: kind.into(),
    }
}

/// Default and largest page sizes of list calls (D19).
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Enrollment tokens live at most 30 days and allow at most 10,000 uses.
const MAX_ENROLL_TTL_SECS: u64 = 30 * 24 * 3600;
const MAX_ENROLL_USES: u32 = 10_000;
const DEFAULT_ENROLL_TTL_SECS: u64 = 24 * 3600;

/// The technician API.
#[derive(Debug)]
pub struct TechnicianApi {
    ctx: ServerContext,
}

impl TechnicianApi {
    /// An API over `ctx.store`.
    pub fn new(ctx: ServerContext) -> Self {
        Self { ctx }
    }

    /// Authenticates the bearer token and checks that its role is at least
    /// `needed` for `action`.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        needed: Role,
        action: &str,
    ) -> Result<Caller, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("no API token: pass --token or set DESKPULSE_TOKEN")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be \"Bearer TOKEN\"")
            })?;
        let caller = self
            .ctx
            .store
            .authenticate(&token_hash(token))
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                info!(action, "refused an unknown or revoked API token");
                Status::unauthenticated("the API token is unknown or revoked")
            })?;
        if caller.role < needed {
            info!(action, technician = %caller.name, role = %caller.role, "refused: role too low");
            return Err(Status::permission_denied(format!(
                "{action} needs the {needed} role; {} has the {} role",
                caller.name, caller.role
            )));
        }
        Ok(caller)
    }

    /// The one host `query` names, or NOT_FOUND, or INVALID_ARGUMENT naming
    /// the candidates when several match (D4).
    async fn resolve_host(&self, query: &str) -> Result<HostRow, Status> {
        let query = query.trim();
        if query.is_empty() {
            return Err(Status::invalid_argument(
                "HOST is empty: give a host name or id",
            ));
        }
        let mut rows = self.ctx.store.find_hosts(query).await.map_err(internal)?;
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

    async fn tag_strings(&self, host_id: &str) -> Result<Vec<String>, Status> {
        Ok(self
            .ctx
            .store
            .tags(host_id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect())
    }

    /// Adds the host's context to a ticket: summary, inventory without the
    /// long lists, recent changes and health, and related tickets.
    async fn add_context(
        &self,
        response: &mut GetTicketResponse,
        ticket: &TicketRow,
    ) -> Result<(), Status> {
        let store = &self.ctx.store;
        let now = self.ctx.clock.now_ms();
        if let Some(detail) = store.host_detail(&ticket.host_id).await.map_err(internal)? {
            response.host = Some(self.summary(&detail.row));
            response.inventory_summary = detail
                .inventory
                .and_then(|(bytes, _)| Inventory::decode(bytes.as_slice()).ok())
                .map(|mut inventory| {
                    inventory.software = None;
                    inventory.services = None;
                    inventory
                });
        }
        response.recent_changes = store
            .list_changes(&ChangeQuery {
                host_id: Some(ticket.host_id.clone()),
                since_ms: now - 7 * 86_400_000,
                sections: Vec::new(),
                limit: RECENT_CHANGES,
            })
            .await
            .map_err(internal)?
            .into_iter()
            .map(change_message)
            .collect();
        response.recent_health = store
            .health_history(&ticket.host_id, now - 86_400_000)
            .await
            .map_err(internal)?
            .into_iter()
            .map(health_point)
            .collect();
        let mut related = store
            .list_tickets(&TicketQuery {
                host_id: Some(ticket.host_id.clone()),
                limit: RELATED_TICKETS + 1,
                ..Default::default()
            })
            .await
            .map_err(internal)?;
        if !ticket.rule.is_empty() {
            related.extend(
                store
                    .list_tickets(&TicketQuery {
                        rule: Some(ticket.rule.clone()),
                        status: Some("resolved".into()),
                        limit: RELATED_TICKETS,
                        ..Default::default()
                    })
                    .await
                    .map_err(internal)?,
            );
            related.extend(
                store
                    .list_tickets(&TicketQuery {
                        rule: Some(ticket.rule.clone()),
                        status: Some("closed".into()),
                        limit: RELATED_TICKETS,
                        ..Default::default()
                    })
                    .await
                    .map_err(internal)?,
            );
        }
        related.retain(|t| t.id != ticket.id);
        related.sort_by_key(|t| std::cmp::Reverse(t.opened_at_ms));
        related.dedup_by_key(|t| t.id);
        related.truncate(RELATED_TICKETS as usize);
        response.related = related.into_iter().map(ticket_message).collect();
        Ok(())
    }

    fn summary(&self, row: &HostRow) -> HostSummary {
        HostSummary {
            host_id: row.id.clone(),
            hostname: row.hostname.clone(),
            os_name: row.os_name.clone(),
            os_version: row.os_version.clone(),
            last_seen_unix_ms: row.last_seen_at_ms.unwrap_or(0),
            presence: if row.is_online(self.ctx.clock.now_ms()) {
                Presence::Online
            } else {
                Presence::Offline
            } as i32,
            enrolled_at_unix_ms: row.enrolled_at_ms,
        }
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

fn parse_priority(text: &str) -> Result<Option<Priority>, Status> {
    match text.trim() {
        "" => Ok(None),
        text => Priority::parse(text)
            .map(Some)
            .map_err(Status::invalid_argument),
    }
}

/// The largest policy file `rules apply` takes.
const MAX_POLICY_TEXT: usize = 256 * 1024;

fn rules_response(record: &PolicyRecord) -> ListRulesResponse {
    let policy = &record.policy;
    let secs = |ms: i64| u64::try_from(ms / 1000).unwrap_or(0);
    let source = |name: &str| {
        if policy.applied.iter().any(|n| n == name) {
            "applied"
        } else {
            "default"
        }
    };
    let scope = |tags: &[(String, String)]| tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut rules: Vec<RuleInfo> = policy
        .rules
        .iter()
        .map(|r| RuleInfo {
            name: r.name.clone(),
            kind: "metric".into(),
            on: r.metric.name().into(),
            op: r.op.symbol().into(),
            threshold: r.threshold,
            recover: r.recover,
            for_secs: secs(r.duration_ms),
            severity: r.severity.name().into(),
            scope: scope(&r.scope),
            source: source(&r.name).into(),
        })
        .collect();
    rules.extend(policy.change_rules.iter().map(|r| RuleInfo {
        name: r.name.clone(),
        kind: "change".into(),
        on: r.change.name().into(),
        severity: r.severity.name().into(),
        scope: scope(&r.scope),
        source: source(&r.name).into(),
        ..Default::default()
    }));
    ListRulesResponse {
        version: record.version,
        applied_by: record.applied_by.clone(),
        applied_at_unix_ms: record.applied_at_ms,
        rules,
        sla: [Priority::P1, Priority::P2, Priority::P3, Priority::P4]
            .into_iter()
            .map(|p| {
                let t = policy.sla(p);
                SlaTargetInfo {
                    priority: p.name().into(),
                    response_secs: t.response.as_secs(),
                    resolution_secs: t.resolution.as_secs(),
                }
            })
            .collect(),
        business_hours: policy.calendar.summary(),
        quiet_secs: secs(policy.lifecycle.quiet_ms),
        reopen_window_secs: secs(policy.lifecycle.reopen_window_ms),
    }
}

fn internal(error: StoreError) -> Status {
    tracing::error!(%error, "store error in the technician API");
    Status::internal("the collector's store failed; retry later")
}

fn role_to_wire(role: Role) -> deskpulse_proto::v1::Role {
    match role {
        Role::Viewer => deskpulse_proto::v1::Role::Viewer,
        Role::Technician => deskpulse_proto::v1::Role::Technician,
        Role::Admin => deskpulse_proto::v1::Role::Admin,
    }
}

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

#[tonic::async_trait]
impl Technician for TechnicianApi {
    type RunDiagnosticStream = jobs::JobStream;

    async fn run_diagnostic(
        &self,
        request: Request<deskpulse_proto::v1::RunDiagnosticRequest>,
    ) -> Result<Response<Self::RunDiagnosticStream>, Status> {
        self.run_diagnostic_impl(request).await
    }

    async fn list_jobs(
        &self,
        request: Request<deskpulse_proto::v1::ListJobsRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListJobsResponse>, Status> {
        self.list_jobs_impl(request).await
    }

    async fn get_job(
        &self,
        request: Request<deskpulse_proto::v1::GetJobRequest>,
    ) -> Result<Response<deskpulse_proto::v1::Job>, Status> {
        self.get_job_impl(request).await
    }

    async fn cancel_job(
        &self,
        request: Request<deskpulse_proto::v1::GetJobRequest>,
    ) -> Result<Response<deskpulse_proto::v1::Job>, Status> {
        self.cancel_job_impl(request).await
    }

    async fn list_diagnostics(
        &self,
        request: Request<deskpulse_proto::v1::ListDiagnosticsRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListDiagnosticsResponse>, Status> {
        self.list_diagnostics_impl(request).await
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.authorize(&request, Role::Viewer, "whoami").await?;
        Ok(Response::new(WhoAmIResponse {
            technician_id: caller.technician_id,
            name: caller.name,
            role: role_to_wire(caller.role) as i32,
            token_id: caller.token_id,
        }))
    }

    async fn list_hosts(
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
        Ok(Response::new(ListHostsResponse {
            hosts: rows.iter().map(|row| self.summary(row)).collect(),
            next_page_token,
        }))
    }

    async fn get_host(
        &self,
        request: Request<GetHostRequest>,
    ) -> Result<Response<GetHostResponse>, Status> {
        self.authorize(&request, Role::Viewer, "showing a host")
            .await?;
        let request = request.into_inner();
        let row = self.resolve_host(&request.host).await?;
        let health_history = if request.health_since_unix_ms > 0 {
            self.ctx
                .store
                .health_history(&row.id, request.health_since_unix_ms)
                .await
                .map_err(internal)?
                .into_iter()
                .map(health_point)
                .collect()
        } else {
            Vec::new()
        };
        let detail = self
            .ctx
            .store
            .host_detail(&row.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("host {} was removed", row.id)))?;
        let inventory = match &detail.inventory {
            Some((bytes, _)) => Some(Inventory::decode(bytes.as_slice()).map_err(|e| {
                tracing::error!(error = %e, host = %row.id, "stored inventory does not decode");
                Status::internal("the stored inventory is corrupt")
            })?),
            None => None,
        };
        let last_health = match &detail.health {
            Some((bytes, _)) => Some(HealthSample::decode(bytes.as_slice()).map_err(|e| {
                tracing::error!(error = %e, host = %row.id, "stored health sample does not decode");
                Status::internal("the stored health sample is corrupt")
            })?),
            None => None,
        };
        Ok(Response::new(GetHostResponse {
            summary: Some(self.summary(&detail.row)),
            inventory,
            inventory_at_unix_ms: detail.inventory.as_ref().map_or(0, |(_, at)| *at),
            last_health,
            health_at_unix_ms: detail.health.as_ref().map_or(0, |(_, at)| *at),
            certificate_serial: detail.row.cert_serial.clone(),
            certificate_sha256: detail.row.cert_sha256.clone(),
            goodbye_reason: detail.row.goodbye_reason.clone().unwrap_or_default(),
            agent_version: detail.row.agent_version.clone(),
            tags: self.tag_strings(&detail.row.id).await?,
            recent_changes: self
                .ctx
                .store
                .list_changes(&ChangeQuery {
                    host_id: Some(detail.row.id.clone()),
                    since_ms: 0,
                    sections: Vec::new(),
                    limit: RECENT_CHANGES,
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
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Viewer, "listing tickets")
            .await?;
        let request = request.into_inner();
        let assignee = match request.assignee.trim() {
            "" => None,
            "me" => Some(caller.name.clone()),
            name => Some(name.to_owned()),
        };
        let status = request.status.trim().to_ascii_lowercase();
        let open_only = status == "open";
        if !status.is_empty() && !TICKET_STATUSES.contains(&status.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown status {status:?}; expected one of {}",
                TICKET_STATUSES.join(", ")
            )));
        }
        let priority = request.priority.trim().to_ascii_uppercase();
        if !priority.is_empty() && !["P1", "P2", "P3", "P4"].contains(&priority.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown priority {priority:?}; expected P1, P2, P3 or P4"
            )));
        }
        let host_id = if request.host.trim().is_empty() {
            None
        } else {
            Some(self.resolve_host(&request.host).await?.id)
        };
        let limit = match request.limit {
            0 => DEFAULT_CHANGES,
            n if n > MAX_CHANGES => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_CHANGES}"
                )));
            }
            n => n,
        };
        let rows = self
            .ctx
            .store
            .list_tickets(&TicketQuery {
                open_only,
                status: (!status.is_empty() && !open_only).then_some(status),
                host_id,
                priority: (!priority.is_empty()).then_some(priority),
                assignee,
                rule: None,
                limit,
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(ListTicketsResponse {
            tickets: rows.into_iter().map(ticket_message).collect(),
        }))
    }

    async fn get_ticket(
        &self,
        request: Request<GetTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        self.authorize(&request, Role::Viewer, "showing a ticket")
            .await?;
        let id = request.into_inner().id;
        let (row, log) = self
            .ctx
            .store
            .ticket(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no ticket {id}")))?;
        let mut response = ticket_response(row.clone(), log);
        self.add_context(&mut response, &row).await?;
        Ok(Response::new(response))
    }

    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing rules")
            .await?;
        let record = self.ctx.store.policy().await.map_err(internal)?;
        Ok(Response::new(rules_response(&record)))
    }

    async fn apply_rules(
        &self,
        request: Request<ApplyRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "applying rules")
            .await?;
        let text = request.into_inner().text;
        if text.len() > MAX_POLICY_TEXT {
            return Err(Status::invalid_argument(format!(
                "the rule file is larger than {} KiB",
                MAX_POLICY_TEXT / 1024
            )));
        }
        let record = self
            .ctx
            .store
            .apply_policy(&text, &caller.name, self.ctx.clock.now_ms())
            .await
            .map_err(internal)?
            .map_err(Status::invalid_argument)?;
        self.audit(
            &caller,
            "policy.apply",
            format!("version {}", record.version),
            format!(
                "{} rules in force, {} from the file; sha256 {}",
                record.policy.rules.len() + record.policy.change_rules.len(),
                record.policy.applied.len(),
                secrets::sha256_hex(text.as_bytes())
            ),
        )
        .await?;
        self.anchor_audit().await;
        info!(version = record.version, technician = %caller.name, "fleet policy applied");
        Ok(Response::new(rules_response(&record)))
    }

    async fn create_ticket(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "opening a ticket")
            .await?;
        let request = request.into_inner();
        let title = text_arg("the title", &request.title, 200)?;
        let priority = parse_priority(&request.priority)?;
        let host = self.resolve_host(&request.host).await?;
        let row = self
            .ctx
            .store
            .create_ticket(
                &host.id,
                &title,
                priority,
                &caller.name,
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        let (row, log) = self
            .ctx
            .store
            .ticket(row.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::internal("the new ticket vanished"))?;
        let mut response = ticket_response(row.clone(), log);
        // Earlier tickets on the host show at once whether this is a repeat.
        self.add_context(&mut response, &row).await?;
        Ok(Response::new(response))
    }

    async fn update_ticket(
        &self,
        request: Request<UpdateTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "changing a ticket")
            .await?;
        let request = request.into_inner();
        let change = match request.change {
            Some(Change::Assign(name)) => {
                let name = text_arg("the assignee", &name, 64)?;
                TicketChange::Assign(if name == "me" {
                    caller.name.clone()
                } else {
                    name
                })
            }
            Some(Change::Note(text)) => TicketChange::Note(text_arg("the note", &text, MAX_NOTE)?),
            Some(Change::Status(status)) => {
                TicketChange::Status(status.trim().to_ascii_lowercase())
            }
            Some(Change::Resolve(text)) => {
                TicketChange::Resolve(text_arg("the resolution", &text, MAX_NOTE)?)
            }
            Some(Change::Escalate(true)) => TicketChange::Escalate,
            Some(Change::Reopen(true)) => TicketChange::Reopen,
            _ => {
                return Err(Status::invalid_argument(
                    "a ticket update must set one change",
                ));
            }
        };
        let updated = self
            .ctx
            .store
            .update_ticket(request.id, &change, &caller.name, self.ctx.clock.now_ms())
            .await
            .map_err(internal)?;
        match updated {
            Ok(_) => {}
            Err(TicketRefusal::NotFound) => {
                return Err(Status::not_found(format!("no ticket {}", request.id)));
            }
            Err(TicketRefusal::Invalid(why)) => return Err(Status::failed_precondition(why)),
        }
        let (row, log) = self
            .ctx
            .store
            .ticket(request.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no ticket {}", request.id)))?;
        Ok(Response::new(ticket_response(row, log)))
    }

    async fn list_changes(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing changes")
            .await?;
        let request = request.into_inner();
        let host_id = if request.host.trim().is_empty() {
            None
        } else {
            Some(self.resolve_host(&request.host).await?.id)
        };
        let mut sections = Vec::new();
        for text in &request.sections {
            let parsed =
                deskpulse_proto::sections::parse(text).map_err(Status::invalid_argument)?;
            sections.extend(
                parsed
                    .into_iter()
                    .map(|s| deskpulse_proto::sections::name(s).to_owned()),
            );
        }
        let limit = match request.limit {
            0 => DEFAULT_CHANGES,
            n if n > MAX_CHANGES => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_CHANGES}"
                )));
            }
            n => n,
        };
        let mut rows = self
            .ctx
            .store
            .list_changes(&ChangeQuery {
                host_id,
                since_ms: request.since_unix_ms,
                sections,
                limit: limit + 1,
            })
            .await
            .map_err(internal)?;
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok(Response::new(ListChangesResponse {
            changes: rows.into_iter().map(change_message).collect(),
            truncated,
        }))
    }

    async fn set_host_tag(
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
        self.ctx
            .store
            .set_tag(&row.id, &key, &value)
            .await
            .map_err(internal)?;
        self.audit(
            &caller,
            "host.tag",
            row.id.clone(),
            format!("{key}={value}"),
        )
        .await?;
        Ok(Response::new(SetHostTagResponse {
            tags: self.tag_strings(&row.id).await?,
            host_id: row.id,
        }))
    }

    async fn add_webhook(
        &self,
        request: Request<AddWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        self.add_webhook_call(request).await
    }

    async fn remove_webhook(
        &self,
        request: Request<RemoveWebhookRequest>,
    ) -> Result<Response<RemoveWebhookResponse>, Status> {
        self.remove_webhook_call(request).await
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing webhooks")
            .await?;
        let webhooks = self.ctx.store.list_webhooks().await.map_err(internal)?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: webhooks.into_iter().map(webhook_message).collect(),
        }))
    }

    async fn set_webhook_enabled(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<Webhook>, Status> {
        self.set_webhook_enabled_call(request).await
    }

    async fn search_kb(
        &self,
        request: Request<SearchKbRequest>,
    ) -> Result<Response<SearchKbResponse>, Status> {
        self.authorize(&request, Role::Viewer, "searching the knowledge base")
            .await?;
        let request = request.into_inner();
        if request.query.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the search is empty: give one or more words",
            ));
        }
        let limit = match request.limit {
            0 => DEFAULT_KB,
            n if n > MAX_KB => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_KB}"
                )));
            }
            n => n,
        };
        let terms = crate::store::search_terms(&request.query);
        let hits = self
            .ctx
            .store
            .search_kb(&terms, limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(SearchKbResponse {
            matches: hits
                .into_iter()
                .map(|h| KbMatch {
                    ticket_id: h.ticket_id,
                    host_id: h.host_id,
                    hostname: h.hostname,
                    title: h.title,
                    rule: h.rule,
                    resolution: h.resolution,
                    resolved_at_unix_ms: h.resolved_at_ms.unwrap_or(0),
                    rank: h.rank,
                })
                .collect(),
        }))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<CreateEnrollmentTokenRequest>,
    ) -> Result<Response<CreateEnrollmentTokenResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "creating an enrollment token")
            .await?;
        let request = request.into_inner();
        let ttl = match request.ttl_secs {
            0 => DEFAULT_ENROLL_TTL_SECS,
            n if n > MAX_ENROLL_TTL_SECS => {
                return Err(Status::invalid_argument("ttl_secs may be at most 30 days"));
            }
            n => n,
        };
        let uses = match request.uses {
            0 => 1,
            n if n > MAX_ENROLL_USES => {
                return Err(Status::invalid_argument("uses may be at most 10000"));
            }
            n => n,
        };
        let now = self.ctx.clock.now_ms();
        let (token, record) = new_enrollment_token(now, ttl, uses, &caller.name);
        self.ctx
            .store
            .create_enrollment_token(&record, now)
            .await
            .map_err(internal)?;
        self.audit(
            &caller,
            "enrollment-token.create",
            record.id.clone(),
            format!("ttl {ttl}s; uses {uses}"),
        )
        .await?;
        self.anchor_audit().await;
        Ok(Response::new(CreateEnrollmentTokenResponse {
            token,
            expires_at_unix_ms: record.expires_at_ms,
            uses,
        }))
    }

    async fn list_audit(
        &self,
        request: Request<deskpulse_proto::v1::ListAuditRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListAuditResponse>, Status> {
        self.list_audit_impl(request).await
    }

    async fn verify_audit(
        &self,
        request: Request<deskpulse_proto::v1::VerifyAuditRequest>,
    ) -> Result<Response<deskpulse_proto::v1::VerifyAuditResponse>, Status> {
        self.verify_audit_impl(request).await
    }
}

fn webhook_message(w: WebhookStatus) -> Webhook {
    Webhook {
        id: w.id,
        url: w.url,
        events: w.events.iter().map(|e| e.name().to_owned()).collect(),
        enabled: w.enabled,
        created_at_unix_ms: w.created_at_ms,
        created_by: w.created_by,
        pending: w.pending,
        delivered: w.delivered,
        failed: w.failed,
        last_attempt_unix_ms: w.last_attempt_at_ms.unwrap_or(0),
        last_error: w.last_error.unwrap_or_default(),
    }
}

/// The default and the largest number of knowledge-base matches.
const DEFAULT_KB: u32 = 20;
const MAX_KB: u32 = 200;

impl TechnicianApi {
    async fn webhook_status(&self, id: i64) -> Result<Webhook, Status> {
        self.ctx
            .store
            .list_webhooks()
            .await
            .map_err(internal)?
            .into_iter()
            .find(|w| w.id == id)
            .map(webhook_message)
            .ok_or_else(|| Status::not_found(format!("no webhook {id}")))
    }

    async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        subject: String,
        detail: String,
    ) -> Result<(), Status> {
        self.ctx
            .store
            .append_audit(
                &AuditEntry::by(caller, action, subject, detail),
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        // Webhook changes are admin actions: anchor at once.
        self.anchor_audit().await;
        Ok(())
    }

    /// AddWebhook: admin only; the secret is checked and stored, never
    /// logged or audited.
    pub async fn add_webhook_call(
        &self,
        request: Request<AddWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "adding a webhook")
            .await?;
        let request = request.into_inner();
        let url = crate::webhooks::check_url(&request.url).map_err(Status::invalid_argument)?;
        let events =
            crate::webhooks::parse_events(&request.events).map_err(Status::invalid_argument)?;
        let secret =
            crate::webhooks::check_secret(&request.secret).map_err(Status::invalid_argument)?;
        let id = self
            .ctx
            .store
            .add_webhook(
                &NewWebhook {
                    url: url.clone(),
                    events: events.clone(),
                    secret,
                    created_by: caller.name.clone(),
                },
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
        self.audit(
            &caller,
            "webhook.add",
            id.to_string(),
            format!("{url}; events {}", names.join(",")),
        )
        .await?;
        Ok(Response::new(self.webhook_status(id).await?))
    }

    /// SetWebhookEnabled: admin only.
    pub async fn set_webhook_enabled_call(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "pausing or resuming a webhook")
            .await?;
        let request = request.into_inner();
        if !self
            .ctx
            .store
            .set_webhook_enabled(request.id, request.enabled)
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found(format!("no webhook {}", request.id)));
        }
        let hook = self.webhook_status(request.id).await?;
        let action = if request.enabled {
            "webhook.enable"
        } else {
            "webhook.disable"
        };
        self.audit(&caller, action, request.id.to_string(), hook.url.clone())
            .await?;
        Ok(Response::new(hook))
    }

    /// RemoveWebhook: admin only.
    pub async fn remove_webhook_call(
        &self,
        request: Request<RemoveWebhookRequest>,
    ) -> Result<Response<RemoveWebhookResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "removing a webhook")
            .await?;
        let id = request.into_inner().id;
        let url = self.webhook_status(id).await?.url;
        if !self.ctx.store.remove_webhook(id).await.map_err(internal)? {
            return Err(Status::not_found(format!("no webhook {id}")));
        }
        self.audit(&caller, "webhook.remove", id.to_string(), url)
            .await?;
        Ok(Response::new(RemoveWebhookResponse { id }))
    }
}

/// A new enrollment token and its stored form.
pub fn new_enrollment_token(
    now_ms: i64,
    ttl_secs: u64,
    uses: u32,
    created_by: &str,
) -> (String, NewEnrollmentToken) {
    let token = secrets::new_token(secrets::ENROLLMENT_TOKEN_PREFIX);
    let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let record = NewEnrollmentToken {
        id: uuid::Uuid::new_v4().to_string(),
        token_sha256: secrets::token_hash(&token),
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        uses,
        created_by: created_by.to_owned(),
    };
    (token, record)
}
