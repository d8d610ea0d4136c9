//! Automatic triage when a ticket opens or reopens (issue 23), in the
//! transaction that opens it: each read-only diagnostic the rule names
//! (`crate::rules::triage`) is queued as an ordinary job for the ticket,
//! audited as requested by the rule's triage, and delivered by the server
//! as soon as the transaction commits (`server::triage`). Its result is
//! attached to the ticket's worklog by the job engine like any other
//! attached run, so the output is there before a technician looks.
//!
//! A step the host's agent does not enable, cannot run, or whose subject
//! the catalog refuses is not queued; the worklog says why. An offline
//! host runs nothing: the ticket gets the last health the host sent and
//! its last changes instead.

use deskpulse_proto::catalog;
use deskpulse_proto::v1::DiagnosticRisk;
use prost::Message;

use super::jobs;
use super::tickets::TicketTx;
use crate::rules::model::Metric;
use crate::rules::policy::Policy;
use crate::rules::triage::TriageStep;
use crate::store::{HealthPoint, HostDiagnostics, JobRequester, NewJob, StoreResult};

/// How long a triage job waits for its host before it expires: evidence
/// from much later is no longer the evidence of the ticket's opening.
pub const TRIAGE_TTL_MS: i64 = 15 * 60_000;

/// How many of an offline host's last changes its ticket shows.
const OFFLINE_CHANGES: u32 = 5;

/// What triage needs of a write transaction beyond the ticket engine's.
pub trait TriageTx: Send {
    /// Inserts a queued job (`JobTx::insert_job` on this transaction).
    async fn insert_job(&mut self, job: &NewJob, now_ms: i64) -> StoreResult<()>;
    /// What the host's agent said about its diagnostics; `None` for an
    /// unknown host.
    async fn diagnostics_of(&mut self, host: &str) -> StoreResult<Option<HostDiagnostics>>;
    /// The host's latest health point at the finest resolution kept.
    async fn last_health_point(&mut self, host: &str) -> StoreResult<Option<HealthPoint>>;
}

/// Runs the triage of rule `rule` for ticket `ticket` on `host`, which the
/// ticket opened or reopened now. Rules without triage (and tickets no
/// rule opened) do nothing.
pub async fn on_open(
    tx: &mut impl TicketTx,
    policy: &Policy,
    host: &str,
    rule: &str,
    subject: &str,
    ticket: i64,
    now_ms: i64,
) -> StoreResult<()> {
    if let Some(metric_rule) = policy.rule(rule) {
        if metric_rule.metric == Metric::OfflineMinutes {
            return offline_evidence(tx, host, ticket, now_ms).await;
        }
        return queue(tx, host, rule, &metric_rule.triage, subject, ticket, now_ms).await;
    }
    if let Some(change_rule) = policy.change_rules.iter().find(|r| r.name == rule) {
        return queue(tx, host, rule, &change_rule.triage, subject, ticket, now_ms).await;
    }
    Ok(())
}

/// Queues each step whose diagnostic the host can run; notes the others.
async fn queue(
    tx: &mut impl TicketTx,
    host: &str,
    rule: &str,
    steps: &[TriageStep],
    subject: &str,
    ticket: i64,
    now_ms: i64,
) -> StoreResult<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let reported = tx.diagnostics_of(host).await?.unwrap_or_default();
    for step in steps {
        let note = match runnable(&reported, step, subject) {
            Err(why) => format!("triage: {} not run: {why}", step.text()),
            Ok(params) => {
                let job = NewJob {
                    id: uuid::Uuid::new_v4().to_string(),
                    host_id: host.to_owned(),
                    diagnostic: step.diagnostic.to_owned(),
                    params: params.encode_to_vec(),
                    params_text: catalog::describe(&params),
                    risk: "read-only".into(),
                    requester: JobRequester::Triage {
                        rule: rule.to_owned(),
                    },
                    ticket_id: Some(ticket),
                    expires_at_ms: now_ms.saturating_add(TRIAGE_TTL_MS),
                };
                tx.insert_job(&job, now_ms).await?;
                tx.audit(&jobs::request_entry(&job), now_ms).await?;
                format!(
                    "triage: running {} {} as job {}; its output is attached here when it finishes",
                    job.diagnostic, job.params_text, job.id
                )
            }
        };
        tx.worklog(ticket, now_ms, "system", &note).await?;
    }
    Ok(())
}

/// The step's checked parameters, or why the host will not run it.
fn runnable(
    reported: &HostDiagnostics,
    step: &TriageStep,
    subject: &str,
) -> Result<deskpulse_proto::v1::DiagnosticParams, String> {
    // The policy admits only read-only steps; the catalog may have changed
    // since it was applied.
    if catalog::spec(step.diagnostic).is_none_or(|spec| spec.risk != DiagnosticRisk::ReadOnly) {
        return Err("not a read-only diagnostic of this collector's catalog".into());
    }
    if reported.catalog_version > 0 && !reported.enabled.iter().any(|id| id == step.diagnostic) {
        return Err("the agent on this PC does not enable it; its own config decides".into());
    }
    if let Some(reason) = reported.unavailable_reason(step.diagnostic) {
        return Err(format!("unavailable on this PC: {reason}"));
    }
    step.params_for(subject)
        .map_err(|e| format!("the subject {subject:?} does not fit: {e}"))
}

/// What an offline ticket gets instead of runs: the last health the host
/// sent and its last changes.
async fn offline_evidence(
    tx: &mut impl TicketTx,
    host: &str,
    ticket: i64,
    now_ms: i64,
) -> StoreResult<()> {
    let mut note = String::from("triage: the PC is offline, so nothing runs on it.");
    match tx.last_health_point(host).await? {
        Some(point) => {
            note.push_str(&format!(
                "\nlast health ({}): CPU {}, memory {}, fullest disk {}",
                crate::units::before(point.at_ms, now_ms),
                crate::units::percent(f64::from(point.cpu_percent)),
                crate::units::percent(f64::from(point.memory_used_percent)),
                crate::units::percent(f64::from(point.disk_used_max_percent)),
            ));
            if let Some(celsius) = point.temperature_max_celsius {
                note.push_str(&format!(", hottest sensor {celsius:.1} °C"));
            }
        }
        None => note.push_str("\nno health sample was ever stored for it."),
    }
    let changes = tx.recent_changes(host, 0, OFFLINE_CHANGES).await?;
    if changes.is_empty() {
        note.push_str("\nno inventory changes recorded.");
    } else {
        note.push_str("\nlast changes:");
        for change in changes {
            note.push_str(&format!(
                "\n  {} {}: {} -> {} ({})",
                change.section,
                change.item,
                change.old.as_deref().unwrap_or("(none)"),
                change.new.as_deref().unwrap_or("(gone)"),
                crate::units::before(change.observed_at_ms, now_ms),
            ));
        }
    }
    tx.worklog(ticket, now_ms, "system", &note).await
}
