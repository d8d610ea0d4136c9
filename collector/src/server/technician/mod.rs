//! The technician API. Every call authenticates its bearer API token and
//! checks the caller's role before doing anything else.
//!
//! # Layout
//! - this module: the API, authorization, the helpers several concerns
//!   share, and the `Technician` trait, each call forwarded to its concern.
//! - [`hosts`]: hosts, host tags, page tokens, the host context of a
//!   ticket and a host as `GetHost` answers it (shared with the web
//!   console).
//! - [`tickets`]: tickets: list, show, open, update; the checks and the
//!   audited change the web console shares.
//! - `rules`: the fleet policy: list and apply rules.
//! - `changes`: the inventory change log.
//! - `webhooks`: webhooks: add, remove, list, pause and resume.
//! - `kb`: the knowledge-base search.
//! - `tokens`: whoami and enrollment tokens.
//! - `revocation`: revoking hosts, API tokens and enrollment tokens, and
//!   the token lists (issue 20).
//! - [`jobs`]: diagnostics: run, jobs, cancel, the catalog; the run checks
//!   and the catalog the web console shares.
//! - `audit`: the audit log: listing, verification, anchoring the head.
//! - `relink`: the re-link approval queue: list, approve, deny.

mod audit;
mod changes;
pub(crate) mod hosts;
pub(crate) mod jobs;
mod kb;
pub(crate) mod problems;
mod relink;
mod revocation;
pub(crate) mod rules;
pub(crate) mod tickets;
mod tokens;
mod webhooks;

use deskpulse_proto::v1::technician_server::Technician;
use deskpulse_proto::v1::{
    AddWebhookRequest, ListWebhooksRequest, ListWebhooksResponse, RemoveWebhookRequest,
    RemoveWebhookResponse, SearchKbRequest, SearchKbResponse, SetWebhookEnabledRequest, Webhook,
};
use deskpulse_proto::v1::{
    ApplyRulesRequest, CreateEnrollmentTokenRequest, CreateEnrollmentTokenResponse,
    CreateTicketRequest, GetHostRequest, GetHostResponse, GetTicketRequest, GetTicketResponse,
    ListChangesRequest, ListChangesResponse, ListHostsRequest, ListHostsResponse, ListRulesRequest,
    ListRulesResponse, ListTicketsRequest, ListTicketsResponse, SetHostTagRequest,
    SetHostTagResponse, UpdateTicketRequest, WhoAmIRequest, WhoAmIResponse,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::ServerContext;
use crate::secrets::token_hash;
use crate::store::{Caller, Role, StoreError, TokenCheck};

pub use tokens::new_enrollment_token;

fn text_arg(what: &str, text: &str, max: usize) -> Result<String, Status> {
    text_check(what, text, max).map_err(Status::invalid_argument)
}

/// `text` trimmed, or the line saying it must be 1 to `max` characters.
pub(crate) fn text_check(what: &str, text: &str, max: usize) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max {
        return Err(format!("{what} must be 1-{max} characters"));
    }
    Ok(text.to_owned())
}

/// How often a token's last use is written at most.
const LAST_USE_EVERY_MS: i64 = 60_000;

/// A time for a one-line message: RFC 3339, UTC.
pub(crate) fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn internal(error: StoreError) -> Status {
    tracing::error!(%error, "store error in the technician API");
    Status::internal("the collector's store failed; retry later")
}

/// Checks an API token for every way in (the technician API, the web
/// console's sign-in): the technician behind a working token, or the one
/// line that says why it does not work. A working token's last use is
/// recorded, at most once a minute (issue 20).
pub(crate) async fn check_api_token(
    ctx: &ServerContext,
    token: &str,
) -> Result<Result<Caller, String>, StoreError> {
    let now = ctx.clock.now_ms();
    let caller = match ctx.store.authenticate(&token_hash(token), now).await? {
        TokenCheck::Valid(caller) => caller,
        TokenCheck::Unknown => return Ok(Err("the API token is unknown or revoked".to_owned())),
        TokenCheck::Revoked => return Ok(Err(super::revocation::TOKEN_REVOKED.to_owned())),
        TokenCheck::Expired(at) => {
            return Ok(Err(super::revocation::token_expired_message(&format_ms(
                at,
            ))));
        }
    };
    // The row says when it was last written, so no write is needed before.
    if caller
        .last_used_at_ms
        .is_none_or(|last| now.saturating_sub(last) >= LAST_USE_EVERY_MS)
        && let Err(error) = ctx.store.touch_api_token(&caller.token_id, now).await
    {
        tracing::warn!(%error, "recording an API token's use failed");
    }
    Ok(Ok(caller))
}

/// The one line refusing `caller` an `action` that needs the `needed`
/// role, or `None` when its role suffices. Every way in checks roles with
/// this, so the API and the web console refuse alike.
pub(crate) fn role_refusal(caller: &Caller, needed: Role, action: &str) -> Option<String> {
    (caller.role < needed).then(|| {
        format!(
            "{action} needs the {needed} role; {} has the {} role",
            caller.name, caller.role
        )
    })
}

/// The default and the largest page of change-log entries and tickets.
const DEFAULT_CHANGES: u32 = 500;
const MAX_CHANGES: u32 = 5000;

/// The technician API.
#[derive(Debug)]
pub struct TechnicianApi {
    ctx: ServerContext,
    failed_tokens: super::limits::FailedAttempts,
}

impl TechnicianApi {
    /// An API over `ctx.store`.
    pub fn new(ctx: ServerContext) -> Self {
        Self {
            ctx,
            failed_tokens: super::limits::FailedAttempts::new("API token"),
        }
    }

    /// Authenticates the bearer token and checks that its role is at least
    /// `needed` for `action`.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        needed: Role,
        action: &str,
    ) -> Result<Caller, Status> {
        // Before the header is read: an address that used up its failed
        // attempts costs the store nothing.
        let peer = request.remote_addr();
        let attempt = self.failed_tokens.reserve(peer).await?;
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
        let caller = match check_api_token(&self.ctx, token).await.map_err(internal)? {
            Ok(caller) => caller,
            Err(line) => {
                attempt.failed();
                info!(action, ?peer, refusal = %line, "refused an API token");
                return Err(Status::unauthenticated(line));
            }
        };
        drop(attempt);
        if let Some(line) = role_refusal(&caller, needed, action) {
            info!(action, technician = %caller.name, role = %caller.role, "refused: role too low");
            return Err(Status::permission_denied(line));
        }
        Ok(caller)
    }
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
        self.who_am_i_impl(request).await
    }

    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        self.list_hosts_impl(request).await
    }

    async fn get_host(
        &self,
        request: Request<GetHostRequest>,
    ) -> Result<Response<GetHostResponse>, Status> {
        self.get_host_impl(request).await
    }

    async fn list_tickets(
        &self,
        request: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        self.list_tickets_impl(request).await
    }

    async fn get_ticket(
        &self,
        request: Request<GetTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        self.get_ticket_impl(request).await
    }

    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        self.list_rules_impl(request).await
    }

    async fn apply_rules(
        &self,
        request: Request<ApplyRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        self.apply_rules_impl(request).await
    }

    async fn create_ticket(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        self.create_ticket_impl(request).await
    }

    async fn update_ticket(
        &self,
        request: Request<UpdateTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        self.update_ticket_impl(request).await
    }

    async fn list_changes(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        self.list_changes_impl(request).await
    }

    async fn set_host_tag(
        &self,
        request: Request<SetHostTagRequest>,
    ) -> Result<Response<SetHostTagResponse>, Status> {
        self.set_host_tag_impl(request).await
    }

    async fn add_webhook(
        &self,
        request: Request<AddWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        self.add_webhook_impl(request).await
    }

    async fn remove_webhook(
        &self,
        request: Request<RemoveWebhookRequest>,
    ) -> Result<Response<RemoveWebhookResponse>, Status> {
        self.remove_webhook_impl(request).await
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        self.list_webhooks_impl(request).await
    }

    async fn set_webhook_enabled(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<Webhook>, Status> {
        self.set_webhook_enabled_impl(request).await
    }

    async fn search_kb(
        &self,
        request: Request<SearchKbRequest>,
    ) -> Result<Response<SearchKbResponse>, Status> {
        self.search_kb_impl(request).await
    }

    async fn create_enrollment_token(
        &self,
        request: Request<CreateEnrollmentTokenRequest>,
    ) -> Result<Response<CreateEnrollmentTokenResponse>, Status> {
        self.create_enrollment_token_impl(request).await
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

    async fn revoke_host(
        &self,
        request: Request<deskpulse_proto::v1::RevokeHostRequest>,
    ) -> Result<Response<deskpulse_proto::v1::RevokeHostResponse>, Status> {
        self.revoke_host_impl(request).await
    }

    async fn retire_host(
        &self,
        request: Request<deskpulse_proto::v1::RetireHostRequest>,
    ) -> Result<Response<deskpulse_proto::v1::RetireHostResponse>, Status> {
        self.retire_host_impl(request).await
    }

    async fn list_api_tokens(
        &self,
        request: Request<deskpulse_proto::v1::ListApiTokensRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListApiTokensResponse>, Status> {
        self.list_api_tokens_impl(request).await
    }

    async fn revoke_api_token(
        &self,
        request: Request<deskpulse_proto::v1::RevokeApiTokenRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ApiToken>, Status> {
        self.revoke_api_token_impl(request).await
    }

    async fn list_enrollment_tokens(
        &self,
        request: Request<deskpulse_proto::v1::ListEnrollmentTokensRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListEnrollmentTokensResponse>, Status> {
        self.list_enrollment_tokens_impl(request).await
    }

    async fn revoke_enrollment_token(
        &self,
        request: Request<deskpulse_proto::v1::RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<deskpulse_proto::v1::EnrollmentToken>, Status> {
        self.revoke_enrollment_token_impl(request).await
    }

    async fn list_relink_requests(
        &self,
        request: Request<deskpulse_proto::v1::ListRelinkRequestsRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListRelinkRequestsResponse>, Status> {
        self.list_relink_requests_impl(request).await
    }

    async fn approve_relink_request(
        &self,
        request: Request<deskpulse_proto::v1::DecideRelinkRequest>,
    ) -> Result<Response<deskpulse_proto::v1::RelinkRequest>, Status> {
        self.decide_relink_impl(request, true).await
    }

    async fn deny_relink_request(
        &self,
        request: Request<deskpulse_proto::v1::DecideRelinkRequest>,
    ) -> Result<Response<deskpulse_proto::v1::RelinkRequest>, Status> {
        self.decide_relink_impl(request, false).await
    }

    async fn list_problems(
        &self,
        request: Request<deskpulse_proto::v1::ListProblemsRequest>,
    ) -> Result<Response<deskpulse_proto::v1::ListProblemsResponse>, Status> {
        self.list_problems_impl(request).await
    }

    async fn get_problem(
        &self,
        request: Request<deskpulse_proto::v1::GetProblemRequest>,
    ) -> Result<Response<deskpulse_proto::v1::GetProblemResponse>, Status> {
        self.get_problem_impl(request).await
    }

    async fn resolve_problem(
        &self,
        request: Request<deskpulse_proto::v1::ResolveProblemRequest>,
    ) -> Result<Response<deskpulse_proto::v1::GetProblemResponse>, Status> {
        self.resolve_problem_impl(request).await
    }
}
