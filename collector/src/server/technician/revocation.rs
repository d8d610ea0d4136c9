//! The revocation part of the technician API (issue 20), admin only:
//! `RevokeHost`, `RetireHost` (issue 21: a host gone for good, revoked
//! with it), `ListApiTokens`, `RevokeApiToken`, `ListEnrollmentTokens`
//! and `RevokeEnrollmentToken`. Each revocation commits with its audit
//! entry, then ends what is live here and tells the other replicas
//! (`server::revocation`).

use deskpulse_proto::v1::{
    ApiToken, EnrollmentToken, ListApiTokensRequest, ListApiTokensResponse,
    ListEnrollmentTokensRequest, ListEnrollmentTokensResponse, RetireHostRequest,
    RetireHostResponse, RevokeApiTokenRequest, RevokeEnrollmentTokenRequest, RevokeHostRequest,
    RevokeHostResponse,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::tokens::role_to_wire;
use super::{TechnicianApi, format_ms, internal};
use crate::store::{
    ApiTokenRow, AuditEntry, EnrollmentTokenRow, RetireOutcome, RevokeOutcome, Revoked, Role,
};

/// The longest reason a host revocation may give.
const MAX_REASON: usize = 500;
/// Enrollment tokens listed by default and at most.
const DEFAULT_ENROLL_LIST: u32 = 100;
const MAX_ENROLL_LIST: u32 = 1000;

fn api_token_message(row: ApiTokenRow) -> ApiToken {
    ApiToken {
        id: row.id,
        technician: row.technician,
        role: role_to_wire(row.role) as i32,
        created_at_unix_ms: row.created_at_ms,
        last_used_at_unix_ms: row.last_used_at_ms.unwrap_or(0),
        expires_at_unix_ms: row.expires_at_ms.unwrap_or(0),
        revoked_at_unix_ms: row.revoked_at_ms.unwrap_or(0),
        revoked_by: row.revoked_by.unwrap_or_default(),
    }
}

fn enrollment_token_message(row: EnrollmentTokenRow) -> EnrollmentToken {
    let (relink_host_id, relink_hostname) = row
        .relink_host
        .map(|(id, name)| (id, name.unwrap_or_default()))
        .unwrap_or_default();
    EnrollmentToken {
        id: row.id,
        created_by: row.created_by,
        created_at_unix_ms: row.created_at_ms,
        expires_at_unix_ms: row.expires_at_ms,
        uses_allowed: u32::try_from(row.uses_allowed).unwrap_or(0),
        uses_left: u32::try_from(row.uses_left.max(0)).unwrap_or(0),
        relink_host_id,
        relink_hostname,
        revoked_at_unix_ms: row.revoked_at_ms.unwrap_or(0),
        revoked_by: row.revoked_by.unwrap_or_default(),
    }
}

fn token_id_arg(id: &str) -> Result<String, Status> {
    let id = id.trim();
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "ID must be a token id of 1-64 characters, as the token list shows it",
        ));
    }
    Ok(id.to_owned())
}

/// A revocation's or retirement's reason, checked: trimmed, at most
/// [`MAX_REASON`] characters, no control characters.
fn reason_arg(reason: &str) -> Result<&str, Status> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "the reason may be at most {MAX_REASON} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "the reason may not hold control characters",
        ));
    }
    Ok(reason)
}

fn already(what: &str, at_ms: i64) -> Status {
    Status::failed_precondition(format!(
        "{what} was already revoked at {}",
        format_ms(at_ms)
    ))
}

impl TechnicianApi {
    pub(super) async fn revoke_host_impl(
        &self,
        request: Request<RevokeHostRequest>,
    ) -> Result<Response<RevokeHostResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "revoking a host")
            .await?;
        let request = request.into_inner();
        let reason = reason_arg(&request.reason)?;
        let host = self.resolve_host(&request.host).await?;
        let now = self.ctx.clock.now_ms();
        let entry = AuditEntry::by(
            &caller,
            "host.revoke",
            host.id.clone(),
            format!(
                "hostname {:?}; certificate serial {}; reason {reason:?}",
                host.hostname, host.cert_serial
            ),
        );
        let outcome = self
            .ctx
            .store
            .revoke_host(&host.id, &caller.name, reason, &entry, now)
            .await
            .map_err(internal)?;
        match outcome {
            RevokeOutcome::Revoked => {}
            RevokeOutcome::AlreadyRevoked(at) => {
                return Err(already(&format!("host {}", host.hostname), at));
            }
            RevokeOutcome::Unknown => {
                return Err(Status::not_found(format!(
                    "host {} is no longer stored",
                    host.id
                )));
            }
            RevokeOutcome::LastAdmin => return Err(Status::internal("unexpected outcome")),
        }
        let cut = self.ctx.dispatch.revoke(&Revoked::Host(host.id.clone()));
        info!(host = %host.id, hostname = %host.hostname, technician = %caller.name, session_cut_here = cut, "host revoked");
        self.anchor_audit().await;
        Ok(Response::new(RevokeHostResponse {
            host_id: host.id,
            hostname: host.hostname,
            revoked_at_unix_ms: now,
            session_cut_here: cut,
        }))
    }

    /// Retires a host (issue 21). Its certificates are revoked with it, so
    /// its live session is cut here and on the other replicas as a revoked
    /// host's is.
    pub(super) async fn retire_host_impl(
        &self,
        request: Request<RetireHostRequest>,
    ) -> Result<Response<RetireHostResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "retiring a host")
            .await?;
        let request = request.into_inner();
        let reason = reason_arg(&request.reason)?;
        let host = self.resolve_host(&request.host).await?;
        let now = self.ctx.clock.now_ms();
        let entry = AuditEntry::by(
            &caller,
            "host.retire",
            host.id.clone(),
            format!("hostname {:?}; reason {reason:?}", host.hostname),
        );
        let outcome = self
            .ctx
            .store
            .retire_host(&host.id, &caller.name, reason, &entry, now)
            .await
            .map_err(internal)?;
        let closed_tickets = match outcome {
            RetireOutcome::Retired(closed) => closed,
            RetireOutcome::AlreadyRetired(at) => {
                return Err(Status::failed_precondition(format!(
                    "host {} was already retired at {}",
                    host.hostname,
                    format_ms(at)
                )));
            }
            RetireOutcome::Unknown => {
                return Err(Status::not_found(format!(
                    "host {} is no longer stored",
                    host.id
                )));
            }
        };
        let cut = self.ctx.dispatch.revoke(&Revoked::Host(host.id.clone()));
        info!(host = %host.id, hostname = %host.hostname, technician = %caller.name, tickets_closed = closed_tickets.len(), session_cut_here = cut, "host retired");
        self.anchor_audit().await;
        Ok(Response::new(RetireHostResponse {
            host_id: host.id,
            hostname: host.hostname,
            retired_at_unix_ms: now,
            closed_tickets,
            session_cut_here: cut,
        }))
    }

    pub(super) async fn list_api_tokens_impl(
        &self,
        request: Request<ListApiTokensRequest>,
    ) -> Result<Response<ListApiTokensResponse>, Status> {
        self.authorize(&request, Role::Admin, "listing API tokens")
            .await?;
        let rows = self.ctx.store.list_api_tokens().await.map_err(internal)?;
        Ok(Response::new(ListApiTokensResponse {
            tokens: rows.into_iter().map(api_token_message).collect(),
        }))
    }

    pub(super) async fn revoke_api_token_impl(
        &self,
        request: Request<RevokeApiTokenRequest>,
    ) -> Result<Response<ApiToken>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "revoking an API token")
            .await?;
        let id = token_id_arg(&request.into_inner().id)?;
        let now = self.ctx.clock.now_ms();
        let tokens = self.ctx.store.list_api_tokens().await.map_err(internal)?;
        let Some(target) = tokens.into_iter().find(|t| t.id == id) else {
            return Err(Status::not_found(format!("no API token {id:?}")));
        };
        let entry = AuditEntry::by(
            &caller,
            "api-token.revoke",
            id.clone(),
            format!("technician {:?}; role {}", target.technician, target.role),
        );
        let outcome = self
            .ctx
            .store
            .revoke_api_token(&id, &caller.name, &entry, now)
            .await
            .map_err(internal)?;
        match outcome {
            RevokeOutcome::Revoked => {}
            RevokeOutcome::AlreadyRevoked(at) => {
                return Err(already(&format!("API token {id}"), at));
            }
            RevokeOutcome::Unknown => {
                return Err(Status::not_found(format!("no API token {id:?}")));
            }
            RevokeOutcome::LastAdmin => {
                return Err(Status::failed_precondition(format!(
                    "API token {id} is the last working admin token; revoking it would leave no admin: \
                     first make another on the server with `deskpulse-collector token create --role admin --name NAME`"
                )));
            }
        }
        let cut = self.ctx.dispatch.revoke(&Revoked::ApiToken(id.clone()));
        info!(token = %id, technician = %caller.name, streams_cut_here = cut, "API token revoked");
        self.anchor_audit().await;
        let row = ApiTokenRow {
            revoked_at_ms: Some(now),
            revoked_by: Some(caller.name),
            ..target
        };
        Ok(Response::new(api_token_message(row)))
    }

    pub(super) async fn list_enrollment_tokens_impl(
        &self,
        request: Request<ListEnrollmentTokensRequest>,
    ) -> Result<Response<ListEnrollmentTokensResponse>, Status> {
        self.authorize(&request, Role::Admin, "listing enrollment tokens")
            .await?;
        let limit = match request.into_inner().limit {
            0 => DEFAULT_ENROLL_LIST,
            n if n > MAX_ENROLL_LIST => {
                return Err(Status::invalid_argument(format!(
                    "limit may be at most {MAX_ENROLL_LIST}"
                )));
            }
            n => n,
        };
        let rows = self
            .ctx
            .store
            .list_enrollment_tokens(limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(ListEnrollmentTokensResponse {
            tokens: rows.into_iter().map(enrollment_token_message).collect(),
        }))
    }

    pub(super) async fn revoke_enrollment_token_impl(
        &self,
        request: Request<RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<EnrollmentToken>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "revoking an enrollment token")
            .await?;
        let id = token_id_arg(&request.into_inner().id)?;
        let now = self.ctx.clock.now_ms();
        let entry = AuditEntry::by(
            &caller,
            "enrollment-token.revoke",
            id.clone(),
            String::new(),
        );
        let outcome = self
            .ctx
            .store
            .revoke_enrollment_token(&id, &caller.name, &entry, now)
            .await
            .map_err(internal)?;
        match outcome {
            RevokeOutcome::Revoked => {}
            RevokeOutcome::AlreadyRevoked(at) => {
                return Err(already(&format!("enrollment token {id}"), at));
            }
            RevokeOutcome::Unknown | RevokeOutcome::LastAdmin => {
                return Err(Status::not_found(format!("no enrollment token {id:?}")));
            }
        }
        info!(token = %id, technician = %caller.name, "enrollment token revoked");
        self.anchor_audit().await;
        // Read back for the answer; the newest tokens come first.
        let rows = self
            .ctx
            .store
            .list_enrollment_tokens(MAX_ENROLL_LIST)
            .await
            .map_err(internal)?;
        let row = rows.into_iter().find(|row| row.id == id);
        Ok(Response::new(row.map(enrollment_token_message).unwrap_or(
            EnrollmentToken {
                id,
                revoked_at_unix_ms: now,
                revoked_by: caller.name,
                ..EnrollmentToken::default()
            },
        )))
    }
}
