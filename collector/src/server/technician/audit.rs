//! The audit half of the technician API: `ListAudit` (any role, paged,
//! D19) and `VerifyAudit` (admin), plus anchoring the chain head after the
//! admin actions this API audits (D28).

use std::collections::HashMap;

use deskpulse_proto::v1::{
    AuditEntry as WireEntry, ListAuditRequest, ListAuditResponse, VerifyAuditRequest,
    VerifyAuditResponse,
};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{TechnicianApi, internal};
use crate::store::{AuditQuery, AuditRecord, Role};

/// Default and largest page of audit entries.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// The longest action prefix or technician name accepted as a filter.
const MAX_FILTER: usize = 200;

fn entry_message(r: AuditRecord, hostnames: &HashMap<String, String>) -> WireEntry {
    let hostname = ids_in(&r.subject)
        .find_map(|id| hostnames.get(id))
        .cloned()
        .unwrap_or_default();
    WireEntry {
        hostname,
        id: r.id,
        seq: r.seq.unwrap_or(0),
        at_unix_ms: r.at_ms,
        technician: r.technician_name.unwrap_or_default(),
        technician_id: r.technician_id.unwrap_or_default(),
        token_id: r.token_id.unwrap_or_default(),
        action: r.action,
        subject: r.subject,
        detail: r.detail,
        hash: r.hash.unwrap_or_default(),
    }
}

/// The words of an audit subject shaped like a host id (a UUID): a host
/// id alone, or the one in "job J on host H" and "ticket N on host H".
fn ids_in(subject: &str) -> impl Iterator<Item = &str> {
    subject
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .filter(|word| uuid::Uuid::try_parse(word).is_ok())
}

fn filter(what: &str, text: &str) -> Result<Option<String>, Status> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_FILTER || text.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{what} must be at most {MAX_FILTER} printable characters"
        )));
    }
    Ok(Some(text.to_owned()))
}

impl TechnicianApi {
    /// Signs and writes the chain head now, after an audited admin action,
    /// rather than waiting for the minute tick. The action has committed
    /// already, so a failure is logged, not returned.
    pub(super) async fn anchor_audit(&self) {
        self.ctx
            .audit
            .anchor_or_warn(self.ctx.store.as_ref(), self.ctx.clock.now_ms())
            .await;
    }

    pub(super) async fn list_audit_impl(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Viewer, "listing the audit log")
            .await?;
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size {n} is too large; the most is {MAX_PAGE}"
                )));
            }
            n => n,
        };
        let before_id = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued")
            })?),
        };
        let subject_contains = if request.host.trim().is_empty() {
            None
        } else {
            Some(self.resolve_host(&request.host).await?.id)
        };
        let technician = match filter("technician", &request.technician)? {
            Some(name) if name == "me" => Some(caller.name.clone()),
            other => other,
        };
        let mut rows = self
            .ctx
            .store
            .list_audit(&AuditQuery {
                subject_contains,
                technician,
                action_prefix: filter("action prefix", &request.action_prefix)?,
                since_ms: request.since_unix_ms,
                before_id,
                limit: page_size + 1,
            })
            .await
            .map_err(internal)?;
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        let mut ids: Vec<&str> = rows.iter().flat_map(|r| ids_in(&r.subject)).collect();
        ids.sort_unstable();
        ids.dedup();
        let hostnames = self.ctx.store.hostnames(&ids).await.map_err(internal)?;
        Ok(Response::new(ListAuditResponse {
            entries: rows
                .into_iter()
                .map(|r| entry_message(r, &hostnames))
                .collect(),
            next_page_token,
        }))
    }

    pub(super) async fn verify_audit_impl(
        &self,
        request: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "verifying the audit log")
            .await?;
        // Anchor first, so the entries up to now are covered by this check.
        self.anchor_audit().await;
        let v = self
            .ctx
            .audit
            .verify(self.ctx.store.as_ref())
            .await
            .map_err(|error| {
                tracing::error!(%error, "audit verification could not run");
                Status::internal(format!("audit verification could not run: {error}"))
            })?;
        match &v.problem {
            None => {
                info!(technician = %caller.name, entries = v.entries, anchors = v.anchors, "audit chain verified")
            }
            Some(problem) => {
                warn!(technician = %caller.name, %problem, "audit chain verification failed")
            }
        }
        Ok(Response::new(VerifyAuditResponse {
            ok: v.problem.is_none(),
            problem: v.problem.unwrap_or_default(),
            entries_checked: v.entries,
            anchors_checked: v.anchors,
        }))
    }
}
