//! Enrollment: a one-time token and a CSR become a host certificate. The
//! token is checked and consumed, the host id chosen (a new one, or the
//! host a re-link token names: D4, issue 20), and the certificate
//! recorded, in one store transaction.

use deskpulse_proto::v1::enrollment_server::Enrollment;
use deskpulse_proto::v1::{EnrollRequest, EnrollResponse};
use tonic::{Request, Response, Status};
use tracing::info;

use super::ServerContext;
use super::limits::FailedAttempts;
use crate::secrets::token_hash;
use crate::store::{self, EnrollOutcome, HostCert};

/// The enrollment service.
#[derive(Debug)]
pub struct EnrollmentService {
    ctx: ServerContext,
    failed_tokens: FailedAttempts,
}

impl EnrollmentService {
    /// A service issuing from `ctx.ca`.
    pub fn new(ctx: ServerContext) -> Self {
        Self {
            ctx,
            failed_tokens: FailedAttempts::new("enrollment token"),
        }
    }
}

fn clean(field: &str, value: &str, max: usize) -> Result<String, Status> {
    let value = value.trim();
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} must be at most {max} printable characters"
        )));
    }
    Ok(value.to_owned())
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    #[tracing::instrument(skip_all, fields(hostname))]
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = request.remote_addr();
        let attempt = self.failed_tokens.reserve(peer).await?;
        let request = request.into_inner();
        let hostname = clean("hostname", &request.hostname, 255)?;
        if let Some(reason) = crate::query::refused_hostname(&hostname) {
            return Err(Status::invalid_argument(reason));
        }
        tracing::Span::current().record("hostname", hostname.as_str());
        if request.token.trim().is_empty() {
            return Err(Status::unauthenticated("an enrollment token is required"));
        }
        if request.csr_der.is_empty() {
            return Err(Status::invalid_argument("csr_der is empty"));
        }
        let refused = |why: &str| {
            info!(?peer, reason = why, "refused an enrollment");
            Err(Status::unauthenticated(format!(
                "enrollment refused: {why}"
            )))
        };
        let token_sha256 = token_hash(&request.token);
        let now_ms = self.ctx.clock.now_ms();
        let refusal = self
            .ctx
            .store
            .enrollment_token_refusal(&token_sha256, now_ms)
            .await
            .map_err(|error| {
                tracing::error!(%error, "checking an enrollment token failed in the store");
                Status::internal("enrollment failed in the collector's store; retry later")
            })?;
        if let Some(refusal) = refusal {
            attempt.failed();
            return refused(refusal_reason(&refusal));
        }
        // The token is good: the reservation is not held while the CSR is
        // signed and stored.
        drop(attempt);
        let store_request = store::EnrollRequest {
            token_sha256,
            hostname,
            hardware_uuid: clean("hardware_uuid", &request.hardware_uuid, 64)?.to_ascii_lowercase(),
            hardware_serial: clean("hardware_serial", &request.hardware_serial, 128)?,
            source_addr: peer.map(|a| a.ip().to_string()).unwrap_or_default(),
            csr_der: request.csr_der.clone(),
        };
        // Parse the CSR before touching the token, so a malformed request
        // does not burn a use of it.
        let cas = self.ctx.ca.get();
        let ca = cas.clone();
        let csr = request.csr_der;
        let terms = super::renewal::terms(&self.ctx).await?;
        ca.active
            .sign_host_csr(&csr, &uuid::Uuid::nil().to_string(), terms)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let issue = move |host_id: &str| {
            ca.active
                .sign_host_csr(&csr, host_id, terms)
                .map(|c| HostCert {
                    cert_pem: c.cert_pem,
                    serial_hex: c.serial_hex,
                    sha256_hex: c.sha256_hex,
                    ca_sha256: ca.active.fingerprint(),
                })
                .map_err(|e| e.to_string())
        };
        let outcome = self
            .ctx
            .store
            .enroll(&store_request, now_ms, &issue)
            .await
            .map_err(|error| {
                tracing::error!(%error, "enrollment failed in the store");
                Status::internal("enrollment failed in the collector's store; retry later")
            })?;
        match outcome {
            EnrollOutcome::Enrolled {
                host_id,
                cert_pem,
                relinked,
                awaiting_approval_for,
            } => {
                info!(%host_id, relinked, claimed = ?awaiting_approval_for, "enrolled a host");
                Ok(Response::new(EnrollResponse {
                    host_id,
                    certificate_pem: cert_pem,
                    ca_bundle_pem: cas.bundle_pem(),
                    relinked,
                    awaiting_approval: !awaiting_approval_for.is_empty(),
                }))
            }
            // Spent by another enrollment since the check above.
            refusal => refused(refusal_reason(&refusal)),
        }
    }
}

fn refusal_reason(outcome: &EnrollOutcome) -> &'static str {
    match outcome {
        EnrollOutcome::Enrolled { .. } => "enrolled",
        EnrollOutcome::UnknownToken => "the enrollment token is not known",
        EnrollOutcome::ExpiredToken => "the enrollment token has expired",
        EnrollOutcome::UsedToken => "the enrollment token has no uses left",
        EnrollOutcome::RelinkHostGone => "the host this re-link token names is no longer enrolled",
        EnrollOutcome::RevokedToken => "the enrollment token was revoked by an admin",
        EnrollOutcome::RelinkHostRevoked => {
            "the host this re-link token names was revoked; enroll it as a new host with an ordinary token"
        }
    }
}
