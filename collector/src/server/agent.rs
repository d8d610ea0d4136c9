//! The agent service: one long-lived stream per connected agent.
//!
//! The host id comes from the verified client certificate only
//! ([`require_host_certificate`]), and the certificate must be the host's
//! current one in the store, so a superseded certificate stops working once
//! the hardware enrolls again. Reports are validated, handed to the ingest
//! writer, and acknowledged in order once committed; a bounded number may be
//! in flight per stream, which pushes back on a fast agent.
//!
//! A new session's first report is read only with an intake permit, of
//! which there are [`MAX_FIRST_REPORTS`] over all sessions. When a fleet
//! connects at once, every agent sends a full inventory first; decoded and
//! queued for the store, each costs hundreds of KB while the store takes
//! tens per second, so unmetered they all waited in memory at once (2.7 GB
//! at 5,000 agents). Sessions without a permit leave their inventory
//! compressed in their HTTP/2 window, and the agents wait for their Acks as
//! they would anyway.
//!
//! Each session holds reports to the policy's inventory limits (issue 20):
//! the limits go to the agent in the response's metadata
//! ([`deskpulse_proto::limits::HEADER`]), and a report over them is answered
//! `Rejected` without being decoded, its remaining parts skipped, the
//! session going on. A report whose parts pass [`LARGE_REPORT`] bytes is
//! joined, decoded and stored only with its share of a fleet-wide budget
//! ([`LARGE_REPORT_BUDGET`]), held until its commit, so a few hostile or
//! merely huge inventories cost a bounded amount of memory however many
//! agents send them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deskpulse_proto::parts::{Assembler, PartError};
use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_server::AgentService;
use deskpulse_proto::v1::collector_message::Kind as Outgoing;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    Ack, AgentMessage, CertificateRenewed, CollectorMessage, DiagnosticOutcome, GoodbyeReason,
    Rejected, Report, ResyncInventory,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::ServerContext;
use crate::ingest::{Committed, Ingest};
use crate::pki;
use crate::secrets::sha256_hex;
use crate::store::{IncomingReport, JobResult, ReportOutcome, ReportPayload, SessionOpen};

/// Reports per stream that may wait for their commit at once.
const MAX_IN_FLIGHT: usize = 64;
/// New sessions whose first report may be read and not yet committed, over
/// all sessions (see the module docs). Enough to fill the ingest writer's
/// batches, few enough that their decoded inventories stay in tens of MB.
pub const MAX_FIRST_REPORTS: usize = 128;
/// How long a new session keeps its intake permit while the agent sends
/// nothing: an agent with an empty spool must not hold up the others.
const FIRST_REPORT_WAIT: Duration = Duration::from_secs(2);
/// Outbound messages queued per session: the Acks of a full window of
/// reports, plus room for diagnostic jobs and output.
const OUTBOUND_QUEUE: usize = MAX_IN_FLIGHT + 8;
/// How long an agent has to say Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest spool id accepted.
const MAX_SPOOL_ID: usize = 64;
/// How long a revoked session waits for room to send its last line before
/// it ends anyway.
const REVOKED_SEND: Duration = Duration::from_secs(1);

/// A report whose parts pass this many bytes is large: it needs its share
/// of [`LARGE_REPORT_BUDGET`] to go on. A desktop's full inventory (about
/// 60 KB for 1,000 packages) stays under it.
pub const LARGE_REPORT: usize = 256 * 1024;
/// The encoded bytes of large reports that may be joined, decoded and
/// waiting for their commit at once, over all sessions. Each large report
/// takes the policy's `inventory.max_bytes` of it (the most it can grow
/// to), so at the default 4 MiB four are under way at once, and decoded
/// inventories at the default limits stay in tens of MB.
pub const LARGE_REPORT_BUDGET: usize = 16 * 1024 * 1024;

/// Who is calling, from the verified client certificate.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// The host id: the certificate's subject common name.
    pub host_id: String,
    /// SHA-256 of the certificate's DER, hex.
    pub cert_sha256: String,
    /// The certificate's expiry, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// The certificate's DER, for renewal's new-key check.
    pub cert_der: Vec<u8>,
}

/// Interceptor on the agent service: refuses any call without a client
/// certificate issued by the fleet CA, and records the caller's identity.
/// rustls has already verified the chain when a certificate is present.
pub fn require_host_certificate(mut request: Request<()>) -> Result<Request<()>, Status> {
    let peer = request.remote_addr();
    let Some(leaf) = request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
    else {
        info!(?peer, "refused an agent call without a client certificate");
        return Err(Status::unauthenticated(
            "the agent service needs a host certificate issued by this collector: enroll first",
        ));
    };
    let host_id = pki::common_name(&leaf).filter(|cn| uuid::Uuid::parse_str(cn).is_ok());
    let Some(host_id) = host_id else {
        info!(
            ?peer,
            "refused an agent call whose certificate names no host id"
        );
        return Err(Status::unauthenticated(
            "the client certificate is not a host certificate",
        ));
    };
    let Some(expires_at_ms) = pki::expiry_ms(&leaf) else {
        return Err(Status::unauthenticated(
            "the client certificate's validity does not parse",
        ));
    };
    request.extensions_mut().insert(AgentIdentity {
        host_id,
        cert_sha256: sha256_hex(&leaf),
        expires_at_ms,
        cert_der: leaf.to_vec(),
    });
    Ok(request)
}

/// How long a session that handed an agent its re-linked certificate
/// waits for the agent to hang up.
const RELINK_HANDOVER: Duration = Duration::from_secs(30);

/// The agent service implementation.
#[derive(Debug)]
pub struct AgentSessions {
    ctx: ServerContext,
    ingest: Ingest,
    intake: Arc<Semaphore>,
    large: Arc<Semaphore>,
    user_reports: Arc<super::limits::UserReports>,
}

impl AgentSessions {
    /// A service that stores reports through `ingest`.
    pub fn new(ctx: ServerContext, ingest: Ingest) -> Self {
        Self {
            ctx,
            ingest,
            intake: Arc::new(Semaphore::new(MAX_FIRST_REPORTS)),
            large: Arc::new(Semaphore::new(LARGE_REPORT_BUDGET / 1024)),
            user_reports: Arc::default(),
        }
    }
}

use super::dispatch::Outbound;

fn outgoing(kind: Outgoing) -> Outbound {
    Ok(CollectorMessage { kind: Some(kind) })
}

#[tonic::async_trait]
impl AgentService for AgentSessions {
    type SessionStream = Pin<Box<dyn tokio_stream::Stream<Item = Outbound> + Send>>;

    #[tracing::instrument(skip_all, fields(host))]
    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = request
            .extensions()
            .get::<AgentIdentity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no host certificate"))?;
        tracing::Span::current().record("host", identity.host_id.as_str());
        // Held before the certificate is checked, so a revocation that
        // commits after the check still finds this session (issue 20).
        let held = self.ctx.dispatch.cuts.hold_host(&identity.host_id);
        if let super::renewal::Admission::Relinked { host_id, cert_pem } =
            super::renewal::admit(&self.ctx, &identity).await?
        {
            // Not a host's session: what the agent sends is read and
            // dropped (it keeps its reports and sends them again as the host
            // it took over), so its sends succeed until it has read the
            // certificate, and the stream ends once it hangs up (or after
            // RELINK_HANDOVER).
            let mut inbound = request.into_inner();
            let (hung_up, ended) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let drain = async { while let Ok(Some(_)) = inbound.message().await {} };
                let _ = tokio::time::timeout(RELINK_HANDOVER, drain).await;
                let _ = hung_up.send(());
            });
            let handed = tokio_stream::once(Ok(CollectorMessage {
                kind: Some(Outgoing::CertificateRenewed(CertificateRenewed {
                    certificate_pem: cert_pem,
                    ca_bundle_pem: self.ctx.ca.get().bundle_pem(),
                })),
            }));
            let end = futures_util::stream::once(async move {
                let _ = ended.await;
                Err(Status::unauthenticated(super::renewal::relinked_message(
                    &host_id,
                )))
            });
            return Ok(Response::new(Box::pin(handed.chain(end))));
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                kind: Some(Kind::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(malformed(status)),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 30 s")),
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be Hello",
                ));
            }
        };
        let session = SessionOpen {
            host_id: identity.host_id.clone(),
            replica: self.ctx.replica.clone(),
            agent_version: truncate(&hello.agent_version, 64),
            health_interval_secs: hello.health_interval_secs.clamp(1, 86_400),
            catalog_version: hello.catalog_version,
            // Only catalog ids are kept: the list is shown to technicians.
            enabled_diagnostics: hello
                .enabled_diagnostics
                .iter()
                .filter(|id| deskpulse_proto::catalog::spec(id).is_some())
                .take(deskpulse_proto::catalog::CATALOG.len())
                .cloned()
                .collect(),
            unavailable_diagnostics: unavailable_diagnostics(&hello.unavailable_diagnostics),
        };
        let opened_at = self.ctx.clock.now_ms();
        self.ctx
            .store
            .session_opened(&session, opened_at)
            .await
            .map_err(|error| {
                // Health must see a store that cannot write (issue 20).
                self.ingest.health().record_failure(&error);
                internal(error)
            })?;
        // The policy's clock window and inventory limits hold for the whole
        // session.
        let record = self.ctx.store.policy().await.map_err(internal)?;
        let (window, limits) = (record.policy.clock, record.policy.inventory_limits);
        let mut clock = crate::clockskew::Tracker::new(window);
        clock.sent(hello.sent_at_unix_ms, opened_at);
        record_clock(&self.ctx, &identity.host_id, &mut clock, opened_at).await;
        if let Some(offset) = clock.offset_ms()
            && window.beyond(offset)
        {
            warn!(
                offset_ms = offset,
                "the host's clock is {}",
                crate::clockskew::describe(offset)
            );
        }
        info!(agent_version = %session.agent_version, "agent connected");
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        // First on the stream, once the fleet has rotated its CA: the CAs to
        // trust, and during an overlap the word to renew onto the new CA
        // now (docs/ca-rotation.md). A fleet that never rotated sends
        // nothing: its agents already trust its one CA.
        let cas = self.ctx.ca.get();
        if cas.known.len() > 1 {
            let trusted = super::rotation::trusted_cas(&cas, &identity);
            if trusted.renew_now {
                info!(
                    "the host certificate is not from the active CA; asking the agent to renew now"
                );
            }
            let _ = tx.try_send(outgoing(Outgoing::TrustedCas(trusted)));
        }
        // Registered before the queued jobs are read, so a job made in
        // between is delivered one way or the other (the agent runs a job
        // id once).
        let guard = self.ctx.dispatch.register(&identity.host_id, tx.clone());
        // Delivered from a task of its own: more queued jobs than the
        // outbound queue holds would otherwise wait on a stream nobody
        // reads yet, and the host could never connect again.
        let (ctx, host) = (self.ctx.clone(), identity.host_id.clone());
        tokio::spawn(async move {
            let now = ctx.clock.now_ms();
            match ctx.store.deliverable_jobs(&host, now).await {
                Ok(jobs) => {
                    for job in jobs {
                        if let Err(error) = ctx.dispatch.deliver(&ctx.store, &job, now).await {
                            tracing::error!(%error, job = %job.id, "delivering a queued job failed");
                        }
                    }
                }
                Err(error) => tracing::error!(%error, "reading queued jobs failed"),
            }
        });
        let host_id = identity.host_id.clone();
        let session = run_session(
            self.ctx.clone(),
            self.ingest.clone(),
            Intake {
                first: self.intake.clone(),
                large: self.large.clone(),
                limits,
            },
            self.user_reports.clone(),
            identity,
            inbound,
            tx.clone(),
            (guard, held),
            clock,
        );
        tokio::spawn(crate::panics::contain_session(host_id, session, tx));
        let mut response: Response<Self::SessionStream> =
            Response::new(Box::pin(ReceiverStream::new(rx)));
        if let Ok(value) = limits.to_string().parse() {
            response
                .metadata_mut()
                .insert(deskpulse_proto::limits::HEADER, value);
        }
        Ok(response)
    }
}

fn internal(error: crate::store::StoreError) -> Status {
    tracing::error!(%error, "store error in the agent service");
    Status::internal("the collector's store failed; retry later")
}

fn malformed(status: Status) -> Status {
    // Decode failures and size limits arrive as a Status from the stream;
    // keep their code and say plainly what was wrong.
    Status::new(
        status.code(),
        format!("malformed agent message: {}", status.message()),
    )
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The longest reason kept for an unavailable diagnostic.
const MAX_UNAVAILABLE_REASON: usize = 200;

/// What a `Hello` says the agent cannot run, as the store keeps it and
/// technicians read it: catalog ids only, each once, at most one per
/// catalog entry; each reason one line of printable text, at most 200
/// characters ("unavailable" when it is empty). The agent still refuses
/// or fails anything it cannot run; this list only informs.
pub fn unavailable_diagnostics(
    said: &[deskpulse_proto::v1::UnavailableDiagnostic],
) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = Vec::new();
    for entry in said
        .iter()
        .take(deskpulse_proto::catalog::CATALOG.len() * 4)
    {
        let Some(spec) = deskpulse_proto::catalog::spec(&entry.id) else {
            continue;
        };
        if kept.iter().any(|(id, _)| id == spec.id) {
            continue;
        }
        let reason: String = entry
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_UNAVAILABLE_REASON)
            .collect();
        let reason = reason.trim();
        kept.push((
            spec.id.to_owned(),
            if reason.is_empty() {
                "unavailable".to_owned()
            } else {
                reason.to_owned()
            },
        ));
    }
    kept
}

/// What bounds a session's intake: the first-report permits, the large
/// report budget, and the policy's inventory limits as the session began.
struct Intake {
    first: Arc<Semaphore>,
    large: Arc<Semaphore>,
    limits: deskpulse_proto::limits::Limits,
}

impl Intake {
    /// The share of the large-report budget one large report takes: the
    /// most it may grow to, in KiB (never more than the whole budget).
    fn large_share(&self) -> u32 {
        let kib = usize::try_from(self.limits.max_bytes / 1024).unwrap_or(usize::MAX);
        u32::try_from(kib.min(LARGE_REPORT_BUDGET / 1024)).unwrap_or(u32::MAX)
    }
}

#[allow(clippy::too_many_arguments)] // the session's own handles, each used once; a struct would only rename them
async fn run_session(
    ctx: ServerContext,
    ingest: Ingest,
    intake: Intake,
    user_reports: Arc<super::limits::UserReports>,
    identity: AgentIdentity,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Outbound>,
    (_registered, mut held): (super::dispatch::SessionGuard, super::revocation::Held),
    mut clock: crate::clockskew::Tracker,
) {
    let host_id = identity.host_id.clone();
    let mut renewed = false;
    // A CA retired while this session is open ends it (below).
    let mut cas = ctx.ca.subscribe();
    let mut pending = FuturesOrdered::new();
    let mut goodbye: Option<&'static str> = None;
    let mut my_tickets_pace = super::my_tickets::Pace::default();
    metrics::gauge!(crate::metrics::AGENTS_CONNECTED).increment(1.0);
    let mut inbound_open = true;
    let mut parts = Assembler::with_limits(super::MAX_AGENT_MESSAGE, intake.limits);
    // This session's share of the large-report budget, while a large
    // report's parts arrive; it then travels with the report to its commit.
    let mut large: Option<OwnedSemaphorePermit> = None;
    // Held from here until the first message read has been dealt with (an
    // inventory: committed), or FIRST_REPORT_WAIT passes with nothing read.
    let mut permit: Option<OwnedSemaphorePermit> = tokio::select! {
        () = ctx.shutdown.cancelled() => None,
        permit = intake.first.clone().acquire_owned() => permit.ok(),
    };
    let permit_until = tokio::time::Instant::now() + FIRST_REPORT_WAIT;
    let mut read_any = false;
    crate::panics::test_panic("session");
    loop {
        if !inbound_open && pending.is_empty() {
            break;
        }
        if read_any && pending.is_empty() && !parts.in_progress() {
            permit = None;
        }
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            // Revoked (issue 20): the session ends now with one line; what
            // is in flight is not acknowledged.
            line = held.cut() => {
                info!(host = %host_id, "the host was revoked; ending its session");
                let _ = tokio::time::timeout(REVOKED_SEND, tx.send(Err(Status::unauthenticated(line)))).await;
                goodbye = Some("revoked");
                break;
            }
            Ok(()) = cas.changed() => {
                let set = cas.borrow_and_update().clone();
                if let Some(refusal) = super::rotation::retired_refusal(&set, &identity) {
                    info!(host = %host_id, "ended a session whose certificate's CA was retired");
                    let _ = tx.send(Err(refusal)).await;
                    break;
                }
                // The new bundle at once: a rotation's new CA to add, or a
                // retired one to drop, and the word to renew.
                let trusted = super::rotation::trusted_cas(&set, &identity);
                if tx.send(outgoing(Outgoing::TrustedCas(trusted))).await.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(permit_until), if permit.is_some() && !read_any => {
                permit = None;
            }
            Some((spool_id, seq, (job, issue_key), received, committed)) = pending.next(), if !pending.is_empty() => {
                let committed: Result<Committed, _> = committed;
                let job: Option<String> = job;
                let issue_key: Option<String> = issue_key;
                let received: std::time::Instant = received;
                metrics::histogram!(crate::metrics::INGEST_LATENCY).record(received.elapsed().as_secs_f64());
                if let (Some(job), Ok(Ok(_))) = (job.as_deref(), &committed) {
                    ctx.dispatch.finished(job);
                }
                let reply = match committed {
                    Ok(Ok(ReportOutcome::Resync(reason))) => {
                        warn!(host = %host_id, seq, %reason, "an inventory delta did not fit; asking for a full inventory");
                        if tx.send(outgoing(Outgoing::Ack(Ack { spool_id, seq, reported: None }))).await.is_err() {
                            break;
                        }
                        Outgoing::ResyncInventory(ResyncInventory { reason })
                    }
                    Ok(Ok(_)) => Outgoing::Ack(super::my_tickets::ack(&ctx, &host_id, spool_id, seq, issue_key).await),
                    // Not stored: say nothing, so the agent keeps the report
                    // and sends it again on its next connection.
                    Ok(Err(_)) | Err(_) => {
                        let _ = tx.send(Err(Status::unavailable("the collector could not store a report; reconnect and resend"))).await;
                        break;
                    }
                };
                if tx.send(outgoing(reply)).await.is_err() {
                    break;
                }
            }
            message = inbound.message(), if inbound_open && pending.len() < MAX_IN_FLIGHT => {
                read_any = true;
                // A report arrives whole or as its last part.
                let report = match message {
                    Ok(Some(AgentMessage { kind: Some(Kind::Report(report)) })) => parts.whole(report).map(Some),
                    Ok(Some(AgentMessage { kind: Some(Kind::ReportPart(part)) })) => {
                        let joined = parts.push(part);
                        if matches!(joined, Ok(None)) && large.is_none() && parts.joined_len() >= LARGE_REPORT {
                            // Nothing more of this stream is read until the
                            // budget has room; the agent's HTTP/2 window
                            // fills and it waits.
                            tokio::select! {
                                () = ctx.shutdown.cancelled() => break,
                                permit = intake.large.clone().acquire_many_owned(intake.large_share()) => large = permit.ok(),
                            }
                        }
                        joined
                    }
                    Ok(Some(AgentMessage { kind: Some(Kind::Spool(counters)) })) => {
                        if let Err(error) = ctx.store.record_spool_counters(&host_id, &counters.encode_to_vec(), ctx.clock.now_ms()).await {
                            tracing::error!(%error, host = %host_id, "recording spool counters failed");
                        }
                        if counters.health_dropped + counters.unwritable + counters.results_refused > 0 {
                            warn!(host = %host_id, health_dropped = counters.health_dropped, unwritable = counters.unwritable, results_refused = counters.results_refused, "the agent's spool lost reports");
                        }
                        Ok(None)
                    }
                    Ok(Some(AgentMessage { kind: Some(Kind::DiagnosticOutput(chunk)) })) => {
                        ctx.dispatch.output(&host_id, chunk);
                        Ok(None)
                    }
                    Ok(Some(AgentMessage { kind: Some(Kind::MyTickets(request)) })) => {
                        let answer = super::my_tickets::answer(&ctx, &host_id, &mut my_tickets_pace, request).await;
                        if tx.send(outgoing(Outgoing::MyTickets(answer))).await.is_err() {
                            break;
                        }
                        Ok(None)
                    }
                    Ok(Some(AgentMessage { kind: Some(Kind::Goodbye(bye)) })) => {
                        goodbye = Some(goodbye_reason(bye.reason()));
                        Ok(None)
                    }
                    Ok(Some(AgentMessage { kind: Some(Kind::RenewCertificate(renew)) })) => {
                        // One per session: each costs a signature and a write.
                        let answer = if renewed {
                            Err(Status::invalid_argument("one certificate renewal per session"))
                        } else {
                            super::renewal::renew(&ctx, &identity, &renew.csr_der).await
                        };
                        renewed = true;
                        match answer {
                            Ok(reply) => {
                                if tx.send(outgoing(reply)).await.is_err() {
                                    break;
                                }
                            }
                            Err(status) => {
                                warn!(host = %host_id, %status, "refused a certificate renewal");
                                let _ = tx.send(Err(status)).await;
                                break;
                            }
                        }
                        Ok(None)
                    }
                    Ok(Some(AgentMessage { kind: Some(Kind::Hello(_)) })) => {
                        let _ = tx.send(Err(Status::invalid_argument("Hello may only be the first message"))).await;
                        break;
                    }
                    Ok(Some(AgentMessage { kind: None })) => {
                        let _ = tx.send(Err(Status::invalid_argument("an agent message must set one kind"))).await;
                        break;
                    }
                    Ok(None) => {
                        inbound_open = false;
                        Ok(None)
                    }
                    Err(status) => {
                        info!(host = %host_id, %status, "agent stream failed");
                        let _ = tx.send(Err(malformed(status))).await;
                        break;
                    }
                };
                let mut report = match report {
                    Ok(Some(report)) => report,
                    Ok(None) => continue,
                    Err(PartError::Refused { spool_id, seq, reason }) => {
                        large = None;
                        metrics::counter!(crate::metrics::REJECTED).increment(1);
                        warn!(host = %host_id, seq, %reason, "rejected a report over the inventory limits");
                        let rejected = Rejected { spool_id, seq, reason };
                        if tx.send(outgoing(Outgoing::Rejected(rejected))).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Err(error) => {
                        warn!(host = %host_id, %error, "refused a report's parts");
                        let _ = tx.send(Err(Status::invalid_argument(format!("malformed agent message: {error}")))).await;
                        break;
                    }
                };
                // Believed only within the clock window; 0 and below stay
                // for validate to refuse as unset.
                let received_at = ctx.clock.now_ms();
                clock.sent(report.sent_at_unix_ms, received_at);
                if report.collected_at_unix_ms > 0 {
                    report.collected_at_unix_ms = clock.judge(report.collected_at_unix_ms, received_at);
                }
                if let Some(reading) = clock.due(received_at) {
                    record_reading(&ctx, &host_id, &mut clock, reading).await;
                }
                let report = validate(&host_id, report).map(|mut report| {
                    if let (ReportPayload::Health { readings, .. }, Some(offset)) = (&mut report.payload, clock.offset_ms()) {
                        readings.push(crate::clockskew::reading(offset));
                    }
                    report
                }).and_then(|report| {
                    if !matches!(report.payload, ReportPayload::UserIssue { .. }) {
                        return Ok(report);
                    }
                    match user_reports.admit(&host_id) {
                        Ok(()) => Ok(report),
                        Err(reason) => Err(Rejected {
                            spool_id: report.spool_id,
                            seq: report.seq,
                            reason,
                        }),
                    }
                });
                match report {
                    Ok(mut report) => {
                        if let ReportPayload::DiagnosticResult(result) = &mut report.payload
                            && ctx.dispatch.live_overflowed(&result.job_id)
                        {
                            let said = format!("{}; collector: live output past the catalog cap was dropped", result.reason);
                            result.reason = truncate(said.trim_start_matches("; "), 600);
                        }
                        let (spool_id, seq) = (report.spool_id.clone(), report.seq);
                        let job: Option<String> = match &report.payload {
                            ReportPayload::DiagnosticResult(result) => Some(result.job_id.clone()),
                            _ => None,
                        };
                        let issue_key: Option<String> = match &report.payload {
                            ReportPayload::UserIssue { report_key, .. } => report_key.clone(),
                            _ => None,
                        };
                        metrics::counter!(crate::metrics::REPORTS, "kind" => report.payload.kind()).increment(1);
                        let received = std::time::Instant::now();
                        // A large report's budget share is given back when
                        // its commit is known, by a task of its own: this
                        // loop may itself be waiting for budget then.
                        let share = large.take();
                        match ingest.submit(report).await {
                            Ok(committed) => {
                                let (direct, given_back) = match share {
                                    None => (Some(committed), None),
                                    Some(share) => (None, Some(tokio::spawn(async move {
                                        let outcome = committed.await;
                                        drop(share);
                                        outcome
                                    }))),
                                };
                                pending.push_back(async move {
                                    let outcome: Result<Committed, ()> = match (direct, given_back) {
                                        (Some(committed), _) => committed.await.map_err(drop),
                                        (None, Some(task)) => task.await.map_err(drop).and_then(|o| o.map_err(drop)),
                                        (None, None) => Err(()),
                                    };
                                    (spool_id, seq, (job, issue_key), received, outcome)
                                });
                            }
                            Err(_) => break,
                        }
                    }
                    Err(rejected) => {
                        large = None;
                        metrics::counter!(crate::metrics::REJECTED).increment(1);
                        warn!(host = %host_id, seq = rejected.seq, reason = %rejected.reason, "rejected a report");
                        if tx.send(outgoing(Outgoing::Rejected(rejected))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    metrics::gauge!(crate::metrics::AGENTS_CONNECTED).decrement(1.0);
    let now = ctx.clock.now_ms();
    if let Some(reading) = clock.flush(now) {
        record_reading(&ctx, &host_id, &mut clock, reading).await;
    }
    if let Err(error) = ctx
        .store
        .session_closed(&host_id, &ctx.replica, goodbye, ctx.clock.now_ms())
        .await
    {
        tracing::error!(%error, host = %host_id, "recording the end of a session failed");
    }
    info!(host = %host_id, goodbye = goodbye.unwrap_or("none"), "agent disconnected");
}

/// Records the clock reading due now, if any.
async fn record_clock(
    ctx: &ServerContext,
    host_id: &str,
    clock: &mut crate::clockskew::Tracker,
    now_ms: i64,
) {
    if let Some(reading) = clock.due(now_ms) {
        record_reading(ctx, host_id, clock, reading).await;
    }
}

async fn record_reading(
    ctx: &ServerContext,
    host_id: &str,
    clock: &mut crate::clockskew::Tracker,
    reading: crate::clockskew::ClockReading,
) {
    if reading.clamped > 0 {
        warn!(
            host = %host_id,
            clamped = reading.clamped,
            claimed_ms = reading.last_claim_ms,
            "reports dated outside the clock window were stored at their receive time"
        );
    }
    match ctx.store.record_clock(host_id, &reading).await {
        Ok(()) => clock.recorded(&reading),
        Err(error) => tracing::error!(%error, host = %host_id, "recording the host's clock failed"),
    }
}

fn goodbye_reason(reason: GoodbyeReason) -> &'static str {
    match reason {
        GoodbyeReason::Unspecified | GoodbyeReason::Shutdown => "shutdown",
        GoodbyeReason::Sleep => "sleep",
        GoodbyeReason::ServiceStop => "service-stop",
    }
}

/// The longest text of an employee's problem report.
const MAX_ISSUE_TEXT: usize = 2000;

/// Checks a report's key and payload and hands them to the store: an
/// inventory or a delta as decoded here, other payloads encoded. Public for
/// the fuzz targets (`fuzz/`).
pub fn validate(host_id: &str, mut report: Report) -> Result<IncomingReport, Rejected> {
    // Canonicalised in place: a copy of a decoded inventory is hundreds of
    // KB per report.
    let mut payload = report.payload.take();
    if let Some(Payload::Inventory(inventory)) = &mut payload {
        deskpulse_proto::delta::canonicalize(inventory);
    }
    let reject = |reason: &str| Rejected {
        spool_id: truncate(&report.spool_id, MAX_SPOOL_ID),
        seq: report.seq,
        reason: reason.to_owned(),
    };
    let id_ok = !report.spool_id.is_empty()
        && report.spool_id.len() <= MAX_SPOOL_ID
        && report
            .spool_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        return Err(reject("spool_id must be 1-64 characters of [A-Za-z0-9_-]"));
    }
    if report.seq == 0 || i64::try_from(report.seq).is_err() {
        return Err(reject("seq must be between 1 and 2^63-1"));
    }
    if report.collected_at_unix_ms <= 0 {
        return Err(reject("collected_at_unix_ms must be set"));
    }
    if report.held_from_seq > report.seq {
        return Err(reject(
            "held_from_seq must not be above seq: the spool holds the report it sends",
        ));
    }
    let payload = match payload {
        Some(Payload::Inventory(inventory)) => {
            let os = inventory.os.clone().unwrap_or_default();
            if os.hostname.len() > 255 {
                return Err(reject("the host name is longer than 255 bytes"));
            }
            if let Some(reason) = crate::query::refused_hostname(&os.hostname) {
                return Err(reject(reason));
            }
            let facts = Box::new(crate::facts::inventory_facts(&inventory));
            ReportPayload::Inventory {
                inventory: Box::new(inventory),
                hostname: os.hostname,
                os_name: truncate(&os.name, 128),
                os_version: truncate(&os.version, 64),
                facts,
            }
        }
        Some(Payload::InventoryDelta(delta)) => {
            if delta.base_sha256.len() != 32 || delta.result_sha256.len() != 32 {
                return Err(reject(
                    "an inventory delta needs 32-byte base and result hashes",
                ));
            }
            let os = delta.replaced.as_ref().and_then(|r| r.os.as_ref());
            if let Some(reason) = os.and_then(|os| crate::query::refused_hostname(&os.hostname)) {
                return Err(reject(reason));
            }
            ReportPayload::InventoryDelta {
                delta: Box::new(delta),
            }
        }
        Some(Payload::Health(health)) => ReportPayload::Health {
            encoded: health.encode_to_vec(),
            free: crate::facts::health_free(&health),
            reading: crate::facts::health_reading(&health),
            readings: crate::facts::health_readings(&health, report.collected_at_unix_ms),
        },
        Some(Payload::UserIssue(issue)) => {
            let text = issue.text.trim();
            let length = text.chars().count();
            if length == 0 || length > MAX_ISSUE_TEXT {
                return Err(reject(&format!(
                    "a user issue's text must be 1-{MAX_ISSUE_TEXT} characters"
                )));
            }
            if text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err(reject(
                    "a user issue's text may not hold control characters",
                ));
            }
            let os_user = issue.os_user.trim();
            if os_user.is_empty() || os_user.len() > 256 || os_user.chars().any(char::is_control) {
                return Err(reject("a user issue must name its OS user (1-256 bytes)"));
            }
            // Empty from agents older than issue 20, which raise a ticket
            // for every report as before.
            let report_key = match issue.report_key.as_str() {
                "" => None,
                key => Some(
                    uuid::Uuid::parse_str(key)
                        .map_err(|_| reject("a user issue's report key must be a UUID"))?
                        .to_string(),
                ),
            };
            ReportPayload::UserIssue {
                text: text.to_owned(),
                os_user: os_user.to_owned(),
                report_key,
                health: issue
                    .health
                    .as_ref()
                    .map_or(serde_json::Value::Null, crate::facts::health_evidence),
                reporter_email: super::my_tickets::reporter_email(host_id, &issue.reporter_email),
            }
        }
        Some(Payload::DiagnosticResult(result)) => {
            if uuid::Uuid::parse_str(&result.job_id).is_err() {
                return Err(reject("a diagnostic result must name its job by UUID"));
            }
            let outcome = match result.outcome() {
                DiagnosticOutcome::Completed => "completed",
                DiagnosticOutcome::Failed => "failed",
                DiagnosticOutcome::TimedOut => "timed_out",
                DiagnosticOutcome::Refused => "refused",
                DiagnosticOutcome::Cancelled => "cancelled",
                DiagnosticOutcome::Unspecified => {
                    return Err(reject("a diagnostic result must give its outcome"));
                }
            };
            ReportPayload::DiagnosticResult(Box::new(JobResult {
                job_id: result.job_id.clone(),
                outcome: outcome.into(),
                exit_code: result.exit_code,
                output: result.output.clone(),
                truncated: result.truncated,
                started_at_ms: result.started_at_unix_ms,
                finished_at_ms: result.finished_at_unix_ms,
                reason: truncate(&result.reason, 500),
            }))
        }
        None => return Err(reject("a report must carry a payload")),
    };
    Ok(IncomingReport {
        host_id: host_id.to_owned(),
        spool_id: report.spool_id,
        seq: report.seq,
        held_from_seq: report.held_from_seq,
        collected_at_ms: report.collected_at_unix_ms,
        payload,
    })
}
