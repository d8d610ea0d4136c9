//! The re-link approval queue in the technician API (issue 20): listing
//! the requests (technician or admin), approving and denying them (admin,
//! audited in the decision's transaction). Approval signs the claimed
//! host's certificate here, where the CA is, from the CSR kept with the
//! request, and hands it at once to the agent's live session on this
//! replica (otherwise the agent receives it when it next connects).

use deskpulse_proto::v1::collector_message::Kind as Outgoing;
use deskpulse_proto::v1::{
    CertificateRenewed, CollectorMessage, DecideRelinkRequest, ListRelinkRequestsRequest,
    ListRelinkRequestsResponse, RelinkRequest as WireRequest,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::{TechnicianApi, internal};
use crate::store::{AuditEntry, HostCert, RelinkDecision, RelinkRefusal, RelinkRequest, Role};

fn to_wire(request: RelinkRequest) -> WireRequest {
    WireRequest {
        id: request.id,
        claimed_host_id: request.claimed_host_id,
        claimed_hostname: request.claimed_hostname,
        new_host_id: request.new_host_id,
        hostname: request.hostname,
        hardware_uuid: request.hardware_uuid,
        hardware_serial: request.hardware_serial,
        source_address: request.source_addr,
        requested_at_unix_ms: request.requested_at_ms,
        status: request.status,
        decided_at_unix_ms: request.decided_at_ms.unwrap_or(0),
        decided_by: request.decided_by.unwrap_or_default(),
    }
}

impl TechnicianApi {
    pub(super) async fn list_relink_requests_impl(
        &self,
        request: Request<ListRelinkRequestsRequest>,
    ) -> Result<Response<ListRelinkRequestsResponse>, Status> {
        self.authorize(&request, Role::Technician, "listing re-link requests")
            .await?;
        let requests = self
            .ctx
            .store
            .relink_requests(request.get_ref().all)
            .await
            .map_err(internal)?;
        Ok(Response::new(ListRelinkRequestsResponse {
            requests: requests.into_iter().map(to_wire).collect(),
        }))
    }

    pub(super) async fn decide_relink_impl(
        &self,
        request: Request<DecideRelinkRequest>,
        approve: bool,
    ) -> Result<Response<WireRequest>, Status> {
        let action = if approve {
            "approving a re-link request"
        } else {
            "denying a re-link request"
        };
        let caller = self.authorize(&request, Role::Admin, action).await?;
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(Status::invalid_argument(format!(
                "no re-link request has id {id}"
            )));
        }
        let terms = crate::server::renewal::terms(&self.ctx).await?;
        let cas = self.ctx.ca.get();
        // The certificate approval issued, for the agent's live session
        // once the decision is committed.
        let issued = std::sync::Mutex::new(None::<String>);
        let reissue = |csr: &[u8], host_id: &str| {
            let cert = cas
                .active
                .sign_host_csr(csr, host_id, terms)
                .map_err(|e| e.to_string())?;
            if let Ok(mut slot) = issued.lock() {
                *slot = Some(cert.cert_pem.clone());
            }
            Ok(HostCert {
                cert_pem: cert.cert_pem,
                serial_hex: cert.serial_hex,
                sha256_hex: cert.sha256_hex,
                ca_sha256: cas.active.fingerprint(),
            })
        };
        let decision = RelinkDecision {
            id,
            approve,
            by: caller.name.clone(),
            // The store fills in the action, subject and detail.
            audit: AuditEntry::by(&caller, "", String::new(), String::new()),
        };
        let decided = self
            .ctx
            .store
            .decide_relink(&decision, &reissue, terms.now_ms)
            .await
            .map_err(internal)?;
        let decided = match decided {
            Ok(decided) => decided,
            Err(refusal) => {
                let status = match refusal {
                    RelinkRefusal::NotFound(_) => Status::not_found(refusal.to_string()),
                    _ => Status::failed_precondition(refusal.to_string()),
                };
                return Err(status);
            }
        };
        self.anchor_audit().await;
        info!(
            request = decided.id,
            host = %decided.claimed_host_id,
            new_host = %decided.new_host_id,
            approve,
            technician = %caller.name,
            "decided a re-link request"
        );
        let issued = issued.into_inner().ok().flatten();
        if let (true, Some(cert_pem)) = (approve, issued) {
            self.hand_over(&decided, cert_pem).await;
        }
        Ok(Response::new(to_wire(decided)))
    }

    /// Gives the agent of the merged host, if it streams to this replica,
    /// its certificate for the host it took over, and ends that session:
    /// the agent reconnects as that host. An agent elsewhere, or offline,
    /// receives it when it next connects with its interim certificate.
    async fn hand_over(&self, decided: &RelinkRequest, cert_pem: String) {
        let messages = vec![
            Ok(CollectorMessage {
                kind: Some(Outgoing::CertificateRenewed(CertificateRenewed {
                    certificate_pem: cert_pem,
                    ca_bundle_pem: self.ctx.ca.get().bundle_pem(),
                })),
            }),
            Err(Status::unauthenticated(
                crate::server::renewal::relinked_message(&decided.claimed_host_id),
            )),
        ];
        if self
            .ctx
            .dispatch
            .end_session(&decided.new_host_id, messages)
            .await
        {
            info!(host = %decided.new_host_id, "handed the re-linked certificate to the live session");
        }
    }
}
