//! The rule part of the technician API: `ListRules` (the fleet policy in
//! force: rules, SLA targets, business hours, lifecycle timing; with
//! `export`, as TOML) and `ApplyRules` (admin, audited; every error with
//! its line, `dry_run` to see what would change, `replace` to drop what
//! the file in force set).

use deskpulse_proto::v1::{
    ApplyRulesRequest, ListRulesRequest, ListRulesResponse, RuleInfo, SlaTargetInfo,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::{TechnicianApi, internal};
use crate::rules::policy::{parse_policy, text};
use crate::rules::priority::Priority;
use crate::rules::triage::TriageStep;
use crate::secrets;
use crate::store::{AuditEntry, PolicyRecord, Role};

/// The largest policy file `rules apply` takes.
const MAX_POLICY_TEXT: usize = 256 * 1024;

pub(crate) fn rules_response(record: &PolicyRecord) -> ListRulesResponse {
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
    let metric = |r: &crate::rules::model::Rule, disabled: bool| RuleInfo {
        name: r.name.clone(),
        kind: "metric".into(),
        on: r.metric.name().into(),
        op: r.op.symbol().into(),
        threshold: r.threshold,
        recover: r.recover,
        for_secs: secs(r.duration_ms),
        severity: r.severity.name().into(),
        scope: scope(&r.scope),
        triage: r.triage.iter().map(TriageStep::text).collect(),
        source: source(&r.name).into(),
        disabled,
    };
    let change = |r: &crate::rules::model::ChangeRule, disabled: bool| RuleInfo {
        name: r.name.clone(),
        kind: "change".into(),
        on: r.change.name().into(),
        severity: r.severity.name().into(),
        scope: scope(&r.scope),
        triage: r.triage.iter().map(TriageStep::text).collect(),
        source: source(&r.name).into(),
        disabled,
        ..Default::default()
    };
    let mut rules: Vec<RuleInfo> = policy.rules.iter().map(|r| metric(r, false)).collect();
    rules.extend(policy.disabled.iter().map(|r| metric(r, true)));
    rules.extend(policy.change_rules.iter().map(|r| change(r, false)));
    rules.extend(policy.disabled_changes.iter().map(|r| change(r, true)));
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
        changes: Vec::new(),
        toml: String::new(),
    }
}

/// The export's first lines: which version it is, and how to use it.
fn export_header(record: &PolicyRecord) -> String {
    let source = if record.version == 0 {
        "the built-in defaults".to_owned()
    } else {
        format!(
            "version {}, applied by {} at {}",
            record.version,
            record.applied_by,
            crate::webhooks::format::rfc3339(record.applied_at_ms)
        )
    };
    format!(
        "# The Deskpulse fleet policy in force: {source}.\n\
         # `deskpulse rules apply FILE` takes this file back unchanged; see docs/rules.md.\n\n"
    )
}

impl TechnicianApi {
    pub(super) async fn list_rules_impl(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing rules")
            .await?;
        let record = self.ctx.store.policy().await.map_err(internal)?;
        let mut response = rules_response(&record);
        if request.get_ref().export {
            response.toml = export_header(&record) + &record.policy.to_toml() + "\n";
        }
        Ok(Response::new(response))
    }

    pub(super) async fn apply_rules_impl(
        &self,
        request: Request<ApplyRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "applying rules")
            .await?;
        let ApplyRulesRequest {
            text,
            dry_run,
            replace,
        } = request.into_inner();
        if text.len() > MAX_POLICY_TEXT {
            return Err(Status::invalid_argument(format!(
                "the rule file is larger than {} KiB",
                MAX_POLICY_TEXT / 1024
            )));
        }
        let new = parse_policy(&text).map_err(Status::invalid_argument)?;
        // Compared with the policy in force when asked; the store refuses
        // the apply if another admin's came in between.
        let current = self.ctx.store.policy().await.map_err(internal)?;
        let changes = text::changes(&current.policy, &new);
        let dropped = text::dropped(&current.policy, &new);
        if !dropped.is_empty() && !replace {
            return Err(Status::failed_precondition(format!(
                "this file drops what policy version {} set: {}; add them to the file, or apply it with --replace to drop them",
                current.version,
                dropped.join(", ")
            )));
        }
        if dry_run {
            let mut response = rules_response(&PolicyRecord {
                policy: new,
                ..(*current).clone()
            });
            response.changes = changes;
            return Ok(Response::new(response));
        }
        let record = self
            .ctx
            .store
            .apply_policy(
                &text,
                &caller.name,
                Some(current.version),
                &|record: &PolicyRecord| {
                    AuditEntry::by(
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
                },
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?
            .map_err(Status::failed_precondition)?;
        self.anchor_audit().await;
        info!(version = record.version, technician = %caller.name, "fleet policy applied");
        let mut response = rules_response(&record);
        response.changes = changes;
        Ok(Response::new(response))
    }
}
