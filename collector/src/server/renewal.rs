//! Host certificates on the agent service (issue 20): who may open a
//! session, and renewal over it.
//!
//! A session opens only with the host's current certificate, or with the
//! renewed one the collector issued it last; presenting the renewed one
//! makes it current and retires the old (the agent proved it stored the new
//! pair). Expiry is checked against the collector's clock, so tests move
//! time instead of waiting; rustls checks it against the wall clock too.
//! An expired certificate is never renewed: the agent must enroll again with
//! a fresh token, and the refusal says so in one line.

use deskpulse_proto::v1::CertificateRenewed;
use deskpulse_proto::v1::collector_message::Kind as Outgoing;
use tonic::Status;
use tracing::info;

use super::ServerContext;
use super::agent::AgentIdentity;
use crate::pki::{self, HostCertTerms};
use crate::store::{CertStanding, HostCert};

/// The largest CSR a renewal may carry (a P-256 CSR is about 300 bytes).
const MAX_CSR: usize = 16 * 1024;

/// Certificates issued now: the collector's clock, the policy's lifetime.
pub(super) async fn terms(ctx: &ServerContext) -> Result<HostCertTerms, Status> {
    let policy = ctx.store.policy().await.map_err(|error| {
        tracing::error!(%error, "reading the policy failed");
        Status::internal("the collector's store failed; retry later")
    })?;
    Ok(HostCertTerms {
        now_ms: ctx.clock.now_ms(),
        lifetime: policy.policy.host_cert_lifetime,
    })
}

/// The one-line refusal of an expired host certificate. The agent
/// recognises it by its code and the word "expired". It says what an admin
/// does: nothing enrolls the PC again without one (issue 20).
pub fn expired_message(expired_at_ms: i64, host_id: &str) -> String {
    format!(
        "this host certificate expired at {}; the agent must enroll again with a fresh token: a re-link token keeps host {host_id} (deskpulse-collector enroll-token create --relink {host_id}), an ordinary one makes a new host until an admin approves it (deskpulse enrollments approve)",
        format_ms(expired_at_ms)
    )
}

pub(super) fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// What a session may do with the certificate it presented.
#[derive(Debug)]
pub(super) enum Admission {
    /// Open as the certificate's host.
    Open,
    /// An admin approved this enrollment's re-link to `host_id` (issue 20):
    /// the session only hands the agent `cert_pem`, issued for that host
    /// to the same key, and ends; the agent reconnects with it.
    Relinked {
        /// The host the enrollment took over.
        host_id: String,
        /// Its certificate for the agent.
        cert_pem: String,
    },
}

/// The one-line end of a session that handed over a re-linked certificate.
pub fn relinked_message(host_id: &str) -> String {
    format!(
        "an admin approved this enrollment's re-link to host {host_id}: reconnect with the certificate just sent"
    )
}

/// Lets a session open only with an unexpired certificate that is the
/// host's current one or its renewed one (which becomes current here); the
/// interim certificate of an approved re-link is answered with its host's.
pub(super) async fn admit(
    ctx: &ServerContext,
    identity: &AgentIdentity,
) -> Result<Admission, Status> {
    if identity.expires_at_ms <= ctx.clock.now_ms() {
        info!("refused an expired host certificate");
        return Err(Status::unauthenticated(expired_message(
            identity.expires_at_ms,
            &identity.host_id,
        )));
    }
    if let Some(refusal) = super::rotation::retired_refusal(&ctx.ca.get(), identity) {
        info!("refused a host certificate from a retired CA");
        return Err(refusal);
    }
    let standing = ctx
        .store
        .present_host_cert(&identity.host_id, &identity.cert_sha256)
        .await
        .map_err(|error| {
            tracing::error!(%error, "checking the host certificate failed");
            Status::internal("the collector's store failed; retry later")
        })?;
    match standing {
        CertStanding::Current => Ok(Admission::Open),
        CertStanding::Renewed => {
            info!("the agent connected with its renewed certificate; the old one is retired");
            Ok(Admission::Open)
        }
        CertStanding::Relinked { host_id, cert_pem } => {
            info!(%host_id, "handing a re-linked agent the certificate of the host it took over");
            Ok(Admission::Relinked { host_id, cert_pem })
        }
        CertStanding::Superseded => {
            info!("refused a superseded host certificate");
            Err(Status::unauthenticated(
                "this host certificate was superseded by a newer enrollment or renewal",
            ))
        }
        CertStanding::Revoked { at_ms } => {
            info!("refused a certificate of a revoked host");
            Err(Status::unauthenticated(super::revocation::host_message(
                Some(&format_ms(at_ms)),
            )))
        }
        CertStanding::UnknownHost => {
            info!("refused a certificate for an unknown host");
            Err(Status::unauthenticated("this host is not enrolled here"))
        }
    }
}

/// Answers a `RenewCertificate`: a certificate for the session's host id
/// (never anything the CSR names) and a new key, recorded beside the current
/// one. Errors end the session with one line.
pub(super) async fn renew(
    ctx: &ServerContext,
    identity: &AgentIdentity,
    csr_der: &[u8],
) -> Result<Outgoing, Status> {
    if csr_der.is_empty() || csr_der.len() > MAX_CSR {
        return Err(Status::invalid_argument(format!(
            "a certificate renewal needs a CSR of 1-{MAX_CSR} bytes"
        )));
    }
    let reused = pki::csr_reuses_key(csr_der, &identity.cert_der)
        .map_err(|e| Status::invalid_argument(format!("certificate renewal refused: {e}")))?;
    if reused {
        return Err(Status::invalid_argument(
            "certificate renewal refused: the CSR must be for a new key",
        ));
    }
    let terms = terms(ctx).await?;
    let cas = ctx.ca.get();
    let issued = cas
        .active
        .sign_host_csr(csr_der, &identity.host_id, terms)
        .map_err(|e| Status::invalid_argument(format!("certificate renewal refused: {e}")))?;
    let next = HostCert {
        cert_pem: issued.cert_pem,
        serial_hex: issued.serial_hex,
        sha256_hex: issued.sha256_hex,
        ca_sha256: cas.active.fingerprint(),
    };
    let recorded = ctx
        .store
        .record_cert_renewal(
            &identity.host_id,
            &identity.cert_sha256,
            &next,
            terms.now_ms,
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, "recording a renewed certificate failed");
            Status::internal("the collector's store failed; retry later")
        })?;
    if !recorded {
        return Err(Status::unauthenticated(
            "this host certificate was superseded by a newer enrollment or renewal",
        ));
    }
    info!(serial = %next.serial_hex, "renewed the host certificate");
    Ok(Outgoing::CertificateRenewed(CertificateRenewed {
        certificate_pem: next.cert_pem,
        ca_bundle_pem: cas.bundle_pem(),
    }))
}
