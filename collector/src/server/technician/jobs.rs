//! The diagnostic half of the technician API: `run`, `jobs`, `job show`,
//! `job cancel` and `diagnostics`. The collector checks the role and the
//! parameters (for an early, clear error), records and audits the request,
//! delivers it to a connected agent at once, and streams the output back;
//! the agent checks everything again and has the final say (D25).
//!
//! The checks and the start of a run ([`start_diagnostic`]), following it
//! ([`follow_job`]) and the catalog ([`diagnostics_for`]) are free
//! functions, so that the web console's host page runs a diagnostic with
//! the same role rules, parameter checks and audit entries.

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
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{TechnicianApi, internal};
use crate::server::ServerContext;
use crate::server::dispatch::JobEvent as Live;
use crate::store::{
    AuditEntry, Caller, HostRow, JobQuery, JobRequester, JobRow, NewJob, Role, StoreError,
};

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

/// What a technician asks to run, before it is checked: the API's
/// `RunDiagnostic` and the web console's run form both come to this.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunAsked {
    /// The catalog id, as typed.
    pub diagnostic: String,
    /// The parameters as `key=value` pairs, as typed.
    pub params: Vec<(String, String)>,
    /// The ticket the run is attached to; 0 for none.
    pub ticket_id: i64,
    /// How long the request may wait for its agent; 0 for the default.
    pub ttl_secs: u64,
}

/// Why a run was refused: the one line a technician reads, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunRefused {
    /// The request is malformed: unknown diagnostic, bad parameters.
    Invalid(String),
    /// The caller's role does not allow it.
    Denied(String),
    /// The host cannot run it: its agent disables it, or it is unavailable.
    Unavailable(String),
    /// The ticket named does not exist.
    NotFound(String),
}

impl RunRefused {
    /// The one line.
    pub(crate) fn line(&self) -> &str {
        match self {
            Self::Invalid(line)
            | Self::Denied(line)
            | Self::Unavailable(line)
            | Self::NotFound(line) => line,
        }
    }

    /// The refusal as the API answers it.
    fn status(self) -> Status {
        match self {
            Self::Invalid(line) => Status::invalid_argument(line),
            Self::Denied(line) => Status::permission_denied(line),
            Self::Unavailable(line) => Status::failed_precondition(line),
            Self::NotFound(line) => Status::not_found(line),
        }
    }
}

/// A run that was accepted: its job as first recorded (sent when its agent
/// streams to this replica), and its live output, watched since before it
/// was delivered so none is missed.
#[derive(Debug)]
pub(crate) struct Started {
    /// The job, queued or sent.
    pub job: JobRow,
    /// Its live output and finish.
    pub live: tokio::sync::broadcast::Receiver<Live>,
    /// Whether its host is online (or the job reached it): worth waiting.
    pub online: bool,
}

/// What a technician following a job hears, in order: output chunks, then
/// the finished job, or the reason the following ended first.
#[derive(Debug, Clone)]
pub(crate) enum Followed {
    /// A chunk of live output (best effort; the finished job has it all).
    Output(Vec<u8>),
    /// The job's stored result, with its whole output.
    Finished(Box<JobRow>),
    /// The caller's API token was revoked or expired: one line.
    Cut(String),
    /// The store failed while reading the job.
    StoreFailed,
}

/// Audits a refused run (`diagnostic.refuse`), anchors the audit head, and
/// returns the refusal.
async fn refused(
    ctx: &ServerContext,
    caller: &Caller,
    host: &str,
    what: &str,
    refusal: RunRefused,
) -> Result<RunRefused, StoreError> {
    info!(technician = %caller.name, host, what, reason = refusal.line(), "refused a diagnostic request");
    ctx.store
        .append_audit(
            &AuditEntry::by(
                caller,
                "diagnostic.refuse",
                format!("host {host}"),
                format!("{what}: {}", refusal.line()),
            ),
            ctx.clock.now_ms(),
        )
        .await?;
    // What a technician asks of a PC is rare and weighty: the signed head
    // is anchored at once, not at the next periodic anchoring.
    ctx.audit
        .anchor_or_warn(ctx.store.as_ref(), ctx.clock.now_ms())
        .await;
    Ok(refusal)
}

/// Checks and starts a run of `asked` on `host` for `caller`, who has been
/// authenticated with at least the viewer role: the role the diagnostic
/// needs under the policy, its parameters (the catalog's parser), whether
/// the host's agent enables it; refusals of these are audited. An accepted
/// run is recorded (and audited by the store), watched, and delivered at
/// once when its agent streams here. The API's `RunDiagnostic` and the web
/// console's run form are both this.
pub(crate) async fn start_diagnostic(
    ctx: &ServerContext,
    caller: &Caller,
    host: &HostRow,
    asked: RunAsked,
) -> Result<Result<Started, RunRefused>, StoreError> {
    let what = asked.diagnostic.trim().to_owned();
    // A viewer may not run anything; refused and audited like any other
    // refusal.
    if caller.role < Role::Technician {
        let refusal = RunRefused::Denied(format!(
            "running a diagnostic needs the technician role; {} has the {} role",
            caller.name, caller.role
        ));
        return Ok(Err(refused(ctx, caller, &host.id, &what, refusal).await?));
    }
    if asked.params.len() > MAX_PARAMS {
        let refusal = RunRefused::Invalid(format!("at most {MAX_PARAMS} parameters are allowed"));
        return Ok(Err(refused(ctx, caller, &host.id, &what, refusal).await?));
    }
    let pairs: Vec<(String, String)> = asked
        .params
        .iter()
        .map(|(key, value)| (key.trim().to_owned(), value.clone()))
        .collect();
    let params = match catalog::parse(&what, &pairs) {
        Ok(params) => params,
        Err(line) => {
            let refusal = RunRefused::Invalid(line);
            return Ok(Err(refused(ctx, caller, &host.id, &what, refusal).await?));
        }
    };
    let Some(spec) = catalog::spec(&what) else {
        return Ok(Err(RunRefused::Invalid("unknown diagnostic".into())));
    };
    let policy = ctx.store.policy().await?;
    let needed = policy.policy.diagnostic_role(spec);
    if caller.role < needed {
        let refusal = RunRefused::Denied(format!(
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
        return Ok(Err(refused(ctx, caller, &host.id, &what, refusal).await?));
    }
    let reported = ctx.store.host_diagnostics(&host.id).await?;
    if reported.catalog_version > 0 && !reported.enabled.iter().any(|id| id == spec.id) {
        let refusal = RunRefused::Unavailable(format!(
            "the agent on {} does not enable {}; its own config decides (D25)",
            host.hostname, spec.id
        ));
        return Ok(Err(refused(ctx, caller, &host.id, &what, refusal).await?));
    }
    if let Some(reason) = reported.unavailable_reason(spec.id) {
        let refusal = RunRefused::Unavailable(format!(
            "{} on {} is unavailable: {reason}",
            spec.id, host.hostname
        ));
        return Ok(Err(refused(ctx, caller, &host.id, &what, refusal).await?));
    }
    let ticket_id = match asked.ticket_id {
        0 => None,
        id => match ctx.store.ticket(id).await? {
            Some((ticket, _)) if ticket.host_id == host.id => Some(id),
            Some(_) => {
                return Ok(Err(RunRefused::Invalid(format!(
                    "ticket {id} is not about {}",
                    host.hostname
                ))));
            }
            None => return Ok(Err(RunRefused::NotFound(format!("no ticket {id}")))),
        },
    };
    let ttl = match asked.ttl_secs {
        0 => DEFAULT_TTL,
        secs => Duration::from_secs(secs),
    };
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Ok(Err(RunRefused::Invalid(
            "ttl must be between 1m and 7d".into(),
        )));
    }
    let now = ctx.clock.now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    // Watch before delivering, so no output is missed.
    let live = ctx.dispatch.watch(&id);
    let created = ctx
        .store
        .create_job(
            &NewJob {
                id: id.clone(),
                host_id: host.id.clone(),
                diagnostic: spec.id.to_owned(),
                params: params.encode_to_vec(),
                params_text: catalog::describe(&params),
                risk: risk_name(spec.risk).to_owned(),
                requester: JobRequester::Technician(caller.clone()),
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
            drop(live);
            ctx.dispatch.unwatch(&id);
            return Err(error);
        }
    };
    // A delivery that fails leaves the job queued: it goes out when the
    // agent reconnects.
    let delivered = match ctx.dispatch.deliver(&ctx.store, &job, now).await {
        Ok(delivered) => delivered,
        Err(error) => {
            tracing::error!(%error, job = %id, "delivering a new job failed; it stays queued");
            false
        }
    };
    info!(job = %id, host = %host.id, diagnostic = spec.id, delivered, technician = %caller.name, "diagnostic requested");
    let first = if delivered {
        ctx.store.job(&id).await.ok().flatten().unwrap_or(job)
    } else {
        job
    };
    Ok(Ok(Started {
        job: first,
        live,
        online: host.is_online(now) || delivered,
    }))
}

/// Follows a started job for `caller` until it finishes, the receiver is
/// dropped, the caller's API token is revoked or expires (issue 20), or
/// the collector shuts down; what is heard comes out of the receiver.
pub(crate) fn follow_job(
    ctx: ServerContext,
    caller: &Caller,
    job_id: String,
    mut live: tokio::sync::broadcast::Receiver<Live>,
) -> mpsc::Receiver<Followed> {
    let (tx, rx) = mpsc::channel(64);
    let now = ctx.clock.now_ms();
    // The following ends at once when its token is revoked or expires
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
        let id = job_id;
        let mut recheck = tokio::time::interval(RECHECK);
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                () = tx.closed() => break,
                line = held.cut() => {
                    let _ = tx.send(Followed::Cut(line)).await;
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
                    let _ = tx.send(Followed::Cut(line)).await;
                    break;
                }
                event = live.recv() => match event {
                    Ok(Live::Output(chunk)) => {
                        if tx.send(Followed::Output(chunk)).await.is_err() {
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
                    let _ = tx.send(Followed::Finished(Box::new(row))).await;
                    break;
                }
                // Not finished yet: a live finish always follows the
                // commit, so this is a recheck tick or an output chunk.
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, job = %id, "reading a watched job failed");
                    let _ = tx.send(Followed::StoreFailed).await;
                    break;
                }
            }
        }
        drop(live);
        ctx.dispatch.unwatch(&id);
    });
    rx
}

/// The catalog as `ListDiagnostics` answers it: each diagnostic with its
/// parameters, risk and the role the policy asks for it, and for `host`
/// whether its agent enables it or reports it unavailable. Read here for
/// the API and the web console's run form.
pub(crate) async fn diagnostics_for(
    ctx: &ServerContext,
    host: Option<HostRow>,
) -> Result<ListDiagnosticsResponse, StoreError> {
    let reported = match &host {
        Some(h) => Some(ctx.store.host_diagnostics(&h.id).await?),
        None => None,
    };
    let policy = ctx.store.policy().await?;
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
    Ok(ListDiagnosticsResponse {
        catalog_version: catalog::CATALOG_VERSION,
        diagnostics,
        host_id: host.as_ref().map(|h| h.id.clone()).unwrap_or_default(),
        hostname: host.map(|h| h.hostname).unwrap_or_default(),
        host_catalog_version: reported.map_or(0, |r| r.catalog_version),
    })
}

/// What the API streams for what a follower heard.
fn job_event(followed: Followed) -> Result<JobEvent, Status> {
    match followed {
        Followed::Output(chunk) => Ok(JobEvent {
            kind: Some(Event::Output(chunk)),
        }),
        Followed::Finished(row) => Ok(JobEvent {
            kind: Some(Event::Job(job_message(&row, true))),
        }),
        Followed::Cut(line) => Err(Status::unauthenticated(line)),
        Followed::StoreFailed => Err(Status::internal(
            "the collector's store failed; retry later",
        )),
    }
}

impl TechnicianApi {
    pub(super) async fn run_diagnostic_impl(
        &self,
        request: Request<RunDiagnosticRequest>,
    ) -> Result<Response<JobStream>, Status> {
        let caller = self
            .authorize(&request, Role::Viewer, "running a diagnostic")
            .await?;
        let request = request.into_inner();
        let host = self.resolve_host(&request.host).await?;
        let asked = RunAsked {
            diagnostic: request.diagnostic.clone(),
            params: request
                .params
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            ticket_id: request.ticket_id,
            ttl_secs: request.ttl_secs,
        };
        let started = start_diagnostic(&self.ctx, &caller, &host, asked)
            .await
            .map_err(internal)?
            .map_err(RunRefused::status)?;
        let first = Ok(JobEvent {
            kind: Some(Event::Job(job_message(&started.job, false))),
        });
        let id = started.job.id.clone();
        if request.no_wait || (!started.online && !request.wait) {
            drop(started.live);
            self.ctx.dispatch.unwatch(&id);
            return Ok(Response::new(Box::pin(tokio_stream::once(first))));
        }
        let followed = follow_job(self.ctx.clone(), &caller, id, started.live);
        let stream = tokio_stream::once(first).chain(ReceiverStream::new(followed).map(job_event));
        Ok(Response::new(Box::pin(stream)))
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
        diagnostics_for(&self.ctx, host)
            .await
            .map(Response::new)
            .map_err(internal)
    }
}
