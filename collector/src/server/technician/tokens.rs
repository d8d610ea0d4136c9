//! The token part of the technician API: `WhoAmI` (whom the caller's API
//! token names, with its role) and `CreateEnrollmentToken` (admin,
//! audited), with the token generation the `admin` commands share.

use deskpulse_proto::v1::{
    CreateEnrollmentTokenRequest, CreateEnrollmentTokenResponse, WhoAmIRequest, WhoAmIResponse,
};
use tonic::{Request, Response, Status};

use super::{TechnicianApi, internal};
use crate::secrets;
use crate::store::{AuditEntry, NewEnrollmentToken, Role};

/// Enrollment tokens live at most 30 days and allow at most 10,000 uses.
const MAX_ENROLL_TTL_SECS: u64 = 30 * 24 * 3600;
const MAX_ENROLL_USES: u32 = 10_000;
const DEFAULT_ENROLL_TTL_SECS: u64 = 24 * 3600;

pub(super) fn role_to_wire(role: Role) -> deskpulse_proto::v1::Role {
    match role {
        Role::Viewer => deskpulse_proto::v1::Role::Viewer,
        Role::Technician => deskpulse_proto::v1::Role::Technician,
        Role::Admin => deskpulse_proto::v1::Role::Admin,
    }
}

impl TechnicianApi {
    pub(super) async fn who_am_i_impl(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = self.authorize(&request, Role::Viewer, "whoami").await?;
        crate::panics::test_panic("whoami");
        Ok(Response::new(WhoAmIResponse {
            technician_id: caller.technician_id,
            name: caller.name,
            role: role_to_wire(caller.role) as i32,
            token_id: caller.token_id,
        }))
    }

    pub(super) async fn create_enrollment_token_impl(
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
        let (token, record) = new_enrollment_token(now, ttl, uses, &caller.name, None);
        let entry = AuditEntry::by(
            &caller,
            "enrollment-token.create",
            record.id.clone(),
            format!("ttl {ttl}s; uses {uses}"),
        );
        self.ctx
            .store
            .create_enrollment_token(&record, &entry, now)
            .await
            .map_err(internal)?;
        self.anchor_audit().await;
        Ok(Response::new(CreateEnrollmentTokenResponse {
            token,
            expires_at_unix_ms: record.expires_at_ms,
            uses,
        }))
    }
}

/// A new enrollment token and its stored form; with `relink_host`, a
/// re-link token for that host.
pub fn new_enrollment_token(
    now_ms: i64,
    ttl_secs: u64,
    uses: u32,
    created_by: &str,
    relink_host: Option<&str>,
) -> (String, NewEnrollmentToken) {
    let token = secrets::new_token(secrets::ENROLLMENT_TOKEN_PREFIX);
    let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let record = NewEnrollmentToken {
        id: uuid::Uuid::new_v4().to_string(),
        token_sha256: secrets::token_hash(&token),
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        uses,
        created_by: created_by.to_owned(),
        relink_host: relink_host.map(str::to_owned),
    };
    (token, record)
}
