//! The diagnostic half of the technician API: `run`, `jobs`, `job show`,
//! `job cancel` and `diagnostics`. The collector checks the role and the
//! parameters (for an early, clear error), records and audits the request,
//! delivers it to a connected agent at once, and streams the output back;
//! the agent checks everything again and has the final say (D25).

use std::pin::Pin;
use std::time::Duration;

use deskpulse_proto::catalog;
use deskpulse_proto::v1::job_event::Kind as Event;
use deskpulse_proto::v1::{
    DiagnosticInfo, DiagnosticParamInfo, DiagnosticRisk, GetJobRequest, Job, JobEvent,
    ListDiagnosticsRequest, ListDiagnosticsResponse, ListJobsRequest, ListJobsResponse,
    RunDiagnosticRequest,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{TechnicianApi, internal};
use crate::server::dispatch::JobEvent as Live;
use crate::store::{AuditEntry, Caller, JobQuery, JobRow, NewJob, Role};

/// The stream `RunDiagnostic` answers with.
pub type JobStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<JobEvent, Status>> + Send>>;

/// Request TTLs: default, least and most.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a watched job is re-read from the store, in case its finish
/// was not heard live (another replica, an expiry).
const RECHECK: Duration = Duration::from_secs(1);
/// Parameters a request may carry.
const MAX_PARAMS: usize = 16;

/// The fewest characters of a job id taken as its start: job ids are many
/// (one per diagnostic), so one or two characters would name a crowd.
const MIN_JOB_PREFIX: usize = 4;

/// How many jobs an ambiguous start counts exactly; past this it says
/// "more than".
const MAX_JOB_CANDIDATES: u32 = 100;

/// How many of an ambiguous start's jobs the error names.
const SHOWN_JOB_CANDIDATES: usize = 5;

/// The one line refusing a job id start that names several jobs: their
/// count and the first few ids.
fn ambiguous_job(query: &str, ids: &[String]) -> String {
    let count = if ids.len() > MAX_JOB_CANDIDATES as usize {
        format!("more than {MAX_JOB_CANDIDATES}")
    } else {
        ids.len().to_string()
    };
    let mut shown = ids
        .iter()
        .take(SHOWN_JOB_CANDIDATES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN_JOB_CANDIDATES {
        shown.push_str(", …");
    }
    format!("{query:?} matches {count} jobs; give more of the id: {shown}")
}

fn risk_name(risk: DiagnosticRisk) -> &'static str {
    if risk == DiagnosticRisk::ReadOnly {
        "read-only"
    } else {
        "changes-state"
    }
}

/// A job for the wire; the output only when asked.
pub fn job_message(row: &JobRow, with_output: bool) -> Job {
    Job {
        id: row.id.clone(),
        host_id: row.host_id.clone(),
        hostname: row.hostname.clone(),
        diagnostic: row.diagnostic.clone(),
        params: row.params_text.clone(),
        risk: row.risk.clone(),
        requested_by: row.requested_by.clone(),
        ticket_id: row.ticket_id.unwrap_or(0),
        state: row.state.clone(),
        created_at_unix_ms: row.created_at_ms,
        expires_at_unix_ms: row.expires_at_ms,
        sent_at_unix_ms: row.sent_at_ms.unwrap_or(0),
        started_at_unix_ms: row.started_at_ms.unwrap_or(0),
        finished_at_unix_ms: row.finished_at_ms.unwrap_or(0),
        exit_code: row.exit_code.unwrap_or(0),
        has_exit_code: row.exit_code.is_some(),
        reason: row.reason.clone().unwrap_or_default(),
        output: if with_output {
            row.output.clone()
        } else {
            Vec::new()
        },
        truncated: row.truncated,
        cancel_requested: row.cancel_requested,
    }
}

impl TechnicianApi {
    /// Audits a refused request, then returns the refusal.
    async fn refuse(
        &self,
        caller: &Caller,
        host: &str,
        what: &str,
        status: Status,
    ) -> Result<Response<JobStream>, Status> {
        info!(technician = %caller.name, host, what, reason = status.message(), "refused a diagnostic request");
        self.audit(
            caller,
            "diagnostic.refuse",
            format!("host {host}"),
            format!("{what}: {}", status.message()),
        )
        .await?;
        Err(status)
    }

    pub(super) async fn run_diagnostic_impl(
        &self,
        request: Request<RunDiagnosticRequest>,
    ) -> Result<Response<JobStream>, Status> {
        let caller = self
            .authorize(&request, Role::Viewer, "running a diagnostic")
            .await?;
        let request = request.into_inner();
        let host = self.resolve_host(&request.host).await?;
        let what = request.diagnostic.trim().to_owned();
        // A viewer may not run anything; refused and audited like any
        // other refusal.
        if caller.role < Role::Technician {
            let status = Status::permission_denied(format!(
                "running a diagnostic needs the technician role; {} has the {} role",
                caller.name, caller.role
            ));
            return self.refuse(&caller, &host.id, &what, status).await;
        }
        if request.params.len() > MAX_PARAMS {
            let status =
                Status::invalid_argument(format!("at most {MAX_PARAMS} parameters are allowed"));
            return self.refuse(&caller, &host.id, &what, status).await;
        }
        let pairs: Vec<(String, String)> = request
            .params
            .iter()
            .map(|p| (p.key.trim().to_owned(), p.value.clone()))
            .collect();
        let params = match catalog::parse(&what, &pairs) {
            Ok(params) => params,
            Err(line) => {
                let status = Status::invalid_argument(line);
                return self.refuse(&caller, &host.id, &what, status).await;
            }
        };
        let Some(spec) = catalog::spec(&what) else {
            return Err(Status::invalid_argument("unknown diagnostic"));
        };
        let policy = self.ctx.store.policy().await.map_err(internal)?;
        let needed = policy.policy.diagnostic_role(spec);
        if caller.role < needed {
            let status = Status::permission_denied(format!(
                "{} {} the PC and needs the {needed} role; {} has the {} role",
                spec.id,
                if spec.risk == DiagnosticRisk::ReadOnly {
                    "reads"
                } else {
                    "changes"
                },
                caller.name,
                caller.role
            ));
            return self.refuse(&caller, &host.id, &what, status).await;
        }
        let reported = self
            .ctx
            .store
            .host_diagnostics(&host.id)
            .await
            .map_err(internal)?;
        if reported.catalog_version > 0 && !reported.enabled.iter().any(|id| id == spec.id) {
            let status = Status::failed_precondition(format!(
                "the agent on {} does not enable {}; its own config decides (D25)",
                host.hostname, spec.id
            ));
            return self.refuse(&caller, &host.id, &what, status).await;
        }
        if let Some(reason) = reported.unavailable_reason(spec.id) {
            let status = Status::failed_precondition(format!(
                "{} on {} is unavailable: {reason}",
                spec.id, host.hostname
            ));
            return self.refuse(&caller, &host.id, &what, status).await;
        }
        let ticket_id = match request.ticket_id {
            0 => None,
            id => {
                let found = self.ctx.store.ticket(id).await.map_err(internal)?;
                match found {
                    Some((ticket, _)) if ticket.host_id == host.id => Some(id),
                    Some(_) => {
                        return Err(Status::invalid_argument(format!(
                            "ticket {id} is not about {}",
                            host.hostname
                        )));
                    }
                    None => return Err(Status::not_found(format!("no ticket {id}"))),
                }
            }
        };
        let ttl = match request.ttl_secs {
            0 => DEFAULT_TTL,
            secs => Duration::from_secs(secs),
        };
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Status::invalid_argument("ttl must be between 1m and 7d"));
        }
        let now = self.ctx.clock.now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        // Watch before delivering, so no output is missed.
        let mut live = self.ctx.dispatch.watch(&id);
        let created = self
            .ctx
            .store
            .create_job(
                &NewJob {
                    id: id.clone(),
                    host_id: host.id.clone(),
                    diagnostic: spec.id.to_owned(),
                    params: params.encode_to_vec(),
                    params_text: catalog::describe(&params),
                    risk: risk_name(spec.risk).to_owned(),
                    caller: caller.clone(),
                    ticket_id,
                    expires_at_ms: now
                        .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
                },
                now,
            )
            .await;
        let job = match created {
            Ok(job) => job,
            Err(error) => {
                self.ctx.dispatch.unwatch(&id);
                return Err(internal(error));
            }
        };
        // A delivery that fails leaves the job queued: it goes out when the
        // agent reconnects.
        let delivered = match self.ctx.dispatch.deliver(&self.ctx.store, &job, now).await {
            Ok(delivered) => delivered,
            Err(error) => {
                tracing::error!(%error, job = %id, "delivering a new job failed; it stays queued");
                false
            }
        };
        info!(job = %id, host = %host.id, diagnostic = spec.id, delivered, technician = %caller.name, "diagnostic requested");
        let first = if delivered {
            self.ctx.store.job(&id).await.ok().flatten().unwrap_or(job)
        } else {
            job
        };
        let (tx, rx) = mpsc::channel(64);
        let _ = tx
            .send(Ok(JobEvent {
                kind: Some(Event::Job(job_message(&first, false))),
            }))
            .await;
        let online = host.is_online(now) || delivered;
        if request.no_wait || (!online && !request.wait) {
            self.ctx.dispatch.unwatch(&id);
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let ctx = self.ctx.clone();
        // The stream ends at once when its token is revoked or expires
        // (issue 20). Held after the token was checked: a revocation in
        // between is cut by the replica's revocation poll.
        let mut held = ctx.dispatch.cuts.hold_token(&caller.token_id);
        // An expiry too far off for the timer is as good as none.
        let expiry = caller.expires_at_ms.and_then(|at| {
            let left = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
            tokio::time::Instant::now()
                .checked_add(Duration::from_millis(left))
                .map(|deadline| (at, deadline))
        });
        tokio::spawn(async move {
            let mut recheck = tokio::time::interval(RECHECK);
            loop {
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    () = tx.closed() => break,
                    line = held.cut() => {
                        let _ = tx.send(Err(Status::unauthenticated(line))).await;
                        break;
                    }
                    () = async {
                        match expiry {
                            Some((_, at)) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        let at = expiry.map_or(0, |(at, _)| at);
                        let line = crate::server::revocation::token_expired_message(&super::format_ms(at));
                        let _ = tx.send(Err(Status::unauthenticated(line))).await;
                        break;
                    }
                    event = live.recv() => match event {
                        Ok(Live::Output(chunk)) => {
                            if tx.send(Ok(JobEvent { kind: Some(Event::Output(chunk)) })).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Ok(Live::Finished) => {}
                        // Lagged: chunks were dropped (best effort); closed:
                        // the job finished on another path. Re-read.
                        Err(_) => live = ctx.dispatch.watch(&id),
                    },
                    _ = recheck.tick() => {}
                }
                match ctx.store.job(&id).await {
                    Ok(Some(row)) if row.is_finished() => {
                        let _ = tx
                            .send(Ok(JobEvent {
                                kind: Some(Event::Job(job_message(&row, true))),
                            }))
                            .await;
                        break;
                    }
                    // Not finished yet: a live finish always follows the
                    // commit, so this is a recheck tick or an output chunk.
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(%error, job = %id, "reading a watched job failed");
                        let _ = tx
                            .send(Err(Status::internal(
                                "the collector's store failed; retry later",
                            )))
                            .await;
                        break;
                    }
                }
            }
            ctx.dispatch.unwatch(&id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    pub(super) async fn list_jobs_impl(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing jobs")
            .await?;
        let request = request.into_inner();
        let host_id = match request.host.trim() {
            "" => None,
            host => Some(self.resolve_host(host).await?.id),
        };
        const STATES: [&str; 8] = [
            "queued",
            "sent",
            "completed",
            "failed",
            "timed_out",
            "refused",
            "cancelled",
            "expired",
        ];
        let state = request.state.trim().to_ascii_lowercase();
        if !state.is_empty() && !STATES.contains(&state.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown job state {state:?}; expected one of {}",
                STATES.join(", ")
            )));
        }
        let limit = match request.limit {
            0 => 100,
            n => n.min(1000),
        };
        let rows = self
            .ctx
            .store
            .list_jobs(&JobQuery {
                host_id,
                state: (!state.is_empty()).then_some(state),
                limit,
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(ListJobsResponse {
            jobs: rows.iter().map(|r| job_message(r, false)).collect(),
        }))
    }

    /// The one job `query` names: a job id, or a unique start of one of at
    /// least [`MIN_JOB_PREFIX`] characters, as host ids are taken (D4); an
    /// ambiguous start is refused with the candidates.
    async fn find_job(&self, query: &str) -> Result<JobRow, Status> {
        let query = query.trim();
        if query.is_empty() {
            return Err(Status::invalid_argument(
                "JOB is empty: give a job id or its first characters, as `deskpulse jobs` lists",
            ));
        }
        if let Ok(id) = uuid::Uuid::parse_str(query) {
            let id = id.hyphenated().to_string();
            return self
                .ctx
                .store
                .job(&id)
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::not_found(format!("no job {id}")));
        }
        let prefix = query.to_ascii_lowercase();
        if !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(Status::invalid_argument(format!(
                "{query:?} is not a job id (a UUID, as `deskpulse jobs` lists) or the start of one"
            )));
        }
        if prefix.len() < MIN_JOB_PREFIX {
            return Err(Status::invalid_argument(format!(
                "{query:?} is too short: give at least {MIN_JOB_PREFIX} characters of the job id"
            )));
        }
        let ids = self
            .ctx
            .store
            .job_ids_with_prefix(&prefix, MAX_JOB_CANDIDATES + 1)
            .await
            .map_err(internal)?;
        match ids.as_slice() {
            [] => Err(Status::not_found(format!("no job matches {query:?}"))),
            [id] => self
                .ctx
                .store
                .job(id)
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::not_found(format!("no job {id}"))),
            many => Err(Status::invalid_argument(ambiguous_job(query, many))),
        }
    }

    pub(super) async fn get_job_impl(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<Job>, Status> {
        self.authorize(&request, Role::Viewer, "showing a job")
            .await?;
        let job = self.find_job(&request.into_inner().id).await?;
        Ok(Response::new(job_message(&job, true)))
    }

    pub(super) async fn cancel_job_impl(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "cancelling a job")
            .await?;
        let job = self.find_job(&request.into_inner().id).await?;
        if job.is_finished() {
            return Err(Status::failed_precondition(format!(
                "job {} is already {}",
                job.id, job.state
            )));
        }
        let now = self.ctx.clock.now_ms();
        // Audited with the cancel itself; whether this replica could tell
        // the agent at once is known only after the commit, so it is logged.
        let after = self
            .ctx
            .store
            .cancel_job(
                &job.id,
                &|after: &JobRow| {
                    AuditEntry::by(
                        &caller,
                        "diagnostic.cancel",
                        format!("job {} on host {}", job.id, job.host_id),
                        if after.state == "cancelled" {
                            "cancelled before it reached the agent".into()
                        } else {
                            "the agent is asked to stop it".into()
                        },
                    )
                },
                now,
            )
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no job {}", job.id)))?;
        self.anchor_audit().await;
        let told = after.state == "sent" && self.ctx.dispatch.cancel(&job.host_id, &job.id).await;
        info!(
            technician = %caller.name,
            job = %job.id,
            told_now = told,
            "cancelled a diagnostic job"
        );
        if after.state == "cancelled" {
            self.ctx.dispatch.finished(&job.id);
        }
        Ok(Response::new(job_message(&after, true)))
    }

    pub(super) async fn list_diagnostics_impl(
        &self,
        request: Request<ListDiagnosticsRequest>,
    ) -> Result<Response<ListDiagnosticsResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing diagnostics")
            .await?;
        let request = request.into_inner();
        let host = match request.host.trim() {
            "" => None,
            host => Some(self.resolve_host(host).await?),
        };
        let reported = match &host {
            Some(h) => Some(
                self.ctx
                    .store
                    .host_diagnostics(&h.id)
                    .await
                    .map_err(internal)?,
            ),
            None => None,
        };
        let policy = self.ctx.store.policy().await.map_err(internal)?;
        let diagnostics = catalog::CATALOG
            .iter()
            .map(|spec| DiagnosticInfo {
                id: spec.id.into(),
                description: spec.description.into(),
                risk: risk_name(spec.risk).into(),
                timeout_secs: spec.timeout.as_secs(),
                output_cap_bytes: spec.output_cap as u64,
                params: spec
                    .params
                    .iter()
                    .map(|(name, help)| DiagnosticParamInfo {
                        name: (*name).into(),
                        help: (*help).into(),
                    })
                    .collect(),
                role: policy.policy.diagnostic_role(spec).as_str().into(),
                enabled_on_host: reported
                    .as_ref()
                    .is_some_and(|r| r.enabled.iter().any(|id| id == spec.id)),
                unavailable_on_host: reported
                    .as_ref()
                    .and_then(|r| r.unavailable_reason(spec.id))
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect();
        Ok(Response::new(ListDiagnosticsResponse {
            catalog_version: catalog::CATALOG_VERSION,
            diagnostics,
            host_id: host.as_ref().map(|h| h.id.clone()).unwrap_or_default(),
            hostname: host.map(|h| h.hostname).unwrap_or_default(),
            host_catalog_version: reported.map_or(0, |r| r.catalog_version),
        }))
    }
}
